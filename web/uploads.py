"""Uploads stream straight to a temporary file in the data directory, hashed as the bytes arrive."""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import uuid
from pathlib import Path

from flask import Request, current_app, g
from werkzeug.datastructures import FileStorage

from services.transcriptions import StoredAudio
from web.errors import disk_full, is_disk_full


class HashingFile:
    """A write-through temporary file that keeps the sha256 and size of what was written."""

    def __init__(self, directory: Path):
        with _disk_full_is_507():
            fd, path = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=directory)
        self.path = Path(path)
        self._file = os.fdopen(fd, "w+b")
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        with _disk_full_is_507():
            return self._file.write(data)

    def flush(self) -> None:
        with _disk_full_is_507():  # buffered bytes reach the disk here, so the disk may turn out full here
            self._file.flush()

    def __getattr__(self, name):  # read/seek/flush/close for Werkzeug and FileStorage
        return getattr(self._file, name)


class StreamingRequest(Request):
    """Werkzeug hands every file part to `_get_file_stream`; ours writes it to disk, never to memory."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        stream = HashingFile(current_app.config["PARLEY_SETTINGS"].tmp_dir)
        g.setdefault("upload_files", []).append(stream)
        return stream


@contextlib.contextmanager
def _disk_full_is_507():
    # A full disk (or quota) mid-upload is the server's condition, not the client's mistake: 507, and
    # the teardown below removes the partial file.
    try:
        yield
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(exc) from None
        raise


def discard_unclaimed_uploads(exc=None) -> None:
    """Teardown: temporary files no handler claimed (a rejected or failed request) are removed."""
    for stream in g.pop("upload_files", []):
        try:
            stream.close()
        except OSError:
            pass
        stream.path.unlink(missing_ok=True)




_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


def safe_display_name(name: str | None, fallback: str) -> str:
    base = Path((name or "").replace("\\", "/")).name
    base = _UNSAFE.sub("_", base).strip(" .")[:200]
    return base or fallback


def claim(part: FileStorage, directory: Path) -> StoredAudio:
    """Move the uploaded part to `directory` under a generated name (a rename: same file system)."""
    stream = part.stream
    if not isinstance(stream, HashingFile):
        raise TypeError("upload was not received by StreamingRequest")
    stream.flush()
    with _disk_full_is_507():
        os.fsync(stream.fileno())
        stream.close()
    original = safe_display_name(part.filename, "upload")
    suffix = Path(original).suffix.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,8}", suffix):
        suffix = ".bin"
    stored_name = f"{uuid.uuid4().hex}{suffix}"
    final = directory / stored_name
    os.replace(stream.path, final)
    g.upload_files.remove(stream)
    return StoredAudio(final, stored_name, original, stream.sha256.hexdigest(), stream.size)
