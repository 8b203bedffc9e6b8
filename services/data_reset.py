"""Resetting all data, and what a reset or a restore does around the rows: queues emptied, the system
templates back, the search index rebuilt. Each step's failure is reported, not raised: the others still run."""
from __future__ import annotations

import logging
from pathlib import Path

import peewee
import redis

from models import ModelPull
from models.statuses import PullStatus
from services import backup, search
from services.templates import ensure_system_templates

log = logging.getLogger(__name__)

#: (answer key, backup member) of the rows a reset counts.
RESET_COUNTS = (("sessions", "sessions.json"), ("chats", "chats.json"), ("messages", "messages.json"),
                ("templates", "templates.json"), ("analysisJobs", "analysis_jobs.json"),
                ("voiceProfiles", "voice_profiles.json"))


def drop_queued_messages(conn: redis.Redis) -> int:
    """Empty every queue (waiting and delayed messages); returns how many were dropped.

    Model downloads are not part of the data: a pull still waiting for a worker is queued again.
    """
    from jobs.broker import QUEUES, broker
    from jobs.queues import depth
    from jobs.send import send

    dropped = 0
    for queue in QUEUES:
        waiting = depth(conn, queue)
        dropped += waiting["waiting"] + waiting["delayed"]
        broker.flush(queue)
    for pull in ModelPull.select(ModelPull.id).where(ModelPull.status == PullStatus.QUEUED):
        send("pull_model", pull.id)
    return dropped


def rebuild_index() -> list[str]:
    """Rebuild the search index from the rows; the problems found, as messages."""
    try:
        return [f"search index: {e}" for e in search.rebuild()["errors"]]
    except Exception as exc:  # noqa: BLE001  (the data stands; a reindex can be run again)
        log.exception("search rebuild failed")
        return [f"search index: {type(exc).__name__}: {exc}"]


def after_restore(conn: redis.Redis) -> tuple[int | None, list[str]]:
    """What a restore needs once its rows are in: system templates (a hand-made backup may lack them), no
    queue message about the old rows, a search index of the new ones. Returns (messages dropped, None when
    the queues could not be emptied; warnings)."""
    ensure_system_templates()
    warnings, dropped = [], None
    try:
        dropped = drop_queued_messages(conn)
    except redis.RedisError as exc:
        warnings.append(f"queues: could not drop the old queue messages ({type(exc).__name__}: {exc})")
    return dropped, warnings + rebuild_index()


def reset_all_data(conn: redis.Redis, audio_dir: Path) -> tuple[dict[str, int], list[str]]:
    """Delete every session, transcript, chat, template, analysis, recording and known voice (its voiceprints
    too); keep the system templates, the LLM settings and the models. Returns (counts of what went, errors of
    the steps that failed)."""
    errors: list[str] = []
    counts: dict[str, int] = {}
    try:
        counts["queuedMessages"] = drop_queued_messages(conn)  # first, so no worker starts on rows about to go
    except redis.RedisError as exc:
        errors.append(f"queues: {type(exc).__name__}: {exc}")
    try:
        deleted = backup.wipe_rows()
        counts.update({key: deleted[member] for key, member in RESET_COUNTS})
        counts["systemTemplatesRecreated"] = ensure_system_templates()
    except peewee.PeeweeException as exc:
        errors.append(f"database: {type(exc).__name__}: {exc}")
    try:
        counts["audioFiles"] = backup.wipe_audio(audio_dir)
    except OSError as exc:
        errors.append(f"audio files: {type(exc).__name__}: {exc}")
    return counts, errors + rebuild_index()
