"""Bounded work for phrase searches on a large SQLite archive: scans with a deadline and BM25 from estimates.

FTS5's bm25() weighs each phrase by how many documents hold it, and counts them by verifying the phrase in
every document that holds its words: 100 ms and more for a phrase of common words at 500,000 paragraphs,
before the first row is scored (scripts/bench/search.py). Past SMALL_INDEX documents a query with a phrase
therefore (1) collects its newest matches under a deadline, (2) estimates each term's document count from a
deadline-bounded scan of its own, and (3) scores the matches with FTS5's BM25 formula, counting each term
once per matching document (a phrase rarely occurs twice in one paragraph). Below SMALL_INDEX documents every
scan is cheap and search_db uses bm25() itself, so small archives rank exactly as they always did.
"""
from __future__ import annotations

import math
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass

import peewee

from models.db import db

#: Past this many indexed documents, phrase queries take the bounded path (a full phrase check at 100,000
#: paragraphs costs about 20 ms on a 2-core EPYC, a fifth of what it costs at 500,000).
SMALL_INDEX = 100_000
#: Time for collecting a query's newest matches; a scan cut short extrapolates the total.
SCAN_BUDGET_S = 0.015
#: A cut scan with less than a page of matches goes on this much longer: a rare phrase is still found.
PAGE_PATIENCE_S = 0.25
#: Time for estimating every term's document count, all terms together.
STATS_BUDGET_S = 0.010
#: A term's count is exact up to this many matches and extrapolated from their spread past it.
STATS_SAMPLE = 2000
K1, B = 1.2, 0.75  # FTS5 bm25()'s constants
_PROGRESS_STEPS = 100  # SQLite VM steps between deadline checks: a few rows


@dataclass
class Scan:
    ids: list[int]  # matching document ids, newest first
    complete: bool  # every match down to the oldest document was seen (or `limit` was reached)


@contextmanager
def _deadline(seconds: float):
    """Interrupt the connection's running statement once `seconds` have passed."""
    connection = db.connection()
    end = time.perf_counter() + seconds
    connection.set_progress_handler(lambda: time.perf_counter() > end, _PROGRESS_STEPS)
    try:
        yield
    finally:
        connection.set_progress_handler(None, 0)


def newest(sql: str, params: list, *, seconds: float) -> Scan:
    """Run `sql` (ids, newest first) for at most `seconds`: the ids read before the deadline, and whether all
    were."""
    ids: list[int] = []
    with _deadline(seconds):
        try:
            for row in db.execute_sql(sql, params):
                ids.append(row[0])
        except (sqlite3.OperationalError, peewee.OperationalError) as exc:
            if "interrupt" not in str(exc):
                raise
            return Scan(ids, complete=False)
    return Scan(ids, complete=True)


def extrapolated_total(ids: list[int], *, first_id: int) -> int:
    """How many documents match in all, from the newest matches `ids` (newest first): as many as lie as
    densely over every id from `first_id` up to the newest match."""
    if not ids:
        return 0
    density = len(ids) / max(ids[0] - ids[-1] + 1, 1)
    return max(len(ids), round(density * (ids[0] - first_id + 1)))


def index_size() -> tuple[int, float]:
    """(documents, average tokens per document, all columns) from FTS5's own averages record."""
    row = db.execute_sql("SELECT block FROM search_fts_data WHERE id = 1").fetchone()
    if not row or not row[0]:
        return 0, 0.0
    documents, *tokens = _varints(row[0])
    return documents, (sum(tokens) / documents if documents else 0.0)


def document_count(match: str, *, seconds: float, first_id: int) -> float:
    """Documents matching the FTS5 expression `match`: exact up to STATS_SAMPLE, extrapolated past it or when
    the scan runs out of time."""
    scan = newest("SELECT rowid FROM search_fts WHERE search_fts MATCH ? ORDER BY rowid DESC LIMIT ?",
                  [match, STATS_SAMPLE + 1], seconds=seconds)
    if scan.complete and len(scan.ids) <= STATS_SAMPLE:
        return len(scan.ids)
    return extrapolated_total(scan.ids, first_id=first_id)


def scores(ids: list[int], hits: list[float], *, documents: int, average_length: float) -> dict[int, float]:
    """FTS5's bm25 (higher is better) of documents `ids` for terms matched by `hits[i]` documents each, every
    term counted once per document, at the weight of the text column."""
    idf = [max(math.log((documents - n + 0.5) / (n + 0.5)), 1e-6) if documents else 1e-6 for n in hits]
    total_idf = sum(idf)
    lengths = _lengths(ids)
    average_length = average_length or 1.0
    return {i: total_idf * (K1 + 1) / (1 + K1 * (1 - B + B * lengths.get(i, average_length) / average_length))
            for i in ids}


def _lengths(ids: list[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for start in range(0, len(ids), 900):  # under SQLite's bound-parameter limit
        chunk = ids[start:start + 900]
        rows = db.execute_sql(f"SELECT id, sz FROM search_fts_docsize WHERE id IN ({', '.join('?' * len(chunk))})",
                              chunk).fetchall()
        out.update((i, sum(_varints(sz))) for i, sz in rows)
    return out


def _varints(blob: bytes) -> list[int]:
    """SQLite's variable-length integers (big-endian 7-bit groups; a ninth byte holds 8 bits)."""
    out, pos = [], 0
    while pos < len(blob):
        value = 0
        for n in range(9):
            byte = blob[pos]
            pos += 1
            if n == 8:
                value = (value << 8) | byte
                break
            value = (value << 7) | (byte & 0x7F)
            if not byte & 0x80:
                break
        out.append(value)
    return out
