"""Per-process log files with timestamps, secrets redacted, and an efficient tail for the process view."""
from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
import threading
import time
from pathlib import Path

from parley.config import get_settings
from parley.errors import InvalidInput

#: Process names double as log file names (`<log_dir>/<name>.log`), so they are kept to a safe alphabet.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
LOG_FORMAT = "%(asctime)s %(levelname)s [pid %(process)d] %(name)s: %(message)s"
REDACTED = "[REDACTED]"
MAX_BYTES = 10 * 1024 * 1024
BACKUP_COUNT = 5

# `Authorization: <anything up to the end of the value>` and `Bearer <token>`, wherever they appear.
_AUTH_HEADER = re.compile(r"(?i)(\bauthorization\b[\"']?\s*[:=]\s*[\"']?)([^\"'\r\n,}]+)")
_BEARER = re.compile(r"(?i)(\bbearer\s+)([A-Za-z0-9._~+/=-]+)")
# Shorter values would redact ordinary words; no real key is this short.
MIN_SECRET_CHARS = 6

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


class UnknownName(InvalidInput):
    """A process name that is not a safe log name."""


def check_name(name: str) -> str:
    """`name` if it is fit to be a process and log file name; raises UnknownName otherwise."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise UnknownName(f"{name!r} is not a valid process name (letters, digits, '_', '.', '-'; at most 64)")
    return name


def register_secret(value: str | None) -> None:
    """Never write `value` to a log of this process from now on (an API key, a password)."""
    if value and len(value) >= MIN_SECRET_CHARS:
        with _secrets_lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """`text` with bearer tokens, Authorization values and registered secrets replaced by [REDACTED]."""
    if not text:
        return text
    with _secrets_lock:
        secrets = sorted(_secrets, key=len, reverse=True)  # longest first: one secret may contain another
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + REDACTED, text)
    return _BEARER.sub(lambda m: m.group(1) + REDACTED, text)


class RedactSecrets(logging.Filter):
    """Rewrites each record so that no handler it is attached to ever sees a secret.

    The message is rendered once (msg % args) and redacted; the traceback and stack text too, so a
    formatter that renders them later finds the redacted text already cached on the record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001  (a bad format string must not lose the record)
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class SharedRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating file that several processes append to (gunicorn's workers, one name on several hosts).

    When another process has rotated the file away, this one reopens the path before writing, so no
    process keeps writing into a backup.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if self.stream is not None:
            try:
                moved = os.stat(self.baseFilename).st_ino != os.fstat(self.stream.fileno()).st_ino
            except OSError:
                moved = True
            if moved:
                self.stream.close()
                self.stream = self._open()
        super().emit(record)


def _formatter() -> logging.Formatter:
    formatter = logging.Formatter(LOG_FORMAT)
    formatter.converter = time.gmtime  # UTC, like container logs
    formatter.default_time_format = "%Y-%m-%dT%H:%M:%S"
    formatter.default_msec_format = "%s.%03dZ"
    return formatter


def log_path(log_dir: Path, name: str) -> Path:
    """The log file of process `name`: always directly inside `log_dir`, whatever `name` is."""
    path = (Path(log_dir) / f"{check_name(name)}.log").resolve()
    if path.parent != Path(log_dir).resolve():
        raise UnknownName(f"{name!r} is not a valid process name")
    return path


def configure_logging(process_name: str, *, log_dir: Path | None = None, level: str | None = None,
                      max_bytes: int = MAX_BYTES, backup_count: int = BACKUP_COUNT) -> Path:
    """Send this process's logging to stderr (as before) and to `<log_dir>/<process_name>.log`.

    log_dir: default the settings' log_dir (PARLEY_LOG_DIR, default <data_dir>/logs).
    level: default PARLEY_LOG_LEVEL, else INFO.
    max_bytes, backup_count: the file rotates at 10 MiB and keeps 5 old files by default.

    Handlers someone else installed on the root logger (dramatiq's, which feed its main process's
    stderr) stay and get the redaction filter; without any, a stderr handler is added. Calling it
    again in the same process replaces what the previous call installed. Returns the log file's path.
    """
    if log_dir is None:
        log_dir = get_settings().log_dir
    path = log_path(log_dir, process_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_parley", False)]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel((level or get_settings().log_level or "INFO").upper())
    # peewee's DEBUG lines carry every query's parameters: transcript text, chat messages, keys. Never log them.
    logging.getLogger("peewee").setLevel(max(root.level, logging.INFO))
    # numba's DEBUG output dumps the source and bytecode of every function it compiles (megabytes at a
    # worker's first diarization): noise that drowns Parley's own lines.
    logging.getLogger("numba").setLevel(max(root.level, logging.WARNING))
    redactor = RedactSecrets()
    if not root.handlers:
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setFormatter(_formatter())
        stderr._parley = True  # type: ignore[attr-defined]
        root.addHandler(stderr)
    file_handler = SharedRotatingFileHandler(path, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8")
    file_handler.setFormatter(_formatter())
    file_handler._parley = True  # type: ignore[attr-defined]
    root.addHandler(file_handler)
    for handler in root.handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(redactor)
    return path


def tail(path: Path, lines: int = 200, *, block_size: int = 64 * 1024, max_bytes: int = 8 * 1024 * 1024,
         include_rotated: bool = True) -> list[str]:
    """The last `lines` lines of the file at `path`, read backwards from its end in blocks.

    max_bytes (default 8 MiB): never read more than this, however long the lines are.
    include_rotated (default True): when the file has fewer lines (it was just rotated), the rest
    comes from the end of `<path>.1`. A missing file gives no lines.
    """
    found = _tail_one(Path(path), lines, block_size=block_size, max_bytes=max_bytes)
    if include_rotated and len(found) < lines:
        older = Path(f"{path}.1")
        if older.is_file():
            found = _tail_one(older, lines - len(found), block_size=block_size, max_bytes=max_bytes) + found
    return found


def _tail_one(path: Path, lines: int, *, block_size: int, max_bytes: int) -> list[str]:
    if lines <= 0:
        return []
    try:
        fh = open(path, "rb")
    except (FileNotFoundError, IsADirectoryError):
        return []
    with fh:
        end = fh.seek(0, os.SEEK_END)
        position, chunks, newlines = end, [], 0
        # One more newline than lines wanted: the text before it is a line cut in half.
        while position > 0 and newlines <= lines and end - position < max_bytes:
            size = min(block_size, position, max_bytes - (end - position))
            position -= size
            fh.seek(position)
            chunk = fh.read(size)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    text = data.decode("utf-8", errors="replace").splitlines()
    if position > 0 and text:
        text = text[1:]  # the first line is (probably) partial
    return text[-lines:]
