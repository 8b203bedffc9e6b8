"""Live progress over SSE and WebSocket: ordered, complete, no duplicates, mid-job join, resume by id."""
from __future__ import annotations

import pytest
import websocket

from conftest import AUDIO, wait_until
from helpers import Collector, events_of, normalise, read_sse, ws_collector


def sse_collector(stack, job_id, headers=None):
    def read(sink):
        read_sse(stack.url(f"/api/transcribe/events/{job_id}"), headers=headers,
                 on_event=lambda f: f.get("event") != "heartbeat" and sink.append(f["data"]))
    c = Collector(read)
    c.start()
    return c


def check_complete(events: list[dict], result: dict) -> None:
    """Strictly increasing sequence numbers; each provisional segment once; the labelled transcript at the end.

    Segments stream as they are recognised; the `speakers` event then carries the final, labelled
    transcript (segments split where the speaker changes), which is what the result serves.
    """
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), seqs
    segments = [e for e in events if e["type"] == "segment"]
    assert [s["id"] for s in segments] == list(range(len(segments)))
    assert normalise(" ".join(s["text"] for s in segments)) == normalise(result["text"])
    assert events[-1]["type"] == "status" and events[-1]["status"] == "completed"
    speakers = [e for e in events if e["type"] == "speakers"]
    assert len(speakers) == 1 and speakers[0]["segments"] == result["segments"]


def test_stream_from_start_sse_and_websocket(stack):
    job_id = stack.upload(AUDIO / "two_speakers.mp3").json()["job_id"]
    sse = sse_collector(stack, job_id)
    ws = ws_collector(stack, job_id)
    sse_events, ws_events = sse.result(), ws.result()
    result = stack.get(f"/api/transcribe/result/{job_id}").json()
    check_complete(sse_events, result)
    check_complete(ws_events, result)
    statuses = [e for e in sse_events if e["type"] == "status"]
    running = [e for e in statuses if e["status"] == "processing" and e["chunk_info"]]
    assert running, statuses
    info = running[-1]["chunk_info"]
    assert set(info) == {"current_chunk", "total_chunks", "chunk_progress"}
    assert 1 <= info["current_chunk"] <= info["total_chunks"] and 0 <= info["chunk_progress"] <= 100
    assert all(0 <= e["progress"] <= 100 for e in statuses)


def test_mid_job_join_and_last_event_id(stack):
    job_id = stack.upload(AUDIO / "long_two_speakers.mp3", diarize="true").json()["job_id"]
    first = sse_collector(stack, job_id)
    wait_until(lambda: stack.get(f"/api/transcribe/debug/{job_id}").json()["cached_segments"] >= 3,
               timeout=120, interval=0.1, what="three segments")
    late_sse = sse_collector(stack, job_id)
    late_ws = ws_collector(stack, job_id)
    full = first.result()
    result = stack.get(f"/api/transcribe/result/{job_id}").json()
    check_complete(full, result)
    for late in (late_sse.result(), late_ws.result()):
        check_complete(late, result)
        # The joiner starts from the current status, not the whole history of progress ticks.
        assert late[0]["seq"] > 1

    # Resume from an event in the middle: exactly the events after it, nothing before, nothing twice.
    middle = full[len(full) // 2]["seq"]
    resumed = events_of(read_sse(stack.url(f"/api/transcribe/events/{job_id}"),
                                 headers={"Last-Event-ID": str(middle)}))
    assert resumed == [e for e in full if e["seq"] > middle]
    over_ws = ws_collector(stack, job_id, query=f"?last_event_id={middle}").result()
    assert over_ws == resumed


def test_finished_job_replays_then_closes(stack):
    job_id = stack.upload(AUDIO / "two_speakers.mp3", diarize="false").json()["job_id"]
    stack.wait_job(job_id)
    replay = events_of(read_sse(stack.url(f"/api/transcribe/events/{job_id}")))
    result = stack.get(f"/api/transcribe/result/{job_id}").json()
    assert [e["text"] for e in replay if e["type"] == "segment"] == [s["text"] for s in result["segments"]]
    assert replay[-1]["status"] == "completed"
    assert [e for e in replay if e["type"] == "status"] == [replay[-1]]


def test_unknown_job_streams_are_404(stack):
    sse = stack.get("/api/transcribe/events/no-such-job")
    assert sse.status_code == 404 and "not found" in sse.json()["detail"]
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        websocket.create_connection(stack.base.replace("http", "ws") + "/api/transcribe/live/no-such-job")
    assert err.value.status_code == 404


def test_one_redis_subscription_serves_every_client_and_idle_streams_beat(stack):
    """20 clients on a job that waits in the queue: still one pattern subscription, and heartbeats flow."""
    import subprocess
    import threading

    import requests

    busy = stack.upload(AUDIO / "long_two_speakers.mp3", diarize="false").json()["job_id"]
    waiting = stack.upload(AUDIO / "silence.mp3").json()["job_id"]  # queued behind the long job
    db = stack.env["REDIS_URL"].rsplit("/", 1)[1]

    def subscribers() -> int:
        listing = subprocess.run(["redis-cli", "-p", str(stack.redis.port), "-n", db, "CLIENT", "LIST"],
                                 capture_output=True, text=True, check=True).stdout
        return sum(1 for line in listing.splitlines() if " psub=1 " in f" {line} ")

    beats: list[int] = []
    stop = threading.Event()

    connected: list[int] = []

    def client():
        count = 0
        with requests.get(stack.url(f"/api/transcribe/events/{waiting}"), stream=True, timeout=60) as resp:
            connected.append(resp.status_code)
            for line in resp.iter_lines(decode_unicode=True):
                if line == ": heartbeat":
                    count += 1
                if count >= 2 or stop.is_set():
                    break
        beats.append(count)

    before = subscribers()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(20)]
    for t in threads:
        t.start()
    wait_until(lambda: len(connected) == 20, timeout=30, what="20 open streams")
    during = subscribers()
    for t in threads:
        t.join(30)
    stop.set()
    assert before <= 1 and during == 1  # the web process's single shared subscription
    assert beats == [2] * 20  # every idle stream got heartbeats (PARLEY_HEARTBEAT_S=2 in tests)
    stack.wait_job(busy)
    assert stack.wait_job(waiting)["status"] == "completed"
