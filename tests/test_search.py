"""Search (contract §6) and reindexing (§8.7), through HTTP on real stacks: web tier + an `io` worker.

Every test runs on three backends:

- `sqlite`: the database backend on SQLite FTS5;
- `postgres`: the database backend on PostgreSQL full text (skips where no server answers, fails in CI);
- `opensearch`: the OpenSearch backend against **osmem-server**, an in-memory *stand-in* for OpenSearch
  from PyPI (no real OpenSearch or Elasticsearch server can be installed here). It answers opensearch-py
  like a cluster would, but it is an imitation: passing here shows that the backend's requests are
  well formed and its results are shaped right, not that a real cluster ranks or analyses text the same.

The corpus is written with the models and indexed with POST /api/admin/reindex-elasticsearch; then the
freshness tests edit it through the API (which queues updates on the `io` worker) and search again.
The tests of one backend run in file order and share the stack: the freshness tests come last.
"""
from __future__ import annotations

import re
import time

import pytest
import requests

from conftest import running_stack, wait_until

FRESH_S = 5  # the index must follow a change within a second or two; a loaded CI machine gets some slack


@pytest.fixture(scope="module", params=["sqlite", "postgres", "opensearch"])
def env(request, tmp_path_factory, redis_server):
    """A stack for one backend, with the corpus indexed; yields (stack, ids)."""
    kind = request.param
    tmp = tmp_path_factory.mktemp(f"search-{kind}")
    extra: dict[str, str] = {}
    osmem = None
    database_url = None
    if kind == "postgres":
        database_url = request.getfixturevalue("postgres_url")
    if kind == "opensearch":
        from osmem_server import OsmemServer

        osmem = OsmemServer.start(freeze=False, japanese=False)  # the in-memory stand-in, not OpenSearch
        extra = {"PARLEY_SEARCH_BACKEND": "opensearch", "OPENSEARCH_URL": osmem.url,
                 "PARLEY_OPENSEARCH_INDEX": "parley-test"}
    try:
        with running_stack(tmp, redis_server, database_url, workers=[("io", "io")], **extra) as stack:
            ids = seed(stack.env["DATABASE_URL"])
            answer = stack.post("/api/admin/reindex-elasticsearch")
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["errors"] == []
            assert body["transcriptsIndexed"] == 5 + 2 + 25
            assert body["messagesIndexed"] == 2
            assert isinstance(body["message"], str)
            yield stack, ids
    finally:
        if osmem is not None:
            osmem.close()


def seed(database_url: str) -> dict:
    from models import Chat, LlmSettings, Message, Paragraph, Session, db, init_db

    init_db(database_url)
    with db.connection_context(), db.atomic():
        def session(client, name, paragraphs):
            s = Session.create(file_name=f"{name}.mp3", client_name=client, session_name=name, status="completed",
                               date="2026-03-01T12:00:00.000Z")
            for idx, (speaker, text) in enumerate(paragraphs):
                Paragraph.create(session=s, idx=idx, start_ms=idx * 10_000, end_ms=idx * 10_000 + 9_000,
                                 text=text, speaker=speaker)
            return s.id

        a = session("Ann", "Intake", [
            ("Alice", "We talked about anxiety and anxiety management at work."),
            ("Bob", "The weather was nice, so we walked in the park."),
            ("Alice", "Her anxiety improved a little after the therapy started."),
            ("Bob", "Someone pasted <script>alert('x')</script> into the notes about gardening."),
            ("Alice", "She enjoys gardening and growing tomatoes on the balcony."),
        ])
        b = session("Ben", "Follow-up", [
            ("Carol", "Panic attacks happen less often now."),
            ("Dan", "Breathing exercises for panic help a lot during the day."),
        ])
        c = session("Cara", "Routine", [("Eve", f"Routine weekly checkin number {n}.") for n in range(25)])
        session_chat = Chat.create(session=a, timestamp_ms=1_700_000_000_000, name=None)
        Message.create(chat=session_chat, sender="ai", text="The intake session is ready for analysis.",
                       timestamp_ms=1_700_000_000_001)
        standalone = Chat.create(session=None, timestamp_ms=1_700_000_000_100, name="Journal", tags=["journal"])
        message = Message.create(chat=standalone, sender="user", text="Notes about anxiety triggers and sleep.",
                                 timestamp_ms=1_700_000_000_101)
        # A configured (remote, unreachable) model, so POST …/messages stores the user's message; no LLM
        # worker runs, so the reply stays queued: these tests only need the stored message.
        LlmSettings.delete().execute()
        LlmSettings.create(id=1, active_model="search-test-model", base_url="http://127.0.0.1:9/v1")
    return {"a": a, "b": b, "c": c, "session_chat": session_chat.id, "chat": standalone.id, "message": message.id}


def search(stack, **params) -> requests.Response:
    return stack.get("/api/search", params=params)


def ok(stack, **params) -> dict:
    answer = search(stack, **params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def ids_of(body: dict) -> list[str]:
    return [r["id"] for r in body["results"]]


def eventually(stack, predicate, what: str, **params) -> dict:
    """Search until `predicate(body)` holds; fails after FRESH_S seconds."""
    started = time.monotonic()
    body = wait_until(lambda: (lambda b: b if predicate(b) else None)(ok(stack, **params)), timeout=FRESH_S,
                      interval=0.1, what=what)
    assert time.monotonic() - started < FRESH_S
    return body


# --- reading ----------------------------------------------------------------------------------------
def test_relevance_order_and_result_shape(env):
    stack, ids = env
    body = ok(stack, q="anxiety")
    assert body["total"] == 3
    assert ids_of(body)[0] == f"{ids['a']}_0"  # the word twice in a short paragraph
    assert set(ids_of(body)) == {f"{ids['a']}_0", f"{ids['a']}_2", str(ids["message"])}
    scores = [r["score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    top = body["results"][0]
    assert top == {
        "id": f"{ids['a']}_0", "type": "transcript", "chatId": None, "sessionId": ids["a"], "sender": None,
        "timestamp": 0, "snippet": top["snippet"], "score": top["score"], "highlights": top["highlights"],
        "clientName": "Ann", "tags": None,
    }
    assert "<mark>anxiety</mark>" in top["snippet"].lower()
    assert top["highlights"]["text"] and all("<mark>" in f for f in top["highlights"]["text"])
    chat_hit = next(r for r in body["results"] if r["type"] == "chat")
    assert chat_hit["chatId"] == ids["chat"] and chat_hit["sessionId"] is None and chat_hit["sender"] == "user"
    assert chat_hit["timestamp"] == 1_700_000_000_101 and chat_hit["tags"] == ["journal"]
    assert chat_hit["clientName"] is None


def test_stemming(env):
    stack, ids = env
    assert ids_of(ok(stack, q="walking")) == [f"{ids['a']}_1"]  # "walked"


def test_phrase(env):
    stack, ids = env
    assert ids_of(ok(stack, q='"panic attacks"')) == [f"{ids['b']}_0"]
    assert ok(stack, q="panic")["total"] == 2
    assert ok(stack, q='"attacks panic"')["total"] == 0


def test_prefix(env):
    stack, ids = env
    assert ids_of(ok(stack, q="tomat*")) == [f"{ids['a']}_4"]
    assert set(ids_of(ok(stack, q="garden*"))) == {f"{ids['a']}_3", f"{ids['a']}_4"}


def test_exclusion(env):
    stack, ids = env
    body = ok(stack, q="anxiety -therapy")
    assert set(ids_of(body)) == {f"{ids['a']}_0", str(ids["message"])}
    assert set(ids_of(ok(stack, q='gardening -"growing tomatoes"'))) == {f"{ids['a']}_3"}


def test_filters(env):
    stack, ids = env
    assert ok(stack, q="panic", clientName="Ben")["total"] == 2
    assert ok(stack, q="panic", clientName="Ann")["total"] == 0
    assert ids_of(ok(stack, q="anxiety", searchType="chat")) == [str(ids["message"])]
    transcript = ok(stack, q="anxiety", searchType="transcript")
    assert transcript["total"] == 2 and all(r["type"] == "transcript" for r in transcript["results"])
    assert ok(stack, q="anxiety", searchType="all")["total"] == 3
    only_filter = ok(stack, clientName="Ben")  # no words: everything of that client
    assert set(ids_of(only_filter)) == {f"{ids['b']}_0", f"{ids['b']}_1"}


def test_pagination(env):
    stack, ids = env
    pages = [ok(stack, q="routine", clientName="Cara", limit=10, **{"from": start}) for start in (0, 10, 20, 30)]
    assert [p["total"] for p in pages] == [25] * 4
    assert [len(p["results"]) for p in pages] == [10, 10, 5, 0]
    seen = [i for p in pages for i in ids_of(p)]
    assert len(seen) == len(set(seen)) == 25
    assert set(seen) == {f"{ids['c']}_{n}" for n in range(25)}
    assert len(ok(stack, q="routine")["results"]) == 20  # the default limit


def test_a_query_matching_more_than_the_rank_window(env):
    """Past the window, only the newest matches are ranked and the total is an estimate, said so; within it,
    results and total are exactly those of ranking every match (what small archives always get)."""
    stack, ids = env
    body = ok(stack, q="routine")
    assert body["total"] == 25 and body["totalIsEstimate"] is False  # 25 matches: far inside the window
    if stack.env.get("PARLEY_SEARCH_BACKEND") == "opensearch":
        return  # OpenSearch counts every match itself; the window is the database backend's
    from models import init_db
    from services.search import parse_query
    from services.search_db import DatabaseBackend, SearchDocument

    init_db(stack.env["DATABASE_URL"])
    query = parse_query("routine")

    def run(window, **kw):
        args = {"limit": 25, "offset": 0, "client_name": None, "search_type": "all", **kw}
        return DatabaseBackend(rank_window=window).search(query, **args)

    every = run(None)
    assert every.total == 25 and not every.total_is_estimate
    wide = run(100)
    assert (wide.results, wide.total, wide.total_is_estimate) == (every.results, 25, False)

    narrow = run(10, limit=5)
    assert narrow.total_is_estimate and 10 < narrow.total <= 50
    row_ids = dict(SearchDocument.select(SearchDocument.doc_key, SearchDocument.id).tuples())
    newest = sorted((r for r in every.results), key=lambda r: row_ids[r["id"]], reverse=True)[:10]
    best_of_newest = sorted(newest, key=lambda r: (-r["score"], -row_ids[r["id"]]))[:5]
    assert [r["id"] for r in narrow.results] == [r["id"] for r in best_of_newest]
    assert [r["score"] for r in narrow.results] == pytest.approx([r["score"] for r in best_of_newest])
    assert all(r["highlights"] for r in narrow.results)  # snippets as on the exact path
    second = run(10, limit=5, offset=5)
    assert not {r["id"] for r in second.results} & {r["id"] for r in narrow.results}


def test_a_phrase_on_a_large_archive_is_found_under_a_deadline(env):
    """On SQLite past search_bounded.SMALL_INDEX documents (here 0), a query with a phrase collects its newest
    matches under a deadline and scores them with bm25's formula, each phrase counted once per paragraph: where
    that holds, the scores and order are bm25()'s own; a scan out of time says its total is an estimate."""
    stack, ids = env
    if stack.env.get("PARLEY_SEARCH_BACKEND") == "opensearch" or "postgres" in stack.env["DATABASE_URL"]:
        return  # the bounded path is SQLite's: PostgreSQL's ts_rank needs no index-wide statistics
    from models import init_db
    from services import search_bounded
    from services.search import parse_query
    from services.search_db import DatabaseBackend

    init_db(stack.env["DATABASE_URL"])
    args = {"limit": 20, "offset": 0, "client_name": None, "search_type": "all"}
    for q in ('"routine weekly"', '"panic attacks"', 'anxiety "the therapy"', '"routine weekly" -"number 7"',
              '"attacks panic"'):
        exact = DatabaseBackend(rank_window=None).search(parse_query(q), **args)
        large = DatabaseBackend(small_index=0).search(parse_query(q), **args)
        assert [r["id"] for r in large.results] == [r["id"] for r in exact.results], q
        assert [r["score"] for r in large.results] == pytest.approx([r["score"] for r in exact.results]), q
        assert (large.total, large.total_is_estimate) == (exact.total, False), q
        assert all(r["highlights"] for r in large.results), q
    filtered = DatabaseBackend(small_index=0).search(parse_query('"routine weekly"'),
                                                     **{**args, "client_name": "Ann"})
    assert (filtered.total, filtered.results) == (0, [])

    original = search_bounded.SCAN_BUDGET_S, search_bounded.PAGE_PATIENCE_S
    try:
        search_bounded.SCAN_BUDGET_S = 0.0  # out of time at once, but a page not yet full is looked for longer
        rare = DatabaseBackend(small_index=0).search(parse_query('"panic attacks"'), **args)
        assert ([r["id"] for r in rare.results], rare.total, rare.total_is_estimate) == ([f"{ids['b']}_0"], 1, False)
        search_bounded.PAGE_PATIENCE_S = 0.0
        cut = DatabaseBackend(small_index=0).search(parse_query('"routine weekly"'), **args)
    finally:
        search_bounded.SCAN_BUDGET_S, search_bounded.PAGE_PATIENCE_S = original
    assert cut.total_is_estimate and len(cut.results) < 25 and cut.total >= len(cut.results)


def test_postgres_reads_a_bounded_slice_yet_finds_a_rare_term(env, monkeypatch):
    """On PostgreSQL a query expected to match more than the window is looked for among the newest ids
    (search_db.NEWEST_ROWS); a term with less than a page there is looked for everywhere, so it is found."""
    stack, ids = env
    if "postgres" not in stack.env["DATABASE_URL"] or stack.env.get("PARLEY_SEARCH_BACKEND") == "opensearch":
        return
    from models import init_db
    from services import search_db
    from services.search import parse_query

    init_db(stack.env["DATABASE_URL"])
    monkeypatch.setattr(search_db, "NEWEST_ROWS", 3)  # the chat messages' and the last paragraphs' ids
    args = {"offset": 0, "client_name": None, "search_type": "all"}
    rare = search_db.DatabaseBackend(rank_window=1).search(parse_query("panic"), limit=1, **args)
    assert rare.total_is_estimate  # two matches: more than a window of one
    assert [r["id"] for r in rare.results][0] in {f"{ids['b']}_0", f"{ids['b']}_1"}
    exact = search_db.DatabaseBackend(rank_window=None).search(parse_query("panic"), limit=20, **args)
    bounded = search_db.DatabaseBackend(rank_window=5).search(parse_query("panic"), limit=20, **args)
    assert (bounded.results, bounded.total, bounded.total_is_estimate) == (exact.results, 2, False)
    many = search_db.DatabaseBackend(rank_window=5).search(parse_query("routine"), limit=3, **args)
    assert many.total_is_estimate and len(many.results) == 3 and many.total > 5
    scores = [r["score"] for r in many.results]
    assert scores == sorted(scores, reverse=True)


def test_snippets_are_escaped(env):
    stack, ids = env
    hit = next(r for r in ok(stack, q="pasted")["results"])
    assert hit["id"] == f"{ids['a']}_3"
    for html in [hit["snippet"], *hit["highlights"].get("text", [])]:
        assert "<script" not in html.lower()
        assert re.sub(r"</?mark>", "", html).count("<") == 0, html
    assert "&lt;script&gt;" in hit["snippet"]
    plain = ok(stack, clientName="Ann", searchType="transcript", limit=100)  # filter only: plain snippets
    escaped = next(r for r in plain["results"] if r["id"] == f"{ids['a']}_3")
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in escaped["snippet"]


def test_empty_query_answer(env):
    stack, _ = env
    assert ok(stack) == {"query": "No query or filters provided", "results": [], "total": 0}
    assert ok(stack, q="  ", clientName="") == {"query": "No query or filters provided", "results": [], "total": 0}


def test_parameters_read_as_they_always_were(env):
    """An empty limit or from is the default, spaces around a value are fine, and a refused value is named."""
    stack, _ = env
    everything = ok(stack, q="anxiety")
    assert ok(stack, q="anxiety", limit="", **{"from": ""}) == everything
    assert ok(stack, q="anxiety", limit=" 20 ", searchType=" all ") == everything
    assert ok(stack, q="anxiety", limit="1")["results"] == everything["results"][:1]
    refused = search(stack, q="anxiety", limit="101").json()["message"]
    assert refused.startswith("invalid request: limit: ") and "100" in refused, refused


@pytest.mark.parametrize("params", [
    {"q": "anxiety", "limit": "0"}, {"q": "anxiety", "limit": "101"}, {"q": "anxiety", "limit": "ten"},
    {"q": "anxiety", "from": "-1"}, {"q": "anxiety", "from": "x"}, {"q": "anxiety", "searchType": "audio"},
    {"q": '"unbalanced phrase'}, {"q": "-"}, {"q": "anxiety - therapy"}, {"q": "-anxiety"}, {"q": "-anxiety -panic"},
    {"q": "*"}, {"q": "anx*ety"}, {"q": '""'}, {"q": "!!! ???"}, {"q": "x" * 501},
    {"q": '"panic attacks*"'},
], ids=lambda p: repr(p)[:40])
def test_bad_requests_are_400(env, params):
    stack, _ = env
    answer = search(stack, **params)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["error"] == "BadRequestError" and body["message"]


# --- freshness: changes through the API show up within a second or two -----------------------------------
def test_fresh_after_paragraph_edit(env):
    stack, ids = env
    answer = stack.session.patch(stack.url(f"/api/sessions/{ids['a']}/transcript"),
                                 json={"paragraphIndex": 1, "newText": "We discussed the zebra crossing."})
    assert answer.status_code == 200, answer.text
    eventually(stack, lambda b: ids_of(b) == [f"{ids['a']}_1"], "edited text searchable", q="zebra")
    eventually(stack, lambda b: b["total"] == 0, "old text gone", q="weather")


def test_fresh_after_paragraph_delete(env):
    stack, ids = env
    assert ok(stack, q="tomatoes")["total"] == 1
    answer = stack.session.delete(stack.url(f"/api/sessions/{ids['a']}/transcript/4"))
    assert answer.status_code == 200, answer.text
    eventually(stack, lambda b: b["total"] == 0, "deleted paragraph gone", q="tomatoes")


def test_fresh_after_speaker_renames(env):
    stack, ids = env
    answer = stack.session.patch(stack.url(f"/api/sessions/{ids['a']}/speakers"),
                                 json=[{"from": "Alice", "to": "Zelda"}])
    assert answer.status_code == 200, answer.text
    eventually(stack, lambda b: set(ids_of(b)) == {f"{ids['a']}_0", f"{ids['a']}_2"}, "renamed speaker",
               q="zelda", searchType="transcript")
    eventually(stack, lambda b: b["total"] == 0, "old speaker name gone", q="alice")
    answer = stack.session.patch(stack.url(f"/api/sessions/{ids['a']}/transcript/1/speaker"),
                                 json={"speaker": "Quentin"})
    assert answer.status_code == 200, answer.text
    eventually(stack, lambda b: ids_of(b) == [f"{ids['a']}_1"], "one paragraph's speaker", q="quentin")


def test_fresh_after_metadata_change(env):
    stack, ids = env
    answer = stack.session.put(stack.url(f"/api/sessions/{ids['a']}/metadata"), json={"clientName": "Annabel"})
    assert answer.status_code == 200, answer.text
    body = eventually(stack, lambda b: b["total"] == 2, "new client name", q="anxiety", clientName="Annabel")
    assert all(r["clientName"] == "Annabel" for r in body["results"])
    assert ok(stack, q="anxiety", clientName="Ann")["total"] == 0
    # The session's chat messages carry its client name too.
    eventually(stack, lambda b: b["total"] == 1, "session chat under the new client", q="intake",
               clientName="Annabel", searchType="chat")


def test_fresh_after_message_stored(env):
    stack, ids = env
    with stack.session.post(stack.url(f"/api/chats/{ids['chat']}/messages"), json={"text": "What about nightmares?"},
                            stream=True, timeout=30) as answer:
        assert answer.status_code == 200, answer.text
        next(answer.iter_lines())  # the stream started: the message is stored
    body = eventually(stack, lambda b: b["total"] == 1, "stored message searchable", q="nightmares")
    hit = body["results"][0]
    assert hit["type"] == "chat" and hit["sender"] == "user" and hit["chatId"] == ids["chat"]


def test_fresh_after_chat_tagged(env):
    stack, ids = env
    answer = stack.session.patch(stack.url(f"/api/chats/{ids['chat']}/details"),
                                 json={"name": "Sleep diary", "tags": ["insomnia", "journal"]})
    assert answer.status_code == 200, answer.text
    body = eventually(stack, lambda b: b["total"] >= 1 and all(r["tags"] == ["insomnia", "journal"]
                                                               for r in b["results"]),
                      "new tags", q="anxiety", searchType="chat")
    assert ids_of(body) == [str(ids["message"])]
    eventually(stack, lambda b: b["total"] >= 1, "tags searchable", q="insomnia", searchType="chat")


def test_removed_after_chat_delete(env):
    stack, ids = env
    answer = stack.session.delete(stack.url(f"/api/chats/{ids['chat']}"))
    assert answer.status_code == 200, answer.text
    eventually(stack, lambda b: b["total"] == 0, "deleted chat gone", q="anxiety", searchType="chat")


def test_removed_after_session_delete(env):
    stack, ids = env
    assert ok(stack, q="panic")["total"] == 2
    answer = stack.session.delete(stack.url(f"/api/sessions/{ids['b']}"))
    assert answer.status_code == 200, answer.text
    eventually(stack, lambda b: b["total"] == 0, "deleted session gone", q="panic")
    eventually(stack, lambda b: b["total"] == 0, "nor under its client", clientName="Ben")


def test_reindex_matches_incremental_state(env):
    stack, ids = env
    before = {q: ok(stack, q=q, limit=100) for q in ("anxiety", "zelda", "routine", "intake")}
    answer = stack.post("/api/admin/reindex-elasticsearch")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    # a: 4 live paragraphs, b deleted, c: 25; the session chat's greeting (the standalone chat is gone).
    assert (body["transcriptsIndexed"], body["messagesIndexed"], body["errors"]) == (4 + 25, 1, [])
    for q, expected in before.items():
        after = ok(stack, q=q, limit=100)
        assert (after["total"], sorted(ids_of(after))) == (expected["total"], sorted(ids_of(expected))), q


# --- a finished transcription is indexed (SQLite only: it runs a real Whisper model on the CPU) ------------
def test_transcription_is_indexed_when_completed(tmp_path, redis_server, models_ready):
    from conftest import AUDIO

    with running_stack(tmp_path, redis_server, workers=[("asr", "asr"), ("io", "io")], PARLEY_WARMUP="0") as stack:
        with open(AUDIO / "two_speakers.mp3", "rb") as fh:
            answer = stack.post("/api/sessions/upload", files={"audioFile": ("two_speakers.mp3", fh, "audio/mpeg")},
                                data={"clientName": "Tess", "sessionName": "Sleep", "date": "2026-03-02",
                                      "sessionType": "individual", "therapy": "CBT", "numSpeakers": "0"})
        assert answer.status_code == 202, answer.text
        session_id = answer.json()["sessionId"]
        wait_until(lambda: stack.get(f"/api/sessions/{session_id}").json()["status"] in ("completed", "failed"),
                   timeout=300, interval=0.5, what="transcription")
        assert stack.get(f"/api/sessions/{session_id}").json()["status"] == "completed"
        body = eventually(stack, lambda b: b["total"] >= 1, "transcript indexed", q="tired", clientName="Tess")
        assert all(r["sessionId"] == session_id for r in body["results"])
        assert body["results"][0]["id"].startswith(f"{session_id}_")
        # ... and its greeting chat too
        eventually(stack, lambda b: b["total"] == 1, "greeting indexed", q="transcribed", searchType="chat",
                   clientName="Tess")
