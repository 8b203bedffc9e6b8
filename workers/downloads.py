"""Fetches a model file over HTTP(S) into the store: resumable, cancellable, verified before it appears.

`download()` streams into `<dest>.part` next to the destination and renames it into place only after
the bytes are proven to be a GGUF file (and the expected sha256, when one is given), so a half-written
or wrong file is never listed as a model. A broken connection leaves the `.part` behind on purpose: the
next call continues it with a `Range` request instead of starting over.

What a user typed is read by services.model_sources.resolve_source(), in the web tier and here alike.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from parley.config import get_settings
from parley.errors import Canceled, ParleyError
from services.llmstore import GGUF_MAGIC, is_gguf
from services.model_sources import hf_endpoint

PROGRESS_INTERVAL_S = 0.25  # on_progress is called at most this often (plus once at the end)

_CONTENT_RANGE = re.compile(r"^bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)$")


class DownloadError(ParleyError):
    """The download did not finish: a network error or an HTTP error status. A `.part` may remain to resume.

    `retryable` is False where trying again cannot help (the server said the file is not there or not
    for us), so callers do not wait through retries for nothing.
    """

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class DownloadCanceled(DownloadError, Canceled):
    """`should_cancel` answered True; the `.part` is deleted."""


class VerificationFailed(DownloadError):
    """All bytes arrived but they are not the model asked for (not GGUF, wrong sha256); the `.part` is deleted."""


def hub_auth(url: str) -> dict | None:
    """HF_TOKEN as a bearer token, for gated repositories; sent only to the hub itself.

    requests drops the header when the hub redirects to its CDN on another host.
    """
    token = get_settings().hf_token.strip()
    if token and urlsplit(url).hostname == urlsplit(hf_endpoint()).hostname:
        return {"Authorization": f"Bearer {token}"}
    return None


_SHA256 = re.compile(r'^(?:W/)?"?([0-9a-fA-F]{64})"?$')


def hub_sha256(url: str, *, timeout_s: float = 30) -> str | None:
    """The sha256 the hub reports for a large (LFS) file: its `X-Linked-Etag`, read from the answer to a
    HEAD request before the redirect to the CDN. None when the server gives none (not the hub, a small file).

    Raises DownloadError when the server cannot be reached.
    """
    import requests

    try:
        response = requests.head(url, headers=hub_auth(url) or {}, allow_redirects=False, timeout=timeout_s)
    except requests.RequestException as exc:
        raise DownloadError(f"could not connect to {_host(url)}: {_reason(exc)}") from exc
    if response.status_code >= 400:
        raise DownloadError(f"{_host(url)} answered HTTP {response.status_code} {response.reason or ''}".rstrip(),
                            retryable=response.status_code >= 500)
    match = _SHA256.match(response.headers.get("X-Linked-Etag", "").strip())
    return match.group(1).lower() if match else None


def part_path(dest: Path) -> Path:
    return dest.with_suffix(dest.suffix + ".part")


@dataclasses.dataclass
class _ProgressGate:
    """Calls on_progress at most every `interval_s`, so a fast download does not flood the caller's database."""

    callback: Callable[[int, int | None], None] | None
    interval_s: float = PROGRESS_INTERVAL_S
    last_at: float = 0.0

    def __call__(self, completed: int, total: int | None, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.callback and (force or now - self.last_at >= self.interval_s):
            self.last_at = now
            self.callback(completed, total)


def download(url: str, dest: Path, *, expected_sha256: str | None = None, headers: dict | None = None,
             on_progress: Callable[[int, int | None], None] | None = None,
             should_cancel: Callable[[], bool] | None = None, on_verifying: Callable[[], None] | None = None,
             chunk_bytes: int = 1 << 20, timeout_s: float = 30) -> Path:
    """Download `url` to `dest` and return `dest`.

    expected_sha256: hex digest the file must have (default None: not checked).
    headers: extra request headers, e.g. Authorization (default None).
    on_progress(completed_bytes, total_bytes or None): at most every 0.25 s and once at the end (default None).
    should_cancel(): asked between chunks; True stops with DownloadCanceled (default None: never).
    on_verifying(): called once all bytes are there, before they are checked; it may raise
        DownloadCanceled to stop even then (default None).
    chunk_bytes: bytes read per step (default 1 MiB); a read blocks until it has them, so a caller that
        wants prompt cancellation on a slow link passes less.
    timeout_s: connect timeout and the longest silence between bytes (default 30).

    Raises DownloadCanceled, VerificationFailed (both delete the `.part`) or DownloadError (keeps it).
    """
    import requests  # here, not at the top: the web tier imports this module for resolve_source() only

    part = part_path(dest)
    gate = _ProgressGate(on_progress)
    restarted = False
    while True:
        have = part.stat().st_size if part.exists() else 0
        # identity: the byte offsets of a Range request must be the file's, not a compressed stream's.
        request_headers = {**(headers or {}), "Accept-Encoding": "identity"}
        if have:
            request_headers["Range"] = f"bytes={have}-"
        try:
            response = requests.get(url, headers=request_headers, stream=True, timeout=timeout_s)
        except requests.RequestException as exc:
            raise DownloadError(f"could not connect to {_host(url)}: {_reason(exc)}") from exc
        with response:
            if have and response.status_code == 416:
                total = _content_range(response.headers.get("Content-Range"))[2]
                if total == have:
                    # The part is already complete: a crash hit between the last byte and the rename.
                    hasher = _hash_existing(part) if expected_sha256 else None
                    break
                if restarted:
                    raise DownloadError(f"{_host(url)} refused the byte range {have}- twice")
                part.unlink(missing_ok=True)  # longer than the file: it is not the same file, start over
                restarted = True
                continue
            if response.status_code not in (200, 206):
                # 4xx (but timeouts and rate limits) will answer the same next time; 5xx may pass.
                code = response.status_code
                raise DownloadError(f"{_host(url)} answered HTTP {code} {response.reason or ''}".rstrip(),
                                    retryable=not (400 <= code < 500) or code in (408, 425, 429))
            if response.status_code == 206 and have:
                start, _, total = _content_range(response.headers.get("Content-Range"))
                if start != have:
                    raise DownloadError(f"{_host(url)} sent bytes from {start} when {have} were asked for")
            else:
                # 200 to a Range request: the server cannot resume (or the file changed); start over.
                have = 0
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
            # Hash as the bytes arrive; a resumed download first hashes what the earlier attempts wrote.
            hasher = (_hash_existing(part) if have else hashlib.sha256()) if expected_sha256 else None
            _receive(response, part, have=have, total=total, hasher=hasher, gate=gate,
                     should_cancel=should_cancel, chunk_bytes=chunk_bytes, url=url)
        break

    completed = part.stat().st_size
    gate(completed, total if total is not None else completed, force=True)
    if should_cancel and should_cancel():
        part.unlink(missing_ok=True)
        raise DownloadCanceled("the download was canceled")
    if on_verifying:
        try:
            on_verifying()
        except DownloadCanceled:
            part.unlink(missing_ok=True)
            raise
    _verify(part, dest, expected_sha256, hasher)
    os.replace(part, dest)  # same directory, so atomic: the store never shows a partial file
    return dest


def _receive(response, part: Path, *, have: int, total: int | None, hasher, gate: _ProgressGate,
             should_cancel: Callable[[], bool] | None, chunk_bytes: int, url: str) -> None:
    import requests

    completed = have
    head = _read_head(part, len(GGUF_MAGIC)) if have else b""
    with open(part, "ab" if have else "wb") as fh:
        try:
            for chunk in response.iter_content(chunk_size=chunk_bytes):
                if should_cancel and should_cancel():
                    fh.close()
                    part.unlink(missing_ok=True)
                    raise DownloadCanceled("the download was canceled")
                if not chunk:
                    continue
                if len(head) < len(GGUF_MAGIC):
                    # Fail fast on an error page or a wrong file instead of downloading all of it first.
                    head += chunk[: len(GGUF_MAGIC) - len(head)]
                    if len(head) == len(GGUF_MAGIC) and head != GGUF_MAGIC:
                        fh.close()
                        part.unlink(missing_ok=True)
                        raise VerificationFailed(_not_gguf_message(head))
                fh.write(chunk)
                if hasher is not None:
                    hasher.update(chunk)
                completed += len(chunk)
                gate(completed, total)
        except requests.RequestException as exc:
            raise DownloadError(f"the connection to {_host(url)} broke after {completed} bytes: {_reason(exc)}") \
                from exc
        finally:
            if not fh.closed:
                fh.flush()
                os.fsync(fh.fileno())  # what is counted as received must survive a crash, for the resume
    if total is not None and completed < total:
        raise DownloadError(f"the connection to {_host(url)} closed after {completed} of {total} bytes")
    if total is not None and completed > total:
        part.unlink(missing_ok=True)  # not the file that was announced; resuming it would be wrong
        raise DownloadError(f"{_host(url)} sent {completed} bytes where it announced {total}")


def _verify(part: Path, dest: Path, expected_sha256: str | None, hasher) -> None:
    if not is_gguf(part):
        head = _read_head(part, 8)
        part.unlink(missing_ok=True)
        raise VerificationFailed(_not_gguf_message(head))
    if expected_sha256:
        digest = hasher.hexdigest()
        if digest != expected_sha256.lower():
            part.unlink(missing_ok=True)
            raise VerificationFailed(f"sha256 mismatch for {dest.name}: expected {expected_sha256.lower()}, "
                                     f"got {digest}")


def _hash_existing(path: Path):
    hasher = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            hasher.update(block)
    return hasher


def _read_head(part: Path, n: int) -> bytes:
    with open(part, "rb") as fh:
        return fh.read(n)


def _not_gguf_message(head: bytes) -> str:
    return f"the downloaded file is not a GGUF file (it starts with {head[:8]!r}, not {GGUF_MAGIC!r})"


def _content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    match = _CONTENT_RANGE.match((value or "").strip())
    if not match:
        return None, None, None
    start, end, total = match.groups()
    return (int(start) if start else None, int(end) if end else None, int(total) if total and total != "*" else None)


def _host(url: str) -> str:
    return urlsplit(url).netloc.rsplit("@", 1)[-1] or url  # never echo credentials embedded in the URL


def _reason(exc: Exception) -> str:
    return type(exc).__name__ + (f" ({exc})" if str(exc) and len(str(exc)) < 200 else "")
