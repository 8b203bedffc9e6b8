"""The schema on SQLite and PostgreSQL: migrations, pragmas, cascades, the event log's numbering."""
from __future__ import annotations

import time
import uuid

import peewee
import pytest

from conftest import drop_postgres_database, postgres_database


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'parley.db'}"
        return
    url = postgres_database()
    if url is None:
        pytest.skip("no PostgreSQL server answers here")
    yield url
    from models import db
    db.close()
    drop_postgres_database(url)


@pytest.fixture()
def schema(database_url):
    from models import db, migrate
    from models.db import MIGRATIONS_DIR

    assert migrate(database_url) == sorted(p.stem for p in MIGRATIONS_DIR.glob("[0-9]*.py"))
    assert migrate(database_url) == []  # idempotent
    with db.connection_context():
        yield db


def before_0011(model):
    """`model` as migrations 0001 to 0010 left its table: float epoch seconds where it now has `*_ms` columns.

    Tests of older migrations write rows through it, since the live model only fits the newest schema.
    """
    from migrations import __name__ as package
    import importlib

    renamed = [c for t, c, _ in importlib.import_module(f"{package}.0011_timestamps_in_ms").COLUMNS
               if t == model._meta.table_name]
    attrs = {"Meta": type("Meta", (), {"table_name": model._meta.table_name})}
    for field in model._meta.sorted_fields:
        if isinstance(field, peewee.ForeignKeyField):  # the same link, without a second backref on the parent
            attrs[field.name] = peewee.ForeignKeyField(field.rel_model, null=field.null, backref="+",
                                                       column_name=field.column_name)
    for column in renamed:
        attrs[column] = peewee.DoubleField(null=True)
    old = type(f"{model.__name__}Before0011", (model,), attrs)
    for column in renamed:
        old._meta.remove_field(f"{column}_ms")
    return old


def make_job(**fields):
    from models import Job, Session

    session = Session.create(file_name="a.mp3", date="2026-01-01T12:00:00.000Z", status="queued")
    return Job.create(id=str(uuid.uuid4()), session=session, model_name="tiny.en", **fields)


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    from models import db, migrate

    migrate(f"sqlite:///{tmp_path / 'p.db'}")
    with db.connection_context():
        assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1


def test_the_settings_row_is_created_while_another_process_writes(tmp_path):
    """A web process creates its LLM settings row at boot while others write (a second web process inserting its
    templates, workers): SQLite fails a transaction that read before writing at once when another connection
    wrote meanwhile, so no such transaction may wrap the row's creation (it failed 172 of 300 tries so)."""
    import sqlite3
    import threading

    from models import LlmSettings, db, migrate
    from services import llm_config

    path = tmp_path / "p.db"
    migrate(f"sqlite:///{path}")
    stop = threading.Event()

    def other_process_writing():
        conn = sqlite3.connect(path, timeout=10, isolation_level=None)
        conn.execute("CREATE TABLE scratch (n INTEGER)")
        n = 0
        while not stop.is_set():
            conn.execute("INSERT INTO scratch VALUES (?)", (n,))  # one short transaction each
            n += 1
            time.sleep(0.0005)  # a writer that lets others in, as real ones do
        conn.close()

    writer = threading.Thread(target=other_process_writing)
    writer.start()
    try:
        with db.connection_context():
            for _ in range(100):
                LlmSettings.delete().execute()
                assert llm_config.current().id == 1
            assert LlmSettings.select().count() == 1
    finally:
        stop.set()
        writer.join()


def test_event_numbers_are_contiguous_per_job(schema):
    from services import events

    first, second = make_job(), make_job()
    seqs = [events.record(first.id, "status", {"n": i})["seq"] for i in range(5)]
    other = events.record(second.id, "status", {})["seq"]
    assert seqs == [1, 2, 3, 4, 5] and other == 1
    logged = events.read_log(first.id, after=2)
    assert [e["seq"] for e in logged] == [3, 4, 5] and logged[0]["n"] == 2
    assert [e["seq"] for e in events.read_log(first.id, compact=True)] == [5]


def test_deleting_a_session_cascades(schema):
    from models import Chat, Job, JobEvent, Message, Paragraph, Segment, Session
    from services import events

    job = make_job()
    Segment.create(job=job, idx=0, chunk_index=0, start=0, end=1, text="hi", words=[{"word": "hi"}])
    events.record(job.id, "segment", {"id": 0})
    Paragraph.create(session=job.session_id, idx=0, start_ms=0, end_ms=1000, text="hi")
    chat = Chat.create(session=job.session_id, timestamp_ms=1)
    Message.create(chat=chat, sender="ai", text="hello", timestamp_ms=1)
    standalone = Chat.create(session=None, timestamp_ms=2)
    Session.delete().where(Session.id == job.session_id).execute()
    for table in (Job, Segment, JobEvent, Paragraph, Message):
        assert table.select().count() == 0, table.__name__
    assert [c.id for c in Chat.select()] == [standalone.id]  # a chat of no session is not touched


def test_segment_index_is_unique_per_job(schema):
    from models import Segment

    job = make_job()
    Segment.create(job=job, idx=0, chunk_index=0, start=0, end=1, text="a")
    with pytest.raises(peewee.IntegrityError), schema.atomic():
        Segment.create(job=job, idx=0, chunk_index=0, start=1, end=2, text="b")
    assert Segment.get(Segment.job == job).words == [] and Segment.select().count() == 1


def test_ids_are_never_reused_after_a_delete(schema):
    """A stale bookmark must not open another client's session: the newest id deleted is not given again."""
    from models import AnalysisJob, Chat, Message, Session, Template

    def new(model):
        if model is Session:
            return Session.create(file_name="a.mp3", date="2026-01-01T12:00:00.000Z", status="queued")
        if model is Chat:
            return Chat.create(session=None, timestamp_ms=1)
        if model is Message:
            return Message.create(chat=Chat.create(session=None, timestamp_ms=1), sender="user", text="hi",
                                  timestamp_ms=1)
        if model is Template:
            return Template.create(title=f"t-{uuid.uuid4()}", text="x", created_at_ms=1)
        return AnalysisJob.create(original_prompt="q", short_prompt="q", created_at_ms=1)

    for model in (Session, Chat, Message, Template, AnalysisJob):
        newest = new(model)
        newest.delete_instance(recursive=True)
        assert new(model).id > newest.id, model.__name__


def test_the_autoincrement_migration_keeps_existing_rows_and_links(tmp_path):
    """A database made before migration 0008: every row, index and foreign key survives the table rebuild."""
    from playhouse.migrations import Runner

    from models import Chat, Message, Paragraph, Session, db, migrate
    from models.db import MIGRATIONS_DIR, init_db

    url = f"sqlite:///{tmp_path / 'old.db'}"
    database = init_db(url)
    with database.connection_context():
        Runner(database, directory=str(MIGRATIONS_DIR)).up(target="0007_double_precision")
        sessions = [before_0011(Session).create(file_name=f"{n}.mp3", date="2026-01-01T12:00:00.000Z",
                                                status="completed", created_at=1.5) for n in range(3)]
        Paragraph.create(session=sessions[1], idx=0, start_ms=0, end_ms=1000, text="kept")
        chat = Chat.create(session=sessions[1], timestamp_ms=1)
        Message.create(chat=chat, sender="ai", text="hello", timestamp_ms=1)
        sessions[2].delete_instance(recursive=True)
        sql = db.execute_sql("SELECT sql FROM sqlite_master WHERE name = 'session'").fetchone()[0]
        assert "AUTOINCREMENT" not in sql
    assert migrate(url)[0] == "0008_ids_never_reused"
    with db.connection_context():
        assert "AUTOINCREMENT" in db.execute_sql("SELECT sql FROM sqlite_master WHERE name = 'session'").fetchone()[0]
        assert [s.file_name for s in Session.select().order_by(Session.id)] == ["0.mp3", "1.mp3"]
        assert Paragraph.get().session_id == sessions[1].id and Message.get().chat_id == chat.id
        assert db.execute_sql("PRAGMA foreign_key_check").fetchall() == []
        assert db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
        indexes = {name for (name,) in db.execute_sql("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"paragraph_session_id", "message_chat_id"} <= indexes, indexes
        Session.delete().where(Session.id == sessions[1].id).execute()  # the database's own cascades still work
        assert Paragraph.select().count() == 0 and Chat.select().count() == 0 and Message.select().count() == 0
        assert Session.create(file_name="new.mp3", date="2026-01-01T12:00:00.000Z", status="queued").id > 2


def test_sessions_of_the_transcription_api_get_contract_values(database_url):
    """Migration 0009: the empty clientName, sessionType and therapy of older transcription-API sessions."""
    from playhouse.migrations import Runner

    from models import Session, db, migrate
    from models.db import MIGRATIONS_DIR, init_db

    database = init_db(database_url)
    with database.connection_context():
        Runner(database, directory=str(MIGRATIONS_DIR)).up(target="0008_ids_never_reused")
        old_session = before_0011(Session)
        old = old_session.create(file_name="a.mp3", date="2026-01-01T12:00:00.000Z", status="completed", created_at=1.5)
        kept = old_session.create(file_name="b.mp3", date="2026-01-01T12:00:00.000Z", status="completed",
                                  created_at=1.5,
                              client_name="Jane", session_type="Intake", therapy="CBT")
    assert migrate(database_url)[0] == "0009_transcription_api_sessions"
    with db.connection_context():
        assert (Session.get_by_id(old.id).client_name, Session.get_by_id(old.id).session_type,
                Session.get_by_id(old.id).therapy) == ("Transcription API", "Transcription API", "N/A")
        assert (Session.get_by_id(kept.id).client_name, Session.get_by_id(kept.id).therapy) == ("Jane", "CBT")


def test_the_prefix_index_migration_keeps_what_was_searchable(tmp_path):
    """Migration 0010 rebuilds SQLite's full-text table with prefix indexes: every indexed paragraph stays found."""
    from playhouse.migrations import Runner

    from models import Paragraph, Session, db, migrate
    from models.db import MIGRATIONS_DIR, init_db
    from services.search import parse_query
    from services.search_db import DatabaseBackend

    url = f"sqlite:///{tmp_path / 'old.db'}"
    database = init_db(url)
    with database.connection_context():
        Runner(database, directory=str(MIGRATIONS_DIR)).up(target="0009_transcription_api_sessions")
        session = before_0011(Session).create(file_name="a.mp3", date="2026-01-01T12:00:00.000Z", status="completed",
                                              created_at=1.5,
                                 client_name="Jane")
        for idx, text in enumerate(["We spoke about anxiety at work.", "Gardening helps her relax."]):
            Paragraph.create(session=session, idx=idx, start_ms=idx * 1000, end_ms=idx * 1000 + 900, text=text)
    with pytest.MonkeyPatch.context() as patch:  # the indexer reads sessions through the live model
        patch.setattr("models.Session", before_0011(Session))
        DatabaseBackend().index_session(session.id)

    def found(q: str) -> list[str]:
        return [r["id"] for r in DatabaseBackend().search(parse_query(q), limit=10, offset=0, client_name=None,
                                                          search_type="all").results]

    before = {q: found(q) for q in ("anx*", "garden*", "relax", '"at work"')}
    assert before["anx*"] == [f"{session.id}_0"] and before["garden*"] == [f"{session.id}_1"]
    assert migrate(url)[0] == "0010_search_prefix_index"
    with db.connection_context():
        sql = db.execute_sql("SELECT sql FROM sqlite_master WHERE name = 'search_fts'").fetchone()[0]
    assert "prefix = '2 3 4 5'" in sql
    assert {q: found(q) for q in before} == before


def test_the_milliseconds_migration_keeps_every_instant(database_url):
    """Migration 0011: float-second timestamps become integer milliseconds, the same instants, nulls kept."""
    from playhouse.migrations import Runner

    from models import ApiToken, Job, JobEvent, LlmJob, Session, db, migrate
    from models.db import MIGRATIONS_DIR, init_db

    database = init_db(database_url)
    with database.connection_context():
        Runner(database, directory=str(MIGRATIONS_DIR)).up(target="0010_search_prefix_index")
        session = before_0011(Session).create(file_name="a.mp3", date="2026-01-01T12:00:00.000Z",
                                              status="completed", created_at=1_700_000_000.0)
        job = before_0011(Job).create(id=str(uuid.uuid4()), session=session.id, model_name="tiny.en",
                                      created_at=1_700_000_000.2504, updated_at=1_700_000_009.5,
                                      started_at=1_700_000_001.125, finished_at=None)
        before_0011(JobEvent).create(job=job.id, seq=1, type="status", payload={}, created_at=1_700_000_002.001)
        llm = before_0011(LlmJob).create(id=str(uuid.uuid4()), kind="summary", created_at=1_700_000_003.0,
                                         updated_at=1_700_000_004.0, finished_at=1_700_000_005.999)
        token = before_0011(ApiToken).create(name="ops", token_hash="h", prefix="p", scopes="read",
                                             created_at=1_700_000_006.0, last_used_at=None, revoked_at=1e9)
    assert migrate(database_url)[0] == "0011_timestamps_in_ms"
    with db.connection_context():
        assert Session.get_by_id(session.id).created_at_ms == 1_700_000_000_000
        stored = Job.get_by_id(job.id)
        assert (stored.created_at_ms, stored.updated_at_ms, stored.started_at_ms, stored.finished_at_ms) == (
            1_700_000_000_250, 1_700_000_009_500, 1_700_000_001_125, None)
        assert JobEvent.get().created_at_ms == 1_700_000_002_001
        stored = LlmJob.get_by_id(llm.id)
        assert (stored.created_at_ms, stored.updated_at_ms, stored.finished_at_ms) == (
            1_700_000_003_000, 1_700_000_004_000, 1_700_000_005_999)
        stored = ApiToken.get_by_id(token.id)
        assert (stored.created_at_ms, stored.last_used_at_ms, stored.revoked_at_ms) == (
            1_700_000_006_000, None, 1_000_000_000_000)
        # New rows get the time now, in milliseconds.
        assert abs(Session.create(file_name="b.mp3", date="2026-01-01T12:00:00.000Z").created_at_ms
                   - time.time() * 1000) < 60_000
