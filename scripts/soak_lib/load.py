"""The soak's load: jobs of every kind sent through both APIs on a schedule, and where each of them ended."""
from __future__ import annotations

import random
import sqlite3
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from .stack import ROOT, SoakStack
from .streams import StreamClient

AUDIO = ROOT / "tests" / "audio"
TERMINAL = ("completed", "failed", "canceled")
# Share of the jobs of each kind (transcriptions without and with speakers, sessions-API uploads, segment
# re-transcriptions, chats through either API, summaries, multi-session analyses).
# Language-model jobs are the dearest on a CPU (an analysis is four generations), so they are the smaller share.
MIX = {"transcribe": 0.24, "transcribe_speakers": 0.18, "upload": 0.14, "retranscribe": 0.17, "chat": 0.14,
       "summary": 0.08, "analysis": 0.05}
SESSION_FIELDS = {"clientName": "Soak Client", "sessionName": "Soak", "date": "2026-06-23",
                  "sessionType": "Individual", "therapy": "CBT"}
SUMMARY_TEXT = ("A: Thanks for coming in. How was your week?\nB: Busy. Work was stressful and I slept badly.\n"
                "A: Let us plan a regular bedtime.\nB: Okay, I will try that.")


@dataclass(frozen=True)
class Clip:
    """A recording the soak sends again and again; the calm run's transcript of it is the reference."""

    name: str
    path: Path
    weight: float

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()


def make_clips(workdir: Path, *, full: bool = True) -> list[Clip]:
    """Short cuts of the test dialogues (one chunk each) and, with `full` (default True), a whole dialogue of
    two chunks (a worker killed after its first chunk resumes it mid-job); short soaks leave it out."""
    cuts = [("two_a", "two_speakers.mp3", 0.0, 9.0, 0.4), ("three_b", "three_speakers.mp3", 10.0, 22.0, 0.4)]
    clips = []
    for name, src, start, end, weight in cuts:
        dest = workdir / f"{name}.mp3"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-ss", str(start), "-to", str(end),
                        "-i", str(AUDIO / src), str(dest)], check=True)
        clips.append(Clip(name, dest, weight))
    if full:
        clips.append(Clip("two_full", AUDIO / "two_speakers.mp3", 0.15))
    return clips


@dataclass
class Item:
    """One job the soak asked for, and what became of it."""

    kind: str
    api: str  # "transcription" or "sessions": which of the two APIs it went through
    at_s: float  # when it was due, from the start of the load
    clip: str | None = None
    speakers: int = 0
    job_id: str | None = None  # job table (transcriptions, re-transcriptions, a session's transcription)
    llm_job_id: str | None = None
    chat_id: int | None = None
    session_id: int | None = None
    analysis_id: int | None = None
    state: str = "sending"  # sending, refused, pending, then the terminal status
    reason: str | None = None
    retries: Counter = field(default_factory=Counter)
    answer_s: float | None = None  # how long the client waited for the API's answer (retries and replies included)
    stream: StreamClient | None = None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL or self.state == "refused"


class Load:
    """Sends `count` jobs spread over `duration_s`, from a pool of client threads, and follows them to their end."""

    def __init__(self, stack: SoakStack, *, clips: list[Clip], references: dict, sessions: list[int],
                 count: int, duration_s: float, rng: random.Random, stream_share: float = 0.5):
        self.stack, self.clips, self.references, self.sessions = stack, clips, references, sessions
        self.duration_s, self.rng, self.stream_share = duration_s, rng, stream_share
        kinds = [k for k in MIX for _ in range(max(1, round(MIX[k] * count)))]
        rng.shuffle(kinds)
        self.items = [Item(kind, "", at_s=duration_s * i / len(kinds)) for i, kind in enumerate(kinds)]
        self.started = 0.0

    # --- sending ------------------------------------------------------------------------------------
    def run(self) -> None:
        """Send every item at its time; returns once every request has been answered (not every job finished)."""
        self.started = time.monotonic()
        with ThreadPoolExecutor(max_workers=24, thread_name_prefix="soak-client") as pool:
            for item in self.items:
                time.sleep(max(0.0, self.started + item.at_s - time.monotonic()))
                pool.submit(self._send_safely, item)

    def _send_safely(self, item: Item) -> None:
        began = time.monotonic()
        try:
            getattr(self, f"_send_{item.kind}")(item)
        except Exception as exc:  # a client that could not be served at all: counted, never lost
            item.state, item.reason = "refused", f"{type(exc).__name__}: {exc}"[:200]
        item.answer_s = time.monotonic() - began

    def _retry(self, item: Item):
        return lambda reason: item.retries.update([reason])

    def _accepted(self, item: Item, response, *codes: int) -> dict | None:
        if response.status_code in codes:
            return response.json()
        item.state = "refused"
        item.reason = f"HTTP {response.status_code}: {response.text[:160]}"
        return None

    def _pick_clip(self) -> Clip:
        return self.rng.choices(self.clips, weights=[c.weight for c in self.clips])[0]

    def _follow(self, item: Item) -> None:
        if self.rng.random() < self.stream_share:
            kind = self.rng.choice(("sse", "ws"))
            item.stream = StreamClient(self.stack.base, item.job_id, kind=kind, hangups=self.rng.randint(1, 2),
                                       rng=random.Random(self.rng.random()))
            item.stream.start()

    def _transcribe(self, item: Item, speakers: int) -> None:
        clip = self._pick_clip()
        item.api, item.clip, item.speakers = "transcription", clip.name, speakers
        data = {"diarize": "true", "num_speakers": str(speakers)} if speakers else {"diarize": "false"}
        body = self._accepted(item, self.stack.patient("POST", "/api/transcribe/", on_retry=self._retry(item),
                                                       files={"file": (clip.path.name, clip.data)}, data=data), 200)
        if body:
            item.job_id, item.state = body["job_id"], "pending"
            self._follow(item)

    def _send_transcribe(self, item: Item) -> None:
        self._transcribe(item, 0)

    def _send_transcribe_speakers(self, item: Item) -> None:
        self._transcribe(item, 2)

    def _send_upload(self, item: Item) -> None:
        clip = self._pick_clip()
        item.api, item.clip, item.speakers = "sessions", clip.name, self.rng.choice((0, 2))
        body = self._accepted(item, self.stack.patient(
            "POST", "/api/sessions/upload", on_retry=self._retry(item),
            data={**SESSION_FIELDS, "numSpeakers": str(item.speakers)},
            files={"audioFile": (clip.path.name, clip.data, "audio/mpeg")}), 202)
        if body:
            item.session_id, item.state = body["sessionId"], "pending"

    def _send_retranscribe(self, item: Item) -> None:
        item.api = "transcription"
        source = self.rng.choice([r for r in self.references.values() if r["segments"]])
        _, start_ms, end_ms, _, _ = self.rng.choice(source["segments"])
        response = self.stack.patient(
            "POST", f"/api/retranslate/segment-from-full?job_id={source['job_id']}", on_retry=self._retry(item),
            json={"segment_id": f"soak-{id(item)}", "start_time": max(0.0, start_ms / 1000 - 0.2),
                  "end_time": end_ms / 1000})
        if response.status_code == 200:
            item.state = "completed"
        elif response.status_code == 422:
            item.state, item.reason = "failed", response.json()["message"]
        elif body := self._accepted(item, response, 202):
            item.job_id, item.state = body["job_id"], "pending"

    def _send_chat(self, item: Item) -> None:
        if self.rng.random() < 0.5:
            item.api = "transcription"
            response = self.stack.patient("POST", "/api/chat/", on_retry=self._retry(item), json={
                "transcript": [{"start": 0, "end": 2, "text": "I would like the report by Friday."}],
                "messages": [{"role": "user", "content": "What was requested?"}], "max_tokens": 12})
            if response.status_code == 200:
                item.state = "completed"
            elif body := self._accepted(item, response, 202):
                item.llm_job_id, item.state = body["job_id"], "pending"
            return
        item.api = "sessions"
        chat = self._accepted(item, self.stack.patient("POST", "/api/chats", on_retry=self._retry(item), json={}),
                              200, 201)
        if not chat:
            return
        item.chat_id = chat["id"]
        # The reply streams back; a client that hangs up would cancel it (the Stop button), so read it all.
        # A web restart breaks the stream: the reply goes on in the worker and the tracker sees it end.
        response = self.stack.patient("POST", f"/api/chats/{item.chat_id}/messages", on_retry=self._retry(item),
                                      json={"text": "Say hello to the team.", "maxTokens": 12}, stream=True)
        if response.status_code != 200:
            item.state, item.reason = "refused", f"HTTP {response.status_code}: {response.text[:160]}"
            return
        item.state = "pending"
        try:
            for _ in response.iter_lines():
                pass
        except Exception:  # noqa: BLE001 - a broken stream is one of the faults; the job is followed below
            item.retries.update(["reply stream broken"])
        finally:
            response.close()

    def _send_summary(self, item: Item) -> None:
        item.api = "transcription"
        body = self._accepted(item, self.stack.patient("POST", "/api/summary/", on_retry=self._retry(item),
                                                       json={"full_text": SUMMARY_TEXT, "max_length": 10}), 200)
        if body:
            item.llm_job_id, item.state = body["job_id"], "pending"

    def _send_analysis(self, item: Item) -> None:
        item.api = "sessions"
        body = self._accepted(item, self.stack.patient(
            "POST", "/api/analysis-jobs", on_retry=self._retry(item),
            json={"sessionIds": self.sessions, "prompt": "What did the speakers talk about?"}), 202)
        if body:
            item.analysis_id, item.state = body["jobId"], "pending"

    # --- following ----------------------------------------------------------------------------------
    def poll(self) -> int:
        """Reads where every unfinished item stands from the database (readers are never blocked: WAL);
        returns how many are still unfinished. The APIs' own answers were checked when the items were sent."""
        try:
            conn = sqlite3.connect(f"file:{self.stack.db_path}?mode=ro", uri=True, timeout=2)
        except sqlite3.OperationalError:
            return sum(not i.done for i in self.items)
        try:
            for item in self.items:
                if item.state == "pending":
                    self._poll_item(conn, item)
        except sqlite3.OperationalError:
            pass  # the database is locked by the fault right now; next round
        finally:
            conn.close()
        return sum(not i.done for i in self.items)

    def _poll_item(self, conn: sqlite3.Connection, item: Item) -> None:
        row = None
        if item.session_id is not None and item.job_id is None:
            found = conn.execute("SELECT whisper_job_id FROM session WHERE id = ?", (item.session_id,)).fetchone()
            if found and found[0]:
                item.job_id = found[0]
        if item.job_id:
            row = conn.execute("SELECT status, error FROM job WHERE id = ?", (item.job_id,)).fetchone()
        elif item.llm_job_id:
            row = conn.execute("SELECT status, error FROM llm_job WHERE id = ?", (item.llm_job_id,)).fetchone()
        elif item.chat_id is not None:
            row = conn.execute("SELECT status, error FROM llm_job WHERE chat_id = ? ORDER BY created_at_ms DESC",
                               (item.chat_id,)).fetchone()
        elif item.analysis_id is not None:
            row = conn.execute("SELECT status, error_message FROM analysis_job WHERE id = ?",
                               (item.analysis_id,)).fetchone()
        if row and row[0] in TERMINAL:
            item.state, item.reason = row[0], row[1]

    def summary(self) -> dict:
        by_kind: dict[str, Counter] = {}
        reasons, retries = Counter(), Counter()
        for item in self.items:
            by_kind.setdefault(f"{item.kind} ({item.api or '?'})", Counter())[item.state] += 1
            if item.state in ("failed", "canceled", "refused"):
                reasons[f"{item.kind}: {item.state}: {(item.reason or 'NO REASON')[:120]}"] += 1
            retries.update(item.retries)
        waits = sorted((i.answer_s or 0, i.kind, i.api) for i in self.items)[-3:]
        return {"by_kind": {k: dict(v) for k, v in sorted(by_kind.items())}, "reasons": dict(reasons),
                "client_retries": dict(retries.most_common(12)),
                "longest_answers": [f"{kind} ({api}) {s:.0f} s" for s, kind, api in reversed(waits)]}
