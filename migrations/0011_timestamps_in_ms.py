"""Every wall-clock timestamp as integer milliseconds since the epoch, in a column whose name ends in `_ms`.

Until now the sessions tables stored integer milliseconds (`created_at_ms`, `timestamp_ms`) and the job
tables float seconds (`created_at`), so a reader had to know which table it was in to get the unit right.
Each float column gets an integer `_ms` twin holding the same instant, and goes. The APIs still say what they
said: the wire converts (parley.timestamps). Written by hand and frozen (no imports from the live models).
"""

# (table, old float-seconds column, may be null)
COLUMNS = [
    ("session", "created_at", False),
    ("job", "created_at", False),
    ("job", "updated_at", False),
    ("job", "started_at", True),
    ("job", "finished_at", True),
    ("job_event", "created_at", False),
    ("llm_settings", "updated_at", False),
    ("llm_job", "created_at", False),
    ("llm_job", "updated_at", False),
    ("llm_job", "finished_at", True),
    ("api_token", "created_at", False),
    ("api_token", "last_used_at", True),
    ("api_token", "revoked_at", True),
]


def up(migrator, db):
    for table, column, null in COLUMNS:
        # NOT NULL needs a default for the rows already there; the UPDATE gives each its own value.
        constraint = "" if null else " NOT NULL DEFAULT 0"
        db.execute_sql(f'ALTER TABLE "{table}" ADD COLUMN "{column}_ms" BIGINT{constraint}')
        db.execute_sql(f'UPDATE "{table}" SET "{column}_ms" = CAST(ROUND("{column}" * 1000) AS BIGINT)')
        db.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN "{column}"')


def down(migrator, db):
    for table, column, null in COLUMNS:
        constraint = "" if null else " NOT NULL DEFAULT 0"
        db.execute_sql(f'ALTER TABLE "{table}" ADD COLUMN "{column}" DOUBLE PRECISION{constraint}')
        db.execute_sql(f'UPDATE "{table}" SET "{column}" = "{column}_ms" / 1000.0')
        db.execute_sql(f'ALTER TABLE "{table}" DROP COLUMN "{column}_ms"')
