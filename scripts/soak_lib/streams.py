"""Stream clients of the soak: follow a job over SSE or WebSocket, hang up on purpose, and resume from their last id."""
from __future__ import annotations

import json
import random
import threading
import time

import requests
import websocket

TERMINAL = ("completed", "failed", "canceled")


def is_terminal(event: dict) -> bool:
    return event.get("type") == "status" and event.get("state", event.get("status")) in TERMINAL


class StreamClient(threading.Thread):
    """Reads one job's events from the start (Last-Event-ID 0, the whole log) to its terminal status.

    It hangs up by itself `hangups` times, each after a random number of events, and reconnects with the last
    sequence number it got, as a browser does when the network drops; a web restart makes it reconnect too.
    `events` is every job event received, in order; `connections` counts the connections that answered.
    """

    def __init__(self, base: str, job_id: str, *, kind: str, hangups: int, rng: random.Random,
                 timeout: float = 1800):
        super().__init__(daemon=True, name=f"stream-{kind}-{job_id[:8]}")
        self.base, self.job_id, self.kind = base, job_id, kind
        self.hangups_left = hangups
        self.rng = rng
        self.deadline = time.monotonic() + timeout
        self.events: list[dict] = []
        self.connections = 0
        self.hung_up = 0
        self.finished = False
        self.error: str | None = None
        self._halt = threading.Event()

    @property
    def last_seq(self) -> int:
        return self.events[-1]["seq"] if self.events else 0

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        try:
            while not self._halt.is_set() and time.monotonic() < self.deadline:
                hang_after = self.rng.randint(1, 4) if self.hangups_left else None
                if self._connect_once(hang_after):
                    self.finished = True
                    return
                self._halt.wait(0.5)
            self.error = "no terminal status before the deadline"
        except Exception as exc:  # reported by the checks, not lost in a thread
            self.error = f"{type(exc).__name__}: {exc}"

    def _take(self, event: dict, hang_after: int | None, taken: int) -> str:
        """'end' at the terminal status, 'hangup' when this connection should be dropped now, else ''."""
        self.events.append(event)
        if is_terminal(event):
            return "end"
        if hang_after is not None and taken + 1 >= hang_after:
            self.hangups_left -= 1
            self.hung_up += 1
            return "hangup"
        return ""

    def _connect_once(self, hang_after: int | None) -> bool:
        """One connection; True once the terminal status has been read."""
        if self.kind == "ws":
            return self._ws_once(hang_after)
        return self._sse_once(hang_after)

    def _sse_once(self, hang_after: int | None) -> bool:
        url = f"{self.base}/api/transcribe/events/{self.job_id}"
        try:
            with requests.get(url, stream=True, headers={"Last-Event-ID": str(self.last_seq)},
                              timeout=(3, 30)) as resp:
                if resp.status_code != 200:
                    return False
                self.connections += 1
                taken, data = 0, None
                for line in resp.iter_lines(decode_unicode=True):
                    if line.startswith("data:"):
                        data = line[5:].strip()
                    elif line == "" and data is not None:
                        verdict = self._take(json.loads(data), hang_after, taken)
                        taken, data = taken + 1, None
                        if verdict:
                            return verdict == "end"
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.Timeout):
            pass  # the web tier went away mid-stream or is not back yet
        return False

    def _ws_once(self, hang_after: int | None) -> bool:
        url = self.base.replace("http", "ws", 1) + f"/api/transcribe/live/{self.job_id}?last_event_id={self.last_seq}"
        try:
            ws = websocket.create_connection(url, timeout=30)
        except (OSError, websocket.WebSocketException):
            return False
        self.connections += 1
        taken = 0
        try:
            while True:
                message = ws.recv()
                if not message:
                    return False
                event = json.loads(message)
                if event.get("type") == "heartbeat":
                    continue
                verdict = self._take(event, hang_after, taken)
                taken += 1
                if verdict:
                    return verdict == "end"
        except (OSError, websocket.WebSocketException):
            return False
        finally:
            ws.close()


def sequence_faults(events: list[dict], log: list[dict]) -> list[str]:
    """What is wrong with what a client received, against the job's whole log: gaps, repeats, a missing end."""
    faults = []
    seqs = [e.get("seq") for e in events]
    if seqs != list(range(1, len(seqs) + 1)):
        repeats = len(seqs) - len(set(seqs))
        missing = sorted(set(range(1, max(seqs, default=0) + 1)) - set(seqs))
        faults.append(f"sequence not 1..n: {repeats} repeated, missing {missing[:10]}")
    if not events or not is_terminal(events[-1]):
        faults.append("no terminal status at the end")
    if events != log[:len(events)]:
        first = next((i for i, (a, b) in enumerate(zip(events, log)) if a != b), min(len(events), len(log)))
        faults.append(f"differs from the job's log from event #{first + 1}")
    elif len(events) != len(log):
        faults.append(f"{len(events)} events received, the log has {len(log)}")
    return faults
