"""The process view (GET /api/docker/status, /api/docker/logs/{name}) and the per-process log files."""
from __future__ import annotations

import logging
import re
import socket
import time

import pytest

from conftest import ROOT, running_stack, wait_until
from parley import logs

STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z ")
PROCFILE = """\
# the stack below runs web and the asr worker; the llm worker is expected but never started
web: exec env PARLEY_PROCESS_NAME=web .venv/bin/gunicorn "web:create_app()"
asr: env PARLEY_PROCESS_NAME=asr .venv/bin/dramatiq jobs.worker --processes 1 --threads 1 --queues asr
llm: env PARLEY_PROCESS_NAME=llm .venv/bin/dramatiq jobs.worker --processes 1 --threads 1 --queues llm
"""


@pytest.fixture(scope="module")
def procs(tmp_path_factory, redis_server):
    tmp = tmp_path_factory.mktemp("procs")
    (tmp / "Procfile").write_text(PROCFILE)
    # No warm-up: this worker is here to beat and log, not to transcribe, so it needs no model.
    with running_stack(tmp, redis_server, workers=[("asr", "asr")], PARLEY_WARMUP="0",
                       PARLEY_PROCFILE=str(tmp / "Procfile")) as s:
        yield s


def containers(stack) -> dict[str, dict]:
    answer = stack.get("/api/docker/status")
    assert answer.status_code == 200, answer.text
    listed = answer.json()["containers"]
    names = [c["name"] for c in listed]
    assert names == sorted(names) and len(names) == len(set(names))
    for c in listed:
        assert {"id", "name", "image", "state", "status", "ports"} <= set(c) and isinstance(c["ports"], list)
    return {c["name"]: c for c in listed}


def test_status_lists_every_process(procs):
    found = containers(procs)
    host = socket.gethostname()
    web = found["parley-web"]
    assert web["state"] == "running" and web["id"] == f"{host}:{procs.web.proc.pid}"  # the gunicorn master
    assert web["ports"][0]["PrivatePort"] == procs.port and web["status"].startswith("Up")

    worker = found["parley-worker-asr"]
    assert worker["state"] == "running" and worker["id"].startswith(f"{host}:")
    assert worker["details"]["queues"] == ["asr"] and worker["details"]["device"]
    assert worker["status"].startswith("Up") and worker["ports"] == []

    redis = found["parley-redis"]
    assert redis["state"] == "running" and redis["image"].startswith("redis:")
    assert redis["ports"][0]["PrivatePort"] == procs.redis.port

    database = found["parley-database"]
    assert database["state"] == "running" and database["image"].startswith("sqlite:")
    assert database["id"] == str(procs.data_dir / "parley.db")
    assert found["parley-search"]["state"] == "running" and found["parley-search"]["image"] == "sqlite-fts5"

    # Expected by the Procfile, never started: the contract's shape of a missing container.
    assert {k: found["parley-worker-llm"][k] for k in ("id", "image", "state", "status", "ports")} == {
        "id": "N/A", "image": "N/A", "state": "not_found", "status": "Container not found", "ports": []}

    # The names the sessions client asks for stand for the transcription worker and the search backend.
    whisper = found["therascript_whisper_service"]
    assert whisper["state"] == "running" and whisper["details"]["aliasOf"] == ["parley-worker-asr"]
    assert whisper["id"] == worker["id"]
    assert found["therascript_elasticsearch_service"]["state"] == "running"


def test_logs_of_a_worker_and_its_alias(procs):
    answer = procs.get("/api/docker/logs/parley-worker-asr")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["containerName"] == "parley-worker-asr"
    assert "worker asr" in body["logs"] and "consuming queues asr" in body["logs"]  # logged at boot
    assert all(STAMP.match(line) for line in body["logs"].splitlines()[:5])

    alias = procs.get("/api/docker/logs/therascript_whisper_service").json()
    assert alias["containerName"] == "therascript_whisper_service" and "consuming queues asr" in alias["logs"]

    # A long log gives its last 200 lines only.
    path = procs.data_dir / "logs" / "asr.log"
    assert path.is_file()
    with open(path, "a") as fh:
        fh.writelines(f"2026-01-01T00:00:00.000Z INFO [pid 1] test: filler line {i}\n" for i in range(500))
    lines = procs.get("/api/docker/logs/parley-worker-asr").json()["logs"].splitlines()
    assert len(lines) == 200 and lines[-1].endswith("filler line 499") and lines[0].endswith("filler line 300")


def test_logs_of_processes_without_a_log_file(procs):
    for name in ("parley-database", "parley-search", "parley-worker-llm"):
        answer = procs.get(f"/api/docker/logs/{name}")
        assert answer.status_code == 200 and answer.json()["containerName"] == name
        assert answer.json()["logs"].startswith("No log"), answer.json()
    assert procs.get("/api/docker/logs/parley-web").status_code == 200


@pytest.mark.parametrize("name", ["nope", "therascript_ollama", "..%2F..%2F..%2Fetc%2Fpasswd", "%2E%2E",
                                  "parley-web%2F..%2F..%2Fetc%2Fpasswd", "asr.log", "..%2Flogs%2Fasr"])
def test_unknown_names_are_refused(procs, name):
    answer = procs.get(f"/api/docker/logs/{name}")
    assert answer.status_code == 400, (name, answer.status_code, answer.text)
    assert "parley-worker-asr" in answer.json()["message"] and "root:" not in answer.text


def test_a_stopped_worker_is_no_longer_running(procs):
    procs.workers["asr"].stop()

    def gone():
        found = containers(procs)
        return found if found["parley-worker-asr"]["state"] != "running" else None
    found = wait_until(gone, timeout=30, interval=0.5, what="the stopped worker to leave 'running'")
    assert found["parley-worker-asr"]["state"] == "exited" and found["parley-worker-asr"]["status"].startswith("Exited")
    assert found["therascript_whisper_service"]["state"] == "exited"
    # Its log stays readable, and tells of the stop (SIGTERM reaches it twice, so it may end in "Killing").
    assert "Stopping worker process" in procs.get("/api/docker/logs/parley-worker-asr").json()["logs"]


def test_the_repository_procfile_names_its_workers():
    from web.processes import expected_workers

    assert expected_workers(ROOT / "Procfile") == {"asr": ["asr"], "asr_quick": ["asr_quick"], "io": ["io"],
                                                   "llm": ["llm"]}


def test_no_password_in_the_output_of_an_unreachable_database_or_redis():
    # Hosts that do not answer (nothing listens on port 1): the rows say so, without the passwords.
    import json

    from parley.redisconn import client
    from web.processes import _database, _redis

    database = _database("postgresql://parley:hunter2@127.0.0.1:1/parley").container()
    assert database["state"] == "unhealthy" and database["id"] == "127.0.0.1:1/parley"
    redis = _redis(client("redis://:swordfish@127.0.0.1:1/0"), "redis://:swordfish@127.0.0.1:1/0").container()
    assert redis["state"] == "unhealthy" and redis["id"] == "127.0.0.1:1"
    assert "hunter2" not in json.dumps(database) and "swordfish" not in json.dumps(redis)


# --- the log files themselves ------------------------------------------------------------------------
@pytest.fixture
def root_logger():
    """The test process's root logger, put back as it was (configure_logging changes it)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    filters = {h: list(h.filters) for h in handlers}
    yield root
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    for handler, kept in filters.items():
        handler.filters[:] = kept


def test_redaction_keeps_secrets_out_of_the_file(tmp_path, root_logger):
    key = "sk-remote-4f9a8b7c6d5e"
    logs.register_secret(key)
    path = logs.configure_logging("unit-redact", log_dir=tmp_path)
    assert path == tmp_path / "unit-redact.log"
    log = logging.getLogger("parley.test")
    log.info("calling the server with headers %s", {"Authorization": "Bearer tok.en-123_secret"})
    log.warning("retrying with Bearer abc.def-456 and key %s", key)
    try:
        raise RuntimeError(f"server refused key {key}")
    except RuntimeError:
        log.exception("request failed")
    for handler in root_logger.handlers:
        handler.flush()
    text = path.read_text()
    for secret in (key, "tok.en-123_secret", "abc.def-456"):
        assert secret not in text
    assert text.count("[REDACTED]") >= 4 and "RuntimeError: server refused key [REDACTED]" in text
    assert all(STAMP.match(line) for line in text.splitlines() if "parley.test" in line)


def test_names_are_not_paths(tmp_path):
    for bad in ("../etc/passwd", "..", "a/b", ".hidden", "", "x" * 65, "name\n"):
        with pytest.raises(logs.UnknownName):
            logs.log_path(tmp_path, bad)
    assert logs.log_path(tmp_path, "asr_quick") == (tmp_path / "asr_quick.log").resolve()


def test_tail_reads_only_the_end_of_a_huge_file(tmp_path):
    path = tmp_path / "big.log"
    with open(path, "wb") as fh:
        fh.truncate(3 * 1024 ** 3)  # 3 GiB (sparse): reading it whole would take many seconds
        fh.seek(0, 2)
        fh.write(b"".join(b"line %d\n" % i for i in range(1000)))
    started = time.monotonic()
    lines = logs.tail(path, 200)
    assert time.monotonic() - started < 1
    assert lines == [f"line {i}" for i in range(800, 1000)]
    assert logs.tail(path, 5, block_size=7) == [f"line {i}" for i in range(995, 1000)]  # lines across blocks


def test_tail_continues_into_the_rotated_file(tmp_path):
    path = tmp_path / "w.log"
    (tmp_path / "w.log.1").write_text("".join(f"old {i}\n" for i in range(10)))
    path.write_text("new 0\nnew 1\n")
    assert logs.tail(path, 4) == ["old 8", "old 9", "new 0", "new 1"]
    assert logs.tail(tmp_path / "missing.log", 4) == []
