"""The OpenAI-compatible remote backend, against a real llama.cpp server started here (llama_cpp.server)."""
from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
import requests

from conftest import ROOT, Stack, free_port, running_stack, wait_until
from test_llm_chat import assert_contract_stream, post_message

TOKEN = "s3cret-remote-token"
ALIAS = "remote-gemma"


@pytest.fixture(scope="module")
def remote_server(llm_ready, tmp_path_factory):
    port = free_port()
    log = open(tmp_path_factory.mktemp("remote") / "server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(llm_ready), "--model_alias", ALIAS,
                             "--host", "127.0.0.1", "--port", str(port), "--chat_format", "gemma", "--n_ctx", "4096",
                             "--api_key", TOKEN], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"

    def up():
        try:
            return requests.get(url + "/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=2).ok
        except (requests.ConnectionError, requests.Timeout):  # still loading on a busy machine
            return False
    try:
        wait_until(up, timeout=90, what="llama.cpp server")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def remote_stack(tmp_path_factory, redis_server, llm_ready):
    with running_stack(tmp_path_factory.mktemp("remote-stack"), redis_server, workers=[("llm", "llm")],
                       PARLEY_CHAT_MAX_TOKENS="60") as s:
        yield s


def test_token_is_stored_but_never_returned(remote_stack):
    saved = remote_stack.post("/api/llm/api-token", json={"token": TOKEN})
    assert saved.json() == {"message": "Remote LLM API token saved.", "hasRemoteApiToken": True}
    status = remote_stack.get("/api/llm/status")
    assert status.json()["hasRemoteApiToken"] is True and TOKEN not in status.text
    assert remote_stack.post("/api/llm/api-token", json={"token": 5}).status_code == 400
    # A token no HTTP header can carry is refused by name, and the stored one stays: stored, it made every
    # later model list a 500 (found by the schemathesis run).
    for bad in ("tök-en", "two words", "line\nbreak"):
        refused = remote_stack.post("/api/llm/api-token", json={"token": bad})
        assert refused.status_code == 400 and "ASCII" in refused.json()["message"], refused.text
        assert remote_stack.get("/api/llm/status").json()["hasRemoteApiToken"] is True


def test_a_url_no_http_client_sends_is_refused(remote_stack):
    # Found by the schemathesis run: a NUL in the path of baseUrl made the model list a 500.
    for url in ("https://0/a\x00b", "https://llm.example/a\nb"):
        listed = remote_stack.get("/api/llm/available-models", params={"baseUrl": url})
        assert listed.status_code == 400 and "control characters" in listed.json()["message"], listed.text
        chosen = remote_stack.post("/api/llm/set-model", json={"modelName": ALIAS, "baseUrl": url})
        assert chosen.status_code == 400 and "control characters" in chosen.json()["message"], chosen.text


def test_chat_through_the_remote_server(remote_stack, remote_server):
    remote_stack.post("/api/llm/api-token", json={"token": TOKEN})
    listed = remote_stack.get("/api/llm/available-models", params={"baseUrl": remote_server}).json()["models"]
    assert [m["name"] for m in listed] == [ALIAS]
    answer = remote_stack.post("/api/llm/set-model", json={"modelName": ALIAS, "baseUrl": remote_server,
                                                           "contextSize": None})
    assert answer.status_code == 200, answer.text
    status = remote_stack.get("/api/llm/status").json()
    assert status["isRemoteBaseUrl"] is True and status["activeBaseUrl"] == remote_server and status["loaded"] is True
    chat = remote_stack.post("/api/chats").json()
    code, headers, lines, events = post_message(remote_stack, f"/api/chats/{chat['id']}/messages", "Say hello.")
    assert code == 200
    assert_contract_stream(lines, events)
    ai = remote_stack.get(f"/api/chats/{chat['id']}").json()["messages"][1]
    assert ai["text"] == "".join(e["chunk"] for e in events if "chunk" in e)
    # Counted by the server where it reports usage, else estimated from the prompt's length.
    assert events[-1]["promptTokens"] > 10
    # The key went to the remote server on every call, but never into a log of ours.
    logs = "".join(p.read_text(errors="replace") for p in remote_stack.tmp.rglob("*.log"))
    assert logs and TOKEN not in logs


def test_a_refused_token_is_an_error_event(remote_stack, remote_server):
    remote_stack.post("/api/llm/set-model", json={"modelName": ALIAS, "baseUrl": remote_server})
    remote_stack.post("/api/llm/api-token", json={"token": "wrong"})
    chat = remote_stack.post("/api/chats").json()
    code, _, _, events = post_message(remote_stack, f"/api/chats/{chat['id']}/messages", "Say hello.")
    assert code == 200 and any("401" in e.get("error", "") for e in events), events
    cleared = remote_stack.post("/api/llm/api-token", json={"token": None}).json()
    assert cleared == {"message": "Remote LLM API token cleared.", "hasRemoteApiToken": False}


def test_back_to_the_local_engine(remote_stack):
    from conftest import GEMMA

    answer = remote_stack.post("/api/llm/set-model", json={"modelName": GEMMA, "baseUrl": None})
    assert answer.status_code == 200
    status = remote_stack.get("/api/llm/status").json()
    assert status["isRemoteBaseUrl"] is False and status["activeBaseUrl"] == status["defaultBaseUrl"]


def test_chat_message_with_the_queue_down_is_503_and_stores_nothing(tmp_path, redis_server):
    """Redis is unreachable: the message is refused with 503 and neither it nor its reply job is kept."""
    dead = Stack(tmp_path, redis_server, f"sqlite:///{tmp_path / 'data' / 'parley.db'}")
    dead.env["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    dead.start_web()
    try:
        chat = dead.post("/api/chats").json()
        path = f"/api/chats/{chat['id']}/messages"
        refused = dead.post(path, json={"text": "Hello?"})
        assert refused.status_code == 503 and "queue is unavailable" in refused.json()["message"]
        assert dead.get(f"/api/chats/{chat['id']}").json()["messages"] == []
    finally:
        dead.stop()
    with sqlite3.connect(tmp_path / "data" / "parley.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM llm_job").fetchone()[0] == 0
        assert conn.execute("SELECT COUNT(*) FROM message").fetchone()[0] == 0
