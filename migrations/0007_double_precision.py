"""Every float column as double precision.

peewee's FloatField is REAL on PostgreSQL: 4 bytes, so epoch timestamps were rounded to about two
minutes and job durations read 0. SQLite's REAL is already 8 bytes; nothing changes there.
Written by hand and frozen (no imports from the live models).
"""
from peewee import PostgresqlDatabase

FLOAT_COLUMNS = [
    ("session", "created_at"),
    ("job", "progress"),
    ("job", "audio_duration"),
    ("job", "chunk_progress"),
    ("job", "created_at"),
    ("job", "updated_at"),
    ("job", "started_at"),
    ("job", "finished_at"),
    ("segment", "start"),
    ("segment", "end"),
    ("segment", "speaker_confidence"),
    ("segment", "avg_logprob"),
    ("segment", "no_speech_prob"),
    ("job_event", "created_at"),
    ("llm_settings", "temperature"),
    ("llm_settings", "top_p"),
    ("llm_settings", "repeat_penalty"),
    ("llm_settings", "updated_at"),
    ("llm_job", "progress"),
    ("llm_job", "created_at"),
    ("llm_job", "updated_at"),
    ("llm_job", "finished_at"),
    ("analysis_job", "temperature"),
    ("analysis_job", "top_p"),
    ("analysis_job", "repeat_penalty"),
    ("api_token", "created_at"),
    ("api_token", "last_used_at"),
    ("api_token", "revoked_at"),
]


def up(migrator, db):
    if not isinstance(db, PostgresqlDatabase):
        return
    for table, column in FLOAT_COLUMNS:
        db.execute_sql(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE double precision')


def down(migrator, db):
    if not isinstance(db, PostgresqlDatabase):
        return
    for table, column in FLOAT_COLUMNS:
        db.execute_sql(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE real')
