"""The schema on SQLite and PostgreSQL: migrations, pragmas, cascades, the event log's numbering."""
from __future__ import annotations

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
        sessions = [Session.create(file_name=f"{n}.mp3", date="2026-01-01T12:00:00.000Z", status="completed")
                    for n in range(3)]
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
        old = Session.create(file_name="a.mp3", date="2026-01-01T12:00:00.000Z", status="completed")
        kept = Session.create(file_name="b.mp3", date="2026-01-01T12:00:00.000Z", status="completed",
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
        session = Session.create(file_name="a.mp3", date="2026-01-01T12:00:00.000Z", status="completed",
                                 client_name="Jane")
        for idx, text in enumerate(["We spoke about anxiety at work.", "Gardening helps her relax."]):
            Paragraph.create(session=session, idx=idx, start_ms=idx * 1000, end_ms=idx * 1000 + 900, text=text)
    DatabaseBackend().index_session(session.id)

    def found(q: str) -> list[str]:
        return [r["id"] for r in DatabaseBackend().search(parse_query(q), limit=10, offset=0, client_name=None,
                                                          search_type="all").results]

    before = {q: found(q) for q in ("anx*", "garden*", "relax", '"at work"')}
    assert before["anx*"] == [f"{session.id}_0"] and before["garden*"] == [f"{session.id}_1"]
    assert migrate(url) == ["0010_search_prefix_index"]
    with db.connection_context():
        sql = db.execute_sql("SELECT sql FROM sqlite_master WHERE name = 'search_fts'").fetchone()[0]
    assert "prefix = '2 3 4 5'" in sql
    assert {q: found(q) for q in before} == before
