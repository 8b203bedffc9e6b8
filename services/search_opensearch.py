"""The OpenSearch search backend (opensearch-py): one index, an English analyser, bulk indexing.

Only standard OpenSearch APIs are used (index creation with mappings, `_bulk`, `_delete_by_query`,
`_search` with `simple_query_string`, filters and highlighting), so any OpenSearch 2.x/3.x cluster works.
The test suite runs it against `osmem-server`, an in-memory stand-in; nothing here depends on it.
"""
from __future__ import annotations

import logging

from services import search_base as s

log = logging.getLogger(__name__)

MAPPINGS = {
    "dynamic": "strict",
    "properties": {
        "id": {"type": "keyword"},
        "type": {"type": "keyword"},
        "chatId": {"type": "long"},
        "sessionId": {"type": "long"},
        "sender": {"type": "keyword"},
        "speaker": {"type": "keyword"},
        "timestamp": {"type": "long"},
        "clientName": {"type": "keyword"},
        "sessionName": {"type": "keyword"},
        "tags": {"type": "keyword"},
        "text": {"type": "text", "analyzer": "english"},
        "meta": {"type": "text", "analyzer": "english"},
    },
}
SETTINGS = {"number_of_shards": 1, "number_of_replicas": 0}
FIELDS = ["text^2", "meta"]


def simple_query(query: s.Query) -> str:
    """`simple_query_string` syntax from the parsed query; words are \\w+ runs, so they hold no operator."""
    def term(t: s.Term) -> str:
        body = " ".join(t.words)
        body = f'"{body}"' if t.is_phrase else body
        if t.prefix and not t.is_phrase:
            body += "*"
        return ("-" if t.negated else "") + body

    return " ".join(term(t) for t in query.terms)


class OpenSearchBackend(s.Backend):
    name = "opensearch"

    def __init__(self, url: str, *, index: str = "parley"):
        from opensearchpy import OpenSearch

        self.url = url
        self.index = index
        self.client = OpenSearch(hosts=[url], timeout=30, max_retries=2, retry_on_timeout=True)
        self._ready = False

    # --- the index --------------------------------------------------------------------------------
    def ensure_index(self) -> None:
        from opensearchpy.exceptions import RequestError

        if self._ready:
            return
        if not self.client.indices.exists(index=self.index):
            try:
                self.client.indices.create(index=self.index, body={"settings": SETTINGS, "mappings": MAPPINGS})
            except RequestError as exc:  # another process created it first
                if "already_exists" not in str(exc):
                    raise
        self._ready = True

    def _bulk(self, docs: list[dict]) -> list[str]:
        from opensearchpy import helpers

        if not docs:
            return []
        actions = [{"_op_type": "index", "_index": self.index, "_id": d["id"], "_source": _source(d)} for d in docs]
        _, errors = helpers.bulk(self.client, actions, refresh=True, raise_on_error=False, chunk_size=500)
        return [str(e) for e in errors]

    def _delete_where(self, filters: list[dict], keep: list[str] | None = None) -> None:
        query: dict = {"bool": {"filter": filters}}
        if keep:
            query["bool"]["must_not"] = [{"ids": {"values": keep}}]
        self.client.delete_by_query(index=self.index, body={"query": query}, refresh=True, conflicts="proceed")

    def _replace(self, filters: list[dict], docs: list[dict] | None) -> int:
        """Write the current documents first, then delete the ones that are gone: no moment without them."""
        self.ensure_index()
        errors = self._bulk(docs or [])
        if errors:
            raise RuntimeError(f"bulk indexing failed: {errors[:3]}")
        self._delete_where(filters, keep=[d["id"] for d in docs or []])
        return len(docs or [])

    # --- the interface ----------------------------------------------------------------------------
    def index_session(self, session_id: int) -> int:
        from models import db

        with db.connection_context():
            docs = s.session_documents(session_id)
        return self._replace([{"term": {"sessionId": session_id}}], docs)

    def index_chat(self, chat_id: int) -> int:
        from models import db

        with db.connection_context():
            docs = s.chat_documents(chat_id)
        return self._replace([{"term": {"chatId": chat_id}}, {"term": {"type": "chat"}}], docs)

    def remove_session(self, session_id: int) -> None:
        self._replace([{"term": {"sessionId": session_id}}], None)

    def remove_chat(self, chat_id: int) -> None:
        self._replace([{"term": {"chatId": chat_id}}, {"term": {"type": "chat"}}], None)

    def rebuild(self) -> dict:
        from models import db

        counts = {"transcriptsIndexed": 0, "messagesIndexed": 0, "errors": []}
        if self.client.indices.exists(index=self.index):
            self.client.indices.delete(index=self.index)
        self._ready = False
        self.ensure_index()
        batch: list[dict] = []

        def flush():
            for error in self._bulk(batch):
                counts["errors"].append(error)
            batch.clear()

        with db.connection_context():
            work = [("session", i) for i in s.all_session_ids()] + [("chat", i) for i in s.standalone_chat_ids()]
            for kind, ident in work:
                docs = (s.session_documents(ident) if kind == "session" else s.chat_documents(ident)) or []
                for doc in docs:
                    counts["transcriptsIndexed" if doc["type"] == "transcript" else "messagesIndexed"] += 1
                batch.extend(docs)
                if len(batch) >= 1000:
                    flush()
        flush()
        return counts

    def search(self, query: s.Query, *, limit: int, offset: int, client_name: str | None,
               search_type: str) -> s.SearchPage:
        from opensearchpy.exceptions import NotFoundError, RequestError

        filters: list[dict] = []
        if client_name:
            filters.append({"term": {"clientName": client_name}})
        if search_type in ("chat", "transcript"):
            filters.append({"term": {"type": search_type}})
        body: dict = {"from": offset, "size": limit, "track_total_hits": True}
        if query:
            body["query"] = {"bool": {"must": [{"simple_query_string": {
                "query": simple_query(query), "fields": FIELDS, "default_operator": "and",
                "flags": "AND|NOT|PHRASE|PREFIX|WHITESPACE"}}], "filter": filters}}
            body["highlight"] = {"pre_tags": [s.MARK_OPEN], "post_tags": [s.MARK_CLOSE], "encoder": "default",
                                 "fields": {"text": {"number_of_fragments": 2, "fragment_size": 200}}}
            body["sort"] = [{"_score": "desc"}, {"timestamp": "desc"}]
        else:
            body["query"] = {"bool": {"filter": filters}} if filters else {"match_all": {}}
            body["sort"] = [{"timestamp": "desc"}]
        try:
            answer = self.client.search(index=self.index, body=body)
        except NotFoundError:
            return s.SearchPage([], 0)  # nothing indexed yet
        except RequestError as exc:
            raise s.SearchQueryError(f"the search engine rejected the query: {exc.error}") from None
        total = answer["hits"]["total"]
        total = total["value"] if isinstance(total, dict) else int(total)
        results = []
        for hit in answer["hits"]["hits"]:
            doc = {**hit["_source"], "id": hit["_id"]}
            results.append(s.result(doc, score=hit.get("_score") if query else None,
                                    fragments=(hit.get("highlight") or {}).get("text")))
        return s.SearchPage(results, total)


def _source(doc: dict) -> dict:
    return {k: doc.get(k) for k in MAPPINGS["properties"]}
