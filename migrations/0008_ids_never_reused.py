"""On SQLite, integer ids become AUTOINCREMENT: an id is never given again after its row is deleted.

Without it SQLite hands out max(id) + 1, so deleting the newest session and creating one gave the new
session the old id, and a stale bookmark or client cache opened someone else's therapy record.
SQLite can't add AUTOINCREMENT to a column, so each table is rebuilt (SQLite's documented 12-step
procedure: foreign keys off, copy, drop, rename, indexes and triggers back, foreign_key_check). PostgreSQL's
sequences never reuse a value: nothing changes there.
Written by hand and frozen (no imports from the live models).
"""
import re

from peewee import SqliteDatabase

# Foreign keys must be switched off outside a transaction, so the runner must not open one; this
# migration opens its own.
atomic = False

TABLES = ["session", "segment", "job_event", "paragraph", "chat", "message", "template", "llm_settings",
          "usage_log", "analysis_job", "analysis_summary", "api_token"]

_INTEGER_KEY = re.compile(r'("id"\s+INTEGER\s+NOT\s+NULL\s+PRIMARY\s+KEY)(?!\s+AUTOINCREMENT)', re.IGNORECASE)


def _rebuild(db, table: str, *, autoincrement: bool) -> None:
    row = db.execute_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    if row is None:
        return
    create = row[0]
    if autoincrement:
        changed = _INTEGER_KEY.sub(r"\1 AUTOINCREMENT", create, count=1)
    else:
        changed = re.sub(r"\s+AUTOINCREMENT", "", create, count=1, flags=re.IGNORECASE)
    if changed == create:
        return
    indexes = [sql for (sql,) in db.execute_sql(
        "SELECT sql FROM sqlite_master WHERE type IN ('index', 'trigger') AND tbl_name = ? AND sql IS NOT NULL", (table,))]
    scratch = f"{table}__rebuild"
    db.execute_sql(changed.replace(f'CREATE TABLE "{table}"', f'CREATE TABLE "{scratch}"', 1))
    db.execute_sql(f'INSERT INTO "{scratch}" SELECT * FROM "{table}"')
    db.execute_sql(f'DROP TABLE "{table}"')
    db.execute_sql(f'ALTER TABLE "{scratch}" RENAME TO "{table}"')
    for sql in indexes:
        db.execute_sql(sql)


def _rebuild_all(db, *, autoincrement: bool) -> None:
    if not isinstance(db, SqliteDatabase):
        return
    db.execute_sql("PRAGMA foreign_keys = OFF")
    # Renaming the copy must not re-check other tables' triggers and views while the original is gone.
    db.execute_sql("PRAGMA legacy_alter_table = ON")
    try:
        with db.atomic():
            for table in TABLES:
                _rebuild(db, table, autoincrement=autoincrement)
            broken = db.execute_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"foreign keys broken by the rebuild: {broken[:5]}")
    finally:
        db.execute_sql("PRAGMA legacy_alter_table = OFF")
        db.execute_sql("PRAGMA foreign_keys = ON")


def up(migrator, db):
    _rebuild_all(db, autoincrement=True)


def down(migrator, db):
    _rebuild_all(db, autoincrement=False)
