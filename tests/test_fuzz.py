"""Every documented operation, fuzzed by schemathesis against a running stack: no 5xx, every answer as documented."""
from __future__ import annotations

import os
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings, strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance
from schemathesis.config import SchemathesisConfig

from conftest import AUDIO, running_stack, wait_until
from web.openapi import openapi_document

# Generated requests per operation (half valid, half invalid input). The default keeps the whole run to
# a few minutes on a 2-core machine; raise it for a deeper run.
EXAMPLES = int(os.environ.get("PARLEY_FUZZ_EXAMPLES", "15"))
# A fixed seed: a failure found in CI is found again on a laptop; another seed explores other inputs.
SEED = int(os.environ.get("PARLEY_FUZZ_SEED", "20261202"))
# Driven through hypothesis directly, not schemathesis' pytest plugin: the plugin (4.32) writes
# `request.node._nodeid`, which pytest 9.2 no longer has. Its coverage and stateful phases have no
# per-operation bound, so they are left to a deeper run (`schemathesis run` against a stack).


def no_server_error(ctx, response, case):
    """not_a_server_error, except a 502 or 503 the operation documents: a remote server that does not answer
    as it should, or the house rule for a missing piece the operator must start or choose (no worker for the
    queue, no language model chosen); either comes with a JSON message."""
    status = response.status_code
    if status in (502, 503) and str(status) in case.operation.definition.raw.get("responses", {}):
        assert response.json().get("detail"), f"a {status} must say what is unavailable"
        return None
    return not_a_server_error(ctx, response, case)


CHECKS = [no_server_error, response_schema_conformance, status_code_conformance]

# Left out, and why:
# - reset-all-data, import-data and reset-transcription wipe or replace what the other operations
#   work on (test_admin.py and test_system.py cover them with purpose-built data);
# - the SSE streams and the WebSocket stay open for as long as their job or the dashboard lives, so
#   one generated request would hold the run for minutes (test_live_events.py, test_analysis.py and
#   test_dashboard.py read them to their end).
EXCLUDED = {
    ("POST", "/api/admin/reset-all-data"), ("POST", "/api/admin/import-data"),
    ("POST", "/api/jobs/reset-transcription"),
    ("GET", "/api/transcribe/events/{job_id}"), ("GET", "/api/transcribe/live/{job_id}"),
    ("GET", "/api/analysis-jobs/{job_id}/stream"), ("GET", "/dashboard/stream"),
}
# The operations to fuzz come from the document the code builds; the test then fuzzes the document the
# running stack serves, so an operation missing there fails instead of silently going unfuzzed.
# Deletions run last, deepest path first (a paragraph before its session), so the rows the fixture made
# are there for every operation that can use them.
OPERATIONS = sorted(((method.upper(), path) for path, item in openapi_document()["paths"].items()
                     for method in item if method in {"get", "put", "post", "patch", "delete"}
                     if (method.upper(), path) not in EXCLUDED),
                    key=lambda op: (op[0] == "DELETE", -op[1].count("/") if op[0] == "DELETE" else 0, op[1], op[0]))


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory, redis_server, models_ready):
    """A stack of its own: fuzzed writes must not leak into the shared `stack` other modules assert on."""
    with running_stack(tmp_path_factory.mktemp("fuzz"), redis_server, workers=[("asr", "asr")],
                       MAX_UPLOAD_MB="3", PARLEY_CHAT_WAIT_S="2", PARLEY_RETRANSLATE_WAIT_S="2") as s:
        # A real completed session, its job and a chat on it: a third of the generated requests name
        # these ids, so the code behind the 404s (transcript edits, audio ranges, chats) is fuzzed too.
        with open(AUDIO / "two_speakers.mp3", "rb") as fh:
            answer = s.post("/api/sessions/upload", files={"audioFile": ("two_speakers.mp3", fh, "audio/mpeg")},
                            data={"clientName": "Jane Doe", "sessionName": "Fuzz", "date": "2026-06-23",
                                  "sessionType": "Individual", "therapy": "CBT", "numSpeakers": "0"})
        assert answer.status_code == 202, answer.text
        sid = answer.json()["sessionId"]
        wait_until(lambda: s.get(f"/api/sessions/{sid}").json()["status"] in ("completed", "failed"), timeout=240,
                   what="the fuzz session's transcript")
        session = s.get(f"/api/sessions/{sid}").json()
        assert session["status"] == "completed", session
        chat = s.post(f"/api/sessions/{sid}/chats")
        assert chat.status_code == 201, chat.text
        s.known_ids = {"session_id": str(sid), "job_id": session["whisperJobId"], "chat_id": str(chat.json()["id"]),
                       "paragraph_index": "0"}
        # The first look at a GGUF header costs a web process 10-20 s on a busy 2-core machine (it is cached
        # afterwards); pay it here, not inside the first LLM operation's 30 s request timeout.
        assert s.get("/api/chat/models", timeout=120).status_code == 200
        yield s


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_stack):
    config = SchemathesisConfig.from_dict({"seed": SEED, "base-url": fuzz_stack.base, "request-timeout": 30})
    return schemathesis.openapi.from_url(fuzz_stack.url("/api/openapi.json"), config=config)


# What the fuzzer found, replayed exactly on every run (a new seed may never draw these inputs again).
BIG = 2 ** 64
FINDINGS = [
    # The 200 body has no "message" (only a 503 has), yet the document required it.
    ("readiness without message", "GET", "/api/status/readiness", {}, 200),
    # Integers past 64 bits reached the database: OverflowError, a 500.
    ("analysis sessionIds overflow", "POST", "/api/analysis-jobs", {"body": {"sessionIds": [BIG], "prompt": "What?"}}, 400),
    ("paragraphIndex overflow", "PATCH", "/api/sessions/{session_id}/transcript",
     {"path": True, "body": {"paragraphIndex": BIG, "newText": "x"}}, 400),
    ("thinkingBudget overflow", "POST", "/api/llm/set-model",
     {"body": {"modelName": "m", "baseUrl": "https://llm.example/v1", "thinkingBudget": BIG}}, 400),
    # A control character in an edited paragraph broke the Word export (python-docx refuses it): a 500.
    ("docx with a control character", "GET", "/api/sessions/{session_id}/transcript",
     {"path": True, "query": {"format": "docx"}, "edit": "beep\x07 and NUL\x00 inside"}, 200),
    # An empty temperature read as absent (None), then compared with its maximum: a TypeError, a 500. It
    # was reached once a fresh install made its only model active (the fixture's session is named).
    ("analysis with an empty temperature", "POST", "/api/analysis-jobs",
     {"body": {"prompt": "0000000000", "temperature": "", "useAdvancedStrategy": ""}, "own_session": True}, 202),
    # A line break in a process name matches no route: the 404 was undocumented.
    ("process name with a line break", "GET", "/api/docker/logs/{name}", {"name": "web\nx"}, 404),
]


@pytest.mark.parametrize("name, method, path, parts, status", FINDINGS, ids=[f[0] for f in FINDINGS])
def test_fuzz_findings_stay_fixed(fuzz_stack, fuzz_schema, name, method, path, parts, status):
    ids = fuzz_stack.known_ids
    if "edit" in parts:
        edited = fuzz_stack.session.patch(fuzz_stack.url(f"/api/sessions/{ids['session_id']}/transcript"),
                                          json={"paragraphIndex": 0, "newText": parts["edit"]}, timeout=30)
        assert edited.status_code == 200, edited.text
    path_parameters = {"session_id": ids["session_id"]} if parts.get("path") else {}
    if parts.get("own_session"):
        parts = {**parts, "body": {**parts["body"], "sessionIds": [int(ids["session_id"])]}}
    if "name" in parts:
        path_parameters["name"] = parts["name"]
    case = fuzz_schema[path][method].Case(path_parameters=path_parameters or None, query=parts.get("query"),
                                          **({"body": parts["body"], "media_type": "application/json"}
                                             if "body" in parts else {}))
    assert case.call_and_validate(checks=CHECKS).status_code == status


def _fuzz(stack, schema, method: str, path: str, checks) -> list[int]:
    operation = schema[path][method]
    strategies = [operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)]
    names = re.findall(r"{(\w+)}", path)
    # The known job_id is a transcription job's: an analysis job's id is another kind of id.
    if names and all(name in stack.known_ids for name in names) and not path.startswith("/api/analysis-jobs"):
        known = {name: stack.known_ids[name] for name in names}
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=known))
    cases = st.one_of(*strategies)

    # No shrinking: it would replay a failure dozens of times; the report already carries a curl line.
    calls = []

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def fuzz(case):
        calls.append(case.call_and_validate(checks=checks).status_code)

    fuzz()
    assert calls, "no request was generated"
    print(method, path, len(calls), "requests, statuses", sorted(set(calls)))  # shown with -s
    return calls


@pytest.mark.parametrize("method, path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation_answers_as_documented(fuzz_stack, fuzz_schema, method, path):
    _fuzz(fuzz_stack, fuzz_schema, method, path, CHECKS)


def every_check() -> list:
    """Every check schemathesis has (`--checks all`), ours standing in for not_a_server_error."""
    from schemathesis.checks import CHECKS as REGISTRY, load_all_checks

    load_all_checks()
    return [no_server_error if check.__name__ == "not_a_server_error" else check for check in REGISTRY.get_all()]


GET_OPERATIONS = [path for method, path in OPERATIONS if method == "GET"]


@pytest.mark.parametrize("path", GET_OPERATIONS)
def test_get_operation_passes_every_check(fuzz_stack, fuzz_schema, path):
    """Reads with every check: a value the document allows is accepted (positive_data_acceptance), one it
    forbids is refused (negative_data_rejection), headers and content types are as documented."""
    _fuzz(fuzz_stack, fuzz_schema, "GET", path, every_check())
