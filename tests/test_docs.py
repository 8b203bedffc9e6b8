"""Tests for the API docs blueprint (OpenAPI document and Swagger UI viewer)."""

from __future__ import annotations

import re

import pytest
from flask import Flask

from web.docs import docs_bp
from web.openapi import openapi_document

# The API areas (tags) of the document, each with one operation it must hold. The exhaustive check, every
# route against every documented operation, is test_every_route_of_the_real_app_is_documented.
API_AREAS = {
    "meta": ("/health", "get"),
    "transcribe": ("/api/transcribe/", "post"),
    "retranslate": ("/api/retranslate/segment", "post"),
    "sessions": ("/api/sessions/upload", "post"),
    "templates": ("/api/templates", "get"),
    "usage": ("/api/usage/stats", "get"),
    "llm": ("/api/llm/status", "get"),
    "chats": ("/api/sessions/{session_id}/chats/{chat_id}/messages", "post"),
    "summary": ("/api/summary/", "post"),
    "docs": ("/api/openapi.json", "get"),
    "search": ("/api/search", "get"),
    "analysis": ("/api/analysis-jobs", "post"),
    "system": ("/api/status/readiness", "get"),
    "admin": ("/auth/login", "post"),
    "monitoring": ("/dashboard", "get"),
}


@pytest.fixture()
def client():
    app = Flask(__name__)
    app.config["TESTING"] = True
    app.register_blueprint(docs_bp)
    return app.test_client()


def test_openapi_json_is_valid(client):
    resp = client.get("/api/openapi.json")
    assert resp.status_code == 200
    assert resp.mimetype == "application/json"
    doc = resp.get_json()
    assert doc["openapi"] == "3.0.3"
    assert doc["info"]["title"] == "Parley API"
    assert doc["servers"] == [{"url": "http://localhost"}]

    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(doc)


def test_every_endpoint_is_documented(client):
    """Each API area is a tag holding its operations; every operation belongs to exactly one known area."""
    doc = client.get("/api/openapi.json").get_json()
    assert {tag["name"] for tag in doc["tags"]} == set(API_AREAS)
    areas_used = set()
    operation_ids = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert len(op["tags"]) == 1 and op["tags"][0] in API_AREAS, (path, method)
            areas_used.add(op["tags"][0])
            operation_ids.append(op["operationId"])
    assert areas_used == set(API_AREAS)
    assert len(operation_ids) == len(set(operation_ids)), "operationIds must be unique"
    for area, (path, method) in API_AREAS.items():
        assert doc["paths"][path][method]["tags"] == [area], (area, path, method)


def test_refs_resolve_and_responses_carry_standard_headers():
    doc = openapi_document()
    assert "servers" not in doc
    schemas = doc["components"]["schemas"]
    headers = doc["components"]["headers"]

    def walk(node):
        if isinstance(node, dict):
            target = node.get("$ref")
            if target is not None:
                kind, name = target.split("/")[-2:]
                assert name in doc["components"][kind], target
                assert set(node) == {"$ref"}, f"siblings of $ref are ignored in OpenAPI 3.0: {node}"
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert {"Error", "JobStatus", "Transcript", "Segment", "RetranslateResult", "LlmStatus", "Message",
            "ContextUsage", "ChatStreamEvent", "SummaryResult"} <= set(schemas)
    assert set(headers) == {"X-Request-ID", "X-Process-Time-Ms"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for code, response in op["responses"].items():
                if code == "101":
                    continue
                assert set(response["headers"]) >= set(headers), (path, method, code)


def test_docs_page_assets_resolve_locally(client):
    resp = client.get("/api/docs")
    assert resp.status_code == 200
    assert resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    assert "/api/openapi.json" in html
    assert not re.search(r"https?://", html)

    urls = re.findall(r'<(?:script|link)\b[^>]*?\b(?:src|href)="([^"]+)"', html)
    assert len(urls) >= 3
    for url in urls:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.data, url
        asset.close()


def test_static_route_rejects_traversal(client):
    assert client.get("/api/docs/static/../../../../etc/passwd").status_code == 404
    assert client.get("/api/docs/static/no-such-file.js").status_code == 404


def test_schema_redirects_to_docs(client):
    resp = client.get("/api/schema")
    assert resp.status_code == 302
    assert resp.headers["Location"].endswith("/api/docs")


def _real_app(tmp_path, monkeypatch):
    monkeypatch.setenv("PARLEY_DATA_DIR", str(tmp_path))
    from parley.config import get_settings
    from web import create_app

    get_settings.cache_clear()
    try:
        return create_app()
    finally:
        get_settings.cache_clear()


def test_every_route_of_the_real_app_is_documented(tmp_path, monkeypatch):
    """Walks the URL map of the app Parley serves: every route and method is documented, and nothing else is."""
    app = _real_app(tmp_path, monkeypatch)
    doc = app.test_client().get("/api/openapi.json").get_json()

    def norm(path: str) -> str:  # the app does not enforce trailing slashes (strict_slashes is off)
        return path.rstrip("/") or "/"

    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith("/api/docs/static"):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        served |= {(norm(path), method.lower()) for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(norm(path), method) for path, item in doc["paths"].items() for method in item}
    assert sorted(served - documented) == [], "routes missing from the OpenAPI document"
    assert sorted(documented - served) == [], "documented operations the app does not serve"


def test_llm_and_chat_answers_match_their_schemas(tmp_path, monkeypatch):
    """The fields the real handlers answer are those the document lists (extensions included)."""
    app = _real_app(tmp_path, monkeypatch)
    schemas = openapi_document()["components"]["schemas"]
    client = app.test_client()

    status = client.get("/api/llm/status")
    assert status.status_code == 200
    assert set(status.get_json()) == set(schemas["LlmStatus"]["properties"])
    assert {"residentModels", "loadState", "loadError"} <= set(schemas["LlmStatus"]["required"])

    created = client.post("/api/chats")
    assert created.status_code == 201
    meta = created.get_json()
    assert set(meta) == set(schemas["StandaloneChatMeta"]["properties"])
    detail = client.get(f"/api/chats/{meta['id']}").get_json()
    assert set(detail) == set(schemas["StandaloneChatMeta"]["properties"]) | {"messages"}
    assert client.get("/api/chats/x").status_code == 400
    assert client.post("/api/sessions/999/chats").status_code == 404
    assert client.get("/api/summary/status/nope").status_code == 404


def test_chats_and_summary_document_match_the_handlers():
    from models import Message
    from web import chats

    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    # A user message (its AI fields null) is answered as the document says.
    message = chats.Message.of(Message(id=1, chat=2, sender="user", text=" hi\n", timestamp_ms=0)).model_dump()
    assert set(message) == set(schemas["Message"]["properties"]) and message["text"] == " hi\n"
    assert schemas["Message"]["properties"]["status"]["enum"] == list(chats.MESSAGE_STATES)
    # Each frame of the reply stream is told apart by the one key it must carry.
    frames = [schemas[ref["$ref"].rsplit("/", 1)[1]] for ref in schemas["ChatStreamEvent"]["oneOf"]]
    assert [frame["required"] for frame in frames] == [["status"], ["usage"], ["thinkingChunk"], ["chunk"], ["done"],
                                                       ["error"]]
    for path in ("/api/sessions/{session_id}/chats/{chat_id}/messages", "/api/chats/{chat_id}/messages"):
        ok = doc["paths"][path]["post"]["responses"]["200"]
        assert list(ok["content"]) == ["text/event-stream"], path
        assert "X-User-Message-Id" in ok["headers"], path
    for path in ("/api/sessions/{session_id}/chats/{chat_id}/context-usage", "/api/chats/{chat_id}/context-usage"):
        params = {p["name"] for p in doc["paths"][path]["get"]["parameters"] if p["in"] == "query"}
        assert params == {"inputDraft", "reservedOutputTokens"}, path


def test_sessions_document_matches_the_handlers():
    """The upload's allowed part types and the transcript export formats are those the handlers enforce."""
    from web import sessions, transcripts

    doc = openapi_document()
    upload = doc["paths"]["/api/sessions/upload"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert set(upload["encoding"]["audioFile"]["contentType"].split(", ")) == sessions.AUDIO_CONTENT_TYPES
    fmt = next(p for p in doc["paths"]["/api/sessions/{session_id}/transcript"]["get"]["parameters"]
               if p["name"] == "format")
    assert set(fmt["schema"]["enum"]) == set(transcripts.EXPORT_MEDIA_TYPES)
    for path, item in doc["paths"].items():
        for op in item.values():
            for param in op.get("parameters", []):
                if param["in"] == "path" and param["name"] in ("session_id", "paragraph_index", "chat_id"):
                    assert param["schema"]["pattern"] == "^[0-9]+$", (path, param["name"])
                    assert "400" in op["responses"], path


def test_analysis_document_matches_the_handlers(tmp_path, monkeypatch):
    """The analysis job shapes, limits and stream answers are those web/analysis.py gives."""
    from models import AnalysisJob, AnalysisSummary
    from web import analysis

    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    create = schemas["AnalysisJobCreate"]["properties"]
    assert create["sessionIds"]["maxItems"] == analysis.MAX_SESSIONS
    assert (create["prompt"]["minLength"], create["prompt"]["maxLength"]) == analysis.PROMPT_CHARS
    # A new job and summary row, their nullable columns unset, are answered as the document says.
    job = AnalysisJob(id=1, original_prompt="p" * 10, short_prompt="s", created_at_ms=0)
    assert set(analysis.AnalysisJob.of(job).model_dump()) == set(schemas["AnalysisJob"]["properties"])
    row = AnalysisSummary(id=1, analysis_job=1, session=2)
    assert set(analysis.AnalysisSummaryRow.of(row).model_dump()) == set(schemas["AnalysisSummaryRow"]["properties"])
    stream = doc["paths"]["/api/analysis-jobs/{job_id}/stream"]["get"]["responses"]
    assert list(stream["200"]["content"]) == ["text/event-stream"]
    assert list(stream["404"]["content"]) == ["text/plain"]

    client = _real_app(tmp_path, monkeypatch).test_client()
    assert client.get("/api/analysis-jobs").get_json() == []
    assert client.get("/api/analysis-jobs/x").status_code == 400
    assert client.get("/api/analysis-jobs/0").status_code == 400
    assert client.get("/api/analysis-jobs/7").status_code == 404
    assert client.post("/api/analysis-jobs/7/cancel").status_code == 404
    missing = client.get("/api/analysis-jobs/7/stream")
    assert (missing.status_code, missing.mimetype, missing.get_data(as_text=True)) == (404, "text/plain",
                                                                                       "Job not found")
    assert client.post("/api/analysis-jobs", json={"sessionIds": [], "prompt": "p" * 10}).status_code == 400


def test_the_repository_stands_alone():
    """Someone who clones Parley has only the repository: nothing in it points outside it."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    outside = "../" + "shared"  # spelled in two parts so this file does not match itself
    pointing_out = [name for name in tracked if (root / name).is_file()
                    and outside in (root / name).read_text(errors="replace")]
    assert pointing_out == []


def test_a_declared_area_documents_what_it_validates():
    """The templates area is declared (web.declared): its operations and schemas come from the same pydantic
    models that validate its requests and serialise its answers, with the wire's camelCase names."""
    from web.templates import TEXT_MAX, TITLE_MAX

    doc = openapi_document()
    schemas = doc["components"]["schemas"]
    body = schemas["TemplateInput"]
    assert (body["properties"]["title"]["maxLength"], body["properties"]["text"]["maxLength"]) == (TITLE_MAX, TEXT_MAX)
    assert body["required"] == ["title", "text"]
    assert set(schemas["Template"]["properties"]) == {"id", "title", "text", "createdAt"}
    create = doc["paths"]["/api/templates"]["post"]
    assert create["operationId"] == "create_template" and create["tags"] == ["templates"]
    json = "application/json"
    assert create["requestBody"]["content"][json]["schema"] == {"$ref": "#/components/schemas/TemplateInput"}
    assert create["responses"]["201"]["content"][json]["schema"] == {"$ref": "#/components/schemas/Template"}
    assert set(create["responses"]) == {"201", "400", "409", "414"}
    listed = doc["paths"]["/api/templates"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert listed == {"type": "array", "items": {"$ref": "#/components/schemas/Template"}}


def test_declared_query_parameters_are_documented_from_their_model():
    from web.usage import LIMIT_DEFAULT

    doc = openapi_document()
    params = {p["name"]: p for p in doc["paths"]["/api/usage/logs"]["get"]["parameters"]}
    assert list(params) == ["start", "end", "type", "model", "source", "limit", "offset"]
    assert all(p["in"] == "query" and not p["required"] for p in params.values())
    assert params["limit"]["schema"]["minimum"] == 1 and params["limit"]["schema"]["default"] == LIMIT_DEFAULT
    assert params["type"]["schema"]["enum"] == ["llm", "whisper"] and "nullable" not in params["type"]["schema"]
    assert not [name for name in doc["components"]["schemas"] if name.endswith("Query")]


def test_a_sparse_answer_documents_its_optional_fields_as_absent_not_null():
    """The pull status leaves out what it does not know yet; the document must not promise a null instead."""
    status = openapi_document()["components"]["schemas"]["ModelPullStatus"]
    for name in ("progress", "totalBytes", "endTime", "error"):
        assert name not in status["required"] and "nullable" not in status["properties"][name], name
    assert "nullable" not in openapi_document()["components"]["schemas"]["Readiness"]["properties"]["message"]
