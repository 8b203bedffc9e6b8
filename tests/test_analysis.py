"""Multi-session analysis through the stack with the offline Gemma model: stream, cancel, resume, delete."""
from __future__ import annotations

import json

import pytest
import requests

from conftest import AUDIO, wait_until
from helpers import Collector
from test_sessions_api import upload, wait_session

TERMINAL = ("completed", "failed", "canceled")


@pytest.fixture(scope="module")
def three_sessions(llm_stack):
    # The long session is not diarized: its paragraphs are then cut at pauses, so there are many of them for
    # the head-and-tail cut to drop (with speakers, their number follows how espeak voices cluster).
    ids = [upload(llm_stack, AUDIO / name, numSpeakers=speakers, date=date).json()["sessionId"]
           for name, date, speakers in (("two_speakers.mp3", "2026-03-01", "2"), ("three_speakers.mp3", "2026-02-01", "2"),
                                        ("long_two_speakers.mp3", "2026-01-01", "0"))]
    for sid in ids:
        assert wait_session(llm_stack, sid)[0]["status"] == "completed"
    return ids


def read_stream(stack, job_id: int) -> tuple[list[str], list[dict]]:
    lines, events = [], []
    with requests.get(stack.url(f"/api/analysis-jobs/{job_id}/stream"), stream=True, timeout=600) as resp:
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        for line in resp.iter_lines(decode_unicode=True):
            lines.append(line)
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return lines, events


def create(stack, ids, **extra):
    answer = stack.post("/api/analysis-jobs", json={"sessionIds": ids, "prompt": "How does each client describe "
                                                    "their sleep, and what changes were agreed?", **extra})
    assert answer.status_code == 202, answer.text
    return answer.json()["jobId"]


def test_analysis_streams_every_step_and_ends_with_its_status(llm_stack, three_sessions):
    job_id = create(llm_stack, three_sessions, useAdvancedStrategy=True, temperature=0.2)
    reader = Collector(lambda sink: sink.extend(read_stream(llm_stack, job_id)[1]))
    reader.start()
    events = reader.result(600)
    assert events[0]["type"] == "snapshot" and events[0]["job"]["id"] == job_id
    assert events[-1] == {**events[-1], "type": "status", "phase": "status", "status": "completed"}
    body = events[1:]
    assert all(e["jobId"] == job_id and isinstance(e["timestamp"], int) for e in body)
    phases = [e["phase"] for e in body]
    assert phases.index("reduce") > max(i for i, p in enumerate(phases) if p == "map")  # reduce after every map

    detail = llm_stack.get(f"/api/analysis-jobs/{job_id}").json()
    assert detail["status"] == "completed" and "(summarizing)" not in detail["short_prompt"]
    assert set(detail["strategy"]) == {"intermediate_question", "final_synthesis_instructions"}
    assert [s["sessionDate"][:10] for s in detail["summaries"]] == ["2026-01-01", "2026-02-01", "2026-03-01"]
    for summary in detail["summaries"]:
        mine = [e for e in body if e.get("summaryId") == summary["id"]]
        kinds = [e["type"] if e["type"] != "status" else e["status"] for e in mine]
        assert kinds[0] in ("truncated", "start") and kinds[-1] == "end", kinds
        assert kinds.index("start") < kinds.index("thinking") < kinds.index("token"), kinds
        assert summary["status"] == "completed"
        assert summary["summary_text"] == "".join(e["delta"] for e in mine if e["type"] == "token")
        end = mine[-1]
        assert end["completionTokens"] > 0 and end["duration"] > 0
    reduce_text = "".join(e["delta"] for e in body if e["type"] == "token" and e["phase"] == "reduce")
    assert detail["final_result"] == reduce_text and reduce_text
    assert job_id in [j["id"] for j in llm_stack.get("/api/analysis-jobs").json()]

    # A client that connects after the end gets the snapshot, then the terminal status, then the end.
    lines, replay = read_stream(llm_stack, job_id)
    assert [e["type"] for e in replay] == ["snapshot", "status"] and replay[0]["job"]["final_result"] == reduce_text
    assert not any(line.startswith("event:") for line in lines)


def test_cancel_mid_map_keeps_finished_summaries(llm_stack, three_sessions):
    job_id = create(llm_stack, three_sessions)

    def one_done():
        summaries = llm_stack.get(f"/api/analysis-jobs/{job_id}").json()["summaries"]
        return [s for s in summaries if s["status"] == "completed"]
    done = wait_until(one_done, timeout=300, interval=0.2, what="first summary")
    assert llm_stack.post(f"/api/analysis-jobs/{job_id}/cancel").json() == {
        "message": f"Cancellation request for job {job_id} accepted."}
    final = wait_until(lambda: (d := llm_stack.get(f"/api/analysis-jobs/{job_id}").json())["status"] in TERMINAL
                       and d, timeout=60, what="an end")
    assert final["status"] == "canceled", final
    kept = {s["id"]: s for s in final["summaries"]}
    assert all(kept[s["id"]]["summary_text"] == s["summary_text"] for s in done)
    assert final["final_result"] is None and any(s["status"] != "completed" for s in final["summaries"])
    again = llm_stack.post(f"/api/analysis-jobs/{job_id}/cancel")
    assert again.status_code == 409
    _, replay = read_stream(llm_stack, job_id)
    assert replay[-1]["status"] == "canceled"


def test_killed_worker_resumes_without_redoing_finished_sessions(llm_stack, three_sessions):
    job_id = create(llm_stack, three_sessions)

    def mid_map():
        d = llm_stack.get(f"/api/analysis-jobs/{job_id}").json()
        done = [s for s in d["summaries"] if s["status"] == "completed"]
        return d["status"] == "mapping" and len(done) == 1 and done
    before = wait_until(mid_map, timeout=300, interval=0.1, what="one summary finished")
    llm_stack.workers["llm"].kill()
    llm_stack.start_worker("llm", "llm")
    final = wait_until(lambda: (d := llm_stack.get(f"/api/analysis-jobs/{job_id}").json())["status"] in
                       ("completed", "failed") and d, timeout=300, what="resumed analysis")
    assert final["status"] == "completed", final
    after = {s["id"]: s for s in final["summaries"]}
    assert after[before[0]["id"]]["summary_text"] == before[0]["summary_text"]  # not done twice
    assert all(s["status"] == "completed" for s in final["summaries"]) and final["final_result"]


@pytest.mark.parametrize("body, words", [
    ({"sessionIds": [], "prompt": "long enough prompt"}, "sessionIds"),
    ({"sessionIds": list(range(1, 52)), "prompt": "long enough prompt"}, "sessionIds"),
    ({"sessionIds": ["1"], "prompt": "long enough prompt"}, "sessionIds"),
    ({"sessionIds": [1], "prompt": "short"}, "prompt"),
    ({"sessionIds": [999999], "prompt": "long enough prompt"}, "unknown session"),
])
def test_validation(llm_stack, body, words):
    response = llm_stack.post("/api/analysis-jobs", json=body)
    assert response.status_code == 400 and words in response.json()["message"], response.text


def test_context_limits_delete_and_unknowns(llm_stack, three_sessions):
    too_big = llm_stack.post("/api/analysis-jobs", json={"sessionIds": three_sessions, "prompt": "long enough prompt",
                                                         "contextSize": 10_000_000})
    assert too_big.status_code == 400 and "maximum" in too_big.json()["message"]
    job_id = create(llm_stack, three_sessions[:1])
    wait_until(lambda: llm_stack.get(f"/api/analysis-jobs/{job_id}").json()["status"] in ("completed", "failed"),
               timeout=300, what="small analysis")
    gone = llm_stack.session.delete(llm_stack.url(f"/api/analysis-jobs/{job_id}"))
    assert gone.json() == {"message": f"Analysis job {job_id} and all associated data deleted."}
    assert llm_stack.get(f"/api/analysis-jobs/{job_id}").status_code == 404
    missing = llm_stack.get("/api/analysis-jobs/999999/stream")
    assert missing.status_code == 404 and missing.text == "Job not found"
    assert llm_stack.get("/api/analysis-jobs/0").status_code == 400
    assert llm_stack.post("/api/analysis-jobs/999999/cancel").status_code == 404


def test_a_transcript_larger_than_the_context_is_cut_head_and_tail(llm_stack, three_sessions):
    long_session = three_sessions[2]  # three minutes of dialogue
    job_id = create(llm_stack, [long_session], contextSize=640)
    _, events = read_stream(llm_stack, job_id)
    truncated = [e for e in events if e["type"] == "truncated"]
    assert len(truncated) == 1 and truncated[0]["sessionId"] == long_session
    assert truncated[0]["originalTokens"] > truncated[0]["finalTokens"] and truncated[0]["droppedParagraphs"] > 0
    assert events[-1]["status"] == "completed"
    llm_stack.post("/api/llm/set-model", json={"modelName": "gemma-3-270m-q4_k_m.gguf", "contextSize": None})
