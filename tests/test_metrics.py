"""GET /metrics: HTTP counts by route template summed over web processes, queue depths, job durations, speeds."""
from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import AUDIO, ROOT, VENV_BIN, Process, Stack, free_port, running_stack, wait_until

SESSION_ROUTE = "/api/sessions/<session_id>"
EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"


def scrape(stack) -> dict[tuple, float]:
    """Every sample of one scrape, keyed by (name, sorted labels)."""
    answer = stack.get("/metrics")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == EXPOSITION
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def series(samples: dict, name: str) -> list[dict]:
    return [dict(labels) for (n, labels) in samples if n == name]


@pytest.fixture(scope="module")
def two_process_web(tmp_path_factory, redis_server, models_ready):
    """The web tier as production runs it, two gunicorn processes (the shared stack runs one), and no worker:
    whatever is queued stays queued."""
    tmp = tmp_path_factory.mktemp("metrics")
    stack = Stack(tmp, redis_server, f"sqlite:///{tmp / 'data' / 'parley.db'}", PARLEY_METRICS_CACHE_S="0")
    env = stack.web_env()
    stack.metrics_dir = env["PROMETHEUS_MULTIPROC_DIR"]
    stack.web = Process("web", [str(VENV_BIN / "gunicorn"), "--config", str(ROOT / "gunicorn.conf.py"),
                                "--worker-class", "gthread", "--workers", "2", "--threads", "8", "--bind",
                                f"127.0.0.1:{stack.port}", "--graceful-timeout", "2", "--no-control-socket",
                                "web:create_app()"], env, tmp)
    try:
        wait_until(stack._healthy, timeout=90, what=f"web tier ({stack.web.log_path})")
        yield stack
    finally:
        stack.stop()


def per_process(metrics_dir: str, name: str, **labels: str) -> list[float]:
    """One web process's own count of a series, per process: read from the file each one writes."""
    from prometheus_client.mmap_dict import MmapedDict

    counts = []
    for path in sorted(Path(metrics_dir).glob("counter_*.db")):
        entries = (json.loads(key)[1:3] + [count] for key, count, *_ in MmapedDict.read_all_values_from_file(str(path)))
        counts.append(sum(count for sample, sample_labels, count in entries
                          if sample == name and sample_labels == labels))
    return counts


def test_requests_are_counted_by_route_template_over_all_web_processes(two_process_web):
    web = two_process_web
    before = scrape(web)
    key = dict(route=SESSION_ROUTE, method="GET", status="404")
    sent, missing = 0, []
    # Concurrent connections until each of the two processes has answered some: a scrape reaches one process,
    # so only the multiprocess sum can then show the total.
    with ThreadPoolExecutor(8) as pool:
        while not (len(shares := per_process(web.metrics_dir, "parley_http_requests_total", **key)) == 2
                   and min(shares) > 0):
            assert sent < 400, f"one web process answered all {sent} requests: {shares}"
            batch = [str(random.randrange(10**6, 10**9)) for _ in range(16)]
            assert set(pool.map(lambda sid: web.get(f"/api/sessions/{sid}").status_code, batch)) == {404}
            sent, missing = sent + len(batch), missing + batch
        assert set(pool.map(lambda n: web.get(f"/no/such/page/{n}").status_code, range(7))) == {404}

    after = scrape(web)
    assert (value(after, "parley_http_requests_total", **key)
            - value(before, "parley_http_requests_total", **key)) == sent
    unmatched = dict(route="<unmatched>", method="GET", status="404")
    assert (value(after, "parley_http_requests_total", **unmatched)
            - value(before, "parley_http_requests_total", **unmatched)) == 7
    timed = dict(route=SESSION_ROUTE, method="GET")
    assert (value(after, "parley_http_request_duration_seconds_count", **timed)
            - value(before, "parley_http_request_duration_seconds_count", **timed)) == sent
    routes = {s["route"] for s in series(after, "parley_http_requests_total")}
    assert not any(sid in route for route in routes for sid in missing)  # templates, never raw paths
    assert "/metrics" in routes and "/health" in routes


def test_queue_depth_is_what_waits_without_a_worker(two_process_web):
    web = two_process_web
    before = scrape(web)
    assert value(before, "parley_workers", queue="asr") == 0
    ids = []
    for _ in range(2):
        answer = web.upload(AUDIO / "silence.mp3")
        assert answer.status_code in (200, 201, 202), answer.text
        ids.append(answer.json()["job_id"])
    after = scrape(web)
    waiting = dict(queue="asr", state="waiting")
    assert value(after, "parley_queue_messages", **waiting) - value(before, "parley_queue_messages", **waiting) == 2
    assert value(after, "parley_queue_messages", queue="asr", state="in_progress") == 0
    assert value(after, "parley_queue_messages", queue="llm", state="waiting") == 0
    queued = dict(type="transcription", kind="transcribe", status="queued")
    assert value(after, "parley_jobs", **queued) - value(before, "parley_jobs", **queued) == 2
    assert value(after, "parley_metrics_source_up", source="redis") == 1
    assert value(after, "parley_metrics_source_up", source="database") == 1
    for job_id in ids:  # nothing consumed them
        assert web.get(f"/api/transcribe/status/{job_id}").json()["state"] == "queued"


def test_a_finished_transcription_adds_its_duration_and_real_time_factor(stack):
    before = scrape(stack)
    answer = stack.upload(AUDIO / "two_speakers.mp3", num_speakers="2")
    assert answer.status_code in (200, 201, 202), answer.text
    job_id = answer.json()["job_id"]
    assert stack.wait_job(job_id)["status"] == "completed"
    job = stack.get(f"/api/transcribe/debug/{job_id}").json()
    model, audio_s, elapsed = job["model_name"], job["audio_duration"], job["finished_at"] - job["started_at"]
    done = dict(type="transcription", kind="transcribe", status="completed")

    def counted():
        now = scrape(stack)  # the database part is cached a few seconds
        grew = (value(now, "parley_job_duration_seconds_count", **done)
                - value(before, "parley_job_duration_seconds_count", **done))
        return now if grew else None
    after = wait_until(counted, timeout=30, interval=1, what="the job in parley_job_duration_seconds")

    def grown(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)
    assert grown("parley_job_duration_seconds_count", **done) == 1
    assert grown("parley_transcription_processing_seconds_count", kind="transcribe", status="completed") == 1
    spent = grown("parley_transcription_processing_seconds_sum", kind="transcribe", status="completed")
    assert spent == pytest.approx(elapsed) and spent > 0
    assert grown("parley_transcription_realtime_factor_count", model=model) == 1
    rtf = grown("parley_transcription_realtime_factor_sum", model=model)
    assert rtf > 0 and rtf == pytest.approx(audio_s / spent, rel=0.01)
    assert grown("parley_transcription_audio_seconds_total", model=model) == pytest.approx(audio_s)
    assert grown("parley_transcription_elapsed_seconds_total", model=model) == pytest.approx(spent)
    # The job's bucket: a real-time factor of `rtf` falls under every bound at or above it, none below.
    for bound in ("0.25", "1.0", "10.0", "100.0", "+Inf"):
        assert grown("parley_transcription_realtime_factor_bucket", model=model, le=bound) == (
            1 if float(bound) >= rtf else 0)
    assert value(after, "parley_workers", queue="asr") == 1


def test_unreachable_redis_is_reported_not_fatal(tmp_path, redis_server, models_ready):
    with running_stack(tmp_path, redis_server, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0") as dead:
        samples = scrape(dead)
        assert value(samples, "parley_metrics_source_up", source="redis") == 0
        assert value(samples, "parley_metrics_source_up", source="database") == 1
        assert series(samples, "parley_queue_messages") == []
        assert value(samples, "parley_http_requests_total", route="/health", method="GET", status="200") >= 1


def test_tokens_per_second_of_a_language_model_call(llm_stack):
    before = scrape(llm_stack)
    answer = llm_stack.post("/api/chat/", json={"messages": [{"role": "user", "content": "Say hello."}],
                                                "max_tokens": 8, "temperature": 0}, timeout=240)
    if answer.status_code == 202:  # a busy machine: the web tier stopped waiting, the worker goes on
        result = f"/api/chat/result/{answer.json()['job_id']}"
        answer = wait_until(lambda: (r := llm_stack.get(result)).status_code != 202 and r, timeout=300, interval=2,
                            what="the completion")
    assert answer.status_code == 200, answer.text
    model = llm_stack.get("/api/llm/status").json()["activeModel"]

    def counted():
        now = scrape(llm_stack)
        return now if value(now, "parley_llm_tokens_per_second_count", model=model) > value(
            before, "parley_llm_tokens_per_second_count", model=model) else None
    after = wait_until(counted, timeout=30, interval=1, what=f"a tokens/s sample for {model}")
    assert (value(after, "parley_llm_tokens_per_second_count", model=model)
            - value(before, "parley_llm_tokens_per_second_count", model=model)) == 1
    assert value(after, "parley_llm_tokens_per_second_sum", model=model) > value(
        before, "parley_llm_tokens_per_second_sum", model=model)
    assert value(after, "parley_llm_completion_tokens_total", model=model) > value(
        before, "parley_llm_completion_tokens_total", model=model)
    done = dict(type="llm", kind="completion", status="completed")
    assert value(after, "parley_job_duration_seconds_count", **done) - value(
        before, "parley_job_duration_seconds_count", **done) == 1
