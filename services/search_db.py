"""The database search backend: SQLite FTS5, or PostgreSQL full text when DATABASE_URL is PostgreSQL.

Tables come from migrations/0004_search.py. Every update replaces all documents of one session or one
chat in one transaction, under a lock for that key (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction
advisory lock), so two workers indexing the same session cannot leave a mix of old and new rows.
"""
from __future__ import annotations

import json
import zlib
from contextlib import contextmanager

import peewee

from models.db import db
from services import search_base as s
from services import search_bounded as bounded

BM25_WEIGHTS = (1.0, 0.4)  # text, meta
HEADLINE_OPTIONS = (f"StartSel={s.MARK_OPEN}, StopSel={s.MARK_CLOSE}, MaxFragments=2, MaxWords=35, MinWords=12, "
                    'FragmentDelimiter=" ... "')
LOCK_BASE = 7_460_500
# A query matching more documents than this is ranked among its RANK_WINDOW most recently indexed matches, and
# its total is extrapolated from how densely they lie (SearchPage.total_is_estimate). Below it, the ranking and
# the count are exact. Measured by scripts/bench/search.py at 500,000 paragraphs: ranking and counting every
# match of a common word or prefix cost up to 100 ms on SQLite and 350 ms on PostgreSQL.
RANK_WINDOW = 2000
# On PostgreSQL, a query expected to match more than RANK_WINDOW documents is looked for among the documents of
# this many newest ids: reading them costs about 15 ms at 500,000 paragraphs (scripts/bench/search.py).
NEWEST_ROWS = 20_000
LT, GT = "\ue002", "\ue003"  # stand-ins for < and > while PostgreSQL builds a headline


class SearchDocument(peewee.Model):
    doc_key = peewee.TextField(unique=True)
    type = peewee.TextField()
    session_id = peewee.BigIntegerField(null=True)
    chat_id = peewee.BigIntegerField(null=True)
    sender = peewee.TextField(null=True)
    speaker = peewee.TextField(null=True)
    timestamp = peewee.BigIntegerField(default=0)
    client_name = peewee.TextField(null=True)
    session_name = peewee.TextField(null=True)
    tags = peewee.TextField(null=True)
    text = peewee.TextField(default="")
    meta = peewee.TextField(default="")

    class Meta:
        database = db
        table_name = "search_document"


def is_postgres() -> bool:
    return isinstance(db.obj, peewee.PostgresqlDatabase)


# --- query translation ----------------------------------------------------------------------------
def fts5_expression(query: s.Query) -> str:
    """The FTS5 MATCH expression: every word a quoted string, so no user input is FTS5 syntax."""
    def term(t: s.Term) -> str:
        quoted = '"' + " ".join(t.words) + '"'
        return quoted + (" *" if t.prefix else "")

    expr = " AND ".join(term(t) for t in query.positive)
    for t in query.negative:
        expr = f"({expr}) NOT {term(t)}"
    return expr


def tsquery_expression(query: s.Query) -> str:
    """A to_tsquery('english', …) input: quoted lexemes, `:*` prefixes, `<->` phrases, `!` exclusions.

    Words are \\w+ runs, so they hold no quote, backslash or operator character.
    """
    def term(t: s.Term) -> str:
        parts = [f"'{w}'" for w in t.words]
        if t.prefix:
            parts[-1] += ":*"
        body = " <-> ".join(parts)
        body = f"({body})" if len(parts) > 1 else body
        return f"!{body}" if t.negated else body

    return " & ".join(term(t) for t in query.terms)


# --- the backend ----------------------------------------------------------------------------------
class DatabaseBackend(s.Backend):
    """rank_window: how many matches a query ranks at most (default RANK_WINDOW); None ranks and counts every
    match, as before the window existed (the search benchmark's baseline).
    small_index: on SQLite, past how many documents a query with a phrase takes the bounded path of
    services.search_bounded (default search_bounded.SMALL_INDEX)."""

    name = "database"

    def __init__(self, *, rank_window: int | None = RANK_WINDOW, small_index: int = bounded.SMALL_INDEX):
        self.rank_window = rank_window
        self.small_index = small_index

    # writing
    @contextmanager
    def _transaction(self, key: str):
        if is_postgres():
            with db.atomic():
                db.execute_sql("SELECT pg_advisory_xact_lock(%s, %s)",
                               (LOCK_BASE, zlib.crc32(key.encode()) & 0x7FFFFFFF))
                yield
        else:
            with db.atomic("IMMEDIATE"):
                yield

    def _replace(self, key: str, where, load) -> list[dict]:
        """Replace the documents matching `where` with `load()`'s (read under the lock, so never stale)."""
        with self._transaction(key):
            docs = load() if load else None
            self._delete(where)
            for doc in docs or []:
                self._insert(doc)
        return docs or []

    def _delete(self, where) -> None:
        if not is_postgres():
            ids = SearchDocument.select(SearchDocument.id).where(where)
            db.execute_sql(f"DELETE FROM search_fts WHERE rowid IN ({_sql(ids)})", _params(ids))
        SearchDocument.delete().where(where).execute()

    def _insert(self, doc: dict) -> None:
        row = SearchDocument.create(
            doc_key=doc["id"], type=doc["type"], session_id=doc.get("sessionId"), chat_id=doc.get("chatId"),
            sender=doc.get("sender"), speaker=doc.get("speaker"), timestamp=doc.get("timestamp") or 0,
            client_name=doc.get("clientName"), session_name=doc.get("sessionName"),
            tags=json.dumps(doc["tags"]) if doc.get("tags") else None, text=doc["text"], meta=doc.get("meta", ""))
        if not is_postgres():
            db.execute_sql("INSERT INTO search_fts (rowid, text, meta) VALUES (?, ?, ?)",
                           (row.id, doc["text"], doc.get("meta", "")))

    def index_session(self, session_id: int) -> int:
        with db.connection_context():
            # The session's transcript and its chats' messages (their client name comes from the session).
            return len(self._replace(f"session:{session_id}", SearchDocument.session_id == session_id,
                                     lambda: s.session_documents(session_id)))

    def index_chat(self, chat_id: int) -> int:
        with db.connection_context():
            return len(self._replace(f"chat:{chat_id}", (SearchDocument.chat_id == chat_id)
                                     & (SearchDocument.type == "chat"), lambda: s.chat_documents(chat_id)))

    def remove_session(self, session_id: int) -> None:
        with db.connection_context():
            self._replace(f"session:{session_id}", SearchDocument.session_id == session_id, None)

    def remove_chat(self, chat_id: int) -> None:
        with db.connection_context():
            self._replace(f"chat:{chat_id}", (SearchDocument.chat_id == chat_id) & (SearchDocument.type == "chat"),
                          None)

    def rebuild(self) -> dict:
        counts = {"transcriptsIndexed": 0, "messagesIndexed": 0, "errors": []}
        with db.connection_context():
            with db.atomic():
                if not is_postgres():
                    db.execute_sql("DELETE FROM search_fts")
                SearchDocument.delete().execute()
            work = [("session", i) for i in s.all_session_ids()] + [("chat", i) for i in s.standalone_chat_ids()]
            for kind, ident in work:
                try:
                    load = ((lambda i=ident: s.session_documents(i)) if kind == "session"
                            else (lambda i=ident: s.chat_documents(i)))
                    key_where = (SearchDocument.session_id == ident if kind == "session"
                                 else (SearchDocument.chat_id == ident) & (SearchDocument.type == "chat"))
                    docs = self._replace(f"{kind}:{ident}", key_where, load)
                except Exception as exc:  # noqa: BLE001  (reported to the caller, the rest goes on)
                    counts["errors"].append(f"{kind} {ident}: {type(exc).__name__}: {exc}")
                    continue
                for doc in docs or []:
                    counts["transcriptsIndexed" if doc["type"] == "transcript" else "messagesIndexed"] += 1
        return counts

    # reading
    def _filters(self, client_name: str | None, search_type: str, alias: str = "d"):
        clauses, params = [], []
        if client_name:
            clauses.append(f"{alias}.client_name = {self._ph()}")
            params.append(client_name)
        if search_type in ("chat", "transcript"):
            clauses.append(f"{alias}.type = {self._ph()}")
            params.append(search_type)
        return clauses, params

    @staticmethod
    def _ph() -> str:
        return "%s" if is_postgres() else "?"

    def search(self, query: s.Query, *, limit: int, offset: int, client_name: str | None,
               search_type: str) -> s.SearchPage:
        with db.connection_context():
            if not query:
                return s.SearchPage(*self._browse(limit=limit, offset=offset, client_name=client_name,
                                                  search_type=search_type))
            window = self.rank_window if self.rank_window and offset + limit <= self.rank_window else None
            if is_postgres():
                return self._search_postgres(query, limit, offset, client_name, search_type, window)
            return self._search_sqlite(query, limit, offset, client_name, search_type, window)

    def _browse(self, *, limit, offset, client_name, search_type):
        clauses, params = self._filters(client_name, search_type)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        ph = self._ph()
        total = db.execute_sql(f"SELECT count(*) FROM search_document d {where}", params).fetchone()[0]
        rows = db.execute_sql(
            f"SELECT {COLUMNS}, NULL, NULL FROM search_document d {where} "
            f"ORDER BY d.timestamp DESC, d.id DESC LIMIT {ph} OFFSET {ph}", [*params, limit, offset]).fetchall()
        return [_result(r) for r in rows], total

    def _search_sqlite(self, query, limit, offset, client_name, search_type, window):
        clauses, params = self._filters(client_name, search_type)
        where = " AND ".join(["search_fts MATCH ?", *clauses])
        match = fts5_expression(query)
        base = f"FROM search_fts JOIN search_document d ON d.id = search_fts.rowid WHERE {where}"
        weights = ", ".join(str(w) for w in BM25_WEIGHTS)
        try:
            if window and any(t.is_phrase for t in query.terms):
                documents, average_length = bounded.index_size()
                if documents > self.small_index:
                    return self._search_sqlite_bounded(query, match, clauses, params, limit, offset, window,
                                                       documents, average_length)
            if window:
                # Newest matches first: FTS5 walks its doclists backwards and stops after window + 1 rows,
                # scoring each with bm25 (the same score as a full ranking: bm25 uses index-wide statistics).
                # Without filters the documents table is left out: joining it doubles the cost of a prefix.
                source = base if clauses else "FROM search_fts WHERE search_fts MATCH ?"
                found = db.execute_sql(f"SELECT search_fts.rowid, -bm25(search_fts, {weights}) {source} "
                                       f"ORDER BY search_fts.rowid DESC LIMIT ?",
                                       [match, *params, window + 1]).fetchall()
                if len(found) > window:
                    return _window_page(found[:window], limit, offset, lambda ids: _fetch_sqlite(match, ids),
                                        total=_extrapolated_total([i for i, _ in found[:window]]))
                total = len(found)  # every match was seen: the exact ranking below costs at most `window` rows
            else:
                total = db.execute_sql(f"SELECT count(*) {base}", [match, *params]).fetchone()[0]
            rows = db.execute_sql(
                f"SELECT {COLUMNS}, -bm25(search_fts, {weights}) AS score, "
                f"snippet(search_fts, 0, ?, ?, ' ... ', 40) {base} "
                f"ORDER BY bm25(search_fts, {weights}), d.timestamp DESC LIMIT ? OFFSET ?",
                [s.MARK_OPEN, s.MARK_CLOSE, match, *params, limit, offset]).fetchall()
        except peewee.OperationalError as exc:  # a syntax error would be ours; say so rather than 500
            raise s.SearchQueryError(f"the search engine rejected the query: {exc}") from None
        return s.SearchPage([_result(r) for r in rows], total)

    def _search_sqlite_bounded(self, query, match, clauses, params, limit, offset, window, documents,
                               average_length):
        """A query with a phrase on a large archive: its newest matches found under a deadline and scored by
        services.search_bounded (see there why bm25() itself costs too much here)."""
        where = " AND ".join(["search_fts MATCH ?", "search_fts.rowid < ?", *clauses])
        source = "FROM search_fts JOIN search_document d ON d.id = search_fts.rowid" if clauses else "FROM search_fts"
        sql = f"SELECT search_fts.rowid {source} WHERE {where} ORDER BY search_fts.rowid DESC LIMIT ?"
        scan = bounded.newest(sql, [match, 1 << 62, *params, window + 1], seconds=bounded.SCAN_BUDGET_S)
        if not scan.complete and len(scan.ids) < offset + limit:  # a rare phrase: find a page's worth
            more = bounded.newest(sql, [match, scan.ids[-1] if scan.ids else 1 << 62, *params,
                                        window + 1 - len(scan.ids)], seconds=bounded.PAGE_PATIENCE_S)
            scan = bounded.Scan(scan.ids + more.ids, more.complete)
        found = scan.ids[:window]
        exact = scan.complete and len(scan.ids) <= window
        first_id = _first_id()
        total = len(found) if exact else bounded.extrapolated_total(found, first_id=first_id)
        positive = query.positive
        if len(positive) == 1 and not clauses and not query.negative:
            hits = [total]
        else:  # each term's own count weighs it, as bm25 does
            hits = [bounded.document_count(fts5_expression(s.Query([t])), first_id=first_id,
                                           seconds=bounded.STATS_BUDGET_S / len(positive)) for t in positive]
        scored = bounded.scores(found, hits, documents=documents, average_length=average_length)
        return _window_page([(i, scored[i]) for i in found], limit, offset, lambda ids: _fetch_sqlite(match, ids),
                            total=total, total_is_estimate=not exact)

    def _search_postgres(self, query, limit, offset, client_name, search_type, window):
        clauses, params = self._filters(client_name, search_type)
        where = " AND ".join(["d.tsv @@ q.query", *clauses])
        tsq = tsquery_expression(query)
        base = f"FROM search_document d, to_tsquery('english', %s) AS q(query) WHERE {where}"
        # ts_headline drops what its parser takes for HTML tags: hide < and > from it.
        headline = "ts_headline('english', replace(replace(d.text, '<', %s), '>', %s), query, %s)"
        try:
            with db.atomic():
                if window:
                    found, total, exact = self._postgres_matches(tsq, clauses, params, window, need=offset + limit)

                    def fetch(ids):
                        return {row[-1]: row[:-1] for row in db.execute_sql(
                            f"SELECT {COLUMNS}, NULL, {headline}, d.id FROM search_document d, "
                            f"to_tsquery('english', %s) AS q(query) WHERE d.id = ANY(%s)",
                            [LT, GT, HEADLINE_OPTIONS, tsq, ids]).fetchall()}
                    # The order of the ranked query below: score, then the newest timestamp, then the newest id.
                    return _window_page(found, limit, offset, fetch, total=total, total_is_estimate=not exact,
                                        key=lambda r: (-r[1], -r[2], -r[0]))
                total = db.execute_sql(f"SELECT count(*) {base}", [tsq, *params]).fetchone()[0]
                rows = db.execute_sql(
                    f"SELECT {COLUMNS}, score, {headline} FROM ("
                    f"SELECT d.*, q.query, ts_rank(d.tsv, q.query) AS score {base} "
                    f"ORDER BY score DESC, d.timestamp DESC, d.id DESC LIMIT %s OFFSET %s) AS d "
                    f"ORDER BY score DESC, d.timestamp DESC, d.id DESC",
                    [LT, GT, HEADLINE_OPTIONS, tsq, *params, limit, offset]).fetchall()
        except peewee.ProgrammingError as exc:
            raise s.SearchQueryError(f"the search engine rejected the query: {exc}") from None
        return s.SearchPage([_result(r) for r in rows], total)

    @staticmethod
    def _postgres_matches(tsq, clauses, params, window, *, need):
        """(matches as (id, ts_rank, timestamp) newest first, total, whether both are exact) of a query, reading
        a bounded number of rows: all matches when the planner expects at most `window`, else those among the
        documents of the NEWEST_ROWS newest ids (a plain backward scan of the primary key stops early for a
        common word, but reads ~100,000 rows to find 2,000 of a word in 2% of them). A slice holding less than
        `need` matches (a page) gives way to reading every match wherever it is, so a rare term is still found."""
        where = " AND ".join(["d.tsv @@ q.query", *clauses])
        matches = (f"SELECT d.id, ts_rank(d.tsv, q.query), d.timestamp FROM search_document d, "
                   f"to_tsquery('english', %s) AS q(query) WHERE {where} LIMIT %s")
        plan = db.execute_sql(f"EXPLAIN (FORMAT JSON) {matches}", [tsq, *params, window + 1]).fetchone()[0]
        if plan[0]["Plan"]["Plan Rows"] <= window:
            every = db.execute_sql(matches, [tsq, *params, window + 1]).fetchall()
            if len(every) <= window:
                return sorted(every, reverse=True), len(every), True
        newest, first = db.execute_sql("SELECT max(id), min(id) FROM search_document").fetchone()
        oldest = max(first or 1, (newest or 0) - NEWEST_ROWS + 1)
        found = db.execute_sql(
            f"SELECT d.id, ts_rank(d.tsv, q.query), d.timestamp FROM search_document d, "
            f"to_tsquery('english', %s) AS q(query) WHERE d.id >= %s AND {where} ORDER BY d.id DESC LIMIT %s",
            [tsq, oldest, *params, window + 1]).fetchall()
        if len(found) > window:
            return found[:window], _extrapolated_total([r[0] for r in found[:window]], first_id=first), False
        if oldest == (first or 1):  # the slice was the whole archive
            return found, len(found), True
        total = max(len(found), round(len(found) / (newest - oldest + 1) * (newest - first + 1)))
        if len(found) < need:
            every = db.execute_sql(matches, [tsq, *params, window + 1]).fetchall()
            if len(every) <= window:
                return sorted(every, reverse=True), len(every), True
            return sorted(every[:window], reverse=True), max(total, window + 1), False
        return found, total, False


COLUMNS = ("d.doc_key, d.type, d.chat_id, d.session_id, d.sender, d.timestamp, d.client_name, d.tags, d.text")


def _window_page(found, limit, offset, fetch, *, total: int, total_is_estimate: bool = True,
                 key=lambda r: (-r[1], -r[0])) -> s.SearchPage:
    """The page of the best-scored of the matches `found` ((id, score, …), higher scores better; ties go to the
    newest unless `key` orders them otherwise), its rows read by `fetch(ids) -> {id: row}`."""
    ranked = sorted(found, key=key)[offset:offset + limit]
    rows = fetch([r[0] for r in ranked]) if ranked else {}
    results = [_result(rows[r[0]][:9] + (r[1],) + rows[r[0]][10:]) for r in ranked if r[0] in rows]
    return s.SearchPage(results, total, total_is_estimate=total_is_estimate)


def _first_id() -> int:
    return db.execute_sql("SELECT min(id) FROM search_document").fetchone()[0] or 1


def _extrapolated_total(ids: list[int], *, first_id: int | None = None) -> int:
    """How many documents match in all, from a full window of their newest ids (newest first): more than the
    window, since a match past it was seen."""
    return max(len(ids) + 1, bounded.extrapolated_total(ids, first_id=first_id or _first_id()))


def _fetch_sqlite(match: str, ids: list[int]) -> dict:
    """{id: result row with its snippet} of the documents `ids`, marked for the FTS5 expression `match`.

    Snippets come from the full-text table alone, over the ids' range: joined with the documents table, SQLite
    would evaluate the whole MATCH once per document.
    """
    marks = ", ".join("?" * len(ids))
    snippets = dict(db.execute_sql(
        f"SELECT search_fts.rowid, snippet(search_fts, 0, ?, ?, ' ... ', 40) FROM search_fts "
        f"WHERE search_fts MATCH ? AND search_fts.rowid BETWEEN ? AND ? AND +search_fts.rowid IN ({marks})",
        [s.MARK_OPEN, s.MARK_CLOSE, match, min(ids), max(ids), *ids]).fetchall())
    rows = db.execute_sql(f"SELECT {COLUMNS}, d.id FROM search_document d WHERE d.id IN ({marks})", ids).fetchall()
    return {row[-1]: row[:-1] + (None, snippets[row[-1]]) for row in rows if row[-1] in snippets}


def _result(row) -> dict:
    key, type_, chat_id, session_id, sender, timestamp, client_name, tags, text, score, marked = row
    doc = {"id": key, "type": type_, "chatId": chat_id, "sessionId": session_id, "sender": sender,
           "timestamp": timestamp, "clientName": client_name, "tags": json.loads(tags) if tags else None,
           "text": text}
    marked = marked.replace(LT, "<").replace(GT, ">") if marked else marked
    fragments = [f for f in marked.split(" ... ") if f] if marked else None
    return s.result(doc, score=score, fragments=fragments)


def _sql(query) -> str:
    return query.sql()[0]


def _params(query) -> list:
    return list(query.sql()[1])
