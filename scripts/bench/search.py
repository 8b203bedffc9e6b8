#!/usr/bin/env python
"""Benchmark: full-text search over a generated corpus on SQLite FTS5 and PostgreSQL: indexing rate, query latency.

For each backend this script makes a fresh database (SQLite: a file in a temporary directory;
PostgreSQL: `CREATE DATABASE` on the server at `--postgres-url`, dropped afterwards), migrates it,
inserts `--sessions` sessions and `--paragraphs` paragraphs with peewee bulk inserts, then:

- indexing: services.search_db.DatabaseBackend.index_session() for every session, as the `io` worker's
  update_search actor does after a transcription; rate = paragraphs indexed per second;
- queries: `--queries` each of five kinds through DatabaseBackend.search() (what GET /api/search runs:
  the total, ranked top 20, highlighted snippets), after a few uncounted warm-up queries:
  single word (a mid-frequency content word), phrase (2-3 consecutive words lifted from a generated
  paragraph), prefix (the first 3-5 letters of a frequent word, then `*`), exclusion (a content word
  without another, `word -other`), rare term (a word from the vocabulary's long tail).
- each query runs twice on the same database, in the same run: the baseline ranks and counts every match
  (`DatabaseBackend(rank_window=None)`, the code before the window), the default does bounded work: it ranks
  at most RANK_WINDOW newest matches and extrapolates the total past them; on SQLite a query with a phrase
  collects them under a deadline and scores them without FTS5's index-wide phrase count
  (services/search_bounded.py); on PostgreSQL a query the planner expects to match more than the window is
  looked for among the newest NEWEST_ROWS ids. Reported: latency of both, the share of queries whose total
  was an estimate, how many of the baseline's top 20 the bounded path also returns, and the median error of
  the estimated totals.

Target (issue 16): p99 under 50 ms for every query kind, on SQLite FTS5 and on PostgreSQL.

The corpus is deterministic (`--seed`): words follow a Zipf distribution (exponent 1.07) over a vocabulary
of real function and content words followed by generated pseudo-words (the long tail); paragraph lengths
are log-normal around 30 words. The same corpus and the same queries go to every backend.

Misses are printed, not raised: exits non-zero only when the benchmark itself fails.

    .venv/bin/python scripts/bench/search.py [--quick] [--sessions 1000] [--paragraphs 500000]
        [--queries 100] [--backends sqlite,postgresql] [--postgres-url URL] [--seed 7]
"""
from __future__ import annotations

import argparse
import itertools
import math
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_latency import ROOT, pct  # noqa: E402,F401  (ROOT: puts the repository on sys.path)

FUNCTION_WORDS = """the and i to you that it a of is was in so like know just what we but my me do
not have think yeah he she they this it's don't be about with for on um uh well really right there
one can all at if or when because then there's how would out get feel been had going me up were
them her his him some more said time now very things thing mean people kind even no yes okay""".split()
CONTENT_WORDS = """work mother father sleep anxiety week family talk feeling sister brother job
therapy plan morning night school friend money home husband wife child children partner angry sad
tired stress panic worry breathing exercise journal routine weekend conversation argument boss
office doctor medication appetite dream memory childhood relationship boundary trust anger grief
loss hope fear change progress goal habit session homework thought pattern trigger calm walk music
reading cooking holiday birthday dinner phone message email meeting deadline project drive car
train city garden dog cat weather rain summer winter hospital appointment coffee alcohol exercise
running gym diet pain headache body mind voice letter apology forgiveness confidence shame guilt
loneliness connection support listen understand remember decide choose avoid accept notice""".split()
ZIPF_S = 1.07
TARGET_MS = 50


def vocabulary(rng: random.Random, size: int) -> list[str]:
    """Real words first (most frequent), then unique pronounceable pseudo-words for the long tail."""
    words = list(dict.fromkeys(FUNCTION_WORDS + CONTENT_WORDS))
    seen = set(words)
    onsets, vowels, codas = "b c d f g h k l m n p r s t v w z br cr dr fl gr pl st tr".split(), "a e i o u ai ea io".split(), ["", "", "n", "r", "s", "t", "l"]
    while len(words) < size:
        word = "".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def corpus(*, sessions: int, paragraphs: int, seed: int):
    """(vocabulary, texts): `paragraphs` paragraph texts, deterministic for `seed`."""
    rng = random.Random(seed)
    vocab = vocabulary(rng, 40_000)
    cum = list(itertools.accumulate(1 / (r ** ZIPF_S) for r in range(1, len(vocab) + 1)))
    lengths = [max(3, min(200, int(rng.lognormvariate(math.log(30), 0.6)))) for _ in range(paragraphs)]
    flat = rng.choices(vocab, cum_weights=cum, k=sum(lengths))
    texts, pos = [], 0
    for n in lengths:
        words = flat[pos:pos + n]
        pos += n
        words[0] = words[0].capitalize()
        texts.append(" ".join(words) + ".")
    return vocab, texts


def queries(vocab: list[str], texts: list[str], *, per_kind: int, seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed + 1)
    content = [w for w in vocab[:600] if w not in FUNCTION_WORDS]
    phrases = []
    while len(phrases) < per_kind:
        words = texts[rng.randrange(len(texts))].rstrip(".").lower().split()
        n = rng.choice((2, 3))
        if len(words) > n:
            start = rng.randrange(len(words) - n)
            phrases.append('"' + " ".join(words[start:start + n]) + '"')
    return {
        "single": [rng.choice(content) for _ in range(per_kind)],
        "phrase": phrases,
        "prefix": [w[:rng.randint(3, min(5, len(w)))] + "*" for w in (rng.choice(content[:200]) for _ in range(per_kind))],
        "exclusion": [f"{a} -{b}" for a, b in ((rng.choice(content), rng.choice(content)) for _ in range(per_kind))
                      if a != b][:per_kind],
        "rare": [rng.choice(vocab[int(len(vocab) * 0.8):]) for _ in range(per_kind)],
    }


# --- one backend ---------------------------------------------------------------------------------------
def load(texts: list[str], *, sessions: int) -> list[int]:
    """Sessions and their paragraphs, bulk-inserted; returns the session ids."""
    from models import Paragraph, Session, db

    per_session = math.ceil(len(texts) / sessions)
    speakers = ("SPEAKER_00", "SPEAKER_01")
    with db.connection_context():
        with db.atomic():
            Session.insert_many([{"file_name": f"s{i}.mp3", "client_name": f"client {i % 40}", "session_name": f"Session {i}",
                                  "date": "2025-03-01T12:00:00.000Z", "status": "completed"} for i in range(sessions)]).execute()
        ids = [s.id for s in Session.select(Session.id).order_by(Session.id)]
        for n, session_id in enumerate(ids):
            chunk = texts[n * per_session:(n + 1) * per_session]
            with db.atomic():
                for b in range(0, len(chunk), 1000):
                    Paragraph.insert_many([{"session": session_id, "idx": b + i, "start_ms": (b + i) * 15000,
                                            "end_ms": (b + i) * 15000 + 14000, "text": t, "speaker": speakers[(b + i) % 2]}
                                           for i, t in enumerate(chunk[b:b + 1000])]).execute()
    return ids


def run_backend(name: str, database_url: str, texts: list[str], mix: dict[str, list[str]], *, sessions: int) -> dict:
    from models import db, migrate
    from services.search import parse_query
    from services.search_db import DatabaseBackend

    migrate(database_url)
    started = time.perf_counter()
    ids = load(texts, sessions=sessions)
    load_s = time.perf_counter() - started
    backend, baseline = DatabaseBackend(), DatabaseBackend(rank_window=None)
    started = time.perf_counter()
    indexed = sum(backend.index_session(i) for i in ids)
    index_s = time.perf_counter() - started
    if name == "postgresql":
        with db.connection_context():
            db.execute_sql("ANALYZE")  # as autovacuum would have, soon after a load this size
    out = {"load_s": load_s, "indexed": indexed, "index_s": index_s, "kinds": {}}
    def timed(engine, q):
        t = time.perf_counter()
        page = engine.search(parse_query(q), limit=20, offset=0, client_name=None, search_type="all")
        return (time.perf_counter() - t) * 1000, page

    for q in [mix[k][0] for k in mix] * 3:  # warm caches and connections, not counted
        timed(backend, q), timed(baseline, q)
    for kind, qs in mix.items():
        times, base_times, hits, estimated, overlap, errors = [], [], [], 0, [], []
        for q in qs:
            base_ms, exact = timed(baseline, q)
            ms, page = timed(backend, q)
            times.append(ms)
            base_times.append(base_ms)
            hits.append(exact.total)
            if page.total_is_estimate:
                estimated += 1
                errors.append(abs(page.total - exact.total) / exact.total)
            want = [r["id"] for r in exact.results]
            overlap.append(len(set(want) & {r["id"] for r in page.results}) / len(want) if want else 1.0)
        out["kinds"][kind] = {"p50": pct(times, 50), "p99": pct(times, 99), "max": max(times),
                              "base_p50": pct(base_times, 50), "base_p99": pct(base_times, 99),
                              "hits": statistics.fmean(hits), "zero": sum(1 for h in hits if h == 0),
                              "estimated": estimated / len(qs), "overlap": statistics.fmean(overlap),
                              "error": statistics.median(errors) if errors else None}
    db.close()
    return out


def postgres_database(admin_url: str) -> str | None:
    import psycopg2

    try:
        admin = psycopg2.connect(admin_url, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        print(f"PostgreSQL at {admin_url} does not answer ({exc}); skipped")
        return None
    admin.autocommit = True
    name = f"parley_bench_{uuid.uuid4().hex[:8]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_postgres_database(admin_url: str, url: str) -> None:
    import psycopg2

    from models import db
    if db.obj is not None:
        db.obj.close_all() if hasattr(db.obj, "close_all") else db.obj.close()
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 50 sessions, 10,000 paragraphs, 30 queries per kind")
    parser.add_argument("--sessions", type=int, default=1000, help="sessions generated (default 1000)")
    parser.add_argument("--paragraphs", type=int, default=500_000, help="paragraphs generated in all (default 500000)")
    parser.add_argument("--queries", type=int, default=100, help="queries timed per kind (default 100)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated (default sqlite,postgresql)")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a PostgreSQL server's admin database; a fresh database is made beside it and dropped")
    parser.add_argument("--seed", type=int, default=7, help="corpus and query seed (default 7)")
    args = parser.parse_args()
    if args.quick:
        args.sessions, args.paragraphs, args.queries = 50, 10_000, 30

    started = time.perf_counter()
    vocab, texts = corpus(sessions=args.sessions, paragraphs=args.paragraphs, seed=args.seed)
    mix = queries(vocab, texts, per_kind=args.queries, seed=args.seed)
    words = sum(t.count(" ") + 1 for t in texts)
    print(f"corpus: {args.sessions} sessions, {len(texts)} paragraphs, {words} words (mean {words / len(texts):.0f}/paragraph), "
          f"vocabulary {len(vocab)}, Zipf s={ZIPF_S}, seed {args.seed}; generated in {time.perf_counter() - started:.1f} s",
          flush=True)
    print(f"queries: {args.queries} per kind, e.g. " + ", ".join(f"{k}: {v[0]}" for k, v in mix.items()))

    results = {}
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if name == "sqlite":
            with tempfile.TemporaryDirectory(prefix="parley-bench-search-") as tmp:
                results[name] = run_backend(name, f"sqlite:///{tmp}/parley.db", texts, mix, sessions=args.sessions)
        elif name == "postgresql":
            url = postgres_database(args.postgres_url)
            if url is None:
                continue
            try:
                results[name] = run_backend(name, url, texts, mix, sessions=args.sessions)
            finally:
                drop_postgres_database(args.postgres_url, url)
        else:
            raise SystemExit(f"unknown backend {name!r}: use sqlite and/or postgresql")
        r = results.get(name)
        if r:  # as soon as it is known: a long run cut short still reports what it measured
            print(f"{name}: indexed {r['indexed']} paragraphs in {r['index_s']:.1f} s "
                  f"({r['indexed'] / r['index_s']:.0f}/s); queries p99 " +
                  ", ".join(f"{k} {v['p99']:.1f} ms" for k, v in r["kinds"].items()), flush=True)

    print(f"\n{'backend':<11} {'paragraphs':>10} {'load s':>7} {'index s':>8} {'indexed/s':>10}")
    for name, r in results.items():
        print(f"{name:<11} {r['indexed']:>10} {r['load_s']:>7.1f} {r['index_s']:>8.1f} {r['indexed'] / r['index_s']:>10.0f}")
    print(f"\n{'backend':<11} {'query':<9} {'base p50':>8} {'base p99':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'mean hits':>9} {'estimated':>9} {'est. err':>8} {'top-20 kept':>11}  p99 < {TARGET_MS} ms")
    for name, r in results.items():
        for kind, k in r["kinds"].items():
            err = f"{k['error'] * 100:.0f}%" if k["error"] is not None else "-"
            print(f"{name:<11} {kind:<9} {k['base_p50']:>8.1f} {k['base_p99']:>8.1f} {k['p50']:>7.1f} {k['p99']:>7.1f} "
                  f"{k['max']:>7.1f} {k['hits']:>9.0f} {k['estimated'] * 100:>8.0f}% {err:>8} {k['overlap'] * 100:>10.0f}%  "
                  f"{'met' if k['p99'] < TARGET_MS else 'MISSED'}")
    print("\n(load s = bulk insert of sessions and paragraphs; index s = DatabaseBackend.index_session for every session; "
          "base = every match ranked and counted (rank_window=None); estimated = share of queries whose total was "
          "extrapolated; est. err = their median relative error; top-20 kept = share of the baseline's first page "
          "the window also returns)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
