"""On SQLite, the full-text index gets prefix indexes for prefixes of 2 to 5 characters.

Without them a prefix query (`anx*`) merges the postings of every word that starts with the prefix each
time FTS5 evaluates it, and fetching the snippets of one result page evaluates it once per result: 125 ms
at the 99th percentile at 500,000 paragraphs (scripts/bench/search.py), against 4 ms with the prefix
index. The table is rebuilt from search_document, which holds the same text (about 20 s per 500,000
paragraphs); the index grows by about two thirds. PostgreSQL's GIN index matches prefixes by scanning a key
range: nothing changes there. Written by hand and frozen.
"""
from peewee import SqliteDatabase

FTS = ("CREATE VIRTUAL TABLE {name} USING fts5(text, meta, tokenize = 'porter unicode61 remove_diacritics 2'"
       "{prefix})")


def _rebuild(db, prefix: str) -> None:
    db.execute_sql("DROP TABLE IF EXISTS search_fts_new")
    db.execute_sql(FTS.format(name="search_fts_new", prefix=prefix))
    db.execute_sql("INSERT INTO search_fts_new (rowid, text, meta) SELECT id, text, meta FROM search_document")
    db.execute_sql("DROP TABLE search_fts")
    db.execute_sql("ALTER TABLE search_fts_new RENAME TO search_fts")


def up(migrator, db):
    if isinstance(db, SqliteDatabase):
        _rebuild(db, ", prefix = '2 3 4 5'")


def down(migrator, db):
    if isinstance(db, SqliteDatabase):
        _rebuild(db, "")
