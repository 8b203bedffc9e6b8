"""Multi-session analysis jobs and their per-session summaries.

Generated with `pwmigrate ... generate` and frozen (no imports from the live models).
"""
from peewee import *

def up(migrator, db):
    class Session(Model):
        class Meta:
            database = db
            table_name = 'session'

    class AnalysisJob(Model):
        original_prompt = TextField()
        short_prompt = TextField()
        status = TextField(default='pending')
        final_result = TextField(null=True)
        error_message = TextField(null=True)
        created_at_ms = BigIntegerField()
        completed_at_ms = BigIntegerField(null=True)
        use_advanced_strategy = BooleanField(default=False)
        strategy_json = TextField(null=True)
        model_name = TextField(null=True)
        context_size = IntegerField(null=True)
        llm_base_url = TextField(null=True)
        temperature = FloatField(null=True)
        top_p = FloatField(null=True)
        repeat_penalty = FloatField(null=True)
        num_gpu_layers = IntegerField(null=True)
        thinking_budget = IntegerField(null=True)
        map_phase_system_prompt = TextField(null=True)
        class Meta:
            database = db
            table_name = 'analysis_job'
    db.create_tables([AnalysisJob])

    class AnalysisSummary(Model):
        analysis_job = ForeignKeyField(AnalysisJob, on_delete='CASCADE')
        session = ForeignKeyField(Session, on_delete='CASCADE')
        summary_text = TextField(null=True)
        status = TextField(default='pending')
        error_message = TextField(null=True)
        prompt_tokens = IntegerField(null=True)
        completion_tokens = IntegerField(null=True)
        duration_ms = IntegerField(null=True)
        class Meta:
            database = db
            table_name = 'analysis_summary'
    db.create_tables([AnalysisSummary])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('analysis_summary'))
    migrator.migrate(migrator.drop_table('analysis_job'))
