"""Prompt templates: list, create, change and delete (contract §1.8 and §8.8)."""
from __future__ import annotations

import peewee
from flask import Blueprint, jsonify

from models import Template, db
from parley.timestamps import now_ms
from web.errors import ApiError, bad_request, not_found
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


def title_taken(title: str) -> ApiError:
    return ApiError(409, f"A template with the title {title!r} already exists.")


@templates_bp.get("/templates")
def list_templates():
    rows = Template.select().order_by(Template.created_at_ms.desc(), Template.id.desc())
    return jsonify([template_dict(t) for t in rows])


@templates_bp.post("/templates")
def create_template():
    fields = template_fields()
    try:
        with db.atomic():
            template = Template.create(title=fields["title"], text=fields["text"], created_at_ms=now_ms())
    except peewee.IntegrityError:
        raise title_taken(fields["title"]) from None
    return jsonify(template_dict(template)), 201


@templates_bp.put("/templates/<template_id>")
def update_template(template_id: str):
    tid = parse_template_id(template_id)
    fields = template_fields()
    template = Template.get_or_none(Template.id == tid)
    if template is None:
        raise not_found(f"Template with ID {tid} not found.")
    try:
        with db.atomic():
            Template.update(title=fields["title"], text=fields["text"]).where(Template.id == tid).execute()
    except peewee.IntegrityError:
        raise title_taken(fields["title"]) from None
    template = Template.get_or_none(Template.id == tid)
    if template is None:  # deleted meanwhile
        raise not_found(f"Template with ID {tid} not found.")
    return jsonify(template_dict(template))


@templates_bp.delete("/templates/<template_id>")
def delete_template(template_id: str):
    tid = parse_template_id(template_id)
    if not Template.delete().where(Template.id == tid).execute():
        raise not_found(f"Template with ID {tid} not found.")
    return jsonify(message=f"Template with ID {tid} deleted successfully.")
