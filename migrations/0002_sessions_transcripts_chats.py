"""Paragraphs, chats and messages of the sessions API; speaker renames on sessions.

Generated with `pwmigrate ... generate` and frozen (no imports from the live models); JSON columns are TEXT.
"""
from peewee import *

def up(migrator, db):
    class Session(Model):
        class Meta:
            database = db
            table_name = 'session'

    class Chat(Model):
        session = ForeignKeyField(Session, null=True, on_delete='CASCADE')
        timestamp_ms = BigIntegerField()
        name = TextField(null=True)
        tags = TextField(null=True)
        class Meta:
            database = db
            table_name = 'chat'
    db.create_tables([Chat])

    class Message(Model):
        chat = ForeignKeyField(Chat, on_delete='CASCADE')
        sender = TextField()
        text = TextField()
        timestamp_ms = BigIntegerField()
        prompt_tokens = IntegerField(null=True)
        completion_tokens = IntegerField(null=True)
        thinking_tokens = IntegerField(null=True)
        duration_ms = IntegerField(null=True)
        is_truncated = BooleanField(null=True)
        status = TextField(default='complete')
        class Meta:
            database = db
            table_name = 'message'
    db.create_tables([Message])

    class Paragraph(Model):
        session = ForeignKeyField(Session, on_delete='CASCADE')
        idx = IntegerField()
        start_ms = IntegerField()
        end_ms = IntegerField()
        text = TextField()
        speaker = TextField(null=True)
        edited = BooleanField(default=False)
        deleted = BooleanField(default=False)
        class Meta:
            database = db
            table_name = 'paragraph'
            indexes = ((('session', 'idx'), True),)
    db.create_tables([Paragraph])

    migrator.migrate(migrator.add_column('session', 'speaker_names', TextField(default='{}')))


def down(migrator, db):
    migrator.migrate(migrator.drop_column('session', 'speaker_names'))
    migrator.migrate(migrator.drop_table('paragraph'))
    migrator.migrate(migrator.drop_table('message'))
    migrator.migrate(migrator.drop_table('chat'))
