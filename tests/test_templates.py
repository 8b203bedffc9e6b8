"""Templates through the real web tier (contract §1.8 and §8.8): the system prompts, CRUD, limits and refusals."""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from helpers import assert_error, unique

SYSTEM_TITLES = {"system_prompt", "system_standalone_prompt", "system_analysis_strategist",
                 "system_short_prompt_generator"}
TEMPLATE_KEYS = {"id", "title", "text", "createdAt"}


def create(stack, title, text="Some text", **kw):
    return stack.post("/api/templates", json={"title": title, "text": text}, **kw)


def put(stack, tid, body):
    return stack.session.put(stack.url(f"/api/templates/{tid}"), json=body, timeout=30)


def delete(stack, tid):
    return stack.session.delete(stack.url(f"/api/templates/{tid}"), timeout=30)


# --- templates ------------------------------------------------------------------------------------
def test_system_templates_exist_after_start(stack):
    from services.templates import SYSTEM_TEMPLATES

    assert set(SYSTEM_TEMPLATES) == SYSTEM_TITLES
    answer = stack.get("/api/templates")
    assert answer.status_code == 200
    templates = answer.json()
    by_title = {t["title"]: t for t in templates}
    assert SYSTEM_TITLES <= set(by_title)
    for title in SYSTEM_TITLES:
        template = by_title[title]
        assert set(template) == TEMPLATE_KEYS
        assert isinstance(template["id"], int) and template["id"] >= 1
        assert isinstance(template["createdAt"], int) and template["createdAt"] > 1_600_000_000_000
        assert template["text"].strip()
    assert [t["createdAt"] for t in templates] == sorted((t["createdAt"] for t in templates), reverse=True)
    # Both path forms answer (the UI calls it without the slash).
    assert stack.get("/api/templates/").json() == templates


def test_system_prompts_say_what_they_must():
    from services.templates import SYSTEM_TEMPLATES

    strategist = SYSTEM_TEMPLATES["system_analysis_strategist"]
    assert "intermediate_question" in strategist and "final_synthesis_instructions" in strategist
    assert "JSON" in strategist
    assert "8 words" in SYSTEM_TEMPLATES["system_short_prompt_generator"]
    assert "transcript" in SYSTEM_TEMPLATES["system_prompt"]
    assert all(len(text) <= 10_000 for text in SYSTEM_TEMPLATES.values())  # editable through PUT as they are


def test_template_crud_round_trip(stack):
    title = unique("Reflect feelings")
    before = int(time.time() * 1000)
    answer = create(stack, f"  {title}  ", "  Reflect the feelings you heard.\n")
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert set(created) == TEMPLATE_KEYS
    assert created["title"] == title and created["text"] == "Reflect the feelings you heard."
    assert before - 1000 <= created["createdAt"] <= int(time.time() * 1000) + 1000
    tid = created["id"]

    listed = stack.get("/api/templates").json()
    assert listed[0] == created  # newest first

    new_title = unique("Summarise")
    answer = put(stack, tid, {"title": f" {new_title} ", "text": " One paragraph summary. "})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"id": tid, "title": new_title, "text": "One paragraph summary.",
                             "createdAt": created["createdAt"]}
    # Same title, new text: how the UI edits a system prompt; not a clash with itself.
    answer = put(stack, tid, {"title": new_title, "text": "Two paragraphs."})
    assert answer.status_code == 200 and answer.json()["text"] == "Two paragraphs."
    assert next(t for t in stack.get("/api/templates").json() if t["id"] == tid)["text"] == "Two paragraphs."

    answer = delete(stack, tid)
    assert answer.status_code == 200
    assert answer.json() == {"message": f"Template with ID {tid} deleted successfully."}
    assert tid not in {t["id"] for t in stack.get("/api/templates").json()}
    assert_error(delete(stack, tid), 404)
    assert_error(put(stack, tid, {"title": "x", "text": "y"}), 404)


def test_template_limits_are_inclusive(stack):
    answer = create(stack, "T" * 192 + uuid.uuid4().hex[:8], "x" * 10_000)
    assert answer.status_code == 201, answer.text
    assert len(answer.json()["title"]) == 200 and len(answer.json()["text"]) == 10_000
    assert delete(stack, answer.json()["id"]).status_code == 200


def test_duplicate_titles_are_409(stack):
    title = unique("Duplicate")
    first = create(stack, title)
    assert first.status_code == 201
    assert_error(create(stack, title, "other text"), 409)
    assert_error(create(stack, f"  {title}\t", "other text"), 409)  # trimmed before the comparison
    assert_error(create(stack, "system_prompt", "mine"), 409)

    second = create(stack, unique("Other"))
    assert second.status_code == 201
    assert_error(put(stack, second.json()["id"], {"title": title, "text": "clash"}), 409)
    unchanged = {t["id"]: t for t in stack.get("/api/templates").json()}
    assert unchanged[second.json()["id"]] == second.json()
    assert unchanged[first.json()["id"]] == first.json()
    for answer in (first, second):
        assert delete(stack, answer.json()["id"]).status_code == 200


@pytest.mark.parametrize("body", [
    {"title": "   ", "text": "text"},
    {"title": "", "text": "text"},
    {"title": "title", "text": " \n "},
    {"title": "title"},
    {"text": "text"},
    {"title": 12, "text": "text"},
    {"title": "title", "text": None},
    {"title": "T" * 201, "text": "text"},
    {"title": "title", "text": "x" * 10_001},
], ids=["blank-title", "empty-title", "blank-text", "no-text", "no-title", "numeric-title", "null-text",
        "title-201", "text-10001"])
def test_invalid_template_bodies_are_400(stack, body):
    assert_error(stack.post("/api/templates", json=body), 400)
    existing = next(t for t in stack.get("/api/templates").json() if t["title"] == "system_prompt")
    assert_error(put(stack, existing["id"], body), 400)
    assert next(t for t in stack.get("/api/templates").json() if t["id"] == existing["id"]) == existing


def test_a_refused_template_says_which_field_and_why(stack):
    """The declared shape refuses the body before the handler runs, and the 400 names the field and rule."""
    too_long = stack.post("/api/templates", json={"title": "T" * 201, "text": "x"})
    assert too_long.status_code == 400 and too_long.json()["error"] == "BadRequestError"
    assert "title" in too_long.json()["message"] and "200 characters" in too_long.json()["message"], too_long.json()
    assert stack.post("/api/templates", json={"title": "Fine"}).json()["message"] == (
        "invalid request: text: Field required")  # only the faulty field
    numeric = stack.post("/api/templates", json={"title": 12, "text": "x"}).json()["message"]
    assert "title" in numeric and "string" in numeric, numeric
    form = stack.post("/api/templates", data="title=x&text=y",
                      headers={"Content-Type": "application/x-www-form-urlencoded"}).json()["message"]
    assert "JSON object" in form, form


def test_template_body_must_be_a_json_object(stack):
    assert_error(stack.post("/api/templates", data="title=x&text=y",
                            headers={"Content-Type": "application/x-www-form-urlencoded"}), 400)
    assert_error(stack.post("/api/templates", data="{not json", headers={"Content-Type": "application/json"}), 400)
    assert_error(stack.post("/api/templates", json=["title", "text"]), 400)


@pytest.mark.parametrize("tid", ["abc", "0", "-1", "1.5", "1e3", "00"])
def test_bad_template_ids_are_400(stack, tid):
    assert_error(put(stack, tid, {"title": "t", "text": "x"}), 400)
    assert_error(delete(stack, tid), 400)


def test_unknown_template_ids_are_404(stack):
    assert_error(put(stack, 987654321, {"title": unique("t"), "text": "x"}), 404)
    assert_error(delete(stack, 987654321), 404)


def test_ensure_system_templates_is_idempotent_and_race_safe(tmp_path):
    from models import Template, db, migrate
    from services.templates import SYSTEM_TEMPLATES, ensure_system_templates, get_template_text

    migrate(f"sqlite:///{tmp_path / 'templates.db'}")
    results, errors = [], []
    barrier = threading.Barrier(8)

    def start_up():
        try:
            barrier.wait()
            results.append(ensure_system_templates())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            db.close()

    threads = [threading.Thread(target=start_up) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(results) == 4
    with db.connection_context():
        assert {t.title: t.text for t in Template.select()} == SYSTEM_TEMPLATES
        assert ensure_system_templates() == 0

        Template.update(text="Edited by the user.").where(Template.title == "system_prompt").execute()
        Template.delete().where(Template.title == "system_standalone_prompt").execute()
        assert get_template_text("system_prompt") == "Edited by the user."
        assert get_template_text("system_standalone_prompt") == SYSTEM_TEMPLATES["system_standalone_prompt"]
        with pytest.raises(KeyError):
            get_template_text("no such template")

        assert ensure_system_templates() == 1  # the deleted one is back, the edited one is kept
        assert get_template_text("system_prompt") == "Edited by the user."
        assert Template.select().count() == 4
