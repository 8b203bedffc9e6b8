"""API documentation blueprint: the OpenAPI document and a self-hosted Swagger UI viewer."""

from __future__ import annotations

import json

import swagger_ui_bundle
from flask import Blueprint, Response, jsonify, redirect, request, send_from_directory, url_for
from web.declared import Documented, endpoint
from markupsafe import escape

from web.openapi import openapi_document

docs_bp = Blueprint("docs", __name__)

# Swagger UI is served from the installed swagger-ui-bundle package (no CDN).
# validatorUrl is disabled: the default points at validator.swagger.io.
_DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>{title}</title>
    <link rel="stylesheet" type="text/css" href="{css}">
    <link rel="icon" type="image/png" href="{favicon}" sizes="32x32">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="{bundle_js}" charset="UTF-8"></script>
    <script src="{preset_js}" charset="UTF-8"></script>
    <script>
      window.onload = function () {{
        window.ui = SwaggerUIBundle({{
          url: {spec_url},
          dom_id: "#swagger-ui",
          deepLinking: true,
          validatorUrl: null,
          presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
          plugins: [SwaggerUIBundle.plugins.DownloadUrl],
          layout: "StandaloneLayout"
        }});
      }};
    </script>
  </body>
</html>
"""


def _static(filename: str) -> str:
    return url_for("docs.swagger_ui_static", filename=filename)


@docs_bp.get("/api/openapi.json")
@endpoint(tag="docs", operation_id="openapi_document", responses={200: Documented("OpenAPI 3.0.3 document", {
    "application/json": {"schema": {"type": "object", "additionalProperties": True}}})})
def openapi_json() -> Response:
    """This OpenAPI document"""
    return jsonify(openapi_document(server_url=request.host_url))


@docs_bp.get("/api/docs")
@endpoint(tag="docs", operation_id="api_docs", responses={200: Documented("HTML page", {
    "text/html": {"schema": {"type": "string"}}})})
def swagger_ui() -> Response:
    """Interactive API documentation (Swagger UI)"""
    # json.dumps gives a JS string literal; "</" is escaped so it cannot close the script tag.
    spec_url = json.dumps(url_for("docs.openapi_json")).replace("</", "<\\/")
    html = _DOCS_PAGE.format(
        title=escape("Parley API docs"),
        css=escape(_static("swagger-ui.css")),
        favicon=escape(_static("favicon-32x32.png")),
        bundle_js=escape(_static("swagger-ui-bundle.js")),
        preset_js=escape(_static("swagger-ui-standalone-preset.js")),
        spec_url=spec_url,
    )
    return Response(html, mimetype="text/html")


@docs_bp.get("/api/docs/static/<path:filename>")
def swagger_ui_static(filename: str) -> Response:
    return send_from_directory(swagger_ui_bundle.swagger_ui_path, filename)


@docs_bp.get("/api/schema")
@endpoint(tag="docs", operation_id="api_schema_redirect", responses={302: Documented("Redirect to /api/docs", headers={
    "Location": {"description": "The docs URL", "schema": {"type": "string"}}})})
def schema_redirect() -> Response:
    """Redirect to the API documentation"""
    return redirect(url_for("docs.swagger_ui"), code=302)
