"""Templates, language-model settings and jobs, model downloads, and the usage log.

Generated with `pwmigrate ... generate` and frozen (no imports from the live models); JSON columns are TEXT.
"""
from peewee import *


def up(migrator, db):
    class Chat(Model):
        class Meta:
            database = db
            table_name = 'chat'

    class LlmJob(Model):
        id = CharField(primary_key=True, max_length=36)
        kind = TextField()
        status = TextField(index=True, default='queued')
        message = TextField(default='')
        progress = FloatField(default=0.0)
        chat = ForeignKeyField(Chat, null=True, on_delete='CASCADE')
        model_name = TextField(default='')
        params = TextField(default='{}')
        result = TextField(null=True)
        error = TextField(null=True)
        created_at = FloatField()
        updated_at = FloatField()
        finished_at = FloatField(null=True)
        class Meta:
            database = db
            table_name = 'llm_job'
    db.create_tables([LlmJob])

    class LlmSettings(Model):
        active_model = TextField(default='')
        base_url = TextField(null=True)
        api_token = TextField(null=True)
        context_size = IntegerField(null=True)
        temperature = FloatField(default=0.7)
        top_p = FloatField(default=0.9)
        repeat_penalty = FloatField(default=1.1)
        num_gpu_layers = IntegerField(null=True)
        thinking_budget = IntegerField(null=True)
        updated_at = FloatField()
        class Meta:
            database = db
            table_name = 'llm_settings'
    db.create_tables([LlmSettings])

    class ModelPull(Model):
        id = CharField(primary_key=True, max_length=36)
        source = TextField()
        model_name = TextField()
        status = TextField(default='queued')
        message = TextField(default='')
        completed_bytes = BigIntegerField(default=0)
        total_bytes = BigIntegerField(null=True)
        expected_sha256 = TextField(null=True)
        error = TextField(null=True)
        start_ms = BigIntegerField()
        end_ms = BigIntegerField(null=True)
        class Meta:
            database = db
            table_name = 'model_pull'
    db.create_tables([ModelPull])

    class Template(Model):
        title = TextField(unique=True)
        text = TextField()
        created_at_ms = BigIntegerField()
        class Meta:
            database = db
            table_name = 'template'
    db.create_tables([Template])

    class UsageLog(Model):
        type = TextField()
        source = TextField()
        model = TextField()
        prompt_tokens = IntegerField(null=True)
        completion_tokens = IntegerField(null=True)
        duration = IntegerField(null=True)
        timestamp_ms = BigIntegerField(index=True)
        class Meta:
            database = db
            table_name = 'usage_log'
    db.create_tables([UsageLog])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('usage_log'))
    migrator.migrate(migrator.drop_table('template'))
    migrator.migrate(migrator.drop_table('model_pull'))
    migrator.migrate(migrator.drop_table('llm_settings'))
    migrator.migrate(migrator.drop_table('llm_job'))
