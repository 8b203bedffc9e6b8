"""Tests for the API docs blueprint (OpenAPI document and Swagger UI viewer)."""

from __future__ import annotations

import re

import pytest
from flask import Flask

from web.docs import docs_bp
from web.openapi import openapi_document

EXPECTED_OPERATIONS = {
    ("/health", "get"),
    ("/", "get"),
    ("/api/transcribe/models", "get"),
    ("/api/transcribe/", "post"),
    ("/api/transcribe/jobs", "get"),
    ("/api/transcribe/status/{job_id}", "get"),
    ("/api/transcribe/result/{job_id}", "get"),
    ("/api/transcribe/live/{job_id}", "get"),
    ("/api/transcribe/events/{job_id}", "get"),
    ("/api/transcribe/debug/{job_id}", "get"),
    ("/api/retranslate/segment", "post"),
    ("/api/retranslate/segment-from-full", "post"),
    ("/api/openapi.json", "get"),
    ("/api/docs", "get"),
    ("/api/schema", "get"),
    ("/api/sessions", "get"),
    ("/api/sessions/upload", "post"),
    ("/api/sessions/{session_id}", "get"),
    ("/api/sessions/{session_id}", "delete"),
    ("/api/sessions/{session_id}/metadata", "put"),
    ("/api/sessions/{session_id}/transcript", "get"),
    ("/api/sessions/{session_id}/transcript", "patch"),
    ("/api/sessions/{session_id}/transcript/{paragraph_index}", "delete"),
    ("/api/sessions/{session_id}/transcript/{paragraph_index}/speaker", "patch"),
    ("/api/sessions/{session_id}/speakers", "patch"),
    ("/api/sessions/{session_id}/audio", "get"),
    ("/api/sessions/{session_id}/audio", "delete"),
    ("/api/transcription/status/{job_id}", "get"),
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
    doc = client.get("/api/openapi.json").get_json()
    operations = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert operations == EXPECTED_OPERATIONS
    assert {tag["name"] for tag in doc["tags"]} == {"meta", "transcribe", "retranslate", "sessions", "docs"}


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
    assert {"Error", "JobStatus", "Transcript", "Segment", "RetranslateResult"} <= set(schemas)
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


def test_every_route_of_the_real_app_is_documented(tmp_path, monkeypatch):
    """Walks the URL map of the app Parley serves, so a new route cannot be left out of the document."""
    import re

    monkeypatch.setenv("PARLEY_DATA_DIR", str(tmp_path))
    from parley.config import get_settings
    from web import create_app

    get_settings.cache_clear()
    try:
        app = create_app()
    finally:
        get_settings.cache_clear()
    documented = set(app.test_client().get("/api/openapi.json").get_json()["paths"])
    undocumented = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.startswith("/api/docs/static"):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        if path not in documented and path.rstrip("/") not in {p.rstrip("/") for p in documented}:
            undocumented.append(rule.rule)
    assert undocumented == []


def test_sessions_document_matches_the_handlers():
    """The upload's allowed part types and the transcript export formats are those web/sessions.py enforces."""
    from web import openapi, sessions

    assert set(openapi.SESSION_AUDIO_TYPES) == sessions.AUDIO_CONTENT_TYPES
    assert set(openapi.EXPORT_MEDIA_TYPES) == sessions.EXPORT_FORMATS
    doc = openapi_document()
    upload = doc["paths"]["/api/sessions/upload"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert set(upload["encoding"]["audioFile"]["contentType"].split(", ")) == sessions.AUDIO_CONTENT_TYPES
    fmt = next(p for p in doc["paths"]["/api/sessions/{session_id}/transcript"]["get"]["parameters"]
               if p["name"] == "format")
    assert set(fmt["schema"]["enum"]) == sessions.EXPORT_FORMATS
    for path, item in doc["paths"].items():
        for op in item.values():
            for param in op.get("parameters", []):
                if param["in"] == "path" and param["name"] in ("session_id", "paragraph_index"):
                    assert param["schema"]["pattern"] == "^[0-9]+$", (path, param["name"])
                    assert "400" in op["responses"], path
