"""Bad input gets a clear 4xx naming the problem, and nothing is left behind; common headers on every response."""
from __future__ import annotations

import os
import subprocess

import pytest
import requests

from conftest import AUDIO, Stack


def stored_files(stack) -> set[str]:
    return {p.name for p in (stack.data_dir / "audio").iterdir()} | {p.name for p in (stack.data_dir / "tmp").iterdir()}


def job_ids(stack) -> set[str]:
    return {j["job_id"] for j in stack.get("/api/transcribe/jobs", params={"limit": 500}).json()["jobs"]}


def post_file(stack, name: str, content: bytes, **fields):
    return stack.post("/api/transcribe/", files={"file": (name, content)}, data=fields)


@pytest.fixture()
def nothing_left(stack):
    """Rejected requests store no file and create no job."""
    files, jobs = stored_files(stack), job_ids(stack)
    yield
    assert stored_files(stack) == files
    assert job_ids(stack) == jobs


def expect_400(response, *words):
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "BadRequestError" and body["message"] == body["detail"]
    for word in words:
        assert word in body["detail"], body["detail"]


def test_not_audio_is_400_by_content(stack, nothing_left):
    # The name and content type say audio; the bytes do not.
    response = stack.post("/api/transcribe/", files={"file": ("notes.mp3", b"just some text\n" * 200, "audio/mpeg")})
    expect_400(response, "notes.mp3", "not an audio file")


def test_empty_file_is_400(stack, nothing_left):
    expect_400(post_file(stack, "empty.wav", b""), "empty")


def test_video_without_audio_is_400(stack, nothing_left, tmp_path):
    video = tmp_path / "silent-film.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=black:s=64x64:d=1",
                    str(video)], check=True)
    expect_400(post_file(stack, video.name, video.read_bytes()), "no audio stream")


def test_missing_file_field_is_400(stack, nothing_left):
    expect_400(stack.post("/api/transcribe/", data={"model_name": "tiny.en"}), "'file'")


def test_upload_over_limit_is_413(stack, nothing_left):
    too_big = os.urandom(4 * 1024 * 1024)  # the test stack allows 3 MB
    try:
        response = post_file(stack, "big.mp3", too_big)
    except requests.ConnectionError:
        pytest.fail("the server dropped the connection instead of answering 413")
    assert response.status_code == 413
    assert "3 MB" in response.json()["detail"]


def test_a_long_form_field_is_413_naming_the_field_limit(stack, nothing_left):
    # 2 MB of text in an ordinary field: under the 3 MB body limit, over the parser's in-memory one.
    response = stack.post("/api/transcribe/", files={"file": ("a.mp3", b"x" * 100)}, data={"language": "e" * 2_000_000})
    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert "form field" in detail and "500000 bytes" in detail and "3 MB" not in detail, detail


@pytest.mark.parametrize("fields, words", [
    ({"model_name": "whisper-huge"}, ["unknown model", "tiny.en", "large-v3"]),
    ({"model_name": "large-v3"}, ["not downloaded", "parley models pull large-v3", "tiny.en"]),
    ({"language": "klingon"}, ["unknown language", "en, es"]),
    ({"language": "fr", "model_name": "tiny.en"}, ["English-only"]),
    ({"diarize": "perhaps"}, ["diarize"]),
    ({"num_speakers": "11"}, ["num_speakers", "between 1 and 10"]),
    ({"num_speakers": "two"}, ["num_speakers", "integer"]),
])
def test_bad_fields_are_400_naming_valid_values(stack, nothing_left, fields, words):
    expect_400(stack.upload(AUDIO / "two_speakers.mp3", **fields), *words)


def test_unknown_job_everywhere(stack):
    status = stack.get("/api/transcribe/status/0b1c2d3e")
    assert status.status_code == 404
    body = status.json()
    assert body["status"] == "not_found" and body["message"] == "Transcription job not found or expired"
    assert body["job_id"] == "0b1c2d3e" and body["progress"] == 0
    for path in ("/api/transcribe/result/0b1c2d3e", "/api/transcribe/debug/0b1c2d3e"):
        response = stack.get(path)
        assert response.status_code == 404 and "0b1c2d3e" in response.json()["detail"]


def test_corrupt_audio_fails_the_job_with_a_readable_message(stack, tmp_path):
    from helpers import corrupt_m4a

    broken = corrupt_m4a(AUDIO / "two_speakers.mp3", tmp_path / "broken.m4a")
    answer = post_file(stack, "broken.m4a", broken.read_bytes())
    assert answer.status_code == 200, answer.text
    job_id = answer.json()["job_id"]
    status = stack.wait_job(job_id)
    assert status["status"] == "failed"
    assert "could not be decoded" in status["message"] and status["error"] == status["message"]
    result = stack.get(f"/api/transcribe/result/{job_id}")
    assert result.status_code == 409 and "could not be decoded" in result.json()["detail"]
    assert stack.get(f"/api/transcribe/debug/{job_id}").json()["cached_segments"] == 0
    # A failed job breaks nothing that comes after it.
    assert stack.get("/api/transcribe/jobs").status_code == 200
    following = stack.upload(AUDIO / "silence.mp3").json()["job_id"]
    assert stack.wait_job(following)["status"] == "completed"


def test_bad_result_format_is_400(stack):
    job_id = stack.upload(AUDIO / "silence.mp3").json()["job_id"]
    stack.wait_job(job_id)
    expect_400(stack.get(f"/api/transcribe/result/{job_id}", params={"format": "pdf"}), "format")


def test_request_id_process_time_and_cors_on_errors(stack):
    echoed = stack.get("/health", headers={"X-Request-ID": "trace-42"})
    assert echoed.headers["X-Request-ID"] == "trace-42"
    assert float(echoed.headers["X-Process-Time-Ms"]) >= 0
    fresh = stack.get("/api/transcribe/status/unknown", headers={"Origin": "http://client.example"})
    assert fresh.status_code == 404 and len(fresh.headers["X-Request-ID"]) >= 16
    assert fresh.headers["Access-Control-Allow-Origin"] == "http://client.example"
    assert "X-Request-ID" in fresh.headers["Access-Control-Expose-Headers"]
    crashed_route = stack.get("/no/such/route", headers={"Origin": "http://client.example"})
    assert crashed_route.status_code == 404 and crashed_route.json()["detail"]
    assert crashed_route.headers["Access-Control-Allow-Origin"] == "http://client.example"
    stranger = stack.get("/health", headers={"Origin": "http://elsewhere.example"})
    assert "Access-Control-Allow-Origin" not in stranger.headers
    preflight = requests.options(stack.url("/api/transcribe/"), headers={
        "Origin": "http://client.example", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204 and "POST" in preflight.headers["Access-Control-Allow-Methods"]


def test_queue_down_is_503_and_leaves_nothing(tmp_path, redis_server, models_ready):
    """A web tier whose Redis does not answer refuses uploads with 503 and keeps no file and no row."""
    from conftest import free_port

    dead = Stack(tmp_path, redis_server, f"sqlite:///{tmp_path / 'data' / 'parley.db'}")
    dead.env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    dead.start_web()
    try:
        response = dead.upload(AUDIO / "silence.mp3")
        assert response.status_code == 503 and "queue is unavailable" in response.json()["detail"]
        assert dead.get("/api/transcribe/jobs").json()["count"] == 0
        assert list((dead.data_dir / "audio").iterdir()) == []
        assert list((dead.data_dir / "tmp").iterdir()) == []
    finally:
        dead.stop()


def test_a_url_over_4_kib_is_a_json_414(stack):
    for path in ("/api/sessions", "/api/no-such-route"):
        response = stack.get(path, params={"q": "x" * 5000})
        assert response.status_code == 414, response.text
        assert response.json()["error"] == "URITooLongError" and "the limit is 4096" in response.json()["detail"]
    assert stack.get("/api/sessions", params={"q": "x" * 3000}).status_code == 200


def test_the_job_list_refuses_a_bad_filter_by_name(stack):
    """The list's query is declared (web/transcribe.py): a bad state or limit is a 400 naming it, an empty
    value is the default, and every listed job has the summary's fields."""
    for params, name in (({"status": "running"}, "status"), ({"limit": "501"}, "limit"), ({"limit": "ten"}, "limit")):
        answer = stack.get("/api/transcribe/jobs", params=params)
        assert answer.status_code == 400, answer.text
        assert answer.json()["message"].startswith(f"invalid request: {name}: "), answer.text
    listed = stack.get("/api/transcribe/jobs", params={"limit": "", "status": ""}).json()
    assert listed["count"] == len(listed["jobs"]) <= 100
    assert all(set(j) == {"job_id", "status", "state", "progress", "updated_at", "message", "kind"}
               for j in listed["jobs"])
