"""The status values each kind of row takes, as enums, and the terminal ones in one place."""
from __future__ import annotations

import enum


class _Status(str, enum.Enum):
    """A status stored as its plain string (the value); equal to that string, and formatted as it."""

    def __str__(self) -> str:
        return self.value


class JobStatus(_Status):
    """A transcription or re-transcription job (Job.status); the transcription API calls `processing` running."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


class LlmJobStatus(_Status):
    """A summary or chat reply (LlmJob.status)."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


class PullStatus(_Status):
    """A model download (ModelPull.status), in the order a pull goes through them."""

    QUEUED = "queued"
    PARSING = "parsing"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELING = "canceling"
    CANCELED = "canceled"


class AnalysisStatus(_Status):
    """A multi-session analysis (AnalysisJob.status), in the order it goes through them."""

    PENDING = "pending"
    GENERATING_STRATEGY = "generating_strategy"
    MAPPING = "mapping"
    REDUCING = "reducing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELING = "canceling"
    CANCELED = "canceled"


class AnalysisSummaryStatus(_Status):
    """One session's part of an analysis (AnalysisSummary.status)."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


class SessionStatus(_Status):
    """A session of the sessions API (Session.status)."""

    PENDING = "pending"
    QUEUED = "queued"
    TRANSCRIBING = "transcribing"
    COMPLETED = "completed"
    FAILED = "failed"


#: Statuses after which a job (of any kind above) never changes again: plain strings, for queries and JSON.
TERMINAL: tuple[str, ...] = ("completed", "failed", "canceled")

#: A transcription job in these states is waiting for a worker or running.
ACTIVE_JOB: tuple[str, ...] = (JobStatus.QUEUED, JobStatus.PROCESSING)

#: A model pull in these states can still be canceled.
PULL_CANCELABLE: tuple[str, ...] = ("queued", "parsing", "downloading", "canceling")

