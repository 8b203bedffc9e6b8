"""Backup export and import through the real stack, refusal of unsafe archives, and the reset of all data."""
from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import tarfile

import pytest

from conftest import AUDIO, clip, running_stack, wait_until
from test_sessions_api import upload, wait_session

TAR_NAME = re.compile(r'^attachment; filename="therascript-backup-\d{4}-\d{2}-\d{2}\.tar"$')
SYSTEM_TITLES = {"system_prompt", "system_standalone_prompt", "system_analysis_strategist",
                 "system_short_prompt_generator"}


# --- archives built by hand -------------------------------------------------------------------------
def row(model, **values) -> dict:
    """A full row of `model` as a backup holds it: every column, defaults where not given."""
    out = {}
    for field in model._meta.sorted_fields:
        default = field.default() if callable(field.default) else field.default
        out[field.column_name] = values.pop(field.column_name, default)
    assert not values, f"unknown columns {values}"
    return out


def seed_members(audio: bytes, *, audio_name: str = "0123456789abcdef.mp3") -> dict[str, object]:
    """A small valid backup: one session with audio and a transcript, a chat, a template and an analysis."""
    from models import AnalysisJob, AnalysisSummary, Chat, Message, Paragraph, Session, Template
    from services import backup

    tables = {t.member: [] for t in backup.TABLES}
    tables["sessions.json"] = [row(Session, id=7, file_name="seed.mp3", client_name="Ada Lovelace",
                                   session_name="Seeded", date="2026-03-04T12:00:00.000Z", audio_path=audio_name,
                                   audio_sha256=hashlib.sha256(audio).hexdigest(), audio_bytes=len(audio),
                                   status="completed", duration=5, created_at_ms=1500)]
    tables["transcript_paragraphs.json"] = [row(Paragraph, id=1, session_id=7, idx=0, start_ms=0, end_ms=4000,
                                                text="The marmalade sandwich was delicious.")]
    tables["chats.json"] = [row(Chat, id=3, session_id=7, timestamp_ms=1000, name="About lunch")]
    tables["messages.json"] = [row(Message, id=5, chat_id=3, sender="user", text="What was eaten?", timestamp_ms=1001)]
    tables["templates.json"] = [row(Template, id=2, title="My template", text="Summarise.", created_at_ms=99)]
    tables["analysis_jobs.json"] = [row(AnalysisJob, id=4, original_prompt="Food?", short_prompt="Food",
                                        status="completed", final_result="Sandwiches.", created_at_ms=10)]
    tables["intermediate_summaries.json"] = [row(AnalysisSummary, id=6, analysis_job_id=4, session_id=7,
                                                 summary_text="A sandwich.", status="completed")]
    members: dict[str, object] = dict(tables)
    members["analysis_job_sessions.json"] = [{"analysis_job_id": 4, "session_id": 7}]
    members["manifest.json"] = {"format": "parley-backup", "version": 2,
                                "counts": {name: len(rows) for name, rows in members.items()}}
    members["uploads/" + audio_name] = audio
    return members


def tar_bytes(members: dict[str, object], extra: list[tuple[tarfile.TarInfo, bytes | None]] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, value in members.items():
            data = value if isinstance(value, bytes) else json.dumps(value).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


def import_tar(stack, data: bytes):
    return stack.post("/api/admin/import-data", files={"backupFile": ("backup.tar", data, "application/x-tar")},
                      timeout=120)


def export_tar(stack) -> bytes:
    answer = stack.get("/api/admin/export-data", timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.content


def queue_depth(stack, queue: str) -> int:
    db = stack.env["REDIS_URL"].rsplit("/", 1)[1]
    out = subprocess.run(["redis-cli", "-p", str(stack.redis.port), "-n", db, "llen", f"dramatiq:{queue}"],
                         capture_output=True, text=True, timeout=5).stdout
    return int(out.strip())


def state(stack) -> dict:
    """What a user sees of every session, audio included."""
    sessions = stack.get("/api/sessions/").json()
    return {"sessions": sessions,
            "audio": {s["id"]: stack.get(f"/api/sessions/{s['id']}/audio").content for s in sessions}}


# --- 1. export from a live stack, import into an empty one ------------------------------------------
def snapshot_of(stack, sid: int, analysis_id: int, standalone: int) -> dict:
    session = stack.get(f"/api/sessions/{sid}").json()
    return {
        "sessions": stack.get("/api/sessions/").json(),
        "session": session,
        "transcript": stack.get(f"/api/sessions/{sid}/transcript").json(),
        "status": stack.get(f"/api/transcription/status/{session['whisperJobId']}").json(),
        "chats": [stack.get(f"/api/sessions/{sid}/chats/{c['id']}").json() for c in session["chats"]],
        "standalone": stack.get("/api/chats").json(),
        "standalone_chat": stack.get(f"/api/chats/{standalone}").json(),
        "templates": stack.get("/api/templates").json(),
        "analysis": stack.get("/api/analysis-jobs").json(),
        "analysis_job": stack.get(f"/api/analysis-jobs/{analysis_id}").json(),
        "audio": stack.get(f"/api/sessions/{sid}/audio").content,
    }


def add_llm_rows(database_url: str, sid: int) -> tuple[int, int]:
    """Chats with messages and an analysis job with a summary, written straight into stack A's database.

    They would need a language model to come about through the API; the backup only has to carry them.
    """
    from models import AnalysisJob, AnalysisSummary, Chat, Message, db, init_db

    init_db(database_url)
    with db.connection_context():
        chat = Chat.create(session=sid, timestamp_ms=1_700_000_000_000, name="Follow-up", tags=["sleep"])
        Message.create(chat=chat, sender="user", text="How did they sleep?", timestamp_ms=1_700_000_000_001)
        Message.create(chat=chat, sender="ai", text="Badly, they said.", timestamp_ms=1_700_000_000_002,
                       prompt_tokens=120, completion_tokens=7, duration_ms=900, is_truncated=False)
        standalone = Chat.create(session=None, timestamp_ms=1_700_000_000_100, name="Ideas", tags=["prep"])
        Message.create(chat=standalone, sender="user", text="Ideas for week four?", timestamp_ms=1_700_000_000_101)
        job = AnalysisJob.create(original_prompt="What about sleep?", short_prompt="Sleep", status="completed",
                                 final_result="Sleep was poor.", created_at_ms=1_700_000_000_200,
                                 completed_at_ms=1_700_000_000_300, model_name="gemma", temperature=0.7)
        AnalysisSummary.create(analysis_job=job, session=sid, summary_text="Poor sleep.", status="completed",
                               prompt_tokens=50, completion_tokens=4, duration_ms=300)
    db.close()
    return job.id, standalone.id


def test_export_import_round_trip(tmp_path, redis_server, models_ready):
    short = clip(AUDIO / "two_speakers.mp3", tmp_path / "short.mp3", 0, 9)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with running_stack(tmp_path / "a", redis_server, workers=[("asr", "asr")]) as a, \
            running_stack(tmp_path / "b", redis_server) as b:
        sid = upload(a, short).json()["sessionId"]
        assert wait_session(a, sid)[0]["status"] == "completed"
        assert a.post("/api/templates", json={"title": "Intake", "text": "Ask about sleep."}).status_code == 201
        edited = a.session.patch(a.url(f"/api/sessions/{sid}/transcript"),
                                 json={"paragraphIndex": 0, "newText": "Quokka edited paragraph."})
        assert edited.status_code == 200, edited.text
        analysis_id, standalone = add_llm_rows(a.env["DATABASE_URL"], sid)
        before = snapshot_of(a, sid, analysis_id, standalone)
        assert before["audio"] == short.read_bytes() and len(before["session"]["chats"]) == 2

        # A snapshot keeps the audio of its sessions even when one is deleted before it is streamed.
        from services import backup

        snapshot = backup.take_snapshot(a.data_dir / "audio", a.data_dir / "tmp")
        answer = a.get("/api/admin/export-data", stream=True, timeout=120)
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"] == "application/x-tar"
        assert TAR_NAME.match(answer.headers["Content-Disposition"]), answer.headers["Content-Disposition"]
        assert a.session.delete(a.url(f"/api/sessions/{sid}")).status_code == 200
        archive = b"".join(answer.iter_content(64 * 1024))
        assert int(answer.headers["Content-Length"]) == len(archive)
        assert a.get(f"/api/sessions/{sid}").status_code == 404
        audio_name = before["session"]["audioPath"]
        assert not (a.data_dir / "audio" / audio_name).exists()
        try:
            late = b"".join(backup.tar_stream(snapshot))
        finally:
            snapshot.close()
        for data in (archive, late):
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                assert {"sessions.json", "chats.json", "messages.json", "templates.json", "transcript_paragraphs.json",
                        "analysis_jobs.json", "analysis_job_sessions.json", "intermediate_summaries.json",
                        "manifest.json", f"uploads/{audio_name}"} <= set(tar.getnames())
                assert tar.extractfile(f"uploads/{audio_name}").read() == short.read_bytes()
                assert [s["id"] for s in json.load(tar.extractfile("sessions.json"))] == [sid]
        wait_until(lambda: not list((a.data_dir / "tmp").glob("export-*")), timeout=10,
                   what="the export's snapshot folder to be removed")

        assert b.get("/api/sessions/").json() == []
        answer = import_tar(b, archive)
        assert answer.status_code == 200, answer.text
        assert answer.json()["message"] == "Import successful. Data has been restored."
        assert snapshot_of(b, sid, analysis_id, standalone) == before
        found = b.get("/api/search", params={"q": "quokka"}).json()  # the index was rebuilt from the rows
        assert [r["sessionId"] for r in found["results"]] == [sid]
        # Ids keep counting after the restored ones.
        assert b.post("/api/templates", json={"title": "New", "text": "x"}).json()["id"] > max(
            t["id"] for t in before["templates"])


# --- 2. unsafe and broken archives ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def guarded(tmp_path_factory, redis_server):
    """A stack holding a restored backup, with 1 MB upload and JSON limits so size checks are cheap."""
    with running_stack(tmp_path_factory.mktemp("guarded"), redis_server, MAX_UPLOAD_MB="1",
                       PARLEY_BACKUP_MAX_JSON_MB="1") as s:
        answer = import_tar(s, tar_bytes(seed_members((AUDIO / "silence.mp3").read_bytes())))
        assert answer.status_code == 200, answer.text
        yield s


def _members(changes: dict | None = None):
    """The seed backup's members with `changes`: name -> None (left out), new bytes, or a function of the rows."""
    members = seed_members((AUDIO / "silence.mp3").read_bytes())
    for name, value in (changes or {}).items():
        if value is None:
            del members[name]
        else:
            members[name] = value(members[name]) if callable(value) else value
    return members


def _drop_column(column):
    def change(rows):
        rows[0].pop(column)
        return rows
    return change


def _rename_column(old, new):
    def change(rows):
        rows[0][new] = rows[0].pop(old)
        return rows
    return change


AUDIO_MEMBER = "uploads/0123456789abcdef.mp3"
UNSAFE = {
    "absolute path": (lambda: tar_bytes(_members(), [(tarfile.TarInfo("/tmp/evil.json"), b"")]),
                      "/tmp/evil.json", "absolute path"),
    "dot-dot": (lambda: tar_bytes(_members(), [(tarfile.TarInfo("uploads/../../evil.mp3"), b"")]),
                "uploads/../../evil.mp3", "'..'"),
    "symlink": (lambda: tar_bytes(_members(), [special("uploads/link.mp3", tarfile.SYMTYPE, "/etc/passwd")]),
                "uploads/link.mp3", "symbolic link"),
    "hard link": (lambda: tar_bytes(_members(), [special("uploads/hard.mp3", tarfile.LNKTYPE, "sessions.json")]),
                  "uploads/hard.mp3", "hard link"),
    "char device": (lambda: tar_bytes(_members(), [special("uploads/null", tarfile.CHRTYPE)]),
                    "uploads/null", "character device"),
    "block device": (lambda: tar_bytes(_members(), [special("uploads/sda", tarfile.BLKTYPE)]),
                     "uploads/sda", "block device"),
    "fifo": (lambda: tar_bytes(_members(), [special("uploads/pipe", tarfile.FIFOTYPE)]), "uploads/pipe", "FIFO"),
    "oversized audio": (lambda: tar_bytes(_members({AUDIO_MEMBER: b"\0" * (1024 * 1024 + 1)})),
                        AUDIO_MEMBER, "over the upload limit"),
    "oversized json": (lambda: tar_bytes(_members({"sessions.json": lambda rows: json.dumps(rows).encode()
                                                   + b" " * (1024 * 1024)})),
                       "sessions.json", "over the limit"),
    "unknown member": (lambda: tar_bytes({**_members(), "notes.txt": b"hello"}), "notes.txt", "unknown member"),
    "bad json": (lambda: tar_bytes(_members({"chats.json": b'[{"id": 3,'})), "chats.json", "not valid JSON"),
    "not a tar": (lambda: b"this is a text file, not a tar archive\n" * 40, "backupFile", "not a tar archive"),
    "missing field": (lambda: tar_bytes(_members({"sessions.json": _drop_column("date")})),
                      "sessions.json", "lacks column(s) date"),
    "wrong field name": (lambda: tar_bytes(_members({"sessions.json": _rename_column("client_name", "clientName")})),
                         "sessions.json", "has unknown column(s) clientName"),
    "missing audio": (lambda: tar_bytes(_members({AUDIO_MEMBER: None})),
                      "sessions.json", "lacks uploads/0123456789abcdef.mp3"),
    "damaged audio": (lambda: tar_bytes(_members({AUDIO_MEMBER: b"not the recording"})),
                      AUDIO_MEMBER, "sha256"),
    "audio path escapes": (lambda: tar_bytes(_members({"sessions.json":
                                                       lambda rows: [{**rows[0], "audio_path": "../x"}]})),
                           "sessions.json", "not a plain file name"),
    "dangling reference": (lambda: tar_bytes(_members({"messages.json": lambda rows: [{**rows[0], "chat_id": 99}]})),
                           "messages.json", "chat_id 99 is not in chats.json"),
    "missing member": (lambda: tar_bytes(_members({"templates.json": None})), "templates.json", "lacks this member"),
}


@pytest.mark.parametrize("case", list(UNSAFE))
def test_unsafe_archive_is_refused_and_nothing_changes(guarded, case):
    build, member, reason = UNSAFE[case]
    before = state(guarded)
    assert [s["id"] for s in before["sessions"]] == [7] and before["audio"][7] == (AUDIO / "silence.mp3").read_bytes()
    answer = import_tar(guarded, build())
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["member"] == member and reason in body["reason"], body
    assert member in body["message"] and "nothing was changed" in body["message"]
    assert state(guarded) == before
    assert not list((guarded.data_dir / "tmp").glob("restore-*")), "a refused archive left its staging folder"


def test_a_version_1_backup_is_restored_with_its_times(guarded):
    """Parley wrote float epoch seconds before its timestamps became milliseconds: such a backup still
    restores, each instant the same."""
    from models import Job

    members = seed_members((AUDIO / "silence.mp3").read_bytes())
    job_id = "0f2b8c1e-1111-4c3a-9d5e-000000000001"
    job = row(Job, id=job_id, session_id=7, status="completed", model_name="tiny.en", created_at_ms=0,
              updated_at_ms=0, started_at_ms=None, finished_at_ms=None)
    for column, seconds in (("created_at", 1_700_000_000.25), ("updated_at", 1_700_000_009.5),
                            ("started_at", 1_700_000_001.125), ("finished_at", 1_700_000_009.5)):
        del job[f"{column}_ms"]
        job[column] = seconds
    members["jobs.json"] = [job]
    session = members["sessions.json"][0]
    session["created_at"] = session.pop("created_at_ms") / 1000
    members["manifest.json"] = {**members["manifest.json"], "version": 1,
                                "counts": {**members["manifest.json"]["counts"], "jobs.json": 1}}
    try:
        answer = import_tar(guarded, tar_bytes(members))
        assert answer.status_code == 200, answer.text
        debug = guarded.get(f"/api/transcribe/debug/{job_id}").json()
        assert (debug["created_at"], debug["started_at"], debug["finished_at"]) == (
            1_700_000_000.25, 1_700_000_001.125, 1_700_000_009.5)
        assert guarded.get(f"/api/transcribe/status/{job_id}").json()["updated_at"] == 1_700_000_009.5
        # A version this server does not know is refused by name.
        members["manifest.json"]["version"] = 3
        refused = import_tar(guarded, tar_bytes(members))
        assert refused.status_code == 400 and "version 3; this server reads 1, 2" in refused.json()["reason"]
    finally:
        assert import_tar(guarded, tar_bytes(seed_members((AUDIO / "silence.mp3").read_bytes()))).status_code == 200


def test_import_needs_the_backup_file(guarded):
    answer = guarded.post("/api/admin/import-data", files={"other": ("x.tar", b"x")})
    assert answer.status_code == 400 and "backupFile is required" in answer.json()["message"]


# --- 3. reset ------------------------------------------------------------------------------------------
def test_reset_all_data(tmp_path, redis_server):
    with running_stack(tmp_path, redis_server) as s:
        assert import_tar(s, tar_bytes(seed_members((AUDIO / "silence.mp3").read_bytes()))).status_code == 200
        assert s.post("/api/templates", json={"title": "Mine", "text": "Mine."}).status_code == 201
        assert s.get("/api/search", params={"q": "marmalade"}).json()["total"] == 1
        # A metadata change queues a search update on `io`; no io worker runs here, so it stays queued.
        assert s.session.put(s.url("/api/sessions/7/metadata"), json={"therapy": "CBT"}).status_code == 200
        assert queue_depth(s, "io") >= 1
        audio_dir = s.data_dir / "audio"
        assert [p.name for p in audio_dir.iterdir()] == ["0123456789abcdef.mp3"]

        answer = s.post("/api/admin/reset-all-data")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["errors"] == []
        deleted = body["deleted"]
        assert (deleted["sessions"], deleted["chats"], deleted["messages"], deleted["templates"],
                deleted["analysisJobs"], deleted["audioFiles"]) == (1, 1, 1, 2, 1, 1)
        assert deleted["queuedMessages"] >= 1
        assert "1 sessions" in body["message"] and "1 audio files" in body["message"]

        assert s.get("/api/sessions/").json() == [] and s.get("/api/sessions/7").status_code == 404
        assert s.get("/api/chats").json() == [] and s.get("/api/analysis-jobs").json() == []
        assert list(audio_dir.iterdir()) == []
        assert s.get("/api/search", params={"q": "marmalade"}).json()["total"] == 0
        assert queue_depth(s, "io") == 0
        assert {t["title"] for t in s.get("/api/templates").json()} == SYSTEM_TITLES
        # The instance keeps working: a backup can be restored right after.
        assert import_tar(s, tar_bytes(seed_members((AUDIO / "silence.mp3").read_bytes()))).status_code == 200
        assert [x["id"] for x in s.get("/api/sessions/").json()] == [7]


# --- 4. the same on PostgreSQL (REPEATABLE READ snapshot, id sequences after a restore) ------------------
def test_round_trip_on_postgres(tmp_path, redis_server, postgres_url):
    from conftest import drop_postgres_database, postgres_database

    other = postgres_database()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        with running_stack(tmp_path / "a", redis_server, postgres_url) as a, \
                running_stack(tmp_path / "b", redis_server, other) as b:
            assert import_tar(a, tar_bytes(seed_members((AUDIO / "silence.mp3").read_bytes()))).status_code == 200
            # The sequences continue after the restored ids instead of colliding with them.
            created = a.post("/api/templates", json={"title": "After restore", "text": "x"})
            assert created.status_code == 201, created.text
            templates = a.get("/api/templates").json()
            assert created.json()["id"] == max(t["id"] for t in templates if t["id"] != created.json()["id"]) + 1
            answer = import_tar(b, export_tar(a))
            assert answer.status_code == 200, answer.text
            for path in ("/api/sessions/", "/api/sessions/7", "/api/sessions/7/transcript", "/api/sessions/7/chats/3",
                         "/api/templates", "/api/analysis-jobs/4"):
                assert b.get(path).json() == a.get(path).json(), path
            assert b.get("/api/sessions/7/audio").content == (AUDIO / "silence.mp3").read_bytes()
    finally:
        drop_postgres_database(other)
