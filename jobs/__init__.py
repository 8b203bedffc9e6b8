"""Parley's Dramatiq broker and actors; `dramatiq jobs --queues asr` runs a worker on them.

Importing this package never loads a model engine: actors import engine code inside their bodies,
so the web tier can import them to enqueue work.
"""
from jobs.analysis import analyze
from jobs.broker import QUEUES, broker
from jobs.downloads import pull_model
from jobs.indexing import update_search  # noqa: F401  (search index updates on `io`)
from jobs.llm import generate
from jobs.transcription import retranscribe, transcribe

__all__ = ["QUEUES", "analyze", "broker", "generate", "retranscribe", "transcribe"]
