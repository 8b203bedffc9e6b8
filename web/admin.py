"""Backup (export/import) and reset of all data: the admin area of the sessions API."""
from __future__ import annotations

import datetime
import logging

import peewee
from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from services import backup, data_reset, restore
from web.context import settings
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


@admin_bp.get("/export-data")
def export_data():
    snapshot = backup.take_snapshot(settings().audio_dir, settings().tmp_dir)
    name = f"therascript-backup-{datetime.date.today().isoformat()}.tar"
    response = Response(backup.tar_stream(snapshot), mimetype="application/x-tar", headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Content-Length": str(snapshot.tar_size)})
    response.call_on_close(snapshot.close)
    return response


@admin_bp.post("/import-data")
def import_data():
    cfg = settings()
    limit = backup_max_mb()
    request.max_content_length = limit * MIB  # a backup holds many recordings: MAX_UPLOAD_MB is per file
    try:
        part = request.files.get("backupFile")
    except RequestEntityTooLarge:
        raise ApiError(413, f"the backup is larger than the limit of {limit} MB (PARLEY_BACKUP_MAX_MB)") from None
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
    return jsonify(message="Import successful. Data has been restored.", restored=restored, warnings=warnings)


@admin_bp.post("/reset-all-data")
def reset_all_data():
    """Delete every session, transcript, chat, template, analysis and recording; keep system templates and LLM setup."""
    counts, errors = data_reset.reset_all_data(current_app.extensions["parley_redis"], settings().audio_dir)
    said = ", ".join(f"{counts[k]} {label}" for k, label in (
        ("sessions", "sessions"), ("chats", "chats"), ("messages", "chat messages"), ("templates", "templates"),
        ("analysisJobs", "analysis jobs"), ("audioFiles", "audio files"), ("queuedMessages", "queued messages"))
        if k in counts)
    message = (f"Reset {'finished with errors' if errors else 'complete'}: deleted {said or 'nothing'}; the search "
               "index was emptied; the system templates, LLM settings and models were kept.")
    return jsonify(message=message, deleted=counts, errors=errors), 500 if errors else 200
