"""Actors for speech work: full transcriptions on `asr`, segment re-transcriptions on `asr_quick`."""
from __future__ import annotations

import dramatiq

from jobs.broker import broker  # noqa: F401  (the broker must exist before actors are declared)
from parley.config import get_settings
from workers.pipeline import JobFailed  # the pipeline module loads engines only when a job runs

WEEK_MS = 7 * 24 * 3600 * 1000


# `throws=JobFailed`: the pipeline has already marked such a job failed; a retry would not help.
@dramatiq.actor(queue_name="asr", max_retries=get_settings().job_max_retries, min_backoff=2_000,
                max_backoff=60_000, time_limit=WEEK_MS, throws=JobFailed)
def transcribe(job_id: str) -> None:
    from workers.pipeline import run_transcription

    run_transcription(job_id)


@dramatiq.actor(queue_name="asr_quick", max_retries=1, time_limit=3600 * 1000, throws=JobFailed)
def retranscribe(job_id: str) -> None:
    from workers.pipeline import run_retranscription

    run_retranscription(job_id)
