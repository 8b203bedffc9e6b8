"""Known voices: profiles (a name and its voiceprints) and each session's per-speaker voiceprints.

`voice_profile` is a voice a user named; `voice_sample` its voiceprints (copied from session speakers, deleted
with the profile); `session_voice` the voiceprint of each speaker of a transcribed session and the profile that
names it. Ids are AUTOINCREMENT on SQLite like every other table since 0008 (never given again). Written by hand
and frozen (no imports from the live models).
"""
from peewee import (AutoField, BigIntegerField, DoubleField, ForeignKeyField, IntegerField, Model, SqliteDatabase,
                    TextField)
from playhouse.sqlite_ext import AutoIncrementField


def up(migrator, db):
    key = AutoIncrementField if isinstance(db, SqliteDatabase) else AutoField

    class Session(Model):
        class Meta:
            database = db
            table_name = 'session'

    class VoiceProfile(Model):
        id = key()
        name = TextField()
        owner_token_id = IntegerField(null=True, index=True)
        created_at_ms = BigIntegerField()

        class Meta:
            database = db
            table_name = 'voice_profile'

    class VoiceSample(Model):
        id = key()
        profile = ForeignKeyField(VoiceProfile, on_delete='CASCADE')
        session = ForeignKeyField(Session, null=True, on_delete='SET NULL')
        label = TextField()
        vector = TextField()
        voiced_s = DoubleField()
        created_at_ms = BigIntegerField()

        class Meta:
            database = db
            table_name = 'voice_sample'

    class SessionVoice(Model):
        id = key()
        session = ForeignKeyField(Session, on_delete='CASCADE')
        label = TextField()
        vector = TextField()
        voiced_s = DoubleField()
        profile = ForeignKeyField(VoiceProfile, null=True, on_delete='SET NULL')
        similarity = DoubleField(null=True)
        shown = TextField(null=True)
        voice_contrast = DoubleField(null=True)

        class Meta:
            database = db
            table_name = 'session_voice'
            indexes = ((('session', 'label'), True),)

    db.create_tables([VoiceProfile, VoiceSample, SessionVoice])


def down(migrator, db):
    for table in ('session_voice', 'voice_sample', 'voice_profile'):
        migrator.migrate(migrator.drop_table(table))
