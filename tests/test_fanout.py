"""1,000 live clients (SSE and WebSocket) on one job: every event reaches every client once, in order; resume by id.

The web tier runs as the Procfile runs it (gunicorn's gevent worker, tests/conftest.py Stack.start_web), in one
process. Events are written and published from this process exactly as a worker does it (the event log row
through services.events.record, then the same JSON on the job's Redis channel), so the test controls how many
there are and when; no model runs. A bounded version of scripts/bench/fanout.py, without its timings.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
import redis

from conftest import running_stack, wait_until
from stream_clients import StreamClient, allow_open_files, connect_all, run_client

CLIENTS = 1000
SEGMENTS = 40  # published 0.1 s apart while the clients connect
RESUME_AFTER = 10  # two clients join once seq 15 is out and say they have 1..10


@pytest.fixture(scope="module")
def fanout_stack(tmp_path_factory, redis_server):
    """Web tier only, with a fresh database: the events come from the test."""
    with running_stack(tmp_path_factory.mktemp("fanout"), redis_server) as s:
        yield s


class Publisher:
    """Writes a job's events into the stack's database and publishes them on its Redis, as a worker does."""

    def __init__(self, stack):
        from models import init_db

        init_db(stack.env["DATABASE_URL"])
        self.redis = redis.Redis.from_url(stack.env["REDIS_URL"])

    def create_job(self) -> str:
        from models import Job, Session, db
        from services import events

        with db.connection_context(), db.atomic():
            session = Session.create(file_name="fanout.mp3", session_name="fanout", date="2025-01-01T12:00:00.000Z",
                                     status="transcribing")
            job = Job.create(id=str(uuid.uuid4()), session=session, model_name="tiny.en", status="processing",
                             message="Transcribing")
            self._publish(events.record(job.id, "status", events.status_payload(job)))
        return job.id

    def segments(self, job_id: str, *, count: int, every_s: float, on_seq) -> None:
        """`count` segment events, one per `every_s` seconds; `on_seq(seq)` after each is published."""
        from models import db
        from services import events

        with db.connection_context():
            for i in range(count):
                event = events.record(job_id, "segment", {"segment": {
                    "id": i, "start": i * 4.0, "end": i * 4.0 + 3.5, "text": f"segment number {i}",
                    "speaker": "SPEAKER_00", "words": []}})
                self._publish(event)
                on_seq(event["seq"])
                time.sleep(every_s)  # a worker's pace; nothing waits on it

    def finish(self, job_id: str) -> int:
        from models import Job, db
        from services import events

        with db.connection_context():
            event = events.record_status(Job.get_by_id(job_id), status="completed", progress=100.0, message="Done")
        self._publish(event)
        return event["seq"]

    def _publish(self, event: dict) -> None:
        from services import events

        self.redis.publish(events.channel(event["job_id"]), json.dumps(event, separators=(",", ":")))


async def fan_out(port: int, publisher: Publisher, job_id: str) -> tuple[list[StreamClient], list[StreamClient], int]:
    """The crowd connects while segments are being published (viewers joining a running job: each reads the
    log, then takes live events, and the two overlap); two clients resume mid-job; then the job ends."""
    loop = asyncio.get_running_loop()
    resume_now = asyncio.Event()
    publishing = asyncio.create_task(asyncio.to_thread(
        publisher.segments, job_id, count=SEGMENTS, every_s=0.1,
        on_seq=lambda seq: seq == RESUME_AFTER + 5 and loop.call_soon_threadsafe(resume_now.set)))
    crowd = [StreamClient("sse" if i % 2 == 0 else "ws") for i in range(CLIENTS)]
    tasks = await connect_all(port, job_id, crowd, timeout=120)
    unserved = [c for c in crowd if not c.connected.is_set()]
    assert not unserved, f"{len(unserved)} of {CLIENTS} clients got no first event: {unserved[0].error}"
    await resume_now.wait()
    resumed = [StreamClient("sse", resume_after=RESUME_AFTER), StreamClient("ws", resume_after=RESUME_AFTER)]
    tasks += [asyncio.create_task(run_client(port, job_id, c)) for c in resumed]
    await asyncio.gather(publishing, *(c.connected.wait() for c in resumed))
    last_seq = await asyncio.to_thread(publisher.finish, job_id)  # every client is registered by now
    _, pending = await asyncio.wait(tasks, timeout=120)
    for task in pending:
        task.cancel()
    return crowd, resumed, last_seq


def test_every_event_reaches_a_thousand_clients_in_order_and_resume_works(fanout_stack):
    allow_open_files(CLIENTS + 512)
    publisher = Publisher(fanout_stack)
    job_id = publisher.create_job()

    crowd, resumed, last_seq = asyncio.run(fan_out(fanout_stack.port, publisher, job_id))

    assert last_seq == SEGMENTS + 2
    problems: dict[str, int] = {}
    for c in crowd:
        problem = c.problem(1, last_seq)
        if problem:
            problems[f"{c.kind}: {problem}"] = problems.get(f"{c.kind}: {problem}", 0) + 1
    assert not problems, f"{sum(problems.values())} of {CLIENTS} clients did not get 1..{last_seq} in order: {problems}"
    assert {c.kind for c in crowd} == {"sse", "ws"}
    for c in resumed:  # Last-Event-ID (SSE) and ?last_event_id= (WebSocket): exactly the events after it
        assert c.problem(RESUME_AFTER + 1, last_seq) is None, (c.kind, c.problem(RESUME_AFTER + 1, last_seq))
    # Every stream ended and let go of its registration with the process's event hub.
    wait_until(lambda: fanout_stack.get(f"/api/transcribe/debug/{job_id}").json()["live_clients"] == 0,
               timeout=30, what="the hub to have no clients left")
