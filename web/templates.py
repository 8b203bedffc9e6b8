"""Prompt templates: list, create, change and delete (contract §1.8 and §8.8), with declared shapes."""
from __future__ import annotations

from flask import Blueprint

from models import Template as TemplateRow
from services import templates
from web.declared import NONBLANK, Confirmation, Field, WireModel, endpoint
from web.errors import bad_request
from web.sessions import numeric_id

templates_bp = Blueprint("templates", __name__, url_prefix="/api")

TITLE_MAX = 200
TEXT_MAX = 10_000


class TemplateInput(WireModel):
    """A template's title and text, both required; the limits apply to the trimmed values."""

    title: str = Field(min_length=1, max_length=TITLE_MAX, pattern=NONBLANK, description="Trimmed; unique among "
                       "templates")
    text: str = Field(min_length=1, max_length=TEXT_MAX, pattern=NONBLANK, description="Trimmed")


class Template(WireModel):
    """A saved prompt."""

    id: int = Field(ge=1, description="Template id")
    title: str = Field(max_length=TITLE_MAX, description="Unique title; titles starting with system_ are the "
                       "system prompts")
    text: str = Field(max_length=TEXT_MAX)
    created_at: int = Field(description="Creation time (Unix epoch milliseconds)")

    @classmethod
    def of(cls, row: TemplateRow) -> Template:
        return cls(id=row.id, title=row.title, text=row.text, created_at=row.created_at_ms)


TEMPLATE_ID = {"template_id": "Template id: a positive integer, as digits"}
BAD_ID = "Template id is not a positive integer"
BAD_BODY = "The body is not a JSON object, or title or text is missing, blank or too long"


def parse_template_id(value: str) -> int:
    tid = numeric_id(value, "template id")
    if tid < 1:
        raise bad_request(f"template id must be a positive integer, got {value!r}")
    return tid


@templates_bp.get("/templates")
@endpoint(tag="templates", responses={200: (list[Template], "Templates, by createdAt descending")})
def list_templates():
    """All templates, newest first

    Titles starting with system_ are the system prompts Parley seeds at start-up (system_prompt,
    system_standalone_prompt, system_analysis_strategist, system_short_prompt_generator); they can be edited
    like any other template.
    """
    return [Template.of(t) for t in templates.list_templates()]


@templates_bp.post("/templates")
@endpoint(tag="templates", json=TemplateInput, responses={201: (Template, "Created"), 400: BAD_BODY,
                                                          409: "A template with that title exists"})
def create_template(json: TemplateInput):
    """Create a template"""
    return Template.of(templates.create_template(json.title, json.text)), 201


@templates_bp.put("/templates/<template_id>")
@endpoint(tag="templates", json=TemplateInput, path_parameters=TEMPLATE_ID,
          responses={200: (Template, "The updated template"), 400: f"{BAD_ID}. {BAD_BODY}",
                     404: "Unknown template", 409: "Another template has that title"})
def update_template(template_id: str, json: TemplateInput):
    """Change a template's title and text

    Both fields are required; createdAt is kept.
    """
    tid = parse_template_id(template_id)
    return Template.of(templates.update_template(tid, json.title, json.text))


@templates_bp.delete("/templates/<template_id>")
@endpoint(tag="templates", path_parameters=TEMPLATE_ID,
          responses={200: (Confirmation, '"Template with ID <id> deleted successfully."'), 400: BAD_ID,
                     404: "Unknown template"})
def delete_template(template_id: str):
    """Delete a template

    A deleted system template is seeded again at the next start; until then its default text is used.
    """
    tid = parse_template_id(template_id)
    templates.delete_template(tid)
    return Confirmation(message=f"Template with ID {tid} deleted successfully.")
