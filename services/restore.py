"""Restoring a backup (services.backup's format): the whole archive is read and checked first, then swapped in.

Nothing already stored changes until every member has passed: unsafe members (absolute paths, `..`, links,
devices), unknown or oversized members, broken JSON, rows of the wrong shape, dangling references and missing
audio are refused with a BackupError naming the member. Rows and audio are then replaced in one transaction.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import uuid
from pathlib import Path

import peewee

from models import db
from models.tables import JSONField

from services.backup import (ANALYSIS_JOB_SESSIONS, CHUNK, DEFAULT_MAX_JSON_BYTES, FORMAT, INSERT_BATCH,
                             JSON_MEMBERS, MANIFEST, OPTIONAL_MEMBERS, SAFE_FILE_NAME, TABLES, UPLOADS, VERSION,
                             BackupError, Table, _fields, is_postgres, write_transaction)

log = logging.getLogger(__name__)


# --- import: reading and checking the archive ---------------------------------------------------------
@dataclasses.dataclass
class Restore:
    """A checked archive: its rows and its audio files staged beside the audio directory."""

    rows: dict[str, list[dict]]  # table member -> rows keyed by column name
    staging: Path  # holds `audio/`, ready to be renamed into place

    @property
    def audio(self) -> Path:
        return self.staging / "audio"

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def read_archive(path: Path, work_dir: Path, *, max_audio_bytes: int,
                 max_json_bytes: int = DEFAULT_MAX_JSON_BYTES) -> Restore:
    """Check the whole archive at `path` and stage its audio under `work_dir`; BackupError on the first fault.

    work_dir must be on the audio directory's file system, so the staged files can be renamed into place.
    Nothing outside the new staging folder is written.
    """
    staging = Path(tempfile.mkdtemp(prefix="restore-", dir=work_dir))
    (staging / "audio").mkdir()
    try:
        parsed, audio = _read_members(path, staging / "audio", max_audio_bytes=max_audio_bytes,
                                      max_json_bytes=max_json_bytes)
        for member in OPTIONAL_MEMBERS:
            parsed.setdefault(member, [])
        missing = [m for m in JSON_MEMBERS if m not in parsed]
        if missing:
            raise BackupError(missing[0], "the archive lacks this member (is it a Parley backup?)")
        _check_manifest(parsed[MANIFEST], parsed)
        if parsed[MANIFEST]["version"] == 1:
            _upgrade_version_1(parsed)
        rows = {t.member: _check_rows(t, parsed[t.member]) for t in TABLES}
        _check_references(rows)
        _check_analysis_job_sessions(parsed[ANALYSIS_JOB_SESSIONS], rows)
        _check_audio(rows, audio)
        return Restore(rows, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _member_name(info: tarfile.TarInfo) -> str:
    name = info.name
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise BackupError(name, "absolute path; members must be relative")
    if ".." in re.split(r"[/\\]", name):
        raise BackupError(name, "path with '..'; members must stay inside the archive")
    while name.startswith("./"):
        name = name[2:]
    kind = ("symbolic link" if info.issym() else "hard link" if info.islnk() else "character device"
            if info.ischr() else "block device" if info.isblk() else "FIFO" if info.isfifo() else None)
    if kind:
        raise BackupError(name, f"{kind}; only regular files are allowed")
    if not (info.isreg() or info.isdir()):
        raise BackupError(name, f"unsupported member type {info.type!r}; only regular files are allowed")
    return name.rstrip("/") if info.isdir() else name


def _read_members(path: Path, audio_dir: Path, *, max_audio_bytes: int,
                  max_json_bytes: int) -> tuple[dict[str, object], dict[str, str]]:
    """Parse the JSON members and copy the audio out; returns (JSON by member, sha256 by audio file name)."""
    parsed: dict[str, object] = {}
    audio: dict[str, str] = {}
    seen: set[str] = set()
    try:
        tar = tarfile.open(path, mode="r:")
    except (tarfile.TarError, EOFError) as exc:
        raise BackupError("backupFile", f"not a tar archive ({exc})") from None
    with tar:
        try:
            for info in tar:
                name = _member_name(info)
                if info.isdir():
                    if name not in ("", ".", "uploads"):
                        raise BackupError(name, "unknown folder; the archive holds only the table files and uploads/")
                    continue
                if name in seen:
                    raise BackupError(name, "appears twice in the archive")
                seen.add(name)
                if name in JSON_MEMBERS:
                    if info.size > max_json_bytes:
                        raise BackupError(name, f"{info.size} bytes is over the limit of {max_json_bytes} bytes "
                                                "for a JSON member")
                    data = tar.extractfile(info).read()
                    try:
                        parsed[name] = json.loads(data.decode("utf-8"))
                    except (UnicodeDecodeError, ValueError) as exc:
                        raise BackupError(name, f"not valid JSON ({exc})") from None
                elif name.startswith(UPLOADS):
                    file_name = name[len(UPLOADS):]
                    if not SAFE_FILE_NAME.fullmatch(file_name):
                        raise BackupError(name, "not a valid audio file name (letters, digits, '.', '_' and '-' only)")
                    if info.size > max_audio_bytes:
                        raise BackupError(name, f"{info.size} bytes is over the upload limit of {max_audio_bytes} "
                                                "bytes (MAX_UPLOAD_MB)")
                    audio[file_name] = _copy_out(tar.extractfile(info), audio_dir / file_name)
                else:
                    raise BackupError(name, f"unknown member; expected {', '.join(JSON_MEMBERS)} and uploads/<file>")
        except (tarfile.TarError, EOFError) as exc:
            raise BackupError("backupFile", f"the tar archive is damaged or cut short ({exc})") from None
    return parsed, audio


def _copy_out(source, target: Path) -> str:
    digest = hashlib.sha256()
    with open(target, "xb") as out:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _check_manifest(manifest, parsed: dict[str, object]) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(MANIFEST, f"not a Parley backup manifest (format must be {FORMAT!r})")
    if manifest.get("version") not in READS:
        raise BackupError(MANIFEST, f"backup format version {manifest.get('version')!r}; this server reads "
                                    f"{', '.join(map(str, READS))}")
    counts = manifest.get("counts")
    if not isinstance(counts, dict):
        raise BackupError(MANIFEST, "counts must be an object of row counts by member")
    for member, value in counts.items():
        have = parsed.get(member)
        if member not in JSON_MEMBERS or not isinstance(have, list) or value != len(have):
            raise BackupError(member, f"the manifest counts {value!r} rows, the archive has "
                                      f"{len(have) if isinstance(have, list) else 'none'} (the archive is incomplete)")


#: The backup format versions this server restores: version 1 is what Parley wrote before migration 0011.
READS = (1, VERSION)

#: Columns version 1 held as float epoch seconds, which are epoch milliseconds named `<column>_ms` since.
VERSION_1_SECONDS = {"sessions.json": ("created_at",), "jobs.json": ("created_at", "updated_at", "started_at",
                                                                     "finished_at"),
                     "job_events.json": ("created_at",), "llm_jobs.json": ("created_at", "updated_at", "finished_at")}


def _upgrade_version_1(parsed: dict[str, object]) -> None:
    """Rewrite a version 1 archive's timestamps in place as version 2 stores them.

    Anything that is not a number is moved unchanged, for the row checks to refuse under its new name.
    """
    for member, columns in VERSION_1_SECONDS.items():
        rows = parsed.get(member)
        for row in rows if isinstance(rows, list) else []:
            for column in columns if isinstance(row, dict) else ():
                if column in row:
                    value = row.pop(column)
                    number = isinstance(value, (int, float)) and not isinstance(value, bool)
                    row[f"{column}_ms"] = round(value * 1000) if number else value


def _type_ok(field: peewee.Field, value) -> bool:
    if value is None:
        return field.null
    if isinstance(field, JSONField):
        return True
    if isinstance(field, peewee.ForeignKeyField):
        return _type_ok(field.rel_field, value)
    if isinstance(field, peewee.BooleanField):
        return isinstance(value, bool)
    if isinstance(field, (peewee.IntegerField, peewee.AutoField)):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(field, peewee.FloatField):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)


def _expected_type(field: peewee.Field) -> str:
    kind = ("any JSON" if isinstance(field, JSONField) else "true/false" if isinstance(field, peewee.BooleanField)
            else "a number" if isinstance(field, peewee.FloatField)
            else "an integer" if isinstance(field, (peewee.IntegerField, peewee.AutoField, peewee.ForeignKeyField))
            else "a string")
    return kind + (" or null" if field.null else "")


def _check_rows(table: Table, rows) -> list[dict]:
    if not isinstance(rows, list):
        raise BackupError(table.member, "must be a JSON array of rows")
    fields = {f.column_name: f for f in _fields(table.model)}
    pk = table.model._meta.primary_key.column_name
    seen = set()
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BackupError(table.member, f"row {i} is not an object")
        missing = [c for c in fields if c not in row]
        unknown = [str(c) for c in row if c not in fields]
        if missing or unknown:
            said = [f"lacks column(s) {', '.join(missing)}" if missing else "",
                    f"has unknown column(s) {', '.join(unknown)}" if unknown else ""]
            raise BackupError(table.member, f"row {i} " + " and ".join(filter(None, said)))
        for column, field in fields.items():
            if not _type_ok(field, row[column]) or (column == pk and row[column] is None):
                raise BackupError(table.member, f"row {i}: {column} must be {_expected_type(field)}, "
                                                f"got {json.dumps(row[column])[:80]}")
        if row[pk] in seen:
            raise BackupError(table.member, f"row {i}: {pk} {row[pk]!r} appears twice")
        seen.add(row[pk])
    return rows


def _check_references(rows: dict[str, list[dict]]) -> None:
    ids = {t.model: {r[t.model._meta.primary_key.column_name] for r in rows[t.member]} for t in TABLES}
    for t in TABLES:
        for field in _fields(t.model):
            if not isinstance(field, peewee.ForeignKeyField):
                continue
            parent = next(p for p in TABLES if p.model is field.rel_model)
            for i, row in enumerate(rows[t.member]):
                value = row[field.column_name]
                if value is not None and value not in ids[field.rel_model]:
                    raise BackupError(t.member, f"row {i}: {field.column_name} {value!r} is not in {parent.member}")


def _check_analysis_job_sessions(pairs, rows: dict[str, list[dict]]) -> None:
    covered = {(s["analysis_job_id"], s["session_id"]) for s in rows["intermediate_summaries.json"]}
    if not isinstance(pairs, list):
        raise BackupError(ANALYSIS_JOB_SESSIONS, "must be a JSON array")
    for i, pair in enumerate(pairs):
        if not isinstance(pair, dict) or set(pair) != {"analysis_job_id", "session_id"}:
            raise BackupError(ANALYSIS_JOB_SESSIONS, f"row {i} must have exactly analysis_job_id and session_id")
        if (pair["analysis_job_id"], pair["session_id"]) not in covered:
            raise BackupError(ANALYSIS_JOB_SESSIONS, f"row {i} names a pair without an intermediate summary")


def _check_audio(rows: dict[str, list[dict]], audio: dict[str, str]) -> None:
    referenced = set()
    for member, what in (("sessions.json", "session"), ("jobs.json", "job")):
        for i, row in enumerate(rows[member]):
            name = row["audio_path"]
            if name is None:
                continue
            if not SAFE_FILE_NAME.fullmatch(name):
                raise BackupError(member, f"row {i}: audio_path {name!r} is not a plain file name")
            referenced.add(name)
            if what == "job":
                continue  # a job's clip is removed once the job ran: its file may rightly be gone
            if name not in audio:
                raise BackupError(member, f"session {row['id']} has audio {name!r}, but the archive lacks "
                                          f"{UPLOADS}{name}")
            if row["audio_sha256"] and row["audio_sha256"] != audio[name]:
                raise BackupError(UPLOADS + name, f"its sha256 differs from session {row['id']}'s audio_sha256 "
                                                  "(the file is damaged)")
    stray = sorted(set(audio) - referenced)
    if stray:
        raise BackupError(UPLOADS + stray[0], "no session or job refers to this file")


# --- import: replacing the data -----------------------------------------------------------------------
def apply_restore(restore: Restore, audio_dir: Path) -> dict[str, int]:
    """Replace every row and the audio directory with the archive's; all or nothing. Returns rows by member.

    The rows change in one transaction; the audio directory is swapped by two renames just before it
    commits, and swapped back if the commit fails.
    """
    old: Path | None = None
    try:
        with write_transaction():
            for table in reversed(TABLES):
                table.model.delete().execute()
            for table in TABLES:
                _insert(table, restore.rows[table.member])
            if is_postgres():
                _reset_sequences()
            old = _swap_in(restore.audio, audio_dir)
    except BaseException:
        if old is not None:
            _swap_back(old, audio_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return {t.member: len(restore.rows[t.member]) for t in TABLES} | {"audioFiles": len(os.listdir(audio_dir))}


def _insert(table: Table, rows: list[dict]) -> None:
    fields = {f.column_name: f for f in _fields(table.model)}
    for start in range(0, len(rows), INSERT_BATCH):
        batch = [{fields[c]: v for c, v in row.items()} for row in rows[start:start + INSERT_BATCH]]
        table.model.insert_many(batch).execute()


def _reset_sequences() -> None:
    # Rows came with their ids; the next id a sequence hands out must come after them.
    for table in TABLES:
        pk = table.model._meta.primary_key
        if isinstance(pk, peewee.AutoField):
            name = table.model._meta.table_name
            db.execute_sql(f"SELECT setval(pg_get_serial_sequence('\"{name}\"', '{pk.column_name}'), "
                           f"COALESCE((SELECT MAX(\"{pk.column_name}\") FROM \"{name}\"), 0) + 1, false)")


def _swap_in(new: Path, audio_dir: Path) -> Path:
    old = audio_dir.with_name(f"{audio_dir.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(audio_dir, old)
    try:
        os.rename(new, audio_dir)
    except BaseException:
        os.rename(old, audio_dir)
        raise
    return old


def _swap_back(old: Path, audio_dir: Path) -> None:
    shutil.rmtree(audio_dir, ignore_errors=True)
    os.rename(old, audio_dir)
