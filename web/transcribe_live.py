"""A transcription job's live events (transcription API): the SSE stream and the WebSocket, resumable by seq."""
from __future__ import annotations

import json
from typing import Annotated, Literal

from flask import Blueprint, request
from pydantic import Field as PydanticField, RootModel
from simple_websocket import ConnectionClosed

from web import direct_writes, forms, sse
from web.context import hub, settings
from web.declared import Documented, Field, QueryModel, SpecWireModel, endpoint, event_stream, query_integer
from web.direct_writes import DirectWriter
from web.streams import RESYNC, job_events, release_db_connection
from web.transcribe import (JOB_ID, SEQ, SPEC_STATE, STATE, UNKNOWN_JOB, ChunkInfo, JobState, KnownVoice, Segment,
                            SpecJobState,
                            job_or_404, spec_event)
from web.websockets import WholeWrites, sock

live_bp = Blueprint("transcribe_live", __name__, url_prefix="/api/transcribe")


class LiveStatusMessage(SpecWireModel):
    """The job's status changed."""

    type: Literal["status"]
    seq: int = Field(ge=0, description=SEQ)
    status: SpecJobState = Field(description=SPEC_STATE)
    state: JobState = Field(description=STATE)
    message: str
    progress: float = Field(ge=0, le=100, description="Percent complete")
    chunk_info: ChunkInfo | None


class LiveSegmentMessage(Segment):
    """A newly transcribed segment (all Segment fields plus type and seq)."""

    type: Literal["segment"]
    seq: int = Field(ge=0, description=SEQ)


class SpeakerLabel(SpecWireModel):
    id: int = Field(description="Segment id")
    speaker: str | None
    speaker_confidence: float | None = Field(ge=0, le=1)


class LiveSpeakersMessage(SpecWireModel):
    """Speaker labels of earlier segments were updated."""

    type: Literal["speakers"]
    seq: int = Field(ge=0, description=SEQ)
    segments: list[SpeakerLabel] = Field(description="Updated speaker labels for earlier segments")
    voices: list[KnownVoice] = Field(default_factory=list, description="Speakers named after known voices "
                                     "(GET /api/voices); absent in logs of jobs from before known voices")


class LiveHeartbeatMessage(SpecWireModel):
    """Keep-alive."""

    type: Literal["heartbeat"]


class LiveMessage(RootModel):
    """A message of a job's live stream (WebSocket or Server-Sent Events), told apart by `type`."""

    root: Annotated[LiveStatusMessage | LiveSegmentMessage | LiveSpeakersMessage | LiveHeartbeatMessage,
                    PydanticField(discriminator="type")]


class LiveQuery(QueryModel):
    last_event_id: query_integer(blank_is_default=True) | None = Field(
        None, description="Resume after this event sequence number (reconnects; the same as the Last-Event-ID "
        "header, for clients that cannot set it)")


def _last_seq(query: LiveQuery) -> int | None:
    """Where a client resumes: the Last-Event-ID header, else the query's last_event_id (validated already)."""
    raw = request.headers.get("Last-Event-ID")
    if not raw:
        return query.last_event_id
    return forms.as_int("Last-Event-ID", raw, lo=0)


LIVE_DESCRIPTION = """Messages are JSON objects (schema `LiveMessage` in components):

* `{"type": "status", "seq", "status", "message", "progress", "chunk_info"}`: job status changed
  (`LiveStatusMessage`);
* `{"type": "segment", "seq", ...Segment}`: a newly transcribed segment (`LiveSegmentMessage`);
* `{"type": "speakers", "seq", "segments": [{"id", "speaker", "speaker_confidence"}]}`: speaker
  labels of earlier segments were updated (`LiveSpeakersMessage`);
* `{"type": "heartbeat"}`: keep-alive (`LiveHeartbeatMessage`).

`seq` increases by one per event of a job, so a client can resume without gaps."""
LAST_EVENT_ID = {"name": "Last-Event-ID", "in": "header", "required": False, "description": "Resume after this event "
                 "sequence number", "schema": {"type": "integer", "minimum": 0}}
EVENT_STREAM = event_stream("Event stream; each event carries `id: <seq>`, `event: <type>` and a JSON `data:` line",
                            LiveMessage, frames="`id: <seq>`, `event: <type>` and a LiveMessage; `: heartbeat` "
                            "comments between them")


@live_bp.get("/events/<job_id>")
@endpoint(tag="transcribe", operation_id="job_events_sse", query=LiveQuery, path_parameters=JOB_ID,
          header_parameters=[LAST_EVENT_ID], shared_description=LIVE_DESCRIPTION,
          responses={200: EVENT_STREAM, 400: "Last-Event-ID is not a sequence number", 404: UNKNOWN_JOB})
def job_events_sse(job_id: str, query: LiveQuery):
    """Server-Sent Events stream of live job events

    The SSE twin of the WebSocket endpoint `/api/transcribe/live/{job_id}`.
    """
    job_or_404(job_id)
    last = _last_seq(query)
    sock = request.environ.get("gunicorn.socket")
    # gunicorn frames an HTTP/1.1 response of unknown length in chunks: the hub's writes must be chunks too
    # (and a HEAD request gets no body at all).
    writer = (DirectWriter(sock, _sse_chunk, resync=RESYNC) if settings().direct_writes and direct_writes.usable(sock)
              and request.environ.get("SERVER_PROTOCOL") == "HTTP/1.1" and request.method == "GET" else None)
    stream = job_events(hub(), job_id, last_seq=last, heartbeat_s=settings().heartbeat_s, encode=_sse_frame,
                        writer=writer)

    def frames():
        yield sse.retry(2000)  # how soon EventSource reconnects
        for frame in stream:
            yield HEARTBEAT_FRAME if frame is None else frame

    return sse.response(frames())


HEARTBEAT_FRAME = sse.comment("heartbeat").encode()
HEARTBEAT_MESSAGE = json.dumps({"type": "heartbeat"}, separators=(",", ":"))


def _sse_frame(event: dict) -> bytes:
    """An event as an SSE frame (bytes: the WSGI server writes them as they are)."""
    event = spec_event(event)
    return sse.event(event, name=event["type"], id=event["seq"]).encode()


def _sse_chunk(event: dict) -> bytes:
    return direct_writes.sse_chunked(_sse_frame(event))


def _ws_message(event: dict) -> str:
    return json.dumps(spec_event(event), separators=(",", ":"))


def _ws_frame(event: dict) -> bytes:
    return direct_writes.ws_text_frame(_ws_message(event))


@live_bp.before_request
def _live_job_must_exist():
    # The WebSocket handler runs after the upgrade; an unknown job must be refused before it, as a 404.
    if request.endpoint == "transcribe_live.job_live":
        job_or_404(request.view_args["job_id"])


@sock.route("/live/<job_id>", bp=live_bp, endpoint="job_live")
@endpoint(tag="transcribe", operation_id="job_live_websocket", query=LiveQuery, path_parameters=JOB_ID,
          shared_description=LIVE_DESCRIPTION, responses={
    101: Documented("Switching Protocols: the connection is upgraded to a WebSocket"), 404: UNKNOWN_JOB})
def job_live(ws, job_id: str, query: LiveQuery):
    """WebSocket stream of live job events

    WebSocket endpoint (connect with `ws://` / `wss://`).
    """
    last = _last_seq(query)
    release_db_connection()  # the handler runs for the stream's life (sse.response does this for SSE)
    whole = request.environ.get("gunicorn.socket")  # web.websockets put it there for every WebSocket
    writer = None
    if settings().direct_writes and isinstance(whole, WholeWrites) and direct_writes.usable(whole.raw):
        writer = whole.writer = DirectWriter(whole.raw, _ws_frame, resync=RESYNC)
    try:
        for message in job_events(hub(), job_id, last_seq=last, heartbeat_s=settings().heartbeat_s,
                                  encode=_ws_message, writer=writer):
            ws.send(HEARTBEAT_MESSAGE if message is None else message)
        ws.close(reason=1000, message="job finished")  # web.websockets.end then waits for the answer
    except ConnectionClosed:
        pass
