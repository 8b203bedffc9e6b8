"""The web process restarts while clients stream a job's events: they reconnect and resume from their last id."""
from __future__ import annotations

import json
import threading
import time

import requests
import websocket

from conftest import AUDIO, wait_until
from helpers import events_of, read_sse


class ResumingSse(threading.Thread):
    """Reads an SSE stream the way a browser's EventSource does: on a broken stream it waits the
    server's `retry:` hint and reconnects with Last-Event-ID set to the last `id:` it saw."""

    def __init__(self, url: str, *, timeout: float = 300):
        super().__init__(daemon=True)
        self.url, self.deadline = url, time.monotonic() + timeout
        self.frames: list[dict] = []  # {"id", "event", "data"} of every job event received
        self.retry_hints: list[int] = []
        self.connections = 0
        self.sent_ids: list[str | None] = []  # Last-Event-ID of each connection

    def run(self) -> None:
        last_id, retry_s = None, 1.0
        while time.monotonic() < self.deadline:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with requests.get(self.url, stream=True, headers=headers, timeout=(2, 30)) as resp:
                    if resp.status_code != 200:
                        raise requests.ConnectionError(f"answered {resp.status_code}")
                    self.connections += 1
                    self.sent_ids.append(last_id)
                    frame: dict = {}
                    for line in resp.iter_lines(decode_unicode=True):
                        if line.startswith("retry:"):
                            self.retry_hints.append(int(line[6:].strip()))
                            retry_s = self.retry_hints[-1] / 1000
                        elif line.startswith(":"):
                            continue  # heartbeat comment
                        elif line:
                            key, _, value = line.partition(":")
                            frame[key] = value[1:] if value.startswith(" ") else value
                        elif "data" in frame:
                            frame["data"] = json.loads(frame["data"])
                            self.frames.append(frame)
                            last_id = frame.get("id", last_id)
                            if _terminal(frame["data"]):
                                return
                            frame = {}
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.Timeout):
                pass  # the server went away mid-stream or is not back yet: retry like EventSource
            time.sleep(retry_s)
        raise AssertionError(f"stream did not reach a terminal status; got {len(self.frames)} events")


class ResumingWebSocket(threading.Thread):
    """Reads /api/transcribe/live/<job>; on a lost connection it reconnects with ?last_event_id=<last seq>."""

    def __init__(self, url: str, *, timeout: float = 300):
        super().__init__(daemon=True)
        self.url, self.deadline = url, time.monotonic() + timeout
        self.events: list[dict] = []
        self.connections = 0

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            query = f"?last_event_id={self.events[-1]['seq']}" if self.events else ""
            try:
                ws = websocket.create_connection(self.url + query, timeout=30)
            except (OSError, websocket.WebSocketException):
                time.sleep(0.5)
                continue
            self.connections += 1
            try:
                while True:
                    message = ws.recv()
                    if not message:
                        break
                    event = json.loads(message)
                    if event["type"] == "heartbeat":
                        continue
                    self.events.append(event)
                    if _terminal(event):
                        return
            except (OSError, websocket.WebSocketException):
                pass
            finally:
                ws.close()
            time.sleep(0.5)
        raise AssertionError(f"socket did not reach a terminal status; got {len(self.events)} events")


def _terminal(event: dict) -> bool:
    return event.get("type") == "status" and event.get("status") in ("completed", "failed", "canceled")


def test_clients_resume_after_the_web_process_restarts_mid_stream(stack):
    job_id = stack.upload(AUDIO / "long_two_speakers.mp3", diarize="true").json()["job_id"]
    sse = ResumingSse(stack.url(f"/api/transcribe/events/{job_id}"))
    ws = ResumingWebSocket(stack.base.replace("http", "ws", 1) + f"/api/transcribe/live/{job_id}")
    sse.start()
    ws.start()
    segments = lambda events: sum(1 for e in events if e["type"] == "segment")  # noqa: E731
    wait_until(lambda: segments(events_of(sse.frames)) >= 1 and segments(ws.events) >= 1, timeout=180,
               interval=0.1, what="the first segment on both streams")
    try:
        stack.web.stop()
        status_at_restart = None
        stack.start_web()  # same port, as a supervisor restarting the service would
        status_at_restart = stack.get(f"/api/transcribe/status/{job_id}").json()["status"]
    finally:
        if not stack.web.alive():
            stack.start_web()
    sse.join(300)
    ws.join(300)
    assert not sse.is_alive() and not ws.is_alive(), "a client did not finish"
    assert status_at_restart == "processing", "the job ended before the restart: nothing was resumed"

    # Both clients lost their connection and came back.
    assert sse.connections >= 2 and ws.connections >= 2
    assert sse.sent_ids[0] is None and all(i is not None for i in sse.sent_ids[1:])
    assert sse.retry_hints and all(0 < r <= 10_000 for r in sse.retry_hints)  # EventSource's reconnect delay
    assert all(f["id"] == str(f["data"]["seq"]) for f in sse.frames)  # every frame carries its id

    # The union of what each client got is the job's whole log from its first event on: in order, each once.
    log = events_of(read_sse(stack.url(f"/api/transcribe/events/{job_id}"), headers={"Last-Event-ID": "0"}))
    for received in (events_of(sse.frames), ws.events):
        first = received[0]["seq"]
        assert received == [e for e in log if e["seq"] >= first]
        assert received[-1]["type"] == "status" and received[-1]["status"] == "completed"
        assert [s["id"] for s in received if s["type"] == "segment"] == list(range(segments(received)))
    result = stack.get(f"/api/transcribe/result/{job_id}").json()
    speakers = [e for e in ws.events if e["type"] == "speakers"]
    assert len(speakers) == 1 and speakers[0]["segments"] == result["segments"]
