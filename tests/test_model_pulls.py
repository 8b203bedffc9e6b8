"""Model downloads through the real stack: web tier + an `io` worker, fetching from a local HTTP file server.

The server (started here on 127.0.0.1) serves a real GGUF written with the `gguf` package and a file
that is not GGUF; it honours `Range`, can be slowed down per chunk and can drop the connection part
way through its first answer, so progress, cancellation, verification and resuming are all exercised
against real sockets.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import socket
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import Stack, free_port, running_stack, wait_until

TERMINAL = {"completed", "failed", "canceled"}


# --- a local file server ---------------------------------------------------------------------------
@dataclasses.dataclass
class Route:
    data: bytes
    chunk: int = 16 * 1024  # bytes written per step
    delay_s: float = 0.0  # sleep after each step: a slow link
    drop_after: int | None = None  # the first answer breaks off after this many body bytes
    ranges: list = dataclasses.field(default_factory=list)  # the Range header of each request (None: none)
    honour_range: bool = True  # False: answer every request with the whole file (200), like some servers do
    linked_etag: str | None = None  # X-Linked-Etag in the answer to HEAD: the hub's sha256 of an LFS file


class FileServer:
    def __init__(self):
        self.routes: dict[str, Route] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                route = server.routes.get(urlsplit(self.path).path)
                if route is None:
                    self._empty(404)
                    return
                route.ranges.append(self.headers.get("Range"))
                requested = self.headers.get("Range") if route.honour_range else None
                size, start = len(route.data), 0
                if requested:
                    match = re.fullmatch(r"bytes=(\d+)-", requested)
                    start = int(match.group(1))
                    if start >= size:
                        self._empty(416, {"Content-Range": f"bytes */{size}"})
                        return
                body = route.data[start:]
                self.send_response(206 if requested else 200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                if requested:
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                self.end_headers()
                limit = route.drop_after if route.drop_after is not None and len(route.ranges) == 1 else None
                sent = 0
                try:
                    for offset in range(0, len(body), route.chunk):
                        piece = body[offset:offset + route.chunk]
                        if limit is not None and sent + len(piece) >= limit:
                            self.wfile.write(piece[: limit - sent])
                            self.wfile.flush()
                            self.connection.shutdown(socket.SHUT_RDWR)  # a broken connection, not a clean end
                            self.close_connection = True
                            return
                        self.wfile.write(piece)
                        self.wfile.flush()
                        sent += len(piece)
                        if route.delay_s:
                            time.sleep(route.delay_s)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client went away (canceled, or its worker was killed)

            def do_HEAD(self):
                route = server.routes.get(urlsplit(self.path).path)
                if route is None:
                    self._empty(404)
                    return
                self._empty(200, {"X-Linked-Etag": f'"{route.linked_etag}"'} if route.linked_etag else {})

            def _empty(self, status: int, headers: dict | None = None):
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, path: str, data: bytes, **options) -> Route:
        self.routes[path] = Route(data, **options)
        return self.routes[path]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def make_gguf(path: Path, *, rows: int = 1200, seed: int = 0) -> bytes:
    """A real, small GGUF (about 600 KB with the default rows): llama architecture, a few facts, one tensor."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("parley download test")
    writer.add_size_label("150K")
    writer.add_context_length(256)
    writer.add_block_count(1)
    writer.add_embedding_length(64)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    # Random values: a resumed download that put a byte in the wrong place cannot match by accident.
    writer.add_tensor("token_embd.weight", np.random.default_rng(seed).random((rows, 128), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


# --- fixtures and helpers --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files():
    server = FileServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory) -> bytes:
    return make_gguf(tmp_path_factory.mktemp("gguf") / "model.gguf")


@pytest.fixture(scope="module")
def pulls(tmp_path_factory, redis_server, files):
    """Web tier + one `io` worker; a model store of its own; HF_ENDPOINT pointing at the file server."""
    tmp = tmp_path_factory.mktemp("pulls")
    with running_stack(tmp, redis_server, workers=[("io", "io")], HF_ENDPOINT=files.base,
                       PARLEY_MODEL_DIR=str(tmp / "models")) as stack:
        yield stack


def store(stack: Stack) -> Path:
    return Path(stack.env["PARLEY_MODEL_DIR"]) / "llm"


def listed(stack: Stack) -> list[str]:
    from services import llmstore
    from parley.config import get_settings

    settings = get_settings().model_copy(update=dict(model_dir=Path(stack.env["PARLEY_MODEL_DIR"])))
    return [info.name for info in llmstore.list_models(settings)]


def leftovers(stack: Stack, name: str) -> list[str]:
    return sorted(p.name for p in store(stack).glob(name + "*")) if store(stack).exists() else []


def start(stack: Stack, model_url: str, **extra) -> str:
    response = stack.post("/api/llm/pull-model", json={"modelUrl": model_url, **extra})
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"jobId", "message"} and body["jobId"], body
    return body["jobId"]


def status(stack: Stack, job_id: str) -> dict:
    response = stack.get(f"/api/llm/pull-status/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def wait_pull(stack: Stack, job_id: str, *, timeout: float = 60, seen: list | None = None) -> dict:
    def done():
        body = status(stack, job_id)
        if seen is not None:
            seen.append(body)
        return body if body["status"] in TERMINAL else None
    return wait_until(done, timeout=timeout, interval=0.05, what=f"pull {job_id}")


# --- tests -----------------------------------------------------------------------------------------
def test_progress_then_completed_model_in_store(pulls, files, gguf_bytes):
    files.serve("/files/progress.gguf", gguf_bytes, chunk=16 * 1024, delay_s=0.05)
    job_id = start(pulls, files.base + "/files/progress.gguf")
    seen: list[dict] = []
    final = wait_pull(pulls, job_id, seen=seen)

    assert final["status"] == "completed", final
    assert final["modelName"] == "progress.gguf"
    assert final["completedBytes"] == final["totalBytes"] == len(gguf_bytes)
    assert final["progress"] == 100
    assert final["endTime"] >= final["startTime"] > 0
    assert "error" not in final

    downloading = [b for b in seen if b["status"] == "downloading" and b["completedBytes"] > 0]
    assert len({b["completedBytes"] for b in downloading}) >= 2, [b["message"] for b in seen]
    partial = [b for b in downloading if b["completedBytes"] < len(gguf_bytes)]
    assert partial, "no progress was reported before the end"
    for body in partial:
        assert body["totalBytes"] == len(gguf_bytes)
        assert 0 < body["progress"] < 100
        assert re.fullmatch(r"Downloading progress\.gguf: \d+\.\d of 0\.6 MB \(\d+%\)", body["message"]), body
    done = [b["completedBytes"] for b in seen if b["status"] in ("downloading", "verifying", "completed")]
    assert done == sorted(done), "progress went backwards"
    order = ["queued", "parsing", "downloading", "verifying", "completed"]
    statuses = [order.index(b["status"]) for b in seen]
    assert statuses == sorted(statuses), [b["status"] for b in seen]

    assert (store(pulls) / "progress.gguf").read_bytes() == gguf_bytes
    assert "progress.gguf" in listed(pulls)
    assert leftovers(pulls, "progress.gguf") == ["progress.gguf"]  # no .part left behind

    again = pulls.post("/api/llm/pull-model", json={"modelUrl": files.base + "/files/progress.gguf"})
    assert again.status_code == 409 and "already in the store" in again.json()["message"]


def test_cancel_mid_download_and_queued_pull(pulls, files, gguf_bytes):
    files.serve("/files/slow.gguf", gguf_bytes, chunk=8 * 1024, delay_s=0.1)  # about 8 s in all
    files.serve("/files/waiting.gguf", gguf_bytes)
    slow = start(pulls, files.base + "/files/slow.gguf")
    wait_until(lambda: status(pulls, slow)["completedBytes"] > 0, timeout=30, interval=0.1, what="first bytes")

    duplicate = pulls.post("/api/llm/pull-model", json={"modelUrl": files.base + "/files/slow.gguf"})
    assert duplicate.status_code == 409 and "already running" in duplicate.json()["message"]

    # The only io thread is busy, so this one waits in the queue; canceling it needs no worker.
    waiting = start(pulls, files.base + "/files/waiting.gguf")
    assert status(pulls, waiting)["status"] == "queued"
    canceled = pulls.post(f"/api/llm/cancel-pull/{waiting}")
    assert canceled.status_code == 200
    assert canceled.json() == {"message": f"Cancellation request sent for job {waiting}."}
    assert status(pulls, waiting)["status"] == "canceled"

    response = pulls.post(f"/api/llm/cancel-pull/{slow}")
    assert response.status_code == 200
    assert response.json() == {"message": f"Cancellation request sent for job {slow}."}
    final = wait_pull(pulls, slow, timeout=30)
    assert final["status"] == "canceled", final
    assert 0 < final["completedBytes"] < len(gguf_bytes)
    assert "endTime" in final
    assert leftovers(pulls, "slow.gguf") == []  # neither the model nor its .part
    assert "slow.gguf" not in listed(pulls)

    again = pulls.post(f"/api/llm/cancel-pull/{slow}")
    assert again.status_code == 409 and "canceled" in again.json()["message"]
    # The waiting pull's message is delivered now and finds it finished: nothing is downloaded.
    def io_queue_drained():
        io = [q for q in pulls.get("/dashboard/state").json()["queues"] if q["name"] == "io"]
        return io and io[0]["waiting"] == 0 and io[0]["in_progress"] == 0
    wait_until(io_queue_drained, timeout=30, interval=0.1, what="the waiting pull's message to be handled")
    assert status(pulls, waiting)["status"] == "canceled"
    assert files.routes["/files/waiting.gguf"].ranges == []
    assert leftovers(pulls, "waiting.gguf") == []


def test_checksum_mismatch_fails_and_leaves_nothing(pulls, files, gguf_bytes):
    files.serve("/files/checked.gguf", gguf_bytes)
    job_id = start(pulls, files.base + "/files/checked.gguf", sha256="0" * 64)
    final = wait_pull(pulls, job_id)
    assert final["status"] == "failed", final
    assert "sha256 mismatch" in final["error"]
    assert hashlib.sha256(gguf_bytes).hexdigest() in final["error"]
    assert "failed" in final["message"]
    assert "endTime" in final
    assert "checked.gguf" not in listed(pulls)
    assert leftovers(pulls, "checked.gguf") == []


def test_non_gguf_content_fails(pulls, files):
    files.serve("/files/page.gguf", b"<!DOCTYPE html><html><body>Not found</body></html>\n" * 200)
    final = wait_pull(pulls, start(pulls, files.base + "/files/page.gguf"))
    assert final["status"] == "failed", final
    assert "not a GGUF file" in final["error"]
    assert "page.gguf" not in listed(pulls)
    assert leftovers(pulls, "page.gguf") == []


def test_dropped_connection_is_resumed_with_a_range_request(pulls, files, gguf_bytes):
    route = files.serve("/files/flaky.gguf", gguf_bytes, drop_after=200_000)
    # An upper-case digest is accepted; it is checked over the resumed file as a whole.
    job_id = start(pulls, files.base + "/files/flaky.gguf", sha256=hashlib.sha256(gguf_bytes).hexdigest().upper())
    final = wait_pull(pulls, job_id)
    assert final["status"] == "completed", final
    assert route.ranges[0] is None and len(route.ranges) == 2, route.ranges
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", route.ranges[1]).group(1))
    assert 0 < resumed_at <= 200_000
    assert (store(pulls) / "flaky.gguf").read_bytes() == gguf_bytes
    assert "flaky.gguf" in listed(pulls)
    assert leftovers(pulls, "flaky.gguf") == ["flaky.gguf"]


def test_hugging_face_name_resolves_against_hf_endpoint(pulls, files, gguf_bytes):
    route = files.serve("/acme/tiny-models/resolve/main/quant/hub-model.gguf", gguf_bytes)
    job_id = start(pulls, "acme/tiny-models/quant/hub-model.gguf")
    final = wait_pull(pulls, job_id)
    assert final["status"] == "completed", final
    assert final["modelName"] == "hub-model.gguf"
    assert route.ranges == [None]
    assert "hub-model.gguf" in listed(pulls)


def test_worker_killed_mid_download_resumes_from_the_part(pulls, files, gguf_bytes):
    route = files.serve("/files/crash.gguf", gguf_bytes, chunk=8 * 1024, delay_s=0.1)
    job_id = start(pulls, files.base + "/files/crash.gguf")
    wait_until(lambda: status(pulls, job_id)["completedBytes"] >= 128 * 1024, timeout=30, interval=0.1,
               what="some bytes")
    pulls.workers.pop("io").kill()  # SIGKILL: no chance to clean up
    assert status(pulls, job_id)["status"] == "downloading"
    assert (store(pulls) / "crash.gguf.part").stat().st_size > 0
    route.delay_s = 0.0
    pulls.start_worker("io-2", "io")
    final = wait_pull(pulls, job_id, timeout=60)
    assert final["status"] == "completed", final
    assert len(route.ranges) == 2 and route.ranges[0] is None and route.ranges[1].startswith("bytes="), route.ranges
    assert int(route.ranges[1][len("bytes="):-1]) > 0
    assert (store(pulls) / "crash.gguf").read_bytes() == gguf_bytes


@pytest.mark.parametrize(("body", "needle"), [
    ({}, "modelUrl"),
    ({"modelUrl": ""}, "modelUrl"),
    ({"modelUrl": "   "}, "modelUrl"),
    ({"modelUrl": 42}, "modelUrl"),
    ({"modelUrl": "file:///etc/model.gguf"}, "file:"),
    ({"modelUrl": "ftp://example.com/model.gguf"}, "ftp:"),
    ({"modelUrl": "javascript:alert(1)//x.gguf"}, "javascript:"),
    ({"modelUrl": "https://example.com/model.bin"}, ".gguf"),
    ({"modelUrl": "https:///model.gguf"}, "host"),
    ({"modelUrl": "acme/tiny-models/model.safetensors"}, ".gguf"),
    ({"modelUrl": "model.gguf"}, "Hugging Face name"),
    ({"modelUrl": "acme/../etc/model.gguf"}, "Hugging Face name"),
    ({"modelUrl": "https://example.com/.gguf"}, "file name"),
    ({"modelUrl": "acme/tiny-models/model.gguf", "sha256": "abc"}, "sha256"),
    ({"modelUrl": "acme/tiny-models/model.gguf", "sha256": "g" * 64}, "sha256"),
])
def test_bad_pull_requests_are_400(pulls, body, needle):
    response = pulls.post("/api/llm/pull-model", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "BadRequestError"
    assert needle in response.json()["message"]


def test_non_json_body_is_400(pulls):
    response = pulls.post("/api/llm/pull-model", data="modelUrl=x.gguf",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400 and "JSON" in response.json()["message"]


def test_file_name_is_sanitised(pulls, files, gguf_bytes):
    files.serve("/files/odd%20name%3B%20rm.GGUF", gguf_bytes)
    final = wait_pull(pulls, start(pulls, files.base + "/files/odd%20name%3B%20rm.GGUF"))
    assert final["status"] == "completed", final
    assert final["modelName"] == "odd_name_rm.gguf"
    assert "odd_name_rm.gguf" in listed(pulls)


def test_unknown_pull_is_404(pulls):
    for response in (pulls.get("/api/llm/pull-status/no-such-job"), pulls.post("/api/llm/cancel-pull/no-such-job")):
        assert response.status_code == 404
        assert response.json()["error"] == "NotFoundError"


def test_queue_down_is_503_and_leaves_no_row(tmp_path, redis_server, files):
    dead = Stack(tmp_path, redis_server, f"sqlite:///{tmp_path / 'data' / 'parley.db'}",
                 PARLEY_MODEL_DIR=str(tmp_path / "models"))
    dead.env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    dead.start_web()
    try:
        response = dead.post("/api/llm/pull-model", json={"modelUrl": files.base + "/files/nowhere.gguf"})
        assert response.status_code == 503 and "queue is unavailable" in response.json()["message"]
    finally:
        dead.stop()
    with sqlite3.connect(tmp_path / "data" / "parley.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM model_pull").fetchone()[0] == 0


def test_download_starts_over_when_the_server_ignores_range(files, gguf_bytes, tmp_path):
    """In-process: a .part of other bytes, a server that answers 200 to the Range request: a clean restart."""
    from workers.downloads import download

    route = files.serve("/files/norange.gguf", gguf_bytes, honour_range=False)
    dest = tmp_path / "norange.gguf"
    (tmp_path / "norange.gguf.part").write_bytes(b"GGUF" + b"x" * 5000)
    reports = []
    download(files.base + "/files/norange.gguf", dest, expected_sha256=hashlib.sha256(gguf_bytes).hexdigest(),
             on_progress=lambda done, total: reports.append((done, total)))
    assert route.ranges == ["bytes=5004-"]
    assert dest.read_bytes() == gguf_bytes
    assert not (tmp_path / "norange.gguf.part").exists()
    assert reports[-1] == (len(gguf_bytes), len(gguf_bytes))


def test_download_of_a_complete_part_only_verifies(files, gguf_bytes, tmp_path):
    """In-process: a crash between the last byte and the rename; the server's 416 says the part is whole."""
    from workers.downloads import VerificationFailed, download

    route = files.serve("/files/whole.gguf", gguf_bytes)
    dest = tmp_path / "whole.gguf"
    (tmp_path / "whole.gguf.part").write_bytes(gguf_bytes)
    download(files.base + "/files/whole.gguf", dest, expected_sha256=hashlib.sha256(gguf_bytes).hexdigest())
    assert route.ranges == [f"bytes={len(gguf_bytes)}-"]
    assert dest.read_bytes() == gguf_bytes

    (tmp_path / "other.gguf.part").write_bytes(gguf_bytes)
    with pytest.raises(VerificationFailed, match="sha256 mismatch"):
        download(files.base + "/files/whole.gguf", tmp_path / "other.gguf", expected_sha256="1" * 64)
    assert not (tmp_path / "other.gguf.part").exists() and not (tmp_path / "other.gguf").exists()


def test_download_network_error_keeps_the_part(files, gguf_bytes, tmp_path):
    """In-process: a broken connection raises DownloadError and leaves the .part for the next attempt."""
    from workers.downloads import DownloadCanceled, DownloadError, download

    files.serve("/files/broken.gguf", gguf_bytes, drop_after=100_000)
    dest = tmp_path / "broken.gguf"
    with pytest.raises(DownloadError) as raised:
        download(files.base + "/files/broken.gguf", dest, chunk_bytes=16 * 1024)
    assert raised.type is DownloadError and raised.value.retryable
    assert 0 < (tmp_path / "broken.gguf.part").stat().st_size <= 100_000

    with pytest.raises(DownloadCanceled):
        download(files.base + "/files/broken.gguf", dest, should_cancel=lambda: True)
    assert not (tmp_path / "broken.gguf.part").exists() and not dest.exists()

    with pytest.raises(DownloadError, match="HTTP 404") as missing:
        download(files.base + "/files/missing.gguf", dest)
    assert not missing.value.retryable
