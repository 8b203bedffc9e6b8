"""Local LLM through the stack: set the model, chat replies streamed as SSE, cancel, summaries, chat API.

The model is Gemma 3 270M *base* (the only offline GGUF with a license): its words mean little, so the
tests assert the streams, shapes, persistence and numbers, not the wording.
"""
from __future__ import annotations

import json
import time

import pytest
import requests

from conftest import AUDIO, GEMMA, wait_until
from test_sessions_api import upload, wait_session


def post_message(stack, path: str, text: str, *, stop_after_chunks: int | None = None, **fields):
    """POST a message; returns (response headers, raw lines, parsed events)."""
    lines, parsed = [], []
    with requests.post(stack.url(path), json={"text": text, **fields}, stream=True, timeout=300) as resp:
        headers = resp.headers
        status = resp.status_code
        if status != 200:
            return status, headers, resp.json(), []
        chunks = 0
        for line in resp.iter_lines(decode_unicode=True):
            lines.append(line)
            if line.startswith("data: "):
                parsed.append(json.loads(line[6:]))
                if "chunk" in parsed[-1]:
                    chunks += 1
                    if stop_after_chunks and chunks >= stop_after_chunks:
                        break  # leaving the with-block closes the connection, as the Stop button does
    return status, headers, lines, parsed


def assert_contract_stream(lines: list[str], events: list[dict]) -> None:
    for line in lines:
        assert line == "" or line.startswith("data: ") or line.startswith(":"), line  # no event:/id:/retry:
    kinds = [next(iter(e)) for e in events]
    assert events[0] == {"status": "thinking"} and "usage" in events[1]
    assert kinds.count("status") == 2 and {"status": "responding"} in events
    responding = events.index({"status": "responding"})
    assert all("thinkingChunk" in e for e in events[2:responding])
    chunks = [e for e in events[responding + 1:-1]]
    assert chunks and all(set(e) == {"chunk"} for e in chunks)
    done = events[-1]
    assert done["done"] is True and done["completionTokens"] > 0 and done["duration"] >= 0
    assert isinstance(done["isTruncated"], bool) and done["promptTokens"] > 0


def test_set_model_and_status(llm_stack):
    status = llm_stack.get("/api/llm/status").json()
    assert status["activeModel"] == GEMMA and status["modelChecked"] == GEMMA and status["loaded"] is True
    assert status["details"]["name"] == GEMMA and status["details"]["defaultContextSize"] == 32768
    assert status["defaultBaseUrl"] and status["isRemoteBaseUrl"] is False and status["hasRemoteApiToken"] is False
    # Residency comes with the worker's next heartbeat (every 5 s).
    status = wait_until(lambda: (st := llm_stack.get("/api/llm/status").json())["residentModels"] and st,
                        timeout=15, what="resident model reported")
    assert status["residentModels"] == [GEMMA]
    import llama_cpp  # the worker's own build: a GPU backend or not
    if llama_cpp.llama_supports_gpu_offload():
        assert status["details"]["size_vram"] > 253_000_000
    else:  # a CPU-only host: no "offloaded to GPU" figure for the client to show
        assert status["details"]["size_vram"] == 0
    unknown = llm_stack.post("/api/llm/set-model", json={"modelName": "nope.gguf", "contextSize": None})
    assert unknown.status_code == 400 and GEMMA in unknown.json()["message"]
    bad = llm_stack.post("/api/llm/set-model", json={"modelName": GEMMA, "contextSize": 0})
    assert bad.status_code == 400
    remote_bad = llm_stack.post("/api/llm/set-model", json={"modelName": GEMMA, "baseUrl": "ftp://x"})
    assert remote_bad.status_code == 400
    assert llm_stack.get("/api/llm/status").json()["activeModel"] == GEMMA  # refusals change nothing


def test_standalone_chat_streams_and_persists(llm_stack):
    chat = llm_stack.post("/api/chats").json()
    assert chat["sessionId"] is None and chat["tags"] is None and chat["name"] is None
    status, headers, lines, events = post_message(llm_stack, f"/api/chats/{chat['id']}/messages",
                                                  "Write three short sentences about the sea.")
    assert status == 200 and headers["Content-Type"] == "text/event-stream; charset=utf-8", headers["Content-Type"]
    assert headers["Cache-Control"] == "no-cache, no-transform" and headers["X-Accel-Buffering"] == "no"
    assert_contract_stream(lines, events)
    user_id = int(headers["X-User-Message-Id"])
    detail = llm_stack.get(f"/api/chats/{chat['id']}").json()
    user, ai = detail["messages"]
    assert user["id"] == user_id and user["sender"] == "user" and user["text"] == "Write three short sentences about the sea."
    assert ai["sender"] == "ai" and ai["text"] == "".join(e["chunk"] for e in events if "chunk" in e)
    assert ai["completionTokens"] == events[-1]["completionTokens"] and ai["duration"] > 0
    assert ai["isTruncated"] is False and ai["status"] == "complete"

    renamed = llm_stack.session.patch(llm_stack.url(f"/api/chats/{chat['id']}/details"),
                                      json={"name": "  Sea  ", "tags": ["b", " a ", "b"]})
    assert renamed.json()["name"] == "Sea" and renamed.json()["tags"] == ["a", "b"]
    assert llm_stack.session.patch(llm_stack.url(f"/api/chats/{chat['id']}/details"),
                                   json={"name": None, "tags": []}).json()["tags"] is None
    logs = llm_stack.get("/api/usage/logs", params={"type": "llm", "source": "standalone_chat"}).json()
    assert logs["total"] >= 1 and logs["items"][0]["model"] == GEMMA


def test_session_chat_uses_the_transcript(llm_stack):
    sid = upload(llm_stack, numSpeakers="2").json()["sessionId"]
    session, _ = wait_session(llm_stack, sid)
    chat_id = session["chats"][0]["id"]
    greeting = llm_stack.get(f"/api/sessions/{sid}/chats/{chat_id}").json()["messages"]
    assert [m["sender"] for m in greeting] == ["ai"] and "ready for analysis" in greeting[0]["text"]

    usage = llm_stack.get(f"/api/sessions/{sid}/chats/{chat_id}/context-usage",
                          params={"inputDraft": "What did they say about sleep?"}).json()
    assert usage["breakdown"]["transcriptTokens"] == session["transcriptTokenCount"]
    assert usage["breakdown"]["inputDraftTokens"] > 5 and usage["breakdown"]["chatHistoryTokens"] == 0
    assert usage["model"] == {"name": GEMMA, "configuredContextSize": None, "defaultContextSize": 32768,
                              "effectiveContextSize": 4096}
    totals = usage["totals"]
    assert totals["promptTokens"] == sum(v for v in usage["breakdown"].values() if v is not None)
    assert totals["remainingForPrompt"] == 4096 - totals["promptTokens"]
    assert totals["remainingForOutput"] == totals["remainingForPrompt"] - 512
    # Counted with the model's own tokenizer: the same number llama.cpp gives for the transcript.
    from llama_cpp import Llama
    vocab = Llama(model_path=str(llm_stack.env["PARLEY_MODEL_DIR"]) + f"/llm/{GEMMA}", vocab_only=True, verbose=False)
    text = "\n".join(f"{p['speaker']}: {p['text']}" for p in llm_stack.get(f"/api/sessions/{sid}/transcript").json())
    assert session["transcriptTokenCount"] == len(vocab.tokenize(text.encode(), add_bos=False, special=False))

    status, headers, lines, events = post_message(llm_stack, f"/api/sessions/{sid}/chats/{chat_id}/messages",
                                                  "What does the client say about sleep?")
    assert status == 200
    assert_contract_stream(lines, events)
    # The prompt held the transcript: far more tokens than the question alone.
    assert events[-1]["promptTokens"] > session["transcriptTokenCount"]
    after = llm_stack.get(f"/api/sessions/{sid}/chats/{chat_id}/context-usage").json()
    assert after["breakdown"]["chatHistoryTokens"] > 0

    other = llm_stack.post(f"/api/sessions/{sid}/chats/").json()
    assert llm_stack.get(f"/api/sessions/{sid}/chats/{other['id']}").json()["messages"] == []
    assert llm_stack.get(f"/api/sessions/{sid}").json()["chats"][0]["id"] == other["id"]  # newest first


def test_stop_cancels_generation_and_keeps_the_partial_answer(llm_stack):
    chat = llm_stack.post("/api/chats").json()
    status, _, _, events = post_message(llm_stack, f"/api/chats/{chat['id']}/messages",
                                        "Tell me a very long story about a lighthouse keeper.", stop_after_chunks=3)
    stopped_at = time.time()
    assert status == 200 and sum(1 for e in events if "chunk" in e) == 3

    def ai_message():
        messages = llm_stack.get(f"/api/chats/{chat['id']}").json()["messages"]
        return messages[1] if len(messages) == 2 else None
    ai = wait_until(ai_message, timeout=30, what="partial answer stored")
    assert ai["status"] == "cancelled" and ai["text"] and ai["completionTokens"] < 160
    # Stored the moment the worker saw the stop: the issue asks for "within a second"; 2 s leaves room
    # for a busy two-core test machine.
    assert ai["timestamp"] / 1000 - stopped_at < 2.0, ai["timestamp"] / 1000 - stopped_at
    # The worker is free again: the next message is answered (the model reloads lazily if it was unloaded).
    assert llm_stack.post("/api/llm/unload").status_code == 200
    assert llm_stack.get("/api/llm/status").json()["loaded"] is True
    status, _, lines, events = post_message(llm_stack, f"/api/chats/{chat['id']}/messages", "Say hello.")
    assert status == 200 and events[-1].get("done") is True


def test_chat_reply_streams_while_a_transcription_runs(llm_stack, tmp_path):
    # Nine minutes of speech: far longer to transcribe than a short reply takes, even on two busy cores.
    import subprocess
    long_audio = tmp_path / "nine_minutes.mp3"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-stream_loop", "2", "-i",
                    str(AUDIO / "long_two_speakers.mp3"), "-c", "copy", str(long_audio)], check=True)
    job_id = llm_stack.upload(long_audio, diarize="false").json()["job_id"]
    wait_until(lambda: llm_stack.get(f"/api/transcribe/status/{job_id}").json()["status"] == "processing",
               timeout=60, what="transcription started")
    chat = llm_stack.post("/api/chats").json()
    # The reply's first words arrive while the transcription is still running: the chat did not queue
    # behind it. (Waiting for the whole reply instead raced the transcription's own end on a busy host.)
    status, _, _, events = post_message(llm_stack, f"/api/chats/{chat['id']}/messages", "Say hello.",
                                        stop_after_chunks=1)
    first_words_at = time.time()
    assert status == 200 and any("chunk" in e for e in events)
    assert llm_stack.get(f"/api/transcribe/status/{job_id}").json()["status"] == "processing"
    assert llm_stack.wait_job(job_id, timeout=600)["status"] == "completed"
    assert llm_stack.get(f"/api/transcribe/debug/{job_id}").json()["finished_at"] > first_words_at


@pytest.mark.parametrize("body, code, words", [
    ({"text": ""}, 400, "text"),
    ({"text": "   "}, 400, "text"),
    ({"text": "x" * 10_001}, 400, "10000"),
    ({"nope": 1}, 400, "text"),
])
def test_message_validation_stores_nothing(llm_stack, body, code, words):
    chat = llm_stack.post("/api/chats").json()
    response = llm_stack.post(f"/api/chats/{chat['id']}/messages", json=body)
    assert response.status_code == code and words in response.json()["message"]
    assert llm_stack.get(f"/api/chats/{chat['id']}").json()["messages"] == []


def test_chat_lookups(llm_stack):
    assert llm_stack.post("/api/chats/999999/messages", json={"text": "hi"}).status_code == 404
    assert llm_stack.get("/api/chats/abc").status_code == 400
    garbled = llm_stack.post("/api/chats/1/messages", data="{oops", headers={"Content-Type": "application/json"})
    assert garbled.status_code in (400, 404)
    sid = upload(llm_stack, AUDIO / "silence.mp3").json()["sessionId"]
    session_chat = llm_stack.post(f"/api/sessions/{sid}/chats").json()
    assert llm_stack.get(f"/api/chats/{session_chat['id']}").status_code == 404  # a session's chat is not standalone
    standalone = llm_stack.post("/api/chats").json()
    assert llm_stack.get(f"/api/sessions/{sid}/chats/{standalone['id']}").status_code == 404
    named = llm_stack.session.patch(llm_stack.url(f"/api/sessions/{sid}/chats/{session_chat['id']}/name"),
                                    json={"name": " Notes "})
    assert named.json() == {"id": session_chat["id"], "sessionId": sid, "timestamp": session_chat["timestamp"],
                            "name": "Notes"}
    assert llm_stack.session.patch(llm_stack.url(f"/api/sessions/{sid}/chats/{session_chat['id']}/name"),
                                   json={"name": ""}).status_code == 400
    gone = llm_stack.session.delete(llm_stack.url(f"/api/sessions/{sid}/chats/{session_chat['id']}"))
    assert gone.json() == {"message": f"Chat {session_chat['id']} deleted successfully."}


@pytest.mark.parametrize("fmt", ["paragraph", "bullet_points", "key_points"])
def test_summaries(llm_stack, fmt):
    segments = [{"start": i * 3.0, "end": i * 3.0 + 2.5, "text": t, "speaker": s} for i, (s, t) in enumerate([
        ("A", "Thanks for coming in. How was your week?"), ("B", "Busy. Work was stressful and I slept badly."),
        ("A", "Let's plan a regular bedtime and less screen time at night."), ("B", "Okay, I will try that.")])]
    job = llm_stack.post("/api/summary/", json={"transcript": segments, "model_name": "gpt-3.5-turbo",
                                                "max_length": 60, "format": fmt}).json()
    assert job["status"] == "processing" and job["state"] == "queued"  # the spec's states; Parley's in `state`
    wait_until(lambda: llm_stack.get(f"/api/summary/status/{job['job_id']}").json()["status"] == "completed",
               timeout=180, what="summary")
    result = llm_stack.get(f"/api/summary/{job['job_id']}").json()
    assert set(result) == {"summary", "topics", "length", "model_used"}
    assert result["summary"] and result["length"] == len(result["summary"].split()) <= 60
    assert isinstance(result["topics"], list) and all(isinstance(t, str) and t for t in result["topics"])
    assert result["model_used"] == GEMMA


def test_long_transcript_is_summarised_in_parts(llm_stack):
    text = "\n".join(f"Speaker {i % 2 + 1}: In meeting part {i} we discussed budget item number {i} at length, "
                     f"agreeing to revisit the figures and report back next week." for i in range(400))
    job = llm_stack.post("/api/summary/", json={"full_text": text, "max_length": 80}).json()
    messages = set()

    def done():
        status = llm_stack.get(f"/api/summary/status/{job['job_id']}").json()
        messages.add(status["message"])
        return status["status"] in ("completed", "failed") and status
    assert wait_until(done, timeout=600, interval=0.5, what="long summary")["status"] == "completed"
    assert any(m.startswith("Summarising part 2 of") for m in messages), messages
    assert llm_stack.get(f"/api/summary/{job['job_id']}").json()["summary"]


def test_summary_and_chat_api_errors(llm_stack):
    assert llm_stack.get("/api/summary/status/nope").status_code == 404
    assert llm_stack.get("/api/summary/nope").status_code == 404
    bad_format = llm_stack.post("/api/summary/", json={"full_text": "hi", "format": "haiku"})
    assert bad_format.status_code == 400 and "bullet_points" in bad_format.json()["detail"]
    unknown = llm_stack.post("/api/summary/", json={"full_text": "hi", "model_name": "gpt-5-ultra"})
    assert unknown.status_code == 400 and GEMMA in unknown.json()["detail"] and "gpt-3.5-turbo" in unknown.json()["detail"]
    assert llm_stack.post("/api/summary/", json={"transcript": []}).status_code == 400
    assert llm_stack.post("/api/chat/", json={"messages": []}).status_code == 400
    assert llm_stack.post("/api/chat/", json={"messages": [{"role": "robot", "content": "x"}]}).status_code == 400


def test_chat_api_answers_synchronously(llm_stack):
    models = llm_stack.get("/api/chat/models").json()["models"]
    assert {"gpt-3.5-turbo", GEMMA} <= {m["id"] for m in models}
    answer = llm_stack.post("/api/chat/", json={
        "transcript": [{"start": 0, "end": 2, "text": "I would like the report by Friday."}],
        "messages": [{"role": "user", "content": "What was requested?"}], "model_name": "gpt-3.5-turbo",
        "temperature": 0.2, "max_tokens": 40}, timeout=180)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["message"]["role"] == "assistant" and body["message"]["content"]
    assert body["model_used"] == GEMMA
    assert body["usage"]["total"] == body["usage"]["prompt"] + body["usage"]["completion"] > 0


def test_replies_end_at_a_new_turn_and_within_the_clients_cap(llm_stack):
    """The offline base model would go on writing "USER:" and "SPEAKER_2:" turns up to the token cap."""
    sid = upload(llm_stack, AUDIO / "two_speakers.mp3", numSpeakers="2").json()["sessionId"]
    wait_session(llm_stack, sid)
    chat = llm_stack.post(f"/api/sessions/{sid}/chats").json()
    path = f"/api/sessions/{sid}/chats/{chat['id']}/messages"
    for question in ("What did SPEAKER_1 say?", "Continue the conversation between the speakers."):
        status, _, _, events = post_message(llm_stack, path, question)
        assert status == 200
        reply = "".join(e["chunk"] for e in events if "chunk" in e)
        for marker in ("\nUSER:", "\nSPEAKER_", "\nASSISTANT:", "<end_of_turn>"):
            assert marker not in reply, (marker, reply)
        assert events[-1]["completionTokens"] <= 160  # PARLEY_CHAT_MAX_TOKENS of this stack
    status, _, _, events = post_message(llm_stack, path, "Tell me everything, at length.", maxTokens=6)
    assert status == 200 and 0 < events[-1]["completionTokens"] <= 6, events[-1]
    refused = requests.post(llm_stack.url(path), json={"text": "hi", "maxTokens": 0}, timeout=30)
    assert refused.status_code == 400 and "maxTokens" in refused.json()["message"]


def test_chat_and_summary_answer_with_the_listed_model_asked_for(llm_stack):
    """model_name naming a listed model that is not the active one: that model answers, and says so."""
    import os

    from conftest import MODEL_DIR

    twin = MODEL_DIR / "llm" / f"twin-{GEMMA}"  # the same weights under another name: a second local model
    os.link(MODEL_DIR / "llm" / GEMMA, twin)
    try:
        assert twin.name in {m["id"] for m in llm_stack.get("/api/chat/models").json()["models"]}
        answer = llm_stack.post("/api/chat/", json={
            "messages": [{"role": "user", "content": "Say hello."}], "model_name": twin.name, "max_tokens": 8},
            timeout=180)
        assert answer.status_code == 200 and answer.json()["model_used"] == twin.name, answer.text
        wait_until(lambda: llm_stack.get("/api/llm/status").json()["residentModels"] == [twin.name], timeout=15,
                   what="the twin reported resident by the worker that answered")
        job = llm_stack.post("/api/summary/", json={"full_text": "A: hello. B: hi there.", "max_length": 20,
                                                    "model_name": twin.name}).json()
        wait_until(lambda: llm_stack.get(f"/api/summary/status/{job['job_id']}").json()["status"] == "completed",
                   timeout=180, what="summary")
        assert llm_stack.get(f"/api/summary/{job['job_id']}").json()["model_used"] == twin.name
        # An alias still means the active model, which is loaded again.
        alias = llm_stack.post("/api/chat/", json={
            "messages": [{"role": "user", "content": "Say hello."}], "model_name": "gpt-4o", "max_tokens": 8},
            timeout=180)
        assert alias.json()["model_used"] == GEMMA
        assert llm_stack.get("/api/llm/status").json()["activeModel"] == GEMMA  # asking for a model activates nothing
    finally:
        twin.unlink()


def test_models_vram_and_delete(llm_stack, tmp_path):
    models = llm_stack.get("/api/llm/available-models").json()["models"]
    gemma = next(m for m in models if m["name"] == GEMMA)
    assert gemma["details"]["quantization_level"] == "Q4_K_M" and gemma["architecture"]["num_layers"] == 18
    estimate = llm_stack.get(f"/api/llm/models/{GEMMA}/estimate-vram", params={"context_size": 8192}).json()
    # 18 layers x 1 KV head x (256 + 256) dims x 2 bytes per token, from the GGUF header.
    assert estimate["vram_per_token_bytes"] == 18 * 1 * 512 * 2
    assert estimate["breakdown"]["kv_cache_bytes"] == 18 * 512 * 2 * 8192
    half = llm_stack.get(f"/api/llm/models/{GEMMA}/estimate-vram", params={"context_size": 8192, "num_gpu_layers": 9}).json()
    assert half["estimated_ram_bytes"] > 0 and half["estimated_vram_bytes"] < estimate["estimated_vram_bytes"]
    assert llm_stack.get("/api/llm/models/nope.gguf/estimate-vram").status_code == 404
    assert llm_stack.get(f"/api/llm/models/{GEMMA}/estimate-vram", params={"context_size": 0}).status_code == 400
    active = llm_stack.post("/api/llm/delete-model", json={"modelName": GEMMA})
    assert active.status_code == 409
    assert llm_stack.post("/api/llm/delete-model", json={"modelName": "../x"}).status_code == 400
    assert llm_stack.post("/api/llm/delete-model", json={"modelName": "missing.gguf"}).status_code == 404
