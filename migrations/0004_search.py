"""Search documents (one per live paragraph and per chat message) and their full-text index.

Frozen: no imports from the live models. `search_document` holds what a result shows and the filters;
the full-text part depends on the database:

- SQLite: an FTS5 table `search_fts(text, meta)` (porter stemming over unicode61) whose rowid is the
  document's id, kept in step by services.search_db;
- PostgreSQL: a generated, weighted tsvector column `tsv` on `search_document` (text A, meta B) with a GIN
  index.
"""
from peewee import *


def up(migrator, db):
    class SearchDocument(Model):
        doc_key = TextField(unique=True)  # "{sessionId}_{paragraphIndex}" or the message id
        type = TextField(index=True)  # transcript, chat
        session_id = BigIntegerField(null=True, index=True)
        chat_id = BigIntegerField(null=True, index=True)
        sender = TextField(null=True)
        speaker = TextField(null=True)
        timestamp = BigIntegerField(default=0)
        client_name = TextField(null=True, index=True)
        session_name = TextField(null=True)
        tags = TextField(null=True)  # JSON list
        text = TextField(default='')
        meta = TextField(default='')  # speaker, session name, chat name and tags: searchable, weighted lower
        class Meta:
            database = db
            table_name = 'search_document'
    db.create_tables([SearchDocument])

    if isinstance(db, PostgresqlDatabase):
        db.execute_sql(
            "ALTER TABLE search_document ADD COLUMN tsv tsvector GENERATED ALWAYS AS ("
            "setweight(to_tsvector('english'::regconfig, coalesce(text, '')), 'A') || "
            "setweight(to_tsvector('english'::regconfig, coalesce(meta, '')), 'B')) STORED")
        db.execute_sql("CREATE INDEX search_document_tsv ON search_document USING GIN (tsv)")
    else:
        db.execute_sql("CREATE VIRTUAL TABLE search_fts USING fts5("
                       "text, meta, tokenize = 'porter unicode61 remove_diacritics 2')")


def down(migrator, db):
    if not isinstance(db, PostgresqlDatabase):
        db.execute_sql("DROP TABLE IF EXISTS search_fts")
    migrator.migrate(migrator.drop_table('search_document'))
