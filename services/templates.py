"""Prompt templates: the four system prompts Parley seeds, reading a template's text, and templates by hand.

System prompts are rows of the `template` table whose titles start with `system_`, so users can edit them
through the templates API (`PUT /api/templates/{id}` with the title unchanged). Each is sent to the model as
the system message; what it works on (a transcript, a question, an analysis request) comes in the user turn.
"""
from __future__ import annotations

import logging

import peewee

from models import Template, db
from parley.errors import Conflict, NotFound
from parley.timestamps import now_ms

log = logging.getLogger(__name__)

SYSTEM_PREFIX = "system_"

SESSION_CHAT_PROMPT = """\
You are an assistant that answers questions about one recorded conversation, such as a therapy session, an \
interview or a meeting. You are given its transcript and the conversation so far.

- Answer only from the transcript. Do not add facts, events or details it does not contain, and do not fill \
gaps with assumptions.
- When you describe what someone said, name the speaker with the exact label used in the transcript (for \
example "SPEAKER_01" or a name). Do not call anyone "therapist", "client" or "patient" unless the transcript \
itself does. Quote short passages when the exact wording matters.
- If the transcript does not contain the answer, say so plainly, and say what it does cover if that helps.
- If something is ambiguous or unclear in the transcript (inaudible, contradictory, attributed to the wrong \
speaker), say so instead of guessing.
- Do not diagnose, assess risk or draw clinical conclusions beyond what was actually said. You may point out \
what was said that could be relevant, and leave the judgement to the clinician or interviewer.
- Be concise: answer the question first, then add only the supporting detail that is needed."""

STANDALONE_CHAT_PROMPT = """\
You are a helpful, knowledgeable assistant for a clinician, therapist or interviewer. Help with their work: \
preparing sessions and interviews, drafting questions, notes, letters and summaries, explaining concepts, \
methods and techniques, and thinking through ideas.

- Be accurate and concise, and answer the question that was asked. Use lists or short sections when they make \
the answer easier to use.
- Say when you are unsure or when the evidence is mixed, and do not invent sources, studies or figures.
- You do not see any session recording or transcript in this conversation; work only from what the user tells you.
- Do not diagnose real people from a few details. Offer considerations and options, and leave clinical \
judgement to the professional.
- If the user describes an emergency or someone at immediate risk, say briefly that it needs urgent attention \
through the appropriate emergency or crisis services."""

ANALYSIS_STRATEGIST_PROMPT = """\
You plan an analysis that answers one question across many recorded sessions (therapy sessions, interviews or \
meetings). The user's message is the question. The sessions cannot be read together: first a model answers an \
intermediate question about each session on its own, seeing only that one transcript; then a final model \
combines those answers, given in chronological order, into the answer to the user's question.

Answer with a JSON object with exactly two string keys:
- "intermediate_question": the question or task to run on each single transcript. It must make sense on its \
own, without the other sessions or the user's original wording. Ask for the specific facts, quotes and speaker \
labels the final answer will need, ask for an explicit "not discussed in this session" when there is nothing \
relevant, and end with a length limit (for example "Answer in at most 150 words.").
- "final_synthesis_instructions": instructions for combining the per-session answers into one answer to the \
user's question: what to compare across sessions (trends, changes, recurring themes, contradictions), that \
the answers are in chronological order, that sessions are to be referred to as they are labelled, and that \
nothing may be claimed that the per-session answers do not support.

Do not answer the question yourself. Output only the JSON object: no explanation and no code fences.

Example. Question: "How has the client's sleep changed over these sessions?"
{"intermediate_question": "What does this session say about sleep: difficulties, hours, routines, medication \
and anything said to affect it? Name the speaker for each point. If sleep is not discussed, answer 'Sleep is \
not discussed in this session.' Answer in at most 150 words.", "final_synthesis_instructions": "You are given \
notes on sleep from several sessions in chronological order. Describe how sleep changed over time: \
improvements, setbacks and what was linked to them. Refer to sessions as they are labelled, mention the \
sessions where sleep was not discussed, and do not claim anything the notes do not support."}"""

SHORT_PROMPT_GENERATOR_PROMPT = """\
You write titles. The user's message is a request for an analysis of recorded sessions. Reply with a short \
title for it of at most 8 words, in the language of the request, naming its subject (for example "Sleep \
changes across sessions").

Reply with the title only: no quotation marks, no ending punctuation, no prefix such as "Title:", and no \
explanation. Do not answer or carry out the request."""

SYSTEM_TEMPLATES: dict[str, str] = {
    "system_prompt": SESSION_CHAT_PROMPT,
    "system_standalone_prompt": STANDALONE_CHAT_PROMPT,
    "system_analysis_strategist": ANALYSIS_STRATEGIST_PROMPT,
    "system_short_prompt_generator": SHORT_PROMPT_GENERATOR_PROMPT,
}


def ensure_system_templates() -> int:
    """Insert the system templates that are missing; returns how many this call inserted.

    Idempotent, and a template the user edited is left as it is. Safe when several processes start at
    once: the title is unique, so a row another process inserted first is an IntegrityError, rolled back
    (a savepoint inside a transaction) and skipped.
    """
    inserted = 0
    existing = {t.title for t in Template.select(Template.title).where(Template.title.in_(list(SYSTEM_TEMPLATES)))}
    for title, text in SYSTEM_TEMPLATES.items():
        if title in existing:
            continue
        try:
            with db.atomic():
                Template.create(title=title, text=text, created_at_ms=now_ms())
        except peewee.IntegrityError:
            continue  # another process inserted it between our select and our insert
        inserted += 1
    if inserted:
        log.info("inserted %d system template(s)", inserted)
    return inserted


def get_template_text(title: str) -> str:
    """The text of the template titled `title`; a system template the user deleted falls back to the default.

    KeyError for a title that is neither in the database nor a system template.
    """
    row = Template.get_or_none(Template.title == title)
    if row is not None:
        return row.text
    if title in SYSTEM_TEMPLATES:
        return SYSTEM_TEMPLATES[title]
    raise KeyError(f"no template titled {title!r}")


# --- templates by hand (the templates API) ------------------------------------------------------------
class TitleTaken(Conflict):
    """Another template has this title (titles are unique)."""

    def __init__(self, title: str):
        super().__init__(f"A template with the title {title!r} already exists.")


def list_templates() -> list[Template]:
    """Every template, newest first."""
    return list(Template.select().order_by(Template.created_at_ms.desc(), Template.id.desc()))


def create_template(title: str, text: str) -> Template:
    """A new template; TitleTaken when the title is in use."""
    try:
        with db.atomic():
            return Template.create(title=title, text=text, created_at_ms=now_ms())
    except peewee.IntegrityError:
        raise TitleTaken(title) from None


def update_template(template_id: int, title: str, text: str) -> Template:
    """Change a template's title and text; NotFound when it does not exist (or was deleted meanwhile)."""
    if Template.get_or_none(Template.id == template_id) is None:
        raise NotFound(f"Template with ID {template_id} not found.")
    try:
        with db.atomic():
            Template.update(title=title, text=text).where(Template.id == template_id).execute()
    except peewee.IntegrityError:
        raise TitleTaken(title) from None
    template = Template.get_or_none(Template.id == template_id)
    if template is None:
        raise NotFound(f"Template with ID {template_id} not found.")
    return template


def delete_template(template_id: int) -> None:
    if not Template.delete().where(Template.id == template_id).execute():
        raise NotFound(f"Template with ID {template_id} not found.")
