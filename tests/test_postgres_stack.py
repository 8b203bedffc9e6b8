"""The same transcription, through the same stack, on PostgreSQL instead of SQLite."""
from __future__ import annotations

import time

import pytest

from conftest import AUDIO, running_stack, truth
from helpers import wer


@pytest.fixture()
def pg_stack(tmp_path, redis_server, models_ready, postgres_url):
    with running_stack(tmp_path, redis_server, postgres_url, workers=[("asr", "asr")]) as s:
        yield s


def test_transcription_on_postgres(pg_stack):
    job_id = pg_stack.upload(AUDIO / "two_speakers.mp3", diarize="true", num_speakers="2").json()["job_id"]
    assert pg_stack.wait_job(job_id)["status"] == "completed"
    result = pg_stack.get(f"/api/transcribe/result/{job_id}").json()
    gt = truth("two_speakers")
    assert wer(" ".join(t["text"] for t in gt["turns"]), result["text"]) < 0.15
    assert {s["speaker"] for s in result["segments"]} == {"SPEAKER_1", "SPEAKER_2"}
    listed = pg_stack.get("/api/transcribe/jobs").json()
    assert [j["job_id"] for j in listed["jobs"]] == [job_id]
    # No 4-byte REAL anywhere (it rounded epoch seconds to about two minutes), and every timestamp is
    # integer epoch milliseconds in a 64-bit column.
    import psycopg2

    with psycopg2.connect(pg_stack.env["DATABASE_URL"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND data_type = 'real'")
        assert cur.fetchall() == []
        cur.execute("SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema "
                    "= 'public' AND (column_name LIKE '%%\\_at' OR column_name LIKE '%%\\_at\\_ms')")
        kinds = cur.fetchall()
        cur.execute("SELECT finished_at_ms - started_at_ms, created_at_ms FROM job WHERE id = %s", (job_id,))
        took_ms, created_ms = cur.fetchone()
    assert kinds and {kind for _, _, kind in kinds} == {"bigint"}, kinds
    assert 0 < took_ms < 600_000 and abs(created_ms / 1000 - time.time()) < 3600
