"""The OpenAPI part for backup, restore and reset (web/admin.py)."""
from __future__ import annotations

from typing import Any

from web.openapi_schema import array, error, header, integer, multipart_body, obj, operation, response, string

MEMBERS = ("manifest.json (format parley-backup, version 2, row counts, audio files; import also reads "
           "version 1), sessions.json, jobs.json, "
           "segments.json, job_events.json, transcript_paragraphs.json, chats.json, messages.json, templates.json, "
           "llm_jobs.json, usage_logs.json, analysis_jobs.json, intermediate_summaries.json, "
           "analysis_job_sessions.json and uploads/<audio file>")


def _refusal() -> dict[str, Any]:
    return response("The archive was refused; nothing was changed", obj({
        "detail": string(), "error": string(), "message": string("Names the member and the reason"),
        "member": string("The archive member at fault (backupFile for the archive as a whole)"),
        "reason": string()}, required=["detail", "error", "message"]))


def admin_paths() -> dict[str, Any]:
    counts = {"type": "object", "additionalProperties": integer(minimum=0)}
    reset_body = obj({"message": string("What was deleted, with counts"),
                      "deleted": {**counts, "description": "sessions, chats, messages, templates, analysisJobs, "
                                                           "audioFiles, queuedMessages, systemTemplatesRecreated"},
                      "errors": array(string())}, required=["message", "errors"])
    return {
        "/api/admin/export-data": {"get": operation("admin", "export_data", "Download a backup of all data", {
            "200": response(
                "The backup, streamed",
                content={"application/x-tar": {"schema": string("Tar archive", format="binary")}},
                headers={"Content-Disposition": header(
                    'attachment; filename="therascript-backup-YYYY-MM-DD.tar"')}),
            "500": error("The snapshot could not be taken")},
            description="An uncompressed tar of " + MEMBERS + ". Every table is read in one transaction (a "
            "consistent snapshot while the system keeps running), and the audio of the sessions in it is kept "
            "even if a session is deleted during the download. JSON members are arrays of rows keyed by column "
            "name, with their ids. Not included: LLM settings, model pulls and models (this machine's set-up), "
            "and the search index (rebuilt on import).")},
        "/api/admin/import-data": {"post": operation("admin", "import_data", "Replace all data with a backup", {
            "200": response("Restored", obj({
                "message": string(example="Import successful. Data has been restored."),
                "restored": {**counts, "description": "Rows by archive member, audioFiles, queuedMessagesDropped"},
                "warnings": array(string("A step after the restore that failed, e.g. the search rebuild"))},
                required=["message"])),
            "400": _refusal(),
            "413": error("The upload is over PARLEY_BACKUP_MAX_MB"),
            "507": error("Not enough disk space to receive or unpack the backup; nothing was changed"),
            "500": error("Unexpected failure; the data is as it was unless the restore had committed")},
            request_body=multipart_body({"backupFile": string("A .tar made by GET /api/admin/export-data",
                                                              format="binary")}, ["backupFile"],
                                        file_field="backupFile",
                                        file_types="application/x-tar, application/octet-stream"),
            description="The whole archive is checked before anything changes: members must be regular files with "
            "relative paths (no '..', links, devices or FIFOs), known names, audio no larger than MAX_UPLOAD_MB, "
            "JSON no larger than PARLEY_BACKUP_MAX_JSON_MB (default 512) and parseable, rows with exactly the "
            "table's columns and types, references that resolve, and the audio of every session present with "
            "its sha256. Then every row is replaced in one transaction and the audio directory swapped in by "
            "renames; queue messages of the old data are dropped and the search index is rebuilt. Ids are "
            "kept. Transcriptions that were running when the backup was taken stay queued/processing: "
            "`parley requeue` sends them again.")},
        "/api/admin/reset-all-data": {"post": operation("admin", "reset_all_data", "Delete all data", {
            "200": response("Everything was deleted", reset_body),
            "500": response("Some steps failed; errors says which", reset_body)},
            description="Deletes every session, transcription job, transcript, chat, message, user template, "
            "analysis job and usage record, every audio file, the search index and all queued messages "
            "(asr, asr_quick, llm, io; model downloads still waiting are queued again). The system templates "
            "(system_*) are kept (missing ones re-created), as are the LLM settings and the model store.")},
    }
