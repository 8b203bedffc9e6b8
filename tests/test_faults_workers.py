"""kill -9 of the LLM worker mid map phase and of the io worker mid model pull: each job completes once, nothing doubled.

tests/test_crash_resume.py covers a speech worker killed mid-transcription. These stacks also run the
reconciler with a short grace period, so the broker's own redelivery of the killed worker's message and
the reconciler are both live: the job must still run once, not twice. The "remote" of the model pull is
a local HTTP file server (tests/test_model_pulls.py's), a boundary we can run here.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conftest import AUDIO, GEMMA, running_stack, wait_until
from test_model_pulls import FileServer, make_gguf
from test_sessions_api import upload, wait_session

FAST_RECONCILE = {"PARLEY_RECONCILE_AFTER_S": "3", "PARLEY_RECONCILE_EVERY_S": "1"}


def usage_count(stack, source: str) -> int:
    return stack.get("/api/usage/logs", params={"source": source}).json()["total"]


def test_llm_worker_killed_mid_map_resumes_with_one_summary_per_session(tmp_path, redis_server, llm_ready):
    with running_stack(tmp_path, redis_server, workers=[("asr", "asr"), ("llm", "llm")], PARLEY_LLM_THREADS="2",
                       PARLEY_LLM_DEFAULT_CONTEXT="4096", PARLEY_ANALYSIS_MAP_TOKENS="48",
                       PARLEY_ANALYSIS_REDUCE_TOKENS="64", **FAST_RECONCILE) as stack:
        answer = stack.post("/api/llm/set-model", json={"modelName": GEMMA, "contextSize": None})
        assert answer.status_code == 200, answer.text
        wait_until(lambda: stack.get("/api/llm/status").json()["loadState"] == "completed", timeout=120,
                   what="model load")
        ids = [upload(stack, AUDIO / name, numSpeakers="1", date=date).json()["sessionId"]
               for name, date in (("two_speakers.mp3", "2026-03-01"), ("three_speakers.mp3", "2026-02-01"),
                                  ("silence.mp3", "2026-01-01"))]
        for sid in ids:
            assert wait_session(stack, sid)[0]["status"] == "completed"

        created = stack.post("/api/analysis-jobs", json={"sessionIds": ids, "prompt": "What does each speaker "
                                                         "want, and what was agreed?", "temperature": 0.2})
        assert created.status_code == 202, created.text
        job_id = created.json()["jobId"]

        def mid_map():
            detail = stack.get(f"/api/analysis-jobs/{job_id}").json()
            done = [s for s in detail["summaries"] if s["status"] == "completed"]
            # Killed only once the finished summary's usage is written too, so a redo would show there.
            return (detail["status"] == "mapping" and len(done) == 1 and usage_count(stack, "analysis_map") == 1
                    and done)
        before = wait_until(mid_map, timeout=300, interval=0.05, what="one summary finished")
        stack.workers["llm"].kill()  # SIGKILL to the process group: no ack, no clean-up
        stack.start_worker("llm", "llm")

        final = wait_until(lambda: (d := stack.get(f"/api/analysis-jobs/{job_id}").json())["status"] in
                           ("completed", "failed", "canceled") and d, timeout=400, what="resumed analysis")
        assert final["status"] == "completed", final
        assert final["final_result"]
        summaries = final["summaries"]
        assert sorted(s["session_id"] for s in summaries) == sorted(ids)  # exactly one per session
        assert all(s["status"] == "completed" and s["summary_text"] is not None for s in summaries), summaries
        kept = next(s for s in summaries if s["id"] == before[0]["id"])
        assert kept["summary_text"] == before[0]["summary_text"]  # the finished one was not redone
        # Each session was summarised to the end once, and the answers combined once.
        assert usage_count(stack, "analysis_map") == len(ids)
        assert usage_count(stack, "analysis_reduce") == 1


@pytest.fixture()
def files():
    server = FileServer()
    yield server
    server.close()


def test_io_worker_killed_mid_pull_completes_once_with_identical_bytes(tmp_path, redis_server, files):
    data = make_gguf(tmp_path / "source.gguf", rows=1600, seed=3)
    route = files.serve("/files/killed.gguf", data, chunk=8 * 1024, delay_s=0.05)
    models = tmp_path / "models"
    (tmp_path / "stack").mkdir()
    with running_stack(tmp_path / "stack", redis_server, workers=[("io", "io")], PARLEY_MODEL_DIR=str(models),
                       **FAST_RECONCILE) as stack:
        started = stack.post("/api/llm/pull-model", json={"modelUrl": files.base + "/files/killed.gguf"})
        assert started.status_code == 202, started.text
        pull_id = started.json()["jobId"]

        def status():
            return stack.get(f"/api/llm/pull-status/{pull_id}").json()
        wait_until(lambda: status()["completedBytes"] >= 200 * 1024, timeout=60, interval=0.05, what="some bytes")
        stack.workers.pop("io").kill()
        at_kill = status()
        assert at_kill["status"] == "downloading" and 0 < at_kill["completedBytes"] < len(data), at_kill
        part = models / "llm" / "killed.gguf.part"
        assert 0 < part.stat().st_size < len(data)

        route.delay_s = 0.0
        stack.start_worker("io-2", "io")
        final = wait_until(lambda: (b := status())["status"] in ("completed", "failed", "canceled") and b,
                           timeout=120, interval=0.1, what="resumed pull")
        assert final["status"] == "completed", final
        assert final["completedBytes"] == final["totalBytes"] == len(data)
        assert (models / "llm" / "killed.gguf").read_bytes() == data  # byte for byte
        assert not part.exists()
        # Resumed from the part (one Range request), not fetched again from zero, and by one worker only.
        assert route.ranges[0] is None and len(route.ranges) == 2, route.ranges
        assert int(route.ranges[1][len("bytes="):-1]) > 0
        # One row for the model, and a second pull of it is refused: nothing was duplicated.
        with sqlite3.connect(Path(stack.data_dir) / "parley.db") as conn:
            rows = conn.execute("SELECT id, status FROM model_pull WHERE model_name = 'killed.gguf'").fetchall()
        assert rows == [(pull_id, "completed")]
        again = stack.post("/api/llm/pull-model", json={"modelUrl": files.base + "/files/killed.gguf"})
        assert again.status_code == 409 and "already in the store" in again.json()["message"]
