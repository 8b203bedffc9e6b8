"""A worker killed with SIGKILL mid-job: the message is redelivered and the job resumes where it stopped."""
from __future__ import annotations

import pytest

from conftest import AUDIO, running_stack, truth, wait_until
from helpers import Collector, normalise, read_sse, wer


@pytest.fixture()
def chunked_stack(tmp_path, redis_server, models_ready):
    with running_stack(tmp_path, redis_server, PARLEY_CHUNK_SECONDS="30") as s:
        yield s


def test_kill_9_mid_job_resumes_without_gap_or_duplicate(chunked_stack):
    stack = chunked_stack
    worker = stack.start_worker("asr-1", "asr")
    job_id = stack.upload(AUDIO / "long_two_speakers.mp3", diarize="true").json()["job_id"]

    stream = Collector(lambda sink: read_sse(
        stack.url(f"/api/transcribe/events/{job_id}"),
        on_event=lambda f: f.get("event") != "heartbeat" and sink.append(f["data"])))
    stream.start()

    def mid_job():
        debug = stack.get(f"/api/transcribe/debug/{job_id}").json()
        return debug if debug["total_chunks"] >= 4 and 2 <= debug["chunks_done"] < debug["total_chunks"] - 1 else None
    before = wait_until(mid_job, timeout=180, interval=0.05, what="two finished chunks")
    worker.kill()  # SIGKILL to the whole process group: no clean-up, no ack
    at_kill = stack.get(f"/api/transcribe/result/{job_id}")
    assert at_kill.status_code == 409  # not finished, and not failed
    partial = stack.get(f"/api/transcribe/debug/{job_id}").json()
    assert partial["status"] == "processing" and partial["cached_segments"] >= before["cached_segments"]

    stack.start_worker("asr-2", "asr")
    status = stack.wait_job(job_id, timeout=240)
    assert status["status"] == "completed", status

    debug = stack.get(f"/api/transcribe/debug/{job_id}").json()
    assert debug["attempts"] == 2 and debug["chunks_done"] == debug["total_chunks"]
    segments = stack.get(f"/api/transcribe/result/{job_id}").json()["segments"]
    assert [s["id"] for s in segments] == list(range(len(segments)))
    for prev, seg in zip(segments, segments[1:]):
        assert seg["start"] >= prev["end"] - 0.05, (prev, seg)  # no overlap: nothing transcribed twice
    gt = truth("long_two_speakers")
    # No gap: the words of the whole recording are there.
    assert wer(" ".join(t["text"] for t in gt["turns"]), " ".join(s["text"] for s in segments)) < 0.15

    # A client that watched through the crash saw every segment exactly once.
    events = stream.result()
    seen = [e for e in events if e["type"] == "segment"]
    assert [e["id"] for e in seen] == list(range(len(seen)))
    assert normalise(" ".join(e["text"] for e in seen)) == normalise(" ".join(s["text"] for s in segments))
    assert events[-1]["status"] == "completed"


@pytest.fixture()
def fresh_stack(tmp_path, redis_server, models_ready):
    with running_stack(tmp_path, redis_server) as s:  # the default 120 s chunks: a kill lands inside one
        yield s


def kill_inside_the_first_chunk(stack, job_id: str, worker) -> None:
    """SIGKILL the worker once two segments of the job's first chunk are stored."""
    def inside_first_chunk():
        debug = stack.get(f"/api/transcribe/debug/{job_id}").json()
        return debug if debug["chunks_done"] == 0 and debug["cached_segments"] >= 2 else None
    wait_until(inside_first_chunk, timeout=180, interval=0.05, what="two segments stored in the first chunk")
    worker.kill()


def test_kill_9_inside_a_chunk_resumes_to_the_uninterrupted_transcript(fresh_stack):
    """Killed after a chunk's first segments were stored, the job ends with the very transcript (times, words,
    speakers) that an uninterrupted run of the same audio gives: nothing lost, repeated or decoded otherwise."""
    stack = fresh_stack
    worker = stack.start_worker("asr-1", "asr")

    def segments(job_id):
        return [(s["start"], s["end"], s["text"], s["speaker"])
                for s in stack.get(f"/api/transcribe/result/{job_id}").json()["segments"]]

    calm_id = stack.upload(AUDIO / "long_two_speakers.mp3", diarize="true").json()["job_id"]
    assert stack.wait_job(calm_id)["status"] == "completed"
    calm = segments(calm_id)

    job_id = stack.upload(AUDIO / "long_two_speakers.mp3", diarize="true").json()["job_id"]
    kill_inside_the_first_chunk(stack, job_id, worker)
    partial = stack.get(f"/api/transcribe/debug/{job_id}").json()
    assert partial["chunks_done"] == 0 and 2 <= partial["cached_segments"] < len(calm), partial

    stack.start_worker("asr-2", "asr")
    assert stack.wait_job(job_id)["status"] == "completed"
    assert stack.get(f"/api/transcribe/debug/{job_id}").json()["attempts"] == 2
    assert segments(job_id) == calm


def test_a_chunk_decoded_otherwise_after_the_restart_goes_on_after_its_stored_segments(fresh_stack):
    """The stored segments of the interrupted chunk are not what the engine decodes now (as after a change of
    engine or model build between the crash and the restart: here the stored text is changed while no worker
    runs). The resumed job keeps what was stored, goes on after its end (nothing heard twice, nothing lost)
    and logs why."""
    from models import Segment, db, init_db

    stack = fresh_stack
    worker = stack.start_worker("asr-1", "asr")
    job_id = stack.upload(AUDIO / "long_two_speakers.mp3", diarize="false").json()["job_id"]
    kill_inside_the_first_chunk(stack, job_id, worker)
    init_db(stack.env["DATABASE_URL"])
    with db.connection_context():
        first = Segment.select().where(Segment.job == job_id).order_by(Segment.idx).first()
        Segment.update(text=" Words another model build heard.").where(Segment.id == first.id).execute()
        stored = [(s.start, s.end, s.text) for s in Segment.select().where(Segment.job == job_id)
                  .order_by(Segment.idx)]

    resumed = stack.start_worker("asr-2", "asr")
    assert stack.wait_job(job_id)["status"] == "completed"
    segments = stack.get(f"/api/transcribe/result/{job_id}").json()["segments"]
    assert [(s["start"], s["end"], s["text"]) for s in segments[:len(stored)]] == stored
    assert len(segments) > len(stored)
    for prev, seg in zip(segments, segments[1:]):
        assert seg["start"] >= prev["end"] - 0.05, (prev, seg)  # no overlap: nothing transcribed twice
    rest = " ".join(s["text"] for s in segments[len(stored):])
    spoken = " ".join(t["text"] for t in truth("long_two_speakers")["turns"])
    assert wer(spoken, " ".join(s[2] for s in stored) + " " + rest) < 0.2  # the rest of the recording is there
    assert "decoded otherwise than before the restart" in resumed.log_path.read_text(errors="replace")
