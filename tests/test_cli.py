"""The operator CLI against a running stack: listing, re-transcription, stuck jobs, help everywhere."""
from __future__ import annotations

import subprocess

import click

from conftest import AUDIO, VENV_BIN
from test_sessions_api import upload, wait_session


def parley(stack, *args, check=True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(VENV_BIN / "parley"), *map(str, args)], env=stack.env, capture_output=True,
                          text=True, timeout=600)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def transcribed_session(stack, speakers="0"):
    sid = upload(stack, numSpeakers=speakers).json()["sessionId"]
    session, _ = wait_session(stack, sid)
    assert session["status"] == "completed"
    return session


def test_every_command_has_help(stack):
    from parley.cli import main

    def walk(command, path):
        yield path
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])
    for path in walk(main, []):
        done = parley(stack, *path, "--help")
        assert "Usage: parley" in done.stdout and len(done.stdout.splitlines()) > 3, path


def test_lists_and_events(stack):
    session = transcribed_session(stack)
    sessions = parley(stack, "sessions", "list", "--status", "completed").stdout
    assert f"{session['id']:>5}  2026-06-23  completed" in sessions and "Jane Doe" in sessions
    jobs = parley(stack, "jobs", "list").stdout
    assert session["whisperJobId"] in jobs
    events = parley(stack, "jobs", "events", session["whisperJobId"]).stdout
    assert "Hello, and thank you for coming in." in events and "completed" in events.splitlines()[-1]
    assert parley(stack, "jobs", "events", "nope", check=False).returncode != 0


def test_retranscribe_with_another_model_and_speakers(stack):
    session = transcribed_session(stack)
    sid = session["id"]
    before = stack.get(f"/api/sessions/{sid}/transcript").json()
    assert {p.get("speaker") for p in before} == {None}

    dry = parley(stack, "retranscribe", sid, "--model", "base", "--speakers", "2", "--dry-run").stdout
    assert f"would re-transcribe 1 session(s): {sid}" in dry
    assert stack.get(f"/api/sessions/{sid}").json()["whisperJobId"] == session["whisperJobId"]

    out = parley(stack, "retranscribe", sid, "--model", "base", "--speakers", "2").stdout
    assert f"session {sid}: queued job" in out
    after, _ = wait_session(stack, sid)
    assert after["status"] == "completed" and after["whisperJobId"] != session["whisperJobId"]
    job = stack.get(f"/api/transcribe/debug/{after['whisperJobId']}").json()
    assert job["model_name"] == "base" and job["num_speakers"] == 2
    paragraphs = stack.get(f"/api/sessions/{sid}/transcript").json()
    assert {p["speaker"] for p in paragraphs} == {"SPEAKER_1", "SPEAKER_2"}
    assert len(after["chats"]) == 1  # the greeting chat is not created twice


def test_keep_edits_or_not(stack):
    session = transcribed_session(stack, speakers="2")
    sid = session["id"]
    stack.session.patch(stack.url(f"/api/sessions/{sid}/transcript"), json={"paragraphIndex": 1, "newText": "EDITED BY HAND"})
    stack.session.patch(stack.url(f"/api/sessions/{sid}/speakers"), json=[{"from": "SPEAKER_1", "to": "Dr. Lee"}])
    stack.session.delete(stack.url(f"/api/sessions/{sid}/transcript/4"))
    deleted_words = "leave the phone in the kitchen"

    parley(stack, "retranscribe", sid, "--keep-edits")
    wait_session(stack, sid)
    kept = stack.get(f"/api/sessions/{sid}/transcript").json()
    texts = " ".join(p["text"] for p in kept)
    assert "EDITED BY HAND" in texts and deleted_words not in texts.lower()
    assert kept[0]["speaker"] == "Dr. Lee" and "SPEAKER_1" not in {p["speaker"] for p in kept}

    parley(stack, "retranscribe", sid)
    wait_session(stack, sid)
    fresh = " ".join(p["text"] for p in stack.get(f"/api/sessions/{sid}/transcript").json())
    assert "EDITED BY HAND" not in fresh and deleted_words in fresh.lower()


def test_selection_by_client_and_nothing_selected(stack):
    sid = upload(stack, AUDIO / "silence.mp3", clientName="Selective Client").json()["sessionId"]
    wait_session(stack, sid)
    out = parley(stack, "retranscribe", "--client", "Selective Client", "--dry-run").stdout
    assert f"would re-transcribe 1 session(s): {sid}" in out
    assert parley(stack, "retranscribe", check=False).returncode == 2
    assert "no sessions match" in parley(stack, "retranscribe", "--client", "Nobody").stdout
    bad = parley(stack, "retranscribe", sid, "--model", "large-v3", check=False)
    assert bad.returncode == 2 and "not in the model store" in bad.stderr


def test_requeue_after_redis_lost_the_messages(stack):
    stack.workers["asr"].stop()
    try:
        job_id = stack.upload(AUDIO / "silence.mp3").json()["job_id"]
        db = stack.env["REDIS_URL"].rsplit("/", 1)[1]
        subprocess.run(["redis-cli", "-p", str(stack.redis.port), "-n", db, "FLUSHDB"], check=True, capture_output=True)
        assert "no stuck jobs" in parley(stack, "requeue").stdout  # too fresh: it may still be on its way
        dry = parley(stack, "requeue", "--older-than", "0", "--dry-run").stdout
        assert f"would re-queue transcribe job {job_id}" in dry
        assert f"re-queued transcribe job {job_id}" in parley(stack, "requeue", "--older-than", "0").stdout
        # Its message is back: a second pass finds nothing to do.
        assert job_id not in parley(stack, "requeue", "--older-than", "0").stdout
    finally:
        stack.start_worker("asr", "asr")
    assert stack.wait_job(job_id)["status"] == "completed"


def test_inline_when_no_worker_runs(stack):
    session = transcribed_session(stack)
    stack.workers["asr"].stop()
    try:
        done = parley(stack, "retranscribe", session["id"], "--inline", "--speakers", "2")
        assert f"session {session['id']}: completed" in done.stdout
        paragraphs = stack.get(f"/api/sessions/{session['id']}/transcript").json()
        assert {p["speaker"] for p in paragraphs} == {"SPEAKER_1", "SPEAKER_2"}
    finally:
        stack.start_worker("asr", "asr")


def test_selection_by_date_range_and_model(stack):
    sid = upload(stack, AUDIO / "silence.mp3", date="2031-03-03").json()["sessionId"]
    wait_session(stack, sid)
    window = ("--since", "2031-03-01", "--until", "2031-03-03")
    assert f"would re-transcribe 1 session(s): {sid}" in parley(stack, "retranscribe", *window, "--dry-run").stdout
    assert f": {sid}" in parley(stack, "retranscribe", *window, "--from-model", "tiny.en", "--dry-run").stdout
    assert "no sessions match" in parley(stack, "retranscribe", *window, "--from-model", "base", "--dry-run").stdout
    assert "no sessions match" in parley(stack, "retranscribe", "--since", "2031-03-04", "--until", "2031-12-31",
                                         "--dry-run").stdout
