"""Faults at the storage layer: a full disk while receiving uploads, a locked or unreachable database."""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import AUDIO, running_stack, wait_until

TMPFS_MB = 4
DB_TIMEOUT_S = 2  # PARLEY_DB_TIMEOUT_S of the stacks below: how long a request waits for a lock


# --- a full disk ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def full_disk_stack(tmp_path_factory, redis_server, models_ready):
    """A stack whose data directory (uploads, recordings) is a real 4 MiB tmpfs; database and logs elsewhere."""
    tmp = tmp_path_factory.mktemp("diskfull")
    data = tmp / "data"
    data.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(data)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root / CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        with running_stack(tmp, redis_server, f"sqlite:///{tmp / 'db' / 'parley.db'}",
                           PARLEY_LOG_DIR=str(tmp / "logs"), MAX_UPLOAD_MB="16", PARLEY_BACKUP_MAX_MB="16") as s:
            yield s
    finally:
        if subprocess.run(["umount", str(data)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(data)], check=True)


def stored_files(stack) -> list[str]:
    """Every file under the data directory: partial uploads in tmp/, recordings in audio/."""
    return sorted(str(p.relative_to(stack.data_dir)) for p in stack.data_dir.rglob("*") if p.is_file())


def fill_disk(directory: Path) -> Path:
    """Write until the file system says ENOSPC; the file that filled it is returned."""
    filler = directory / "filler.bin"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == 28, exc
    for size in (4096, 512, 1):  # the last scraps, so even a tiny upload cannot fit
        try:
            with open(filler, "ab", buffering=0) as fh:
                while True:
                    fh.write(b"\0" * size)
        except OSError:
            pass
    return filler


def assert_disk_full_answer(resp: requests.Response) -> None:
    assert resp.status_code == 507, resp.text
    body = resp.json()
    assert body["error"] == "InsufficientStorageError"
    assert body["message"].startswith("not enough disk space to store the upload: No space left on device")


def assert_nothing_stored(stack) -> None:
    assert stored_files(stack) == []  # no partial temporary file, no recording
    assert stack.get("/api/sessions").json() == []  # no session row
    assert stack.get("/api/transcribe/jobs").json()["count"] == 0  # no job row


def test_uploads_larger_than_the_free_space_are_507_and_leave_nothing(full_disk_stack):
    s = full_disk_stack
    payload = os.urandom(6 * 1024 * 1024)  # more than the whole 4 MiB file system, less than MAX_UPLOAD_MB
    answers = {
        "transcribe": s.post("/api/transcribe/", files={"file": ("big.mp3", payload, "audio/mpeg")}),
        "sessions": s.post("/api/sessions/upload", files={"audioFile": ("big.mp3", payload, "audio/mpeg")},
                           data={"clientName": "A", "sessionName": "B", "sessionType": "individual",
                                 "therapy": "CBT", "date": "2026-01-02"}),
        "retranscribe": s.post("/api/retranslate/segment", files={"file": ("big.mp3", payload, "audio/mpeg")}),
        "import-data": s.post("/api/admin/import-data", files={"backupFile": ("b.tar", payload, "application/x-tar")}),
    }
    for route, resp in answers.items():
        assert_disk_full_answer(resp)
        assert_nothing_stored(s)
    assert s.get("/api/templates").status_code == 200  # the import changed nothing
    free = os.statvfs(s.data_dir)
    assert free.f_bavail * free.f_frsize > (TMPFS_MB - 0.5) * 1024 * 1024  # the partial bytes were freed


def test_a_full_disk_refuses_even_small_uploads_and_the_next_upload_after_space_frees_works(full_disk_stack):
    s = full_disk_stack
    clip = AUDIO / "two_speakers.mp3"
    filler = fill_disk(s.data_dir)
    try:
        assert_disk_full_answer(s.upload(clip, diarize="false"))
        assert stored_files(s) == ["filler.bin"]
        assert s.get("/api/sessions").json() == [] and s.get("/api/transcribe/jobs").json()["count"] == 0
    finally:
        filler.unlink()

    accepted = s.upload(clip, diarize="false")
    assert accepted.status_code == 200, accepted.text
    job = s.get(f"/api/transcribe/status/{accepted.json()['job_id']}").json()
    assert job["status"] == "processing" and job["state"] == "queued"
    recordings = [f for f in stored_files(s) if f.startswith("audio/")]
    assert len(recordings) == 1 and stored_files(s) == recordings  # no temporary file left either
    stored = (s.data_dir / recordings[0]).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(clip.read_bytes()).hexdigest()
    assert [x["fileName"] for x in s.get("/api/sessions").json()] == [clip.name]


# --- a locked or unavailable database -------------------------------------------------------------
def assert_database_busy(resp: requests.Response, took: float) -> None:
    assert resp.status_code == 503, resp.text
    assert resp.json()["message"].startswith("the database is busy or unavailable; try again")
    assert resp.json()["error"] == "ServiceUnavailableError"
    assert resp.headers.get("Retry-After")
    assert took < DB_TIMEOUT_S + 8, f"answered after {took:.1f}s: waited far past the lock timeout"


def timed(call):
    started = time.monotonic()
    resp = call()
    return resp, time.monotonic() - started


def titles(stack) -> list[str]:
    resp = stack.get("/api/templates")
    assert resp.status_code == 200, resp.text
    return [t["title"] for t in resp.json()]


@pytest.fixture(scope="module")
def sqlite_stack(tmp_path_factory, redis_server, models_ready):
    tmp = tmp_path_factory.mktemp("dblock")
    with running_stack(tmp, redis_server, PARLEY_DB_TIMEOUT_S=str(DB_TIMEOUT_S)) as s:
        yield s


def test_sqlite_write_lock_held_too_long_is_503_then_everything_recovers(sqlite_stack):
    s = sqlite_stack
    assert s.post("/api/templates", json={"title": "before", "text": "kept"}).status_code == 201
    path = s.env["DATABASE_URL"][len("sqlite:///"):]
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # as a long migration or a stuck process would
    try:
        write, took = timed(lambda: s.post("/api/templates", json={"title": "during", "text": "x"}))
        assert_database_busy(write, took)
        assert took >= DB_TIMEOUT_S - 0.5  # it did wait for the lock before giving up
        upload, took = timed(lambda: s.upload(AUDIO / "silence.mp3", diarize="false"))
        assert_database_busy(upload, took)
        assert not any((s.data_dir / "audio").iterdir())  # the refused upload left no recording behind
        # WAL mode: readers are not blocked by a writer, so reads keep working during the lock.
        assert "before" in titles(s)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    assert s.post("/api/templates", json={"title": "after", "text": "y"}).status_code == 201
    names = titles(s)
    assert "before" in names and "after" in names and "during" not in names
    assert s.upload(AUDIO / "silence.mp3", diarize="false").status_code == 200
    assert "Traceback" not in s.web.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def pg_stack(tmp_path_factory, redis_server, models_ready, postgres_url):
    tmp = tmp_path_factory.mktemp("pglock")
    with running_stack(tmp, redis_server, postgres_url, PARLEY_DB_TIMEOUT_S=str(DB_TIMEOUT_S)) as s:
        yield s


def _count(url: str, sql: str) -> int:
    import psycopg2

    admin = psycopg2.connect(url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]
    finally:
        admin.close()


def lock_waiters(url: str) -> int:
    """Connections to the database that are waiting for a lock."""
    return _count(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")


def terminate_backends(url: str) -> int:
    """pg_terminate_backend for every other connection to the database (the stack's pooled ones)."""
    return _count(url, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")


def test_postgres_table_lock_and_killed_connections_are_503_then_everything_recovers(pg_stack, postgres_url):
    import psycopg2

    s = pg_stack
    assert s.post("/api/templates", json={"title": "before", "text": "kept"}).status_code == 201
    locker = psycopg2.connect(postgres_url)
    cur = locker.cursor()
    cur.execute("LOCK TABLE template IN ACCESS EXCLUSIVE MODE")  # stays held: the transaction is open
    try:
        read, took = timed(lambda: s.get("/api/templates"))
        assert_database_busy(read, took)
        write, took = timed(lambda: s.post("/api/templates", json={"title": "during", "text": "x"}))
        assert_database_busy(write, took)

        # A request waiting on the lock when its connection is killed (a server restart, a DBA): also a 503.
        waiting: dict = {}
        t = threading.Thread(target=lambda: waiting.update(resp=timed(lambda: s.get("/api/templates"))))
        t.start()
        wait_until(lambda: lock_waiters(postgres_url) >= 1, timeout=10, interval=0.05,
                   what="a request waiting on the lock")
        assert terminate_backends(postgres_url) >= 2  # the waiting request's connection and the locker's
        t.join(30)
        assert_database_busy(*waiting["resp"])
    finally:
        locker.close()

    # The pool notices dead connections on check-out and opens new ones: no restart needed.
    assert s.post("/api/templates", json={"title": "after", "text": "y"}).status_code == 201
    names = titles(s)
    assert "before" in names and "after" in names and "during" not in names

    # Killing idle pooled connections between requests is invisible to clients.
    assert terminate_backends(postgres_url) >= 1
    assert all(s.get("/api/templates").status_code == 200 for _ in range(5))
    assert s.post("/api/templates", json={"title": "after-kill", "text": "z"}).status_code == 201
    wait_until(lambda: "after-kill" in titles(s), timeout=5, what="the new template")
    assert "Traceback" not in s.web.log_path.read_text(errors="replace")


def test_postgres_outage_while_streaming_delays_events_but_keeps_the_stream_open(pg_stack, postgres_url):
    """The SSE stream of a job whose event log cannot be read (table locked) beats until it can, then delivers."""
    import psycopg2

    s = pg_stack
    job_id = s.upload(AUDIO / "silence.mp3", diarize="false").json()["job_id"]  # no worker: it stays queued
    locker = psycopg2.connect(postgres_url)
    locker.cursor().execute("LOCK TABLE job_event IN ACCESS EXCLUSIVE MODE")
    lines: list[str] = []

    def read():
        with requests.get(s.url(f"/api/transcribe/events/{job_id}"), stream=True, timeout=30) as resp:
            lines.append(str(resp.status_code))
            for line in resp.iter_lines(decode_unicode=True):
                lines.append(line)
                if line.startswith("data:"):
                    return

    reader = threading.Thread(target=read, daemon=True)
    try:
        reader.start()
        # The log read timed out (and is retried) and the stream beat meanwhile.
        wait_until(lambda: "cannot read the event log" in s.web.log_path.read_text(errors="replace")
                   and ": heartbeat" in lines, timeout=10 * DB_TIMEOUT_S + 30, interval=0.1, what="a failed read")
        assert lines[0] == "200" and not any(x.startswith("data:") for x in lines)
        assert ": heartbeat" in lines  # the stream stayed open meanwhile
    finally:
        locker.close()
    reader.join(30)
    assert not reader.is_alive(), lines
    data = json.loads(lines[-1][len("data:"):])
    assert data["type"] == "status" and data["status"] == "processing" and data["state"] == "queued"
    assert data["seq"] == 1
    assert "cannot read the event log" in s.web.log_path.read_text(errors="replace")
