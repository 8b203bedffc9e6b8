"""Backup (export/import) and reset of all data: the admin area of the sessions API, with declared shapes."""
from __future__ import annotations

import datetime
import logging

import peewee
from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from services import backup, data_reset, restore
from web.context import settings
from web.declared import Documented, Field, FormModel, SparseWireModel, WireModel, endpoint
from web.errors import ApiError, bad_request

log = logging.getLogger(__name__)

admin_bp = Blueprint("admin", __name__, url_prefix="/api/admin")

MIB = 1024 * 1024


def backup_max_mb() -> int:
    """The largest backup an import accepts (PARLEY_BACKUP_MAX_MB; MAX_UPLOAD_MB is per file)."""
    return settings().backup_max_mb


def json_max_mb() -> int:
    """The largest JSON member of a backup an import reads (PARLEY_BACKUP_MAX_JSON_MB)."""
    return settings().backup_max_json_mb


BACKUP = Documented("The backup, streamed", {"application/x-tar": {"schema": {
    "type": "string", "format": "binary", "description": "Tar archive"}}}, headers={"Content-Disposition": {
        "description": 'attachment; filename="therascript-backup-YYYY-MM-DD.tar"', "schema": {"type": "string"}}})


class Restored(WireModel):
    """What an import restored."""

    message: str = Field(json_schema_extra={"example": "Import successful. Data has been restored."})
    restored: dict[str, int] = Field(description="Rows by archive member, audioFiles, queuedMessagesDropped")
    warnings: list[str] = Field(description="Steps after the restore that failed, e.g. the search rebuild")


class Refusal(SparseWireModel):
    """An archive that was refused; nothing was changed."""

    detail: str
    error: str
    message: str = Field(description="Names the member and the reason")
    member: str | None = Field(None, description="The archive member at fault (backupFile for the archive as a "
                               "whole)")
    reason: str | None = None


class Reset(WireModel):
    """What a reset deleted."""

    message: str = Field(description="What was deleted, with counts")
    deleted: dict[str, int] = Field(description="sessions, chats, messages, templates, analysisJobs, audioFiles, "
                                    "queuedMessages, systemTemplatesRecreated")
    errors: list[str]


class BackupForm(FormModel):
    """The backup upload: its only field is the file."""


@admin_bp.get("/export-data")
@endpoint(tag="admin", responses={200: BACKUP, 500: "The snapshot could not be taken"})
def export_data():
    """Download a backup of all data

    An uncompressed tar of the members listed below. Every table is read in one transaction (a consistent
    snapshot while the system keeps running), and the audio of the sessions in it is kept even if a session is
    deleted during the download. JSON members are arrays of rows keyed by column name, with their ids. Not
    included: LLM settings, model pulls and models (this machine's set-up), and the search index (rebuilt on
    import).

    Members: manifest.json (format parley-backup, version 2, row counts, audio files; import also reads
    version 1), sessions.json, jobs.json, segments.json, job_events.json, transcript_paragraphs.json,
    chats.json, messages.json, templates.json, llm_jobs.json, usage_logs.json, analysis_jobs.json,
    intermediate_summaries.json, analysis_job_sessions.json and uploads/<audio file>.
    """
    snapshot = backup.take_snapshot(settings().audio_dir, settings().tmp_dir)
    name = f"therascript-backup-{datetime.date.today().isoformat()}.tar"
    response = Response(backup.tar_stream(snapshot), mimetype="application/x-tar", headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Content-Length": str(snapshot.tar_size)})
    response.call_on_close(snapshot.close)
    return response


@admin_bp.before_request
def _backup_size_limit():
    # A backup holds many recordings: MAX_UPLOAD_MB is per file. Set before the form is read (by the declaration).
    if request.endpoint == "admin.import_data":
        limit = backup_max_mb()
        request.max_content_length = limit * MIB
        try:
            request.files
        except RequestEntityTooLarge:
            raise ApiError(413, f"the backup is larger than the limit of {limit} MB (PARLEY_BACKUP_MAX_MB)") from None


@admin_bp.post("/import-data")
@endpoint(tag="admin", form=BackupForm, files={"backupFile": "A .tar made by GET /api/admin/export-data"},
          file_types="application/x-tar, application/octet-stream",
          responses={200: (Restored, "Restored"), 400: (Refusal, "The archive was refused; nothing was changed"),
                     413: "The upload is over PARLEY_BACKUP_MAX_MB",
                     507: "Not enough disk space to receive or unpack the backup; nothing was changed",
                     500: "Unexpected failure; the data is as it was unless the restore had committed"})
def import_data(form: BackupForm):
    """Replace all data with a backup

    The whole archive is checked before anything changes: members must be regular files with relative paths
    (no '..', links, devices or FIFOs), known names, audio no larger than MAX_UPLOAD_MB, JSON no larger than
    PARLEY_BACKUP_MAX_JSON_MB (default 512) and parseable, rows with exactly the table's columns and types,
    references that resolve, and the audio of every session present with its sha256. Then every row is
    replaced in one transaction and the audio directory swapped in by renames; queue messages of the old data
    are dropped and the search index is rebuilt. Ids are kept. Transcriptions that were running when the
    backup was taken stay queued/processing: `parley requeue` sends them again.
    """
    cfg = settings()
    part = request.files.get("backupFile")
    if part is None:
        raise bad_request("backupFile is required: the multipart field with the .tar made by "
                          "GET /api/admin/export-data")
    part.stream.flush()
    try:
        archive = restore.read_archive(part.stream.path, cfg.tmp_dir, max_audio_bytes=cfg.max_upload_mb * MIB,
                                       max_json_bytes=json_max_mb() * MIB)
    except backup.BackupError as exc:
        raise ApiError(400, f"backup refused, nothing was changed: {exc}",
                       body={"member": exc.member, "reason": exc.reason}) from None
    try:
        restored = restore.apply_restore(archive, cfg.audio_dir)
    except peewee.IntegrityError as exc:
        raise ApiError(400, f"backup refused, nothing was changed: backupFile: its rows contradict each other "
                            f"({exc})", body={"member": "backupFile", "reason": str(exc)}) from None
    finally:
        archive.discard()
    dropped, warnings = data_reset.after_restore(current_app.extensions["parley_redis"])
    if dropped is not None:
        restored["queuedMessagesDropped"] = dropped
    return Restored(message="Import successful. Data has been restored.", restored=restored, warnings=warnings)


@admin_bp.post("/reset-all-data")
@endpoint(tag="admin", responses={200: (Reset, "Everything was deleted"),
                                  500: (Reset, "Some steps failed; errors says which")})
def reset_all_data():
    """Delete all data

    Deletes every session, transcription job, transcript, chat, message, user template, analysis job and usage
    record, every audio file, the search index and all queued messages (asr, asr_quick, llm, io; model
    downloads still waiting are queued again). The system templates (system_*) are kept (missing ones
    re-created), as are the LLM settings and the model store.
    """
    counts, errors = data_reset.reset_all_data(current_app.extensions["parley_redis"], settings().audio_dir)
    said = ", ".join(f"{counts[k]} {label}" for k, label in (
        ("sessions", "sessions"), ("chats", "chats"), ("messages", "chat messages"), ("templates", "templates"),
        ("analysisJobs", "analysis jobs"), ("audioFiles", "audio files"), ("queuedMessages", "queued messages"))
        if k in counts)
    message = (f"Reset {'finished with errors' if errors else 'complete'}: deleted {said or 'nothing'}; the search "
               "index was emptied; the system templates, LLM settings and models were kept.")
    return Reset(message=message, deleted=counts, errors=errors), 500 if errors else 200
