"""1,000 live clients (SSE and WebSocket) on one job: every event reaches every client once, in order; resume by id.

The web tier runs as the Procfile runs it (gunicorn's gevent worker, tests/conftest.py Stack.start_web), in one
process. Events are written and published from this process exactly as a worker does it (the event log row
through services.events.record, then the same JSON on the job's Redis channel), so the test controls how many
there are and when; no model runs. A bounded version of scripts/bench/fanout.py, without its timings.

The tests at the end cover what the benchmark's tail latencies led to: the hub pausing so that requests waiting
on their sockets get in during a hand-out, and WebSocket streams that end cleanly and let go of their connection.
"""
from __future__ import annotations

import asyncio
import json
import socket
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


BIG_TEXT_CHARS = 64_000
BIG_EVENTS = 120  # ~7.7 MB: more than the kernel buffers between a stalled client and the server hold


def test_stalled_clients_get_every_big_event_whole_and_in_order(fanout_stack):
    """Two clients stop reading while big events go out, so their socket buffers fill and the event hub's own
    writes to them are cut mid-frame (the clients' greenlets finish those frames); once they read again they
    get every event whole, once, in order. The WebSocket client agreed permessage-deflate (as browsers do):
    the server library compresses what it sends, the hub's frames go uncompressed, and a strict RFC 6455 /
    7692 implementation (wsproto) reads both."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Request
    from wsproto.extensions import PerMessageDeflate

    stack = fanout_stack
    publisher = Publisher(stack)
    job_id = publisher.create_job()

    def stalled_socket() -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", stack.port))
        s.settimeout(60)
        return s

    sse = stalled_socket()
    sse.sendall(f"GET /api/transcribe/events/{job_id} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    ws = stalled_socket()
    client = WSConnection(ConnectionType.CLIENT)
    ws.sendall(client.send(Request(host="x", target=f"/api/transcribe/live/{job_id}",
                                   extensions=[PerMessageDeflate()])))
    messages: list[str] = []
    while not any(isinstance(e, AcceptConnection) for e in _ws_events(client, ws, messages)):
        pass
    assert client.state.name == "OPEN"
    wait_until(lambda: stack.get(f"/api/transcribe/debug/{job_id}").json()["live_clients"] == 2, timeout=30,
               what="both clients registered with the hub")

    from models import db
    from services import events
    with db.connection_context():  # no client reads meanwhile
        for i in range(BIG_EVENTS):
            publisher._publish(events.record(job_id, "segment", {"segment": {
                "id": i, "start": i * 4.0, "end": i * 4.0 + 3.5, "text": f"{i:05d}" + "x" * BIG_TEXT_CHARS,
                "speaker": "SPEAKER_00", "words": []}}))
    last_seq = publisher.finish(job_id)

    raw = b""
    while not raw.endswith(b"\r\n0\r\n\r\n"):
        data = sse.recv(1 << 20)
        assert data, "the SSE stream closed before its last chunk"
        raw += data
    body, sse_events = _unchunk(raw.split(b"\r\n\r\n", 1)[1]), []
    for block in body.decode().split("\n\n"):
        data = [line[len("data: "):] for line in block.split("\n") if line.startswith("data: ")]
        if data:
            sse_events.append(json.loads(data[0]))
    while not any(isinstance(e, CloseConnection) for e in _ws_events(client, ws, messages)):
        pass
    ws_events = [json.loads(m) for m in messages]
    for name, got in (("sse", sse_events), ("ws", ws_events)):
        assert [e["seq"] for e in got] == list(range(1, last_seq + 1)), name
        texts = [e["segment"]["text"] for e in got if e["type"] == "segment"]
        assert texts == [f"{i:05d}" + "x" * BIG_TEXT_CHARS for i in range(BIG_EVENTS)], name


def _ws_events(client, sock, messages: list[str]) -> list:
    """Read once from `sock` into wsproto `client`; whole text messages go to `messages`; the events read."""
    from wsproto.events import CloseConnection, Ping, TextMessage

    data = sock.recv(1 << 20)
    assert data, "the WebSocket closed without a close frame"
    client.receive_data(data)
    out = []
    for event in client.events():
        out.append(event)
        if isinstance(event, TextMessage):
            client._partial = getattr(client, "_partial", "") + event.data
            if event.message_finished:
                messages.append(client._partial)
                client._partial = ""
        elif isinstance(event, Ping):
            sock.sendall(client.send(event.response()))
        elif isinstance(event, CloseConnection):
            sock.sendall(client.send(event.response()))
    return out


def _unchunk(data: bytes) -> bytes:
    """The body of an HTTP/1.1 chunked transfer."""
    out, pos = [], 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2:end + 2 + size])
        pos = end + 2 + size + 2


def test_a_terminal_event_cut_by_a_full_buffer_is_finished_and_ends_the_stream():
    """The hub's write of the last event fills the socket buffer: the writer keeps the rest, stops, says the
    stream has ended, and the rest goes out whole once the client reads."""
    import threading

    from web.direct_writes import DirectWriter
    from web.streams import RESYNC, Published

    server, client = socket.socketpair()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    server.setblocking(False)
    frame = b"%07d" % 0 + b"x" * 999_993  # 1 MB: far more than the buffers hold
    writer = DirectWriter(server, lambda event: frame, resync=RESYNC)
    writer.sent, writer.active = 1, True
    writer.offer(Published({"type": "status", "seq": 2, "status": "completed"}))
    assert writer.ended and writer.rest and not writer.active and writer.wake.is_set() and writer.sent == 2
    assert frame.endswith(writer.rest) and len(writer.rest) < len(frame)

    received = bytearray()

    def read_all():
        while len(received) < len(frame):
            received.extend(client.recv(1 << 16))

    reader = threading.Thread(target=read_all)
    reader.start()
    server.settimeout(30)  # what gevent's socket does for the stream's greenlet: wait until it can write
    writer.flush_rest()
    reader.join(30)
    assert bytes(received) == frame and not writer.rest and not writer.failed
    writer.offer(Published({"type": "segment", "seq": 3}))  # nothing is written after the end
    assert list(writer.pending) == [{"type": "segment", "seq": 3}]


HUB_UNDER_GEVENT = """
from gevent import monkey
monkey.patch_all()
import json, queue, socket, threading
from web.streams import YIELD_EVERY, EventHub, Published

hub = EventHub("redis://127.0.0.1:9/0")  # never started: only its hand-out to clients runs here
clients = [queue.Queue() for _ in range(5000)]
hub._clients["job"].update(clients)
request, peer = socket.socketpair()
waiting, seen = threading.Event(), []

def serve():  # a keep-alive connection's greenlet, waiting for its next request
    waiting.set()
    request.recv(1)
    seen.append(sum(q.qsize() for q in clients))

reader = threading.Thread(target=serve)
reader.start()
waiting.wait()
peer.send(b"G")  # the request has arrived before the hand-out starts
hub._deliver("job", Published({"type": "segment", "seq": 1}))
reader.join()
print(json.dumps({"served_after": seen[0], "yield_every": YIELD_EVERY,
                  "delivered": sum(q.qsize() for q in clients)}))
"""


def test_a_request_waiting_on_its_socket_is_served_during_a_big_hand_out():
    """Under gevent (the Procfile's worker) the hub hands one event to 5,000 clients of a process; a request
    whose bytes are already on its socket must be served at the hub's first pause, not after all of them.
    With sleep(0) as the pause it was served after 3,000 clients or more: the event loop never polled sockets."""
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", HUB_UNDER_GEVENT], cwd=Path(__file__).resolve().parents[1],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["delivered"] == 5000
    assert result["served_after"] <= 2 * result["yield_every"], result


def _websocket_to_the_end(port: int, job_id: str, *, on_first=lambda: None) -> tuple[list[tuple[int, bytes]], bytes]:
    """A WebSocket client (websocket-client) that answers the server's close frame and then reads the raw socket
    on: the frames it got, and every byte that came after the close frame before the server closed the
    connection. `on_first()` once the first frame is in (the server has registered the stream by then)."""
    import websocket

    client = websocket.create_connection(f"ws://127.0.0.1:{port}/api/transcribe/live/{job_id}", timeout=30)
    try:
        frames = []
        while not frames or frames[-1][0] != websocket.ABNF.OPCODE_CLOSE:
            frames.append(client.recv_data(control_frame=True))  # a close frame is answered as it is read
            if len(frames) == 1:
                on_first()
        after_close = b""
        while more := client.sock.recv(65536):
            after_close += more
        return frames, after_close
    finally:
        client.shutdown()


def test_a_websocket_stream_ends_with_its_close_frame_and_the_server_closes_the_connection(fanout_stack):
    """After the close handshake nothing more may come on the connection (gunicorn once answered the finished
    WebSocket handler as an HTTP request: a `200 OK` after the close frame), and the server closes it without
    logging an error (gunicorn read the socket beside simple-websocket's reader: ConcurrentObjectUseError)."""
    from concurrent.futures import ThreadPoolExecutor

    publisher = Publisher(fanout_stack)
    job_id = publisher.create_job()
    connected = []
    with ThreadPoolExecutor(20) as pool:
        live = [pool.submit(_websocket_to_the_end, fanout_stack.port, job_id, on_first=lambda: connected.append(1))
                for _ in range(20)]
        wait_until(lambda: len(connected) == 20, timeout=60, what="20 WebSocket clients on the running job")
        publisher.segments(job_id, count=3, every_s=0.05, on_seq=lambda seq: None)
        publisher.finish(job_id)
        ended = [f.result(timeout=60) for f in live]
    finished = _websocket_to_the_end(fanout_stack.port, job_id)  # a finished job: replay, then close
    for frames, after_close in [*ended, finished]:
        messages = [json.loads(payload) for opcode, payload in frames if opcode == 1]
        assert messages[-1]["type"] == "status" and messages[-1]["status"] == "completed"
        assert frames[-1][0] == 8 and after_close == b"", after_close[:200]
    log = fanout_stack.web.log_path.read_text(errors="replace")
    assert "Error handling request" not in log and "ConcurrentObjectUseError" not in log, log[-3000:]


WEBSOCKET_UNDER_WERKZEUG = """
import gc, json, sys, threading
import websocket, wsproto
from werkzeug.serving import make_server
from web import create_app

server = make_server("127.0.0.1", 0, create_app(), threaded=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
gc.disable()
alive = lambda: sum(isinstance(o, wsproto.WSConnection) for o in gc.get_objects())
before = alive()
client = websocket.create_connection(f"ws://127.0.0.1:{server.server_port}/api/transcribe/live/{sys.argv[1]}",
                                     timeout=30)
messages = []
while True:
    opcode, data = client.recv_data()
    if opcode == websocket.ABNF.OPCODE_CLOSE:
        break
    messages.append(json.loads(data))
client.close()
server.shutdown()  # waits for the request's thread
print(json.dumps({"last": messages[-1], "left": alive() - before}))
"""


def test_a_finished_websocket_leaves_nothing_for_the_garbage_collector(fanout_stack, tmp_path):
    """What a finished WebSocket holds of its connection (protocol state, socket, request) is freed when the
    connection ends, not by a later full garbage-collection pass (which at a job's end with 2,500 WebSocket
    viewers froze a web process for 140-160 ms). flask-sock's per-connection response class keeps the
    simple-websocket server object itself in a reference cycle; the test counts the wsproto connection it held.
    The app runs in a process of its own under werkzeug's server, with the collector off."""
    import subprocess
    import sys
    from pathlib import Path

    publisher = Publisher(fanout_stack)
    job_id = publisher.create_job()
    publisher.finish(job_id)
    env = {**fanout_stack.env, "PARLEY_DATA_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", WEBSOCKET_UNDER_WERKZEUG, job_id], env=env, capture_output=True,
                          cwd=Path(__file__).resolve().parents[1], text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["last"]["type"] == "status" and result["last"]["status"] == "completed"
    assert result["left"] == 0, result
