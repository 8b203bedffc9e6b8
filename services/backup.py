"""Backups of all Parley data as one tar: the format, a consistent snapshot to stream, and a reset (restore: services.restore).

The archive (format `parley-backup`, version 2) holds one JSON member per table, an array of rows keyed
by column name (JSON columns as JSON, ids kept), the audio files as `uploads/<file name in the audio
directory>`, `analysis_job_sessions.json` (which sessions each analysis job covers, derived from the
intermediate summaries) and `manifest.json` (format, version, row counts, audio files). Known voices are data
too: the voice profiles, their voiceprints and each session's speakers' voiceprints (biometric data: an archive
must be kept as safely as the recordings it holds).

Not in a backup: the LLM settings and model pulls (they describe this machine's model store, and the
settings hold the remote server's token) and the search index (rebuilt from the rows on restore).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import peewee

from models import (AnalysisJob, AnalysisSummary, Chat, Job, JobEvent, LlmJob, Message, Paragraph, Segment, Session,
                    SessionVoice, Template, UsageLog, VoiceProfile, VoiceSample, db)
from parley.errors import InvalidInput
from parley.timestamps import now_ms

log = logging.getLogger(__name__)

FORMAT = "parley-backup"
VERSION = 2  # 2: timestamps in epoch milliseconds (`*_ms` columns); 1 had float seconds
MANIFEST = "manifest.json"
ANALYSIS_JOB_SESSIONS = "analysis_job_sessions.json"
UPLOADS = "uploads/"
DEFAULT_MAX_JSON_BYTES = 512 * 1024 * 1024  # per JSON member; PARLEY_BACKUP_MAX_JSON_MB in the web tier
BLOCK = tarfile.BLOCKSIZE
CHUNK = 1024 * 1024
INSERT_BATCH = 500
#: A name the audio directory may hold: what web.uploads.claim generates, and nothing that could be a path.
SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


@dataclasses.dataclass(frozen=True)
class Table:
    member: str  # its file in the archive
    model: type[peewee.Model]


#: Parents before children: the order rows are inserted in (and deleted in reverse).
TABLES = (
    Table("sessions.json", Session), Table("jobs.json", Job), Table("segments.json", Segment),
    Table("job_events.json", JobEvent), Table("transcript_paragraphs.json", Paragraph), Table("chats.json", Chat),
    Table("messages.json", Message), Table("templates.json", Template), Table("llm_jobs.json", LlmJob),
    Table("usage_logs.json", UsageLog), Table("analysis_jobs.json", AnalysisJob),
    Table("intermediate_summaries.json", AnalysisSummary), Table("voice_profiles.json", VoiceProfile),
    Table("voice_samples.json", VoiceSample), Table("session_voices.json", SessionVoice),
)
JSON_MEMBERS = [t.member for t in TABLES] + [ANALYSIS_JOB_SESSIONS, MANIFEST]
#: Members an archive made before known voices lacks: restored as empty tables.
OPTIONAL_MEMBERS = ("voice_profiles.json", "voice_samples.json", "session_voices.json")


class BackupError(InvalidInput):
    """The archive cannot be restored: `member` names the part at fault, `reason` says why."""

    def __init__(self, member: str, reason: str):
        super().__init__(f"{member}: {reason}")
        self.member = member
        self.reason = reason


def _fields(model: type[peewee.Model]) -> list[peewee.Field]:
    return list(model._meta.sorted_fields)


def is_postgres() -> bool:
    return isinstance(db.obj, peewee.PostgresqlDatabase)


# --- export -----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Snapshot:
    """The archive's members as private files (audio hard-linked), fixed at one moment of the database."""

    directory: Path
    members: list[tuple[str, Path]]  # (name in the archive, file)
    counts: dict[str, int]

    @property
    def tar_size(self) -> int:
        size = sum(len(_header(name, path.stat().st_size)) + _padded(path.stat().st_size)
                   for name, path in self.members)
        return _padded(size + 2 * BLOCK, tarfile.RECORDSIZE)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


@contextmanager
def read_snapshot():
    """One read transaction: every query inside sees the database as it was at the first one."""
    if is_postgres():
        with db.atomic(isolation_level="REPEATABLE READ"):
            db.execute_sql("SET TRANSACTION READ ONLY")
            yield
    else:
        with db.atomic():  # a deferred BEGIN: in WAL mode the snapshot is fixed by the first read
            yield


def take_snapshot(audio_dir: Path, work_dir: Path, *, attempts: int = 3) -> Snapshot:
    """Copy every table and hard-link every audio file the rows name into a new folder under `work_dir`.

    work_dir must be on the audio directory's file system (hard links; elsewhere files are copied). Audio
    is linked before the read transaction starts, so a session deleted meanwhile keeps its file here; a
    file that appeared and vanished around the snapshot makes it start over, up to `attempts` times; after
    that a session whose file is gone is exported without audio, as if its audio had been deleted.
    """
    directory = Path(tempfile.mkdtemp(prefix="export-", dir=work_dir))
    try:
        for attempt in range(1, attempts + 1):
            uploads = directory / "uploads"
            shutil.rmtree(uploads, ignore_errors=True)
            uploads.mkdir()
            linked = {name for name in _list_audio(audio_dir) if _link(audio_dir / name, uploads / name)}
            with read_snapshot():
                session_audio = {sid: name for sid, name in Session.select(Session.id, Session.audio_path)
                                 .where(Session.audio_path.is_null(False)).tuples()}
                job_audio = {name for (name,) in Job.select(Job.audio_path)
                             .where(Job.audio_path.is_null(False)).tuples()}
                for name in (set(session_audio.values()) | job_audio) - linked:
                    if SAFE_FILE_NAME.fullmatch(name) and _link(audio_dir / name, uploads / name):
                        linked.add(name)
                lost = {sid: name for sid, name in session_audio.items() if name not in linked}
                if lost and attempt < attempts:
                    continue
                for sid, name in lost.items():
                    log.warning("export: the audio file %s of session %s is gone; exported without audio", name, sid)
                counts = {t.member: _dump_table(t, directory / t.member, no_audio=set(lost)) for t in TABLES}
                pairs = [{"analysis_job_id": j, "session_id": s} for j, s in AnalysisSummary.select(
                    AnalysisSummary.analysis_job, AnalysisSummary.session).distinct()
                    .order_by(AnalysisSummary.analysis_job, AnalysisSummary.session).tuples()]
            break
        _write_json(directory / ANALYSIS_JOB_SESSIONS, pairs)
        counts[ANALYSIS_JOB_SESSIONS] = len(pairs)
        wanted = (set(session_audio.values()) - set(lost.values())) | job_audio
        audio = []
        for path in sorted(uploads.iterdir()):
            if path.name in wanted:
                audio.append(path)
            else:
                path.unlink()  # a stray file (a partial upload, an orphan) is not part of the data
        _write_json(directory / MANIFEST, {
            "format": FORMAT, "version": VERSION, "createdAt": now_ms(), "counts": counts,
            "audio": [{"name": p.name, "bytes": p.stat().st_size} for p in audio]})
        members = [(MANIFEST, directory / MANIFEST)] + [(m, directory / m) for m in JSON_MEMBERS if m != MANIFEST]
        members += [(UPLOADS + p.name, p) for p in audio]
        return Snapshot(directory, members, counts)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _list_audio(audio_dir: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(audio_dir) if e.is_file(follow_symlinks=False)
                and SAFE_FILE_NAME.fullmatch(e.name)]
    except FileNotFoundError:
        return []


def _link(source: Path, target: Path) -> bool:
    """Hard-link (or copy, across file systems) source to target; False when the source is gone."""
    try:
        os.link(source, target)
    except FileNotFoundError:
        return False
    except FileExistsError:
        return True
    except OSError:
        try:
            shutil.copyfile(source, target)
        except FileNotFoundError:
            return False
    return True


def _dump_table(table: Table, path: Path, *, no_audio: set[int]) -> int:
    """Write the table as a JSON array, row by row (never the whole table in memory); returns the count."""
    fields = _fields(table.model)
    names = [f.column_name for f in fields]
    count = 0
    with open(path, "w", encoding="utf-8") as out:
        out.write("[")
        query = table.model.select(*fields).order_by(table.model._meta.primary_key).tuples()
        for values in query.iterator():
            row = dict(zip(names, values))
            if table.model is Session and row["id"] in no_audio:
                row["audio_path"] = None
            out.write(("\n" if count == 0 else ",\n") + json.dumps(row, ensure_ascii=False, separators=(",", ":")))
            count += 1
        out.write("\n]\n")
    return count


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def _padded(size: int, unit: int = BLOCK) -> int:
    return -(-size // unit) * unit


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = int(time.time())
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def tar_stream(snapshot: Snapshot, *, chunk_size: int = CHUNK) -> Iterator[bytes]:
    """The snapshot as an uncompressed tar, chunk by chunk: at most one chunk of a file in memory."""
    written = 0
    for name, path in snapshot.members:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            header = _header(name, size)
            yield header
            left = size
            while left:
                chunk = fh.read(min(chunk_size, left))
                if not chunk:
                    raise OSError(f"{name} shrank while it was being exported")
                left -= len(chunk)
                yield chunk
            pad = _padded(size) - size
            if pad:
                yield b"\0" * pad
            written += len(header) + size + pad
    yield b"\0" * (_padded(written + 2 * BLOCK, tarfile.RECORDSIZE) - written)


@contextmanager
def write_transaction():
    # SQLite: take the write lock at BEGIN, so a busy worker makes us wait rather than fail half-way.
    with (db.atomic() if is_postgres() else db.atomic("IMMEDIATE")):
        yield


# --- reset --------------------------------------------------------------------------------------------
def wipe_rows() -> dict[str, int]:
    """Delete every data row in one transaction, keeping the system templates; returns rows deleted by member."""
    from services.templates import SYSTEM_PREFIX

    deleted = {}
    with write_transaction():
        for table in reversed(TABLES):
            query = table.model.delete()
            if table.model is Template:
                user = [t.id for t in Template.select(Template.id, Template.title)
                        if not t.title.startswith(SYSTEM_PREFIX)]
                query = query.where(Template.id.in_(user))
            deleted[table.member] = query.execute()
    return deleted


def wipe_audio(audio_dir: Path) -> int:
    """Empty the audio directory (renamed away first, so no half-empty directory is ever visible)."""
    count = len(_list_dir(audio_dir))
    trash = audio_dir.with_name(f"{audio_dir.name}.reset-{uuid.uuid4().hex[:8]}")
    os.rename(audio_dir, trash)
    audio_dir.mkdir()
    shutil.rmtree(trash)
    return count


def _list_dir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []
