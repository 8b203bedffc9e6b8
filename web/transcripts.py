"""A session's transcript (sessions API): reading and exporting it, editing its paragraphs and speakers."""
from __future__ import annotations

import re
from typing import Literal

from flask import Blueprint, Response
from pydantic import ConfigDict, RootModel

from models import Paragraph, Session
from models.statuses import SessionStatus
from parley import formats
from services import transcript_edits
from services.sessions import live_paragraphs
from web.declared import (ID_DIGITS, Confirmation, Documented, Field, OutputModel, QueryModel, SparseWireModel,
                          WireModel, endpoint)
from web.errors import ApiError
from web.sessions import BAD_SESSION_ID, SESSION_ID, UNKNOWN_SESSION, SessionMeta, Text, numeric_id, session_or_404
from web.uploads import safe_display_name

transcripts_bp = Blueprint("transcripts", __name__, url_prefix="/api")

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
# The media type of each export.
EXPORT_MEDIA_TYPES = {"srt": "text/plain", "vtt": "text/vtt", "txt": "text/plain", "docx": DOCX,
                      "json": "application/json"}
NOT_COMPLETED = "session is not completed"


# --- shapes ---------------------------------------------------------------------------------------
class TranscriptParagraph(SparseWireModel):
    """A paragraph of a session's transcript."""

    model_config = ConfigDict(str_strip_whitespace=False)

    id: int = Field(ge=0, description="Stable paragraph index within the session (the paragraph_index of the "
                    "paragraph endpoints); not renumbered after a delete")
    timestamp: int = Field(ge=0, description="Start time in milliseconds from the start of the audio")
    text: str
    speaker: str | None = Field(None, description="Speaker label; omitted when unknown")

    @classmethod
    def of(cls, paragraph: Paragraph) -> TranscriptParagraph:
        return cls(id=paragraph.idx, timestamp=paragraph.start_ms, text=paragraph.text,
                   speaker=paragraph.speaker or None)


class ParagraphTextEdit(WireModel):
    paragraph_index: int = Field(ge=0, le=2 ** 63 - 1, description="id of the paragraph to change")
    new_text: Text = Field(description="New text; trimmed")


class ParagraphSpeakerUpdate(WireModel):
    speaker: Text = Field(description="New speaker label; trimmed")


class SpeakerRename(WireModel):
    from_: Text = Field(alias="from", description="Current speaker label")
    to: Text = Field(description="New speaker label")


class SpeakerRenames(RootModel[list[SpeakerRename]]):
    """Pairs of {from, to}."""


class ExportParagraph(OutputModel):
    id: int = Field(ge=0, description="Stable paragraph index")
    start: float = Field(description="Start time in seconds")
    end: float = Field(description="End time in seconds")
    speaker: str | None = Field(description="Speaker label")
    text: str


class TranscriptExport(OutputModel):
    """The transcript export of format=json."""

    session: SessionMeta
    paragraphs: list[ExportParagraph]


class TranscriptQuery(QueryModel):
    format: Literal[tuple(EXPORT_MEDIA_TYPES)] | None = Field(
        None, description="Export format; omit for the JSON paragraph array")


PARAGRAPH = {**SESSION_ID, "paragraph_index": ("Stable paragraph index (the id of a TranscriptParagraph)", ID_DIGITS)}
WHOLE_TRANSCRIPT = (list[TranscriptParagraph], "The whole transcript after the change")


# --- routes -------------------------------------------------------------------------------------
def transcript(session: Session) -> list[TranscriptParagraph]:
    return [TranscriptParagraph.of(p) for p in live_paragraphs(session.id)]


EXPORTS = Documented(
    "The transcript (no format) or the export in the requested format",
    {"application/json": {"schema": {"oneOf": [{"type": "array", "items": TranscriptParagraph}, TranscriptExport]}},
     "text/plain": {"schema": {"type": "string", "description": "SubRip subtitles (format=srt) or plain text "
                                                                "(format=txt)"}},
     "text/vtt": {"schema": {"type": "string", "description": "WebVTT subtitles (format=vtt)"}},
     DOCX: {"schema": {"type": "string", "format": "binary", "description": "Word document (format=docx)"}}},
    headers={"Content-Disposition": {"description": 'Exports only: attachment; filename="<session name>.<format>"',
                                     "schema": {"type": "string"}}})


@transcripts_bp.get("/sessions/<session_id>/transcript")
@endpoint(tag="sessions", operation_id="get_session_transcript", path_parameters=SESSION_ID, query=TranscriptQuery,
          responses={200: EXPORTS, 400: f"{BAD_SESSION_ID}, or an unknown format", 404: UNKNOWN_SESSION,
                     409: f"An export was asked for but the {NOT_COMPLETED}"})
def get_transcript(session_id: str, query: TranscriptQuery):
    """The session's transcript, or an export of it

    Without `format`, the transcript as a JSON array of `TranscriptParagraph` (an empty array, not an error,
    while the session is not completed). With `format`, a download (`Content-Disposition: attachment`) of the
    completed transcript: `srt` as text/plain, `vtt` as text/vtt, `txt` as text/plain, `docx` as
    application/vnd.openxmlformats-officedocument.wordprocessingml.document, `json` as application/json; the
    `json` export is a `TranscriptExport` object.
    """
    session = session_or_404(session_id)
    if query.format is None:
        return transcript(session) if session.status == SessionStatus.COMPLETED else []
    if session.status != SessionStatus.COMPLETED:
        raise ApiError(409, f"Session {session.id} is {session.status}; its transcript can be exported once completed.")
    return export(session, query.format)


def export(session: Session, fmt: str) -> Response:
    rows = [{"id": p.idx, "start": p.start_ms / 1000, "end": p.end_ms / 1000, "speaker": p.speaker, "text": p.text}
            for p in live_paragraphs(session.id)]
    stem = safe_display_name(session.session_name or session.file_name, f"session-{session.id}")
    headers = {"Content-Disposition": f'attachment; filename="{stem}.{fmt}"'}
    if fmt == "json":
        document = TranscriptExport(session=SessionMeta.of(session), paragraphs=rows)
        return Response(document.model_dump_json(), mimetype="application/json", headers=headers)
    if fmt == "docx":
        details = " · ".join(filter(None, [session.client_name, session.date[:10], session.session_type,
                                           session.therapy]))
        # Word's XML cannot hold control characters, which stored text may contain (an edit, an import).
        rows = [{**r, "text": _xml_safe(r["text"]), "speaker": _xml_safe(r["speaker"])} for r in rows]
        title = _xml_safe(session.session_name or session.file_name)
        return Response(formats.to_docx(rows, title=title, details=_xml_safe(details)), mimetype=DOCX, headers=headers)
    render = {"srt": formats.to_srt, "vtt": formats.to_vtt, "txt": formats.to_txt}[fmt]
    return Response(render(rows), mimetype=EXPORT_MEDIA_TYPES[fmt], headers=headers)


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_safe(text: str | None) -> str | None:
    return _NOT_XML.sub("", text) if text else text


def paragraph_or_error(session: Session, index: int, *, status: int) -> Paragraph:
    paragraph = transcript_edits.live_paragraph(session, index)
    if paragraph is None:
        raise ApiError(status, f"Paragraph {index} not found in session {session.id}.")
    return paragraph


@transcripts_bp.patch("/sessions/<session_id>/transcript")
@endpoint(tag="sessions", operation_id="edit_transcript_paragraph", path_parameters=SESSION_ID,
          json=ParagraphTextEdit,
          responses={200: WHOLE_TRANSCRIPT, 404: UNKNOWN_SESSION,
                     400: f"{BAD_SESSION_ID}; invalid body; the {NOT_COMPLETED}; or no paragraph has that index"})
def edit_paragraph(session_id: str, json: ParagraphTextEdit):
    """Change the text of one paragraph

    Unchanged text leaves the transcript as it is and returns it.
    """
    session = session_or_404(session_id)
    transcript_edits.require_completed(session)
    transcript_edits.edit_text(session, paragraph_or_error(session, json.paragraph_index, status=400), json.new_text)
    return transcript(session)


@transcripts_bp.delete("/sessions/<session_id>/transcript/<paragraph_index>")
@endpoint(tag="sessions", operation_id="delete_transcript_paragraph", path_parameters=PARAGRAPH,
          responses={200: (list[TranscriptParagraph], "The remaining transcript"),
                     400: f"Session id or paragraph index is not a non-negative integer, or the {NOT_COMPLETED}",
                     404: "Unknown session, or no (undeleted) paragraph has that index"})
def delete_paragraph(session_id: str, paragraph_index: str):
    """Delete one paragraph

    The index stays taken: other paragraphs keep their ids.
    """
    index = numeric_id(paragraph_index, "paragraphIndex")  # a malformed id is a 400 before any lookup
    session = session_or_404(session_id)
    transcript_edits.require_completed(session)
    transcript_edits.delete_paragraph(session, paragraph_or_error(session, index, status=404))
    return transcript(session)


@transcripts_bp.patch("/sessions/<session_id>/transcript/<paragraph_index>/speaker")
@endpoint(tag="sessions", path_parameters=PARAGRAPH, json=ParagraphSpeakerUpdate,
          responses={200: (Confirmation, "Speaker updated"), 404: UNKNOWN_SESSION,
                     400: f"Session id or paragraph index is not a non-negative integer; blank speaker; the "
                          f"{NOT_COMPLETED}; or no paragraph has that index"})
def set_paragraph_speaker(session_id: str, paragraph_index: str, json: ParagraphSpeakerUpdate):
    """Set the speaker of one paragraph"""
    index = numeric_id(paragraph_index, "paragraphIndex")
    session = session_or_404(session_id)
    transcript_edits.require_completed(session)
    transcript_edits.set_speaker(session, paragraph_or_error(session, index, status=400), json.speaker)
    return Confirmation(message=f"Speaker updated for paragraph {index} in session {session.id}.")


@transcripts_bp.patch("/sessions/<session_id>/speakers")
@endpoint(tag="sessions", path_parameters=SESSION_ID, json=SpeakerRenames,
          responses={200: (Confirmation, 'Labels updated, or "No changes needed." when no paragraph had a from label'),
                     400: f"{BAD_SESSION_ID}; the body is not an array, or an entry lacks a non-blank from or to",
                     404: UNKNOWN_SESSION})
def rename_speakers(session_id: str, json: SpeakerRenames):
    """Rename speakers throughout the transcript

    Every paragraph whose speaker is `from` gets `to`; pairs with from equal to to are skipped.
    """
    session = session_or_404(session_id)
    if not transcript_edits.rename_speakers(session, [(pair.from_, pair.to) for pair in json.root]):
        return Confirmation(message="No changes needed.")
    return Confirmation(message=f"Speaker labels updated for session {session.id}.")
