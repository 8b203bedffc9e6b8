"""What a worker does for one job: decode, chunk, recognise, label speakers, finish; resumable after a crash."""
from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from models import Job, Paragraph, Segment, Session, db
from models.statuses import JobStatus, SessionStatus
from parley.config import Settings, get_settings
from parley.errors import Canceled, ParleyError
from parley.timestamps import now_ms
from services import events, modelstore, search, sessions, usage, voice_labels
from services.media import MediaError
from workers import asr, diarize, turns, voiceprints
from workers.audio import SAMPLE_RATE, decode, plan_chunks

log = logging.getLogger(__name__)

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"

# Share of overall progress for recognition when speakers are labelled afterwards.
ASR_SHARE = 90.0
STATUS_TICK_S = 1.0  # at most one progress event a second between segments


class JobFailed(ParleyError):
    """The job is marked failed and retrying would not help; the queue must not redeliver it."""


class Stopped(Canceled):
    """The job was canceled (e.g. by a transcription reset) while it ran; the worker just lets it go."""


class CannotProcess(ParleyError):
    """This job can never succeed here (e.g. speakers asked for where diarization is off); fail it now."""


def warm_up(settings: Settings) -> None:
    """Load the default model and the diarization models before the first job needs them."""
    started = time.monotonic()
    if modelstore.is_downloaded(settings.model_dir, settings.default_model):
        asr.load_model(settings, settings.default_model)
    if diarize.available(settings.model_dir):
        diarize.warm_up(settings.model_dir)
    log.info("worker warmed up in %.1fs", time.monotonic() - started)


def audio_file(settings: Settings, job: Job) -> Path:
    return settings.audio_dir / job.audio_path


def run_transcription(job_id: str, *, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    job = Job.get_or_none(Job.id == job_id)
    if job is None or job.status in Job.TERMINAL:
        log.info("job %s is gone or finished; nothing to do", job_id)
        return
    _run_guarded(job, settings, _transcribe)


def run_retranscription(job_id: str, *, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    job = Job.get_or_none(Job.id == job_id)
    if job is None or job.status in Job.TERMINAL:
        return
    try:
        _run_guarded(job, settings, _retranscribe)
    finally:
        if job.params.get("clip") and job.audio_path:
            # The uploaded clip served this one request; it is not part of any session.
            audio_file(settings, job).unlink(missing_ok=True)


def give_up(job_id: str, reason: str) -> None:
    """Fail a job whose message kept killing its worker (jobs/crashes.py); nothing if it is finished."""
    job = Job.get_or_none(Job.id == job_id)
    if job is not None and job.status not in Job.TERMINAL:
        fail(job, f"{'re-transcription' if job.kind == 'retranscribe' else 'transcription'} {reason}")


def _run_guarded(job: Job, settings: Settings, work) -> None:
    try:
        work(job, settings)
    except Stopped:
        log.info("job %s was canceled while running; stopped", job.id)
    except (MediaError, modelstore.ModelStoreError, CannotProcess) as exc:
        fail(job, str(exc))
        raise JobFailed(str(exc)) from exc
    except Exception as exc:
        if job.attempts > settings.job_max_retries:
            fail(job, f"transcription failed after {job.attempts} attempts: {exc}")
            raise JobFailed(str(exc)) from exc
        log.exception("job %s attempt %s failed; it will be retried", job.id, job.attempts)
        events.emit_status(job, message=f"Attempt {job.attempts} failed ({exc}); retrying")
        raise


def fail(job: Job, message: str) -> None:
    """Mark the job failed; drop its partial segments so nothing half-done is served as a transcript."""
    with db.atomic():
        Segment.delete().where(Segment.job == job.id).execute()
        event = events.record_status(job, status=JobStatus.FAILED, error=message, message=message,
                                     finished_at_ms=now_ms())
        if job.session_id and job.kind == "transcribe":
            # A failed re-transcription leaves the transcript the session already had in place.
            had_transcript = bool(job.params.get("retranscription")) and Paragraph.select().where(
                Paragraph.session == job.session_id).exists()
            Session.update(status=SessionStatus.COMPLETED if had_transcript else SessionStatus.FAILED,
                           error_message=message).where(Session.id == job.session_id).execute()
    events.publish(event)


def _start(job: Job, message: str) -> None:
    events.emit_status(job, status=JobStatus.PROCESSING, attempts=job.attempts + 1, worker=WORKER_ID,
                       started_at_ms=job.started_at_ms or now_ms(), message=message)


def _transcribe(job: Job, settings: Settings) -> None:
    from workers import diarize

    if job.diarize and not diarize.available_here():
        raise CannotProcess("speaker labels were asked for, but speaker diarization is not available on this "
                            "worker; transcribe without diarization or run a worker that has it")
    resuming = job.chunks_done > 0 or Segment.select().where(Segment.job == job.id).exists()
    _start(job, "Resuming transcription..." if resuming else "Decoding audio...")
    if job.session_id:
        Session.update(status=SessionStatus.TRANSCRIBING, whisper_job_id=job.id).where(
            Session.id == job.session_id).execute()

    audio = decode(audio_file(settings, job))
    duration = len(audio) / SAMPLE_RATE
    if not job.chunk_plan:
        job.chunk_plan = [list(c) for c in plan_chunks(audio, target_s=settings.chunk_seconds)]
        job.audio_duration = round(duration, 3)
        job.save(only=[Job.chunk_plan, Job.audio_duration])
    total = job.total_chunks
    asr_share = ASR_SHARE if job.diarize else 99.0

    events.emit_status(job, message=f"Loading model '{job.model_name}'...")
    asr.load_model(settings, job.model_name)

    # Speakers are found chunk by chunk, before each chunk is recognised, so every live segment carries a
    # provisional speaker; chunks a killed worker already finished are diarized again first.
    tracker = diarize.SpeakerTracker(num_speakers=job.num_speakers) if job.diarize else None
    for index in range(job.chunks_done if tracker else 0):
        _diarize_chunk(job, settings, audio, index, tracker)

    next_idx = Segment.select().where(Segment.job == job.id).count()
    for index in range(job.chunks_done, total):
        chunk_start, chunk_end = job.chunk_plan[index]
        stored = list(Segment.select(Segment.start, Segment.end, Segment.text)
                      .where((Segment.job == job.id) & (Segment.chunk_index == index)).order_by(Segment.idx))
        committed_end = max((s.end for s in stored), default=chunk_start)

        def progress_at(t: float) -> dict:
            chunk_pct = 100.0 * (t - chunk_start) / max(chunk_end - chunk_start, 1e-6)
            overall = asr_share * t / max(duration, 1e-6)
            return {
                "chunk_progress": min(100.0, chunk_pct),
                "progress": min(asr_share, overall),
                "message": f"Processing chunk {index + 1}/{total} ({int(min(asr_share, overall))}%)",
            }

        events.emit_status(job, **progress_at(committed_end))
        if chunk_end - committed_end >= 0.3:
            provisional = _diarize_chunk(job, settings, audio, index, tracker) if tracker else None
            last_tick = time.monotonic()
            for part in _chunk_parts(job, settings, audio, index, provisional, stored):
                if Job.select(Job.status).where(Job.id == job.id).scalar() == "canceled":
                    raise Stopped()
                with db.atomic():
                    row = Segment.create(job=job.id, idx=next_idx, **part)
                    event = events.record(job.id, "segment", row.as_dict())
                events.publish(event)
                next_idx += 1
                if time.monotonic() - last_tick >= STATUS_TICK_S:
                    events.emit_status(job, **progress_at(part["end"]))
                    last_tick = time.monotonic()
        elif tracker is not None:
            _diarize_chunk(job, settings, audio, index, tracker)
        done = progress_at(chunk_end)
        done["message"] = f"Finished chunk {index + 1}/{total} ({int(done['progress'])}%)"
        events.emit_status(job, chunks_done=index + 1, **done)

    if tracker is not None and next_idx > 0:
        events.emit_status(job, message="Identifying speakers...", progress=asr_share)
        final, voices = tracker.final()
        _label_speakers(job, final, voices, _split_contrasts(audio, final, voices, settings))
    _complete(job)


def _chunk_parts(job: Job, settings: Settings, audio, index: int, provisional: list[turns.SpeakerTurn] | None,
                 stored: list[Segment]) -> Iterator[dict]:
    """The chunk's segments not stored yet, one per speaker where the speaker changes, as the engine decodes them.

    A worker killed inside a chunk left its first segments stored. The chunk is decoded again from its start
    and those segments are skipped as the engine yields them again, so a resumed transcript equals an
    uninterrupted one: decoding only the rest would give Whisper another window, and with it other segment
    times and words (the soak saw a word appear that the uninterrupted run never had). Redoing at most one chunk
    is the price. Should the engine not decode the stored start the same way (another engine or model build
    after a restart), the rest is decoded from the end of the last stored segment, as nothing may be heard twice.
    """
    chunk_start, chunk_end = job.chunk_plan[index]
    replayed = 0
    for part in _recognised_parts(job, settings, audio, index, provisional, begin=chunk_start):
        if replayed == len(stored):
            yield part
        elif (round(part["start"], 3), round(part["end"], 3), part["text"]) == (
                round(stored[replayed].start, 3), round(stored[replayed].end, 3), stored[replayed].text):
            replayed += 1
        else:
            break
    if replayed < len(stored):
        log.warning("job %s chunk %s decoded otherwise than before the restart; going on after its stored segments",
                    job.id, index)
        begin = max(s.end for s in stored)
        if chunk_end - begin >= 0.3:
            yield from _recognised_parts(job, settings, audio, index, provisional, begin=begin)


def _recognised_parts(job: Job, settings: Settings, audio, index: int,
                      provisional: list[turns.SpeakerTurn] | None, *, begin: float) -> Iterator[dict]:
    """Segment rows' fields for the chunk's audio from `begin` on, split where the provisional speaker changes."""
    chunk_end = job.chunk_plan[index][1]
    recognition = asr.transcribe(settings, audio[int(begin * SAMPLE_RATE): int(chunk_end * SAMPLE_RATE)],
                                 model_name=job.model_name, language=job.language or job.detected_language,
                                 offset=begin)
    if not job.detected_language:
        job.detected_language = recognition.language
        job.save(only=[Job.detected_language])
    for seg in recognition.segments:
        fields = dict(chunk_index=index, start=seg.start, end=seg.end, text=seg.text,
                      words=[w.__dict__ for w in seg.words], avg_logprob=seg.avg_logprob,
                      no_speech_prob=seg.no_speech_prob)
        yield from turns.label_segments([fields], provisional) if provisional is not None else [fields]


def _diarize_chunk(job: Job, settings: Settings, audio, index: int,
                   tracker: diarize.SpeakerTracker) -> list[turns.SpeakerTurn]:
    """Diarize one chunk and return its turns under the recording's provisional speaker names."""
    start, end = job.chunk_plan[index]
    # A recording of one chunk is clustered into the requested count right away; with several chunks
    # the count is imposed when all chunks' voices are clustered together (SpeakerTracker.final_turns).
    wanted = job.num_speakers if job.total_chunks == 1 else None
    found = diarize.diarize(audio[int(start * SAMPLE_RATE): int(end * SAMPLE_RATE)], model_dir=settings.model_dir,
                            num_speakers=wanted, offset=start)
    return tracker.add(index, found)


def _split_contrasts(audio, final_turns: list[turns.SpeakerTurn], voices: dict,
                     settings: Settings) -> dict[str, float | None]:
    """Per speaker with a voiceprint, how clearly it holds two voices (workers/voiceprints.py), for known voices;
    nothing where recognition is off (no voiceprint is kept then)."""
    if not settings.voice_recognition:
        return {}
    return {label: voiceprints.split_contrast(voiceprints.speaker_pieces(audio, final_turns, label,
                                                                         model_dir=settings.model_dir))
            for label in sorted(voices)}


def _label_speakers(job: Job, final_turns: list[turns.SpeakerTurn], voices: dict[str, tuple[object, float]],
                    contrasts: dict[str, float | None]) -> None:
    """Relabel every segment with the final speakers; the labelled transcript replaces the provisional one.

    Speakers recognised as the owner's known voices take the profile's name; their segments' confidence is
    multiplied by the voice's similarity. Each speaker's voiceprint is kept with the session (voice_labels).
    """
    known = voice_labels.recognise(job.session_id, voices, contrasts)
    named = [turns.SpeakerTurn(t.start, t.end, known[t.speaker].name if t.speaker in known else t.speaker)
             for t in final_turns]
    similarity = {m.name: m.similarity for m in known.values()}
    rows = list(Segment.select().where(Segment.job == job.id).order_by(Segment.idx))
    fields = ("chunk_index", "start", "end", "text", "words", "avg_logprob", "no_speech_prob")
    segments = [{name: getattr(row, name) for name in fields} for row in rows]
    labelled = turns.label_segments(segments, named)
    for seg in labelled:
        if seg.get("speaker") in similarity and seg.get("speaker_confidence") is not None:
            seg["speaker_confidence"] *= max(0.0, similarity[seg["speaker"]])  # a confidence stays in [0, 1]
    with db.atomic():
        Segment.delete().where(Segment.job == job.id).execute()
        created = [Segment.create(job=job.id, idx=idx, **seg) for idx, seg in enumerate(labelled)]
        voice_labels.keep(job.session_id, voices, contrasts, known)
        # Live clients swap their provisional segments for these (ids may change where segments split).
        event = events.record(job.id, "speakers", {"segments": [s.as_dict() for s in created],
                                                   "voices": voice_labels.recognised(job.session_id)})
    events.publish(event)


def _complete(job: Job) -> None:
    with db.atomic():
        event = events.record_status(job, status=JobStatus.COMPLETED, progress=100.0, chunk_progress=100.0,
                                     message="Transcription completed", finished_at_ms=now_ms())
        if job.session_id:
            sessions.finish_transcription(job)
        if job.kind == "transcribe":
            usage.record_whisper(model=job.model_name, audio_seconds=job.audio_duration)
    events.publish(event)
    if job.session_id:
        search.request_index_session(job.session_id)  # committed: the new transcript and its greeting chat


def _retranscribe(job: Job, settings: Settings) -> None:
    params = job.params
    _start(job, "Re-transcribing segment...")
    start, end = float(params["start_time"]), float(params["end_time"])
    if params.get("clip"):
        audio = decode(audio_file(settings, job))
        offset = start
    else:
        source = Job.get_or_none(Job.id == params["source_job_id"])
        if source is None or not source.audio_path or not audio_file(settings, source).exists():
            raise MediaError("the original audio of that job is no longer stored")
        audio = decode(audio_file(settings, source), start=start, end=end)
        offset = start
    if len(audio) < SAMPLE_RATE * 0.1:
        raise MediaError("the requested range contains no audio")
    recognition = asr.transcribe(settings, audio, model_name=job.model_name, language=job.language,
                                 offset=offset, vad_filter=False)
    segments = list(recognition.segments)
    words = [w for s in segments for w in s.words]
    confidence = sum(w.probability for w in words) / len(words) if words else 0.0
    result = {
        "segment_id": params["segment_id"],
        "text": " ".join(s.text for s in segments).strip(),
        "confidence": round(confidence, 4),
        "speaker": _speaker_at(params.get("source_job_id"), start, end),
        "model_used": job.model_name,
        "language": recognition.language,
        "words": [w.__dict__ for w in words],
    }
    events.emit_status(job, status=JobStatus.COMPLETED, progress=100.0, message="Segment re-transcribed",
                       result=result, detected_language=recognition.language, finished_at_ms=now_ms())


def _speaker_at(source_job_id: str | None, start: float, end: float) -> str | None:
    """The speaker of the original segment that overlaps start..end the most."""
    if not source_job_id:
        return None
    rows = Segment.select().where((Segment.job == source_job_id) & (Segment.end > start) & (Segment.start < end))
    best = max(rows, key=lambda r: min(r.end, end) - max(r.start, start), default=None)
    return best.speaker if best else None
