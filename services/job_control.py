"""Stopping and restarting jobs of every kind by request: cancel, delete, and the operator's dead-letter actions.

Every change is a conditional update (`status NOT IN terminal`), so a job that ended a moment ago is never
turned back into a canceled or failed one. A running LLM job stops at its next token, when its Redis cancel
key appears; a running transcription stops at its next segment, when it sees its row canceled.
"""
from __future__ import annotations

import redis

from jobs import queues
from models import AnalysisJob, Job, LlmJob, Paragraph, Segment, Session, db
from models.statuses import ACTIVE_JOB, TERMINAL, AnalysisStatus, JobStatus, LlmJobStatus, SessionStatus
from parley.errors import Conflict
from parley.timestamps import now_ms
from services import events

CANCEL_PREFIX = "parley:cancel:"  # + an LLM job's id: the worker checks this key between tokens
CANCEL_KEY_TTL_S = 3600

CANCELED_BY_OPERATOR = "Canceled by the operator (dashboard)"
REQUEUED_BY_OPERATOR = "Re-queued by the operator from the dead letters (dashboard)"
DROPPED_BY_OPERATOR = "Dropped by the operator from the dead letters (dashboard)"
RESET_MESSAGE = "Transcription reset by the operator; re-queue it with `parley retranscribe --failed`."


def cancel_key(job_id: str) -> str:
    return CANCEL_PREFIX + job_id


def ask_llm_job_to_stop(conn: redis.Redis, job_id: str) -> None:
    """Set the LLM job's cancel key; raises redis.RedisError when Redis does not take it."""
    conn.set(cancel_key(job_id), "1", ex=CANCEL_KEY_TTL_S)


# --- analyses -------------------------------------------------------------------------------------
def cancel_analysis(job: AnalysisJob) -> AnalysisJob:
    """Mark an unfinished analysis "canceling" (its worker stops between steps); Conflict when it has ended."""
    changed = AnalysisJob.update(status=AnalysisStatus.CANCELING).where(
        (AnalysisJob.id == job.id) & (AnalysisJob.status.not_in(TERMINAL))).execute()
    if not changed:
        raise Conflict(f"Analysis job {job.id} is already {AnalysisJob.get_by_id(job.id).status}.")
    return AnalysisJob.get_by_id(job.id)


def delete_analysis(job: AnalysisJob) -> None:
    """Delete an analysis and its per-session summaries (ON DELETE CASCADE)."""
    with db.atomic():
        AnalysisJob.delete().where(AnalysisJob.id == job.id).execute()


# --- transcriptions -------------------------------------------------------------------------------
def stop_transcription(job: Job, status: str, message: str) -> bool:
    """End an unfinished speech job with `status` (its session too) and tell its streams; False if it had ended."""
    now = now_ms()
    with db.atomic():
        changed = Job.update(status=status, message=message, error=message, updated_at_ms=now,
                             finished_at_ms=now).where(
            (Job.id == job.id) & Job.status.not_in(TERMINAL)).execute()
        if changed:
            if status == JobStatus.FAILED:
                # As workers.pipeline.fail does: a failed job serves no half transcript, and a later retry
                # starts from the beginning.
                Segment.delete().where(Segment.job == job.id).execute()
            job = Job.get_by_id(job.id)
            if job.session_id:
                kept = bool(job.params.get("retranscription")) and Paragraph.select().where(
                    Paragraph.session == job.session_id).exists()
                ended = SessionStatus.COMPLETED if kept else SessionStatus.FAILED
                Session.update(status=ended, error_message=message).where(
                    (Session.id == job.session_id) & (Session.whisper_job_id == job.id)).execute()
            event = events.record(job.id, "status", events.status_payload(job))
    if changed:
        events.publish(event)  # live streams of the job end with this status
    return bool(changed)


def cancel_transcription(conn: redis.Redis, job: Job, *, message: str = CANCELED_BY_OPERATOR) -> None:
    """Cancel a transcription or re-transcription; Conflict when it has ended."""
    if not stop_transcription(job, JobStatus.CANCELED, message):
        raise Conflict(f"job {job.id} is already {Job.get_by_id(job.id).status}; there is nothing to cancel")
    try:
        # Workers skip canceled jobs anyway; dropping the message keeps the waiting count honest.
        queues.drop_waiting(conn, "asr" if job.kind == "transcribe" else "asr_quick", job.id)
    except redis.RedisError:
        pass


def reset_transcriptions() -> int:
    """Drop every queued and running transcription: its queue messages go, the jobs end canceled and their
    sessions failed, and their live streams end. A worker in the middle of one stops at its next segment.
    Returns how many jobs were canceled; raises redis.RedisError (nothing changed) when the queue is down."""
    from jobs.broker import broker

    broker.flush("asr")
    with db.atomic():
        affected = list(Job.select().where((Job.kind == "transcribe") & Job.status.in_(ACTIVE_JOB)))
        ids = [j.id for j in affected]
        if not ids:
            return 0
        now = now_ms()
        Job.update(status=JobStatus.CANCELED, message=RESET_MESSAGE, error=RESET_MESSAGE, updated_at_ms=now,
                   finished_at_ms=now).where(Job.id.in_(ids)).execute()
        sessions = [j.session_id for j in affected if j.session_id]
        Session.update(status=SessionStatus.FAILED, error_message=RESET_MESSAGE).where(
            Session.id.in_(sessions) & Session.status.in_((SessionStatus.QUEUED, SessionStatus.TRANSCRIBING))).execute()
        logged = [events.record(j.id, "status", events.status_payload(Job.get_by_id(j.id))) for j in affected]
    for event in logged:
        events.publish(event)
    return len(ids)


# --- LLM jobs -------------------------------------------------------------------------------------
def cancel_llm_job(conn: redis.Redis, job: LlmJob, *, message: str = CANCELED_BY_OPERATOR) -> str:
    """Cancel an LLM job; its status after the request ("canceled" if it was still queued). Conflict when it
    has ended; redis.RedisError when the running job cannot be told."""
    if job.status in TERMINAL:
        raise Conflict(f"LLM job {job.id} is already {job.status}; there is nothing to cancel")
    now = now_ms()
    LlmJob.update(status=LlmJobStatus.CANCELED, message=message, error=message, updated_at_ms=now,
                  finished_at_ms=now).where(
        (LlmJob.id == job.id) & (LlmJob.status == LlmJobStatus.QUEUED)).execute()
    ask_llm_job_to_stop(conn, job.id)
    return LlmJob.get_by_id(job.id).status


# --- dead letters ---------------------------------------------------------------------------------
def requeue_failed_job(letter: queues.DeadLetter) -> str | None:
    """Make the failed job a dead letter names runnable again (a worker skips finished jobs); its id, or None."""
    job_id = letter.args[0] if letter.args else None
    if letter.actor in ("transcribe", "retranscribe") and isinstance(job_id, str):
        job = Job.get_or_none(Job.id == job_id)
        if job is None or job.status != JobStatus.FAILED:
            return None
        with db.atomic():
            # A failed job's segments are gone (workers.pipeline.fail), so it starts again from the beginning.
            event = events.record_status(job, status=JobStatus.QUEUED, message=REQUEUED_BY_OPERATOR, error=None,
                                         progress=0.0, attempts=0, chunks_done=0, chunk_progress=0.0,
                                         finished_at_ms=None)
            if job.session_id:
                Session.update(status=SessionStatus.QUEUED, error_message=None).where(
                    (Session.id == job.session_id) & (Session.whisper_job_id == job.id)).execute()
        events.publish(event)
        return job.id
    if letter.actor == "generate" and isinstance(job_id, str):
        changed = LlmJob.update(status=LlmJobStatus.QUEUED, error=None, message=REQUEUED_BY_OPERATOR,
                                finished_at_ms=None, updated_at_ms=now_ms()).where(
            (LlmJob.id == job_id) & (LlmJob.status == LlmJobStatus.FAILED)).execute()
        return job_id if changed else None
    if letter.actor == "analyze" and isinstance(job_id, int):
        changed = AnalysisJob.update(status=AnalysisStatus.PENDING, error_message=None, completed_at_ms=None).where(
            (AnalysisJob.id == job_id) & (AnalysisJob.status == AnalysisStatus.FAILED)).execute()
        return str(job_id) if changed else None
    return None


def fail_unfinished_job(letter: queues.DeadLetter) -> str | None:
    """Fail the job a deleted dead letter names, if it is still unfinished; its id, or None.

    Without this the reconciler (jobs/reconciler.py) would find the unfinished row without a message and send
    the job again: the operator's "drop it" would be undone a few minutes later.
    """
    job_id = letter.args[0] if letter.args else None
    if letter.actor in ("transcribe", "retranscribe") and isinstance(job_id, str):
        job = Job.get_or_none(Job.id == job_id)
        return job.id if job is not None and stop_transcription(job, JobStatus.FAILED, DROPPED_BY_OPERATOR) else None
    now = now_ms()
    if letter.actor == "generate" and isinstance(job_id, str):
        changed = LlmJob.update(status=LlmJobStatus.FAILED, error=DROPPED_BY_OPERATOR, message=DROPPED_BY_OPERATOR,
                                updated_at_ms=now, finished_at_ms=now).where(
            (LlmJob.id == job_id) & LlmJob.status.not_in(TERMINAL)).execute()
        return job_id if changed else None
    if letter.actor == "analyze" and isinstance(job_id, int):
        changed = AnalysisJob.update(status=AnalysisStatus.FAILED, error_message=DROPPED_BY_OPERATOR,
                                     completed_at_ms=now).where(
            (AnalysisJob.id == job_id) & AnalysisJob.status.not_in(TERMINAL)).execute()
        return str(job_id) if changed else None
    return None
