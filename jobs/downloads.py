"""Actor for model downloads on `io`: drives a ModelPull row from queued to completed, failed or canceled.

The row is the whole state: the web tier creates it (queued) and asks for cancellation by setting
`canceling`; this actor moves it through parsing → downloading → verifying → completed (or failed /
canceled). Every move is a conditional UPDATE on the status it expects, so a cancellation the web
tier writes is never overwritten by a progress update racing it.

A message delivered again for a finished pull does nothing; one for a pull that was `downloading`
when its worker died (even `kill -9`) continues the `.part` file where it stopped.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import dramatiq

from jobs.broker import broker  # noqa: F401  (the broker must exist before actors are declared)
from models import ModelPull
from models.statuses import TERMINAL
from parley.config import Settings, get_settings
from parley.timestamps import now_ms

log = logging.getLogger(__name__)

WEEK_MS = 7 * 24 * 3600 * 1000  # a multi-GB model on a slow link takes hours; Dramatiq's default is 10 minutes
CANCEL_POLL_S = 0.5  # how often the download reads the row for a cancellation request
# A read blocks until it has this many bytes; 64 KiB keeps cancellation prompt even on a slow link.
CHUNK_BYTES = 64 * 1024
# Broken connections are retried inside the job, each attempt resuming the .part; these are the waits.
RETRY_WAITS_S = (1, 2, 5, 10, 30)


def mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def progress_message(name: str, completed: int, total: int | None) -> str:
    if total:
        return f"Downloading {name}: {mb(completed)} of {mb(total)} MB ({int(100 * completed / total)}%)"
    return f"Downloading {name}: {mb(completed)} MB"


# max_retries=0: the job retries broken connections itself and records every other failure on the row,
# so a Dramatiq retry would only repeat a failure already reported.
@dramatiq.actor(queue_name="io", max_retries=0, time_limit=WEEK_MS)
def pull_model(pull_id: str) -> None:
    run_pull(pull_id)


def run_pull(pull_id: str, *, settings: Settings | None = None) -> None:
    from services.llmstore import llm_dir

    settings = settings or get_settings()
    pull = ModelPull.get_or_none(ModelPull.id == pull_id)
    if pull is None or pull.status in TERMINAL:
        log.info("model pull %s is gone or finished; nothing to do", pull_id)
        return
    dest = llm_dir(settings) / pull.model_name
    try:
        _run(pull, dest)
    except Exception as exc:  # recorded on the row, or the UI would poll a pull that never ends
        log.exception("model pull %s failed", pull_id)
        _finish_failed(pull, dest, f"internal error: {type(exc).__name__}: {exc}", keep_part=False)


@dataclasses.dataclass
class _CancelCheck:
    """should_cancel for download(): reads the row at most every `interval_s`, then remembers a yes."""

    pull_id: str
    interval_s: float = CANCEL_POLL_S
    checked_at: float = float("-inf")
    canceled: bool = False

    def __call__(self, *, force: bool = False) -> bool:
        now = time.monotonic()
        if not self.canceled and (force or now - self.checked_at >= self.interval_s):
            self.checked_at = now
            status = ModelPull.select(ModelPull.status).where(ModelPull.id == self.pull_id).scalar()
            self.canceled = status in (None, "canceling", "canceled")
        return self.canceled


def _move(pull: ModelPull, status: str, *, expect: tuple[str, ...], **fields) -> bool:
    """Set the row's status (and fields) if it is still in one of `expect`; False when it moved on."""
    done = (ModelPull.update(status=status, **fields)
            .where((ModelPull.id == pull.id) & (ModelPull.status.in_(expect))).execute())
    return bool(done)


def _run(pull: ModelPull, dest: Path) -> None:
    from services.llmstore import is_gguf
    from services.model_sources import SourceError, resolve_source
    from workers.downloads import DownloadCanceled, DownloadError, VerificationFailed, download, hub_auth, part_path

    name = pull.model_name
    part = part_path(dest)
    cancel = _CancelCheck(pull.id)
    resuming = pull.status in ("downloading", "verifying")

    if pull.status == "canceling":
        _finish_canceled(pull, part)
        return
    if not resuming:
        if not _move(pull, "parsing", expect=("queued", "parsing"), message=f"Resolving {pull.source}"):
            _settle_moved_on(pull, part)
            return
        _drop_stale_part(pull, part)

    if dest.exists():
        if resuming and is_gguf(dest):
            # The previous attempt renamed the file into place and died before it could say so.
            _finish_completed(pull, dest)
        else:
            _finish_failed(pull, dest, f"a model named {name} is already in the store", keep_part=False)
        return
    try:
        source = resolve_source(pull.source)
    except SourceError as exc:
        _finish_failed(pull, dest, str(exc), keep_part=False)
        return

    have = part.stat().st_size if part.exists() else 0
    start = f"Resuming download of {name} at {mb(have)} MB" if have else f"Starting download of {name}"
    if not _move(pull, "downloading", expect=("parsing", "downloading", "verifying"), message=start,
                 completed_bytes=have):
        _settle_moved_on(pull, part)
        return

    def on_progress(completed: int, total: int | None) -> None:
        # Only while downloading: a `canceling` the web tier wrote must stay until this job answers it.
        _move(pull, "downloading", expect=("downloading",), completed_bytes=completed, total_bytes=total,
              message=progress_message(name, completed, total))

    def on_verifying() -> None:
        if not _move(pull, "verifying", expect=("downloading",), message=f"Verifying {name}"):
            raise DownloadCanceled("the download was canceled")

    headers = hub_auth(source.url)
    for attempt, wait_s in enumerate((*RETRY_WAITS_S, None), start=1):
        try:
            download(source.url, dest, expected_sha256=pull.expected_sha256, headers=headers,
                     on_progress=on_progress, should_cancel=cancel, on_verifying=on_verifying,
                     chunk_bytes=CHUNK_BYTES)
            break
        except DownloadCanceled:
            _finish_canceled(pull, part)
            return
        except VerificationFailed as exc:
            _finish_failed(pull, dest, str(exc), keep_part=False)
            return
        except DownloadError as exc:
            if wait_s is None or not exc.retryable:
                tries = f" (gave up after {attempt} attempts)" if attempt > 1 else ""
                # A broken connection leaves its .part: a new pull of the same source resumes it.
                _finish_failed(pull, dest, f"{exc}{tries}", keep_part=exc.retryable)
                return
            log.warning("model pull %s attempt %s: %s; retrying in %ss", pull.id, attempt, exc, wait_s)
            _move(pull, "downloading", expect=("downloading",),
                  message=f"{exc}; retrying in {wait_s} s (attempt {attempt + 1} of {len(RETRY_WAITS_S) + 1})")
            if _sleep_unless_canceled(wait_s, cancel):
                _finish_canceled(pull, part)
                return
    _finish_completed(pull, dest)


def _sleep_unless_canceled(seconds: float, cancel: _CancelCheck) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cancel():
            return True
        time.sleep(min(CANCEL_POLL_S, max(0.0, deadline - time.monotonic())))
    return cancel(force=True)


def _drop_stale_part(pull: ModelPull, part: Path) -> None:
    """A fresh pull resumes a leftover .part only if an earlier failed pull left it from the same source."""
    if not part.exists():
        return
    previous = (ModelPull.select().where((ModelPull.model_name == pull.model_name) & (ModelPull.id != pull.id)
                                         & (ModelPull.status == "failed"))
                .order_by(ModelPull.start_ms.desc()).first())
    if previous is None or previous.source != pull.source:
        part.unlink(missing_ok=True)


def _settle_moved_on(pull: ModelPull, part: Path) -> None:
    """The row left the status this job expected: a cancellation is answered, anything else is left alone."""
    status = ModelPull.select(ModelPull.status).where(ModelPull.id == pull.id).scalar()
    if status == "canceling":
        _finish_canceled(pull, part)


def _finish_completed(pull: ModelPull, dest: Path) -> None:
    size = dest.stat().st_size
    _move(pull, "completed", expect=("downloading", "verifying"), completed_bytes=size, total_bytes=size,
          message=f"Downloaded {pull.model_name} ({mb(size)} MB)", error=None, end_ms=now_ms())
    log.info("model pull %s: %s is in the store", pull.id, pull.model_name)


def _finish_canceled(pull: ModelPull, part: Path) -> None:
    part.unlink(missing_ok=True)
    _move(pull, "canceled", expect=("queued", "parsing", "downloading", "verifying", "canceling"),
          message=f"Download of {pull.model_name} canceled", end_ms=now_ms())


def give_up(pull_id: str, reason: str) -> None:
    """Fail a pull whose message kept killing its worker (jobs/crashes.py); its .part stays for a new pull."""
    from services.llmstore import llm_dir

    pull = ModelPull.get_or_none(ModelPull.id == pull_id)
    if pull is not None and pull.status not in TERMINAL:
        _finish_failed(pull, llm_dir(get_settings()) / pull.model_name, f"the download {reason}", keep_part=True)


def _finish_failed(pull: ModelPull, dest: Path, error: str, *, keep_part: bool) -> None:
    from workers.downloads import part_path

    part = part_path(dest)
    if not keep_part:
        part.unlink(missing_ok=True)
    # A cancellation asked for while the failure happened is what the user wanted: answer it as such.
    if _move(pull, "canceled", expect=("canceling",), message=f"Download of {pull.model_name} canceled",
             end_ms=now_ms()):
        part.unlink(missing_ok=True)
        return
    _move(pull, "failed", expect=("queued", "parsing", "downloading", "verifying"), error=error,
          message=f"Download of {pull.model_name} failed: {error}", end_ms=now_ms())
    log.warning("model pull %s failed: %s", pull.id, error)
