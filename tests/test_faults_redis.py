"""Redis stopped mid-job and restarted empty: 503s while it is down, nothing stored is lost, lost work is re-queued.

The stack has its own redis-server (run with --save "", so a restart loses every queued message: the
lost-message case). No `parley requeue` is run: the workers' reconciler (jobs/reconciler.py) must find
the job whose message went and send it again.
"""
from __future__ import annotations

import sqlite3

import pytest

from conftest import AUDIO, RedisServer, running_stack, truth, wait_until
from helpers import events_of, read_sse, wer
from test_sessions_api import upload

QUEUE_DOWN = "queue is unavailable"
REQUEUED = "Re-queued: its queue message was lost"


@pytest.fixture()
def own_redis(tmp_path):
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def row_counts(db_path) -> dict:
    with sqlite3.connect(db_path) as conn:
        return {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("session", "job", "llm_job", "analysis_job", "model_pull")}


def full_log(stack, job_id: str) -> list[dict]:
    """Every logged event of a finished job, uncompacted (Last-Event-ID 0 replays the whole log)."""
    return events_of(read_sse(stack.url(f"/api/transcribe/events/{job_id}"), headers={"Last-Event-ID": "0"},
                              timeout=60))


def test_redis_restart_mid_job_loses_nothing_and_lost_messages_are_requeued(tmp_path, own_redis, models_ready):
    (tmp_path / "stack").mkdir()
    with running_stack(tmp_path / "stack", own_redis, workers=[("asr", "asr")], PARLEY_CHUNK_SECONDS="30",
                       PARLEY_RECONCILE_AFTER_S="3", PARLEY_RECONCILE_EVERY_S="1") as stack:
        # A finished transcript, to read while the queue is down.
        done_id = stack.upload(AUDIO / "silence.mp3", diarize="false").json()["job_id"]
        assert stack.wait_job(done_id)["status"] == "completed"
        done_session = stack.get(f"/api/transcribe/debug/{done_id}").json()["session_id"]

        # One worker thread: the long job runs, the next is prefetched into the worker's memory, the
        # third waits in Redis only, so the restart loses its message.
        running = stack.upload(AUDIO / "long_two_speakers.mp3", diarize="false").json()["job_id"]
        prefetched = stack.upload(AUDIO / "two_speakers.mp3", diarize="false").json()["job_id"]
        lost = stack.upload(AUDIO / "three_speakers.mp3", diarize="false").json()["job_id"]
        wait_until(lambda: stack.get(f"/api/transcribe/debug/{running}").json()["chunks_done"] >= 1, timeout=180,
                   interval=0.2, what="the long job under way")
        assert stack.get(f"/api/transcribe/status/{lost}").json()["state"] == "queued"

        own_redis.stop()
        db_path = tmp_path / "stack" / "data" / "parley.db"
        before = row_counts(db_path)

        # Every endpoint that enqueues answers 503 naming the queue, and leaves no half-made rows.
        with open(AUDIO / "silence.mp3", "rb") as fh:
            answer = stack.post("/api/transcribe/", files={"file": ("silence.mp3", fh)})
        assert answer.status_code == 503 and QUEUE_DOWN in answer.json()["message"], answer.text
        answer = upload(stack, AUDIO / "silence.mp3", numSpeakers="1")
        assert answer.status_code == 503 and QUEUE_DOWN in answer.json()["message"], answer.text
        answer = stack.post("/api/llm/pull-model", json={"modelUrl": "http://127.0.0.1:9/files/m.gguf"})
        assert answer.status_code == 503 and QUEUE_DOWN in answer.json()["message"], answer.text
        answer = stack.post(f"/api/retranslate/segment-from-full?job_id={done_id}",
                            json={"segment_id": "s1", "start_time": 0.0, "end_time": 2.0})
        assert answer.status_code == 503 and QUEUE_DOWN in answer.json()["message"], answer.text
        for path, body in (("/api/summary/", {"full_text": "A: hello there. B: hi."}),
                           ("/api/analysis-jobs", {"sessionIds": [done_session],
                                                   "prompt": "What did they talk about?"})):
            answer = stack.post(path, json=body)
            # 400/503 for a reason other than Redis is fine (no model configured here); a 500 never is.
            assert answer.status_code in (400, 503), (path, answer.status_code, answer.text)
            assert answer.headers["Content-Type"].startswith("application/json"), answer.text
        assert row_counts(db_path) == before

        # Stored data is still served without the queue.
        for path in (f"/api/transcribe/status/{running}", f"/api/transcribe/status/{lost}",
                     f"/api/transcribe/result/{done_id}", "/api/transcribe/jobs", "/api/sessions"):
            assert stack.get(path).status_code == 200, path

        own_redis.start()  # same port, empty: every queued message is gone

        finished = {job: stack.wait_job(job, timeout=600) for job in (running, prefetched, lost)}
        assert all(body["status"] == "completed" for body in finished.values()), finished

        for job, name in ((running, "long_two_speakers"), (prefetched, "two_speakers"), (lost, "three_speakers")):
            debug = stack.get(f"/api/transcribe/debug/{job}").json()
            assert debug["attempts"] == 1, (name, debug)  # each ran once: nothing re-run, nothing doubled
            segments = stack.get(f"/api/transcribe/result/{job}").json()["segments"]
            assert [s["id"] for s in segments] == list(range(len(segments))), name
            for prev, seg in zip(segments, segments[1:]):
                assert seg["start"] >= prev["end"] - 0.05, (name, prev, seg)  # nothing transcribed twice
            gt = truth(name)
            assert wer(" ".join(t["text"] for t in gt["turns"]), " ".join(s["text"] for s in segments)) < 0.15, name

        # Only the job whose message was lost was re-queued, and its watchers were told so.
        assert any(e.get("message") == REQUEUED for e in full_log(stack, lost))
        for job in (running, prefetched):  # one still running, one in the worker's memory: both held
            assert not any(e.get("message") == REQUEUED for e in full_log(stack, job)), job
        assert row_counts(db_path) == before
