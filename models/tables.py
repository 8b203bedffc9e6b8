"""The 18 tables: sessions, jobs and their segments, paragraphs and events; chats; LLM work; analyses; known voices;
tokens.

Every timestamp is integer milliseconds since the epoch in a column named `*_ms` (parley.timestamps).
"""
from __future__ import annotations

import json

import peewee

from models.db import db
from models.statuses import TERMINAL
from parley.formats import clock
from parley.timestamps import now_ms


class JSONField(peewee.TextField):
    """JSON stored as text, so the same schema works on SQLite and PostgreSQL."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(peewee.Model):
    class Meta:
        database = db
        legacy_table_names = False


class Session(BaseModel):
    """A recorded conversation: its metadata, its audio and the state of its transcript."""

    file_name = peewee.TextField()
    client_name = peewee.TextField(default="")
    session_name = peewee.TextField(default="")
    session_type = peewee.TextField(default="")
    therapy = peewee.TextField(default="")
    date = peewee.TextField()  # ISO 8601, noon UTC: "2026-06-23T12:00:00.000Z"
    audio_path = peewee.TextField(null=True)  # file name inside the audio directory; null once deleted
    audio_sha256 = peewee.TextField(null=True)
    audio_bytes = peewee.BigIntegerField(null=True)
    status = peewee.TextField(default="pending")  # pending, queued, transcribing, completed, failed
    whisper_job_id = peewee.TextField(null=True)
    transcript_token_count = peewee.IntegerField(null=True)
    duration = peewee.IntegerField(null=True)  # seconds
    error_message = peewee.TextField(null=True)
    show_speakers = peewee.IntegerField(default=1)
    num_speakers = peewee.IntegerField(null=True)
    created_at_ms = peewee.BigIntegerField(default=now_ms)
    # Speaker renames the user made, label as recognised -> name shown; re-applied after a
    # re-transcription that keeps edits.
    speaker_names = JSONField(default=dict)


class Job(BaseModel):
    """One unit of speech work on the queue: a full transcription or a segment re-transcription."""

    id = peewee.CharField(primary_key=True, max_length=36)  # uuid4
    session = peewee.ForeignKeyField(Session, null=True, backref="jobs", on_delete="CASCADE")
    kind = peewee.TextField(default="transcribe")  # transcribe, retranscribe
    status = peewee.TextField(default="queued", index=True)  # queued, processing, completed, failed, canceled
    message = peewee.TextField(default="")
    progress = peewee.DoubleField(default=0.0)
    model_name = peewee.TextField()
    language = peewee.TextField(null=True)  # requested; null = detect
    detected_language = peewee.TextField(null=True)
    diarize = peewee.BooleanField(default=True)
    num_speakers = peewee.IntegerField(null=True)  # requested; null = estimate
    audio_path = peewee.TextField(null=True)  # file name inside the audio directory
    audio_sha256 = peewee.TextField(null=True)
    audio_duration = peewee.DoubleField(null=True)
    chunk_plan = JSONField(null=True)  # [[start_s, end_s], ...], fixed once planned so a resumed job cuts alike
    chunks_done = peewee.IntegerField(default=0)
    chunk_progress = peewee.DoubleField(default=0.0)
    event_seq = peewee.IntegerField(default=0)  # sequence number of the last event recorded
    attempts = peewee.IntegerField(default=0)
    error = peewee.TextField(null=True)
    params = JSONField(default=dict)  # kind-specific input, e.g. the segment range to re-transcribe
    result = JSONField(null=True)  # kind-specific output of a re-transcription
    worker = peewee.TextField(null=True)  # host:pid of the worker that last ran it
    created_at_ms = peewee.BigIntegerField(default=now_ms)
    updated_at_ms = peewee.BigIntegerField(default=now_ms)
    started_at_ms = peewee.BigIntegerField(null=True)
    finished_at_ms = peewee.BigIntegerField(null=True)

    TERMINAL = TERMINAL

    @property
    def total_chunks(self) -> int:
        return len(self.chunk_plan or [])


class Segment(BaseModel):
    """A stretch of recognised speech, committed as soon as the engine produces it."""

    job = peewee.ForeignKeyField(Job, backref="segments", on_delete="CASCADE")
    idx = peewee.IntegerField()  # position in the transcript, from 0
    chunk_index = peewee.IntegerField()
    start = peewee.DoubleField()
    end = peewee.DoubleField()
    text = peewee.TextField()
    speaker = peewee.TextField(null=True)
    speaker_confidence = peewee.DoubleField(null=True)
    words = JSONField(default=list)  # [{"start", "end", "word", "probability"}]
    avg_logprob = peewee.DoubleField(null=True)
    no_speech_prob = peewee.DoubleField(null=True)

    class Meta:
        indexes = ((("job", "idx"), True),)

    def as_dict(self) -> dict:
        """The segment as the API returns it and as live streams carry it."""
        return {
            "id": self.idx,
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "speaker": self.speaker,
            "speaker_confidence": None if self.speaker_confidence is None else round(self.speaker_confidence, 3),
            "start_display": clock(self.start),
            "end_display": clock(self.end),
            "words": self.words,
            # Other speakers heard during this segment (overlapped speech): the segment's speaker is the
            # dominant one; each word carries its own `speaker` and, where others spoke too, `overlap`.
            "overlap_speakers": sorted({s for w in self.words or [] for s in w.get("overlap") or []}),
        }


class JobEvent(BaseModel):
    """The durable log behind live progress: every event a worker publishes, by per-job sequence number."""

    job = peewee.ForeignKeyField(Job, backref="events", on_delete="CASCADE")
    seq = peewee.IntegerField()
    type = peewee.TextField()  # status, segment, speakers
    payload = JSONField()
    created_at_ms = peewee.BigIntegerField(default=now_ms)

    class Meta:
        indexes = ((("job", "seq"), True),)


class Paragraph(BaseModel):
    """One speaker's stretch of a session's transcript, as the user reads and edits it."""

    session = peewee.ForeignKeyField(Session, backref="paragraphs", on_delete="CASCADE")
    idx = peewee.IntegerField()  # the stable paragraph index of the API: never renumbered
    start_ms = peewee.IntegerField()
    end_ms = peewee.IntegerField()
    text = peewee.TextField()
    speaker = peewee.TextField(null=True)
    edited = peewee.BooleanField(default=False)  # text changed by the user
    # A deleted paragraph keeps its index and time span (so indices are never reused and a
    # re-transcription that keeps edits leaves it out) but not its words.
    deleted = peewee.BooleanField(default=False)

    class Meta:
        indexes = ((("session", "idx"), True),)


class Chat(BaseModel):
    """A conversation with the language model, about one session or standalone."""

    session = peewee.ForeignKeyField(Session, null=True, backref="chats", on_delete="CASCADE")
    timestamp_ms = peewee.BigIntegerField()
    name = peewee.TextField(null=True)
    tags = JSONField(null=True)


class Message(BaseModel):
    chat = peewee.ForeignKeyField(Chat, backref="messages", on_delete="CASCADE")
    sender = peewee.TextField()  # user, ai
    text = peewee.TextField()
    timestamp_ms = peewee.BigIntegerField()
    prompt_tokens = peewee.IntegerField(null=True)
    completion_tokens = peewee.IntegerField(null=True)
    thinking_tokens = peewee.IntegerField(null=True)
    duration_ms = peewee.IntegerField(null=True)
    is_truncated = peewee.BooleanField(null=True)
    status = peewee.TextField(default="complete")  # complete, cancelled, failed


class Template(BaseModel):
    """A saved prompt; titles starting with `system_` are the system prompts Parley uses."""

    title = peewee.TextField(unique=True)
    text = peewee.TextField()
    created_at_ms = peewee.BigIntegerField()


class LlmSettings(BaseModel):
    """The one row of language-model settings the web tier writes and every LLM worker reads."""

    active_model = peewee.TextField(default="")  # GGUF file name in the store, or a remote server's model id
    base_url = peewee.TextField(null=True)  # null = the local engine; else an OpenAI-compatible server
    api_token = peewee.TextField(null=True)  # for the remote server; stored, never returned
    context_size = peewee.IntegerField(null=True)  # null = the model's own
    temperature = peewee.DoubleField(default=0.7)
    top_p = peewee.DoubleField(default=0.9)
    repeat_penalty = peewee.DoubleField(default=1.1)
    num_gpu_layers = peewee.IntegerField(null=True)  # null = all that fit (auto)
    thinking_budget = peewee.IntegerField(null=True)
    updated_at_ms = peewee.BigIntegerField(default=now_ms)


class LlmJob(BaseModel):
    """One piece of language-model work on the `llm` queue: a chat reply, a summary, a completion, a load."""

    id = peewee.CharField(primary_key=True, max_length=36)
    kind = peewee.TextField()  # chat_reply, summary, completion, load_model
    status = peewee.TextField(default="queued", index=True)  # queued, processing, completed, failed, canceled
    message = peewee.TextField(default="")
    progress = peewee.DoubleField(default=0.0)
    chat = peewee.ForeignKeyField(Chat, null=True, backref="llm_jobs", on_delete="CASCADE")
    model_name = peewee.TextField(default="")
    params = JSONField(default=dict)
    result = JSONField(null=True)
    error = peewee.TextField(null=True)
    created_at_ms = peewee.BigIntegerField(default=now_ms)
    updated_at_ms = peewee.BigIntegerField(default=now_ms)
    finished_at_ms = peewee.BigIntegerField(null=True)


class ModelPull(BaseModel):
    """A model download on the `io` queue: where from, how far, how it ended."""

    id = peewee.CharField(primary_key=True, max_length=36)
    source = peewee.TextField()  # an http(s) URL or a Hugging Face "owner/repo/file.gguf" name
    model_name = peewee.TextField()  # the file name it will have in the store
    status = peewee.TextField(default="queued")  # queued, parsing, downloading, verifying, completed, failed, canceling, canceled
    message = peewee.TextField(default="")
    completed_bytes = peewee.BigIntegerField(default=0)
    total_bytes = peewee.BigIntegerField(null=True)
    expected_sha256 = peewee.TextField(null=True)
    error = peewee.TextField(null=True)
    start_ms = peewee.BigIntegerField()
    end_ms = peewee.BigIntegerField(null=True)


class UsageLog(BaseModel):
    """One model call, for the usage pages: LLM tokens or seconds of transcribed audio."""

    type = peewee.TextField()  # llm, whisper
    source = peewee.TextField()  # session_chat, standalone_chat, summary, chat_completion, analysis_*, whisper_transcription
    model = peewee.TextField()
    prompt_tokens = peewee.IntegerField(null=True)
    completion_tokens = peewee.IntegerField(null=True)
    duration = peewee.IntegerField(null=True)  # whisper: seconds of audio; llm: ms of generation
    timestamp_ms = peewee.BigIntegerField(index=True)


class AnalysisJob(BaseModel):
    """A question asked across many sessions, answered map-reduce style on the `llm` queue."""

    original_prompt = peewee.TextField()
    short_prompt = peewee.TextField()
    status = peewee.TextField(default="pending")  # generating_strategy, pending, mapping, reducing, completed, failed, canceling, canceled
    final_result = peewee.TextField(null=True)
    error_message = peewee.TextField(null=True)
    created_at_ms = peewee.BigIntegerField()
    completed_at_ms = peewee.BigIntegerField(null=True)
    use_advanced_strategy = peewee.BooleanField(default=False)
    strategy_json = peewee.TextField(null=True)
    # The LLM settings as they were when the job was created: the worker honours these, not later changes.
    model_name = peewee.TextField(null=True)
    context_size = peewee.IntegerField(null=True)
    llm_base_url = peewee.TextField(null=True)
    temperature = peewee.DoubleField(null=True)
    top_p = peewee.DoubleField(null=True)
    repeat_penalty = peewee.DoubleField(null=True)
    num_gpu_layers = peewee.IntegerField(null=True)
    thinking_budget = peewee.IntegerField(null=True)
    map_phase_system_prompt = peewee.TextField(null=True)


class AnalysisSummary(BaseModel):
    """One session's answer to the job's per-session question (the map step), stored as it finishes."""

    analysis_job = peewee.ForeignKeyField(AnalysisJob, backref="summaries", on_delete="CASCADE")
    session = peewee.ForeignKeyField(Session, backref="analysis_summaries", on_delete="CASCADE")
    summary_text = peewee.TextField(null=True)
    status = peewee.TextField(default="pending")  # pending, processing, completed, failed
    error_message = peewee.TextField(null=True)
    prompt_tokens = peewee.IntegerField(null=True)
    completion_tokens = peewee.IntegerField(null=True)
    duration_ms = peewee.IntegerField(null=True)


class VoiceProfile(BaseModel):
    """A known voice: the name a user gave a speaker, recognised in later sessions (services/voices.py).

    Made only when a user names a speaker (the opt-in); its voiceprints are its VoiceSample rows.
    """

    name = peewee.TextField()
    # The API token that made it (services/api_tokens); null where no token was used. Not a foreign key:
    # tokens stay out of backups, and a profile outlives its token's row being revoked.
    owner_token_id = peewee.IntegerField(null=True, index=True)
    created_at_ms = peewee.BigIntegerField(default=now_ms)


class VoiceSample(BaseModel):
    """One voiceprint of a known voice: a session speaker's, copied when the user named it; deleted with it."""

    profile = peewee.ForeignKeyField(VoiceProfile, backref="samples", on_delete="CASCADE")
    # The session it came from; the voiceprint stays with the profile when that session is deleted.
    session = peewee.ForeignKeyField(Session, null=True, backref="voice_samples", on_delete="SET NULL")
    label = peewee.TextField()  # the speaker's label as diarization gave it (SPEAKER_n)
    vector = JSONField()  # L2-normalised CAM++ voiceprint
    voiced_s = peewee.DoubleField()  # seconds of speech behind it
    created_at_ms = peewee.BigIntegerField(default=now_ms)


class SessionVoice(BaseModel):
    """A speaker's voiceprint in one session, and the known voice that names it, if any.

    Kept so a profile can be made from the speaker later and known voices re-applied without transcribing
    again (`parley voices apply`); deleted with the session. Not kept where PARLEY_VOICE_RECOGNITION is off.
    """

    session = peewee.ForeignKeyField(Session, backref="voices", on_delete="CASCADE")
    label = peewee.TextField()  # the speaker's label as diarization gave it (SPEAKER_n)
    vector = JSONField()  # L2-normalised CAM++ voiceprint
    voiced_s = peewee.DoubleField()
    profile = peewee.ForeignKeyField(VoiceProfile, null=True, backref="matches", on_delete="SET NULL")
    similarity = peewee.DoubleField(null=True)  # cosine to the profile's centroid when it was recognised
    # How clearly pieces of the speaker's solo speech split into two voices (workers/voiceprints.py); at or above
    # services.voices.MERGE_CONTRAST the speaker is never named, and no profile is made from it. Null: not
    # measured.
    voice_contrast = peewee.DoubleField(null=True)
    # The name recognition wrote into the transcript in place of `label`; kept when the profile is deleted, so
    # `parley voices apply --undo` can still put the label back. Null: recognition named nothing here.
    shown = peewee.TextField(null=True)

    class Meta:
        indexes = ((("session", "label"), True),)


ALL_TABLES = [Session, Job, Segment, JobEvent, Paragraph, Chat, Message, Template, LlmSettings, LlmJob, ModelPull,
              UsageLog, AnalysisJob, AnalysisSummary, VoiceProfile, VoiceSample, SessionVoice]


class ApiToken(BaseModel):
    """A bearer token for the HTTP API, stored as its SHA-256 only (the token itself is shown once).

    Kept out of ALL_TABLES on purpose: backups, imports and resets must never carry or wipe credentials.
    """

    name = peewee.TextField()
    token_hash = peewee.TextField(unique=True)
    prefix = peewee.TextField()  # the first characters, so operators can tell tokens apart
    scopes = peewee.TextField()  # comma-separated: read, write, admin
    created_at_ms = peewee.BigIntegerField(default=now_ms)
    last_used_at_ms = peewee.BigIntegerField(null=True)
    revoked_at_ms = peewee.BigIntegerField(null=True)
