"""Initial schema: sessions, transcription jobs, segments and the job event log.

Generated with `pwmigrate ... initial` and frozen: it must not import the live models.
JSON columns are TEXT; timestamps default in Python, so the columns carry no SQL default.
"""
from peewee import *


def up(migrator, db):
    class Session(Model):
        file_name = TextField()
        client_name = TextField(default='')
        session_name = TextField(default='')
        session_type = TextField(default='')
        therapy = TextField(default='')
        date = TextField()
        audio_path = TextField(null=True)
        audio_sha256 = TextField(null=True)
        audio_bytes = BigIntegerField(null=True)
        status = TextField(default='pending')
        whisper_job_id = TextField(null=True)
        transcript_token_count = IntegerField(null=True)
        duration = IntegerField(null=True)
        error_message = TextField(null=True)
        show_speakers = IntegerField(default=1)
        num_speakers = IntegerField(null=True)
        created_at = FloatField()
        class Meta:
            database = db
            table_name = 'session'
    db.create_tables([Session])

    class Job(Model):
        id = CharField(primary_key=True, max_length=36)
        session = ForeignKeyField(Session, null=True, on_delete='CASCADE')
        kind = TextField(default='transcribe')
        status = TextField(index=True, default='queued')
        message = TextField(default='')
        progress = FloatField(default=0.0)
        model_name = TextField()
        language = TextField(null=True)
        detected_language = TextField(null=True)
        diarize = BooleanField(default=True)
        num_speakers = IntegerField(null=True)
        audio_path = TextField(null=True)
        audio_sha256 = TextField(null=True)
        audio_duration = FloatField(null=True)
        chunk_plan = TextField(null=True)
        chunks_done = IntegerField(default=0)
        chunk_progress = FloatField(default=0.0)
        event_seq = IntegerField(default=0)
        attempts = IntegerField(default=0)
        error = TextField(null=True)
        params = TextField(default='{}')
        result = TextField(null=True)
        worker = TextField(null=True)
        created_at = FloatField()
        updated_at = FloatField()
        started_at = FloatField(null=True)
        finished_at = FloatField(null=True)
        class Meta:
            database = db
            table_name = 'job'
    db.create_tables([Job])

    class JobEvent(Model):
        job = ForeignKeyField(Job, on_delete='CASCADE')
        seq = IntegerField()
        type = TextField()
        payload = TextField()
        created_at = FloatField()
        class Meta:
            database = db
            table_name = 'job_event'
            indexes = ((('job', 'seq'), True),)
    db.create_tables([JobEvent])

    class Segment(Model):
        job = ForeignKeyField(Job, on_delete='CASCADE')
        idx = IntegerField()
        chunk_index = IntegerField()
        start = FloatField()
        end = FloatField()
        text = TextField()
        speaker = TextField(null=True)
        speaker_confidence = FloatField(null=True)
        words = TextField(default='[]')
        avg_logprob = FloatField(null=True)
        no_speech_prob = FloatField(null=True)
        class Meta:
            database = db
            table_name = 'segment'
            indexes = ((('job', 'idx'), True),)
    db.create_tables([Segment])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('segment'))
    migrator.migrate(migrator.drop_table('job_event'))
    migrator.migrate(migrator.drop_table('job'))
    migrator.migrate(migrator.drop_table('session'))
