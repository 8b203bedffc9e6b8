"""Re-transcribing one segment: from an uploaded clip, or from the stored audio of an earlier transcription."""
from __future__ import annotations

import uuid
from pathlib import Path

from models import Job, db
from parley.errors import InvalidInput, NotFound
from services import events
from services.queue import send_job
from services.transcriptions import StoredAudio

MAX_SEGMENT_S = 600.0  # a "segment" longer than this is a transcription job, not a re-transcription


def check_range(start: float, end: float, duration: float | None) -> None:
    """InvalidInput unless start < end, the segment is at most MAX_SEGMENT_S, and it starts inside the audio."""
    if end <= start:
        raise InvalidInput(f"end_time ({end}) must be greater than start_time ({start})")
    if end - start > MAX_SEGMENT_S:
        raise InvalidInput(f"a segment may be at most {MAX_SEGMENT_S:.0f} s long; got {end - start:.1f} s")
    if duration is not None and start >= duration:
        raise InvalidInput(f"start_time ({start}) is beyond the end of the audio ({duration:.2f} s)")


def source_job(job_id: str, *, audio_dir: Path) -> Job:
    """The finished-or-not transcription whose stored audio a segment is cut from; NotFound when it or its audio is gone."""
    source = Job.get_or_none((Job.id == job_id) & (Job.kind == "transcribe"))
    if source is None:
        raise NotFound(f"transcription job {job_id} not found")
    if not source.audio_path or not (Path(audio_dir) / source.audio_path).exists():
        raise NotFound(f"the audio of job {job_id} is no longer stored")
    return source


def _create(*, model: str, language: str | None, params: dict, audio_path: str | None, job_id: str | None) -> Job:
    with db.atomic():
        job = Job.create(id=job_id or str(uuid.uuid4()), kind="retranscribe", model_name=model, language=language,
                         diarize=False, audio_path=audio_path, params=params, message="Queued for re-transcription")
        events.record(job.id, "status", events.status_payload(job))
    return job


def _delete(job: Job) -> None:
    Job.delete().where(Job.id == job.id).execute()


def retranscribe_clip(upload: StoredAudio, *, segment_id: str, start: float, end: float | None, model: str,
                      language: str | None, job_id: str | None = None) -> Job:
    """Queue the re-transcription of an uploaded clip (times are the segment's place in its recording).

    job_id: default a new UUID; a caller that waits for the answer chooses it to listen first. When the queue
    refuses the job (QueueUnavailable) or the range is invalid (InvalidInput), nothing stays stored, the clip
    included.
    """
    try:
        if end is not None:
            check_range(start, end, None)
        job = _create(model=model, language=language, audio_path=upload.stored_name, job_id=job_id,
                      params={"segment_id": segment_id, "start_time": start,
                              "end_time": end if end is not None else start, "clip": True})
    except Exception:
        upload.path.unlink(missing_ok=True)  # a refused request keeps no orphan clip
        raise

    def undo():
        _delete(job)
        upload.path.unlink(missing_ok=True)

    send_job("retranscribe", job.id, undo=undo)
    return job


def retranscribe_stored(source: Job, *, segment_id: str, start: float, end: float, model: str,
                        language: str | None, job_id: str | None = None) -> Job:
    """Queue the re-transcription of start..end (seconds) of `source`'s stored audio; see retranscribe_clip."""
    check_range(start, end, source.audio_duration)
    job = _create(model=model, language=language, audio_path=None, job_id=job_id,
                  params={"segment_id": segment_id, "start_time": start, "end_time": end, "source_job_id": source.id,
                          "clip": False})
    send_job("retranscribe", job.id, undo=lambda: _delete(job))
    return job
