"""Opens the database named by DATABASE_URL (SQLite by default, PostgreSQL for scale) and migrates it."""
from __future__ import annotations

import fcntl
import logging
import math
from contextlib import contextmanager
from pathlib import Path

import peewee
from playhouse.db_url import parse
from playhouse.migrations import Runner
from playhouse.pool import PooledPostgresqlDatabase

log = logging.getLogger(__name__)

#: Every model binds to this proxy; `init_db` points it at a real database once per process.
db = peewee.DatabaseProxy()

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

SQLITE_PRAGMAS = {
    "journal_mode": "wal",  # readers never block the writer: web and workers share the file
    "foreign_keys": 1,
    "synchronous": "normal",  # safe with WAL, and much faster than full
}

def lock_timeout_s() -> float:
    """How long a statement waits for a lock held by someone else (SQLite's busy timeout, PostgreSQL's
    lock_timeout) or for a connection, before it fails (PARLEY_DB_TIMEOUT_S)."""
    from parley.config import get_settings

    return get_settings().db_timeout_s


def open_database(url: str) -> peewee.Database:
    timeout = lock_timeout_s()
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # A writer waits this long for the lock, then fails with "database is locked" (a 503 in the web tier).
        pragmas = {**SQLITE_PRAGMAS, "busy_timeout": int(timeout * 1000)}
        return peewee.SqliteDatabase(path, pragmas=pragmas, timeout=timeout)
    if url.startswith(("postgres://", "postgresql://")):
        kwargs = parse(url)
        # Without lock_timeout a statement behind someone's table lock waits forever; without
        # connect_timeout an unreachable server hangs the request. Both fail instead, after `timeout`.
        options = f"-c lock_timeout={int(timeout * 1000)}"
        kwargs["options"] = f"{kwargs['options']} {options}" if kwargs.get("options") else options
        kwargs.setdefault("connect_timeout", max(1, math.ceil(timeout)))
        # The pool checks a connection on check-out (a round trip), so connections the server dropped
        # (a restart, pg_terminate_backend) are replaced instead of failing the next requests.
        return PooledPostgresqlDatabase(
            kwargs.pop("database"), max_connections=32, stale_timeout=300, timeout=timeout, **kwargs
        )
    raise ValueError(f"DATABASE_URL must start with sqlite:/// or postgresql://, got {url!r}")


_bound_url: dict[str, str] = {}


def init_db(url: str) -> peewee.Database:
    """Bind the models to the database at `url` (idempotent for the same url)."""
    if db.obj is not None and _bound_url.get("url") == url:
        return db.obj
    if db.obj is not None:
        db.obj.close()
    database = open_database(url)
    db.initialize(database)
    _bound_url["url"] = url
    return database


@contextmanager
def _migration_lock(database: peewee.Database):
    # The web tier and every worker migrate at start-up; the lock makes them take turns.
    if isinstance(database, peewee.PostgresqlDatabase):
        # Waiting for another process's migrations may take longer than lock_timeout: wait as long as it takes.
        database.execute_sql("SET lock_timeout = 0")
        database.execute_sql("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            yield
        finally:
            database.execute_sql("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
            database.execute_sql("RESET lock_timeout")
    else:
        with open(f"{database.database}.migrate-lock", "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            yield


MIGRATION_LOCK_KEY = 7_460_421


def migrate(url: str) -> list[str]:
    """Apply pending migrations from migrations/; returns the names applied."""
    database = init_db(url)
    with database.connection_context(), _migration_lock(database):
        runner = Runner(database, directory=str(MIGRATIONS_DIR))
        pending = [m.name for m in runner.status() if not m.applied]
        if pending:
            runner.up()
            log.info("applied migrations: %s", ", ".join(pending))
        return pending
