"""Prompt templates: list, create, change and delete (contract §1.8 and §8.8)."""
from __future__ import annotations

from flask import Blueprint, jsonify

from models import Template
from services import templates
from web.errors import bad_request
from web.sessions import json_body, nonblank, numeric_id

templates_bp = Blueprint("templates", __name__, url_prefix="/api")

TITLE_MAX = 200
TEXT_MAX = 10_000


def template_dict(t: Template) -> dict:
    return {"id": t.id, "title": t.title, "text": t.text, "createdAt": t.created_at_ms}


def parse_template_id(value: str) -> int:
    tid = numeric_id(value, "template id")
    if tid < 1:
        raise bad_request(f"template id must be a positive integer, got {value!r}")
    return tid


def template_fields() -> dict:
    """title (1..200) and text (1..10000), both required, both trimmed."""
    body = json_body(dict, "object with title and text")
    fields = {}
    for name, limit in (("title", TITLE_MAX), ("text", TEXT_MAX)):
        value = nonblank(body.get(name), name)
        if len(value) > limit:
            raise bad_request(f"{name} must be at most {limit} characters, got {len(value)}")
        fields[name] = value
    return fields


@templates_bp.get("/templates")
def list_templates():
    rows = Template.select().order_by(Template.created_at_ms.desc(), Template.id.desc())
    return jsonify([template_dict(t) for t in rows])


@templates_bp.post("/templates")
def create_template():
    fields = template_fields()
    return jsonify(template_dict(templates.create_template(fields["title"], fields["text"]))), 201


@templates_bp.put("/templates/<template_id>")
def update_template(template_id: str):
    tid = parse_template_id(template_id)
    fields = template_fields()
    return jsonify(template_dict(templates.update_template(tid, fields["title"], fields["text"])))


@templates_bp.delete("/templates/<template_id>")
def delete_template(template_id: str):
    tid = parse_template_id(template_id)
    templates.delete_template(tid)
    return jsonify(message=f"Template with ID {tid} deleted successfully.")
