"""API tokens for access control.

Generated with `pwmigrate ... generate` and frozen (no imports from the live models).
"""
from peewee import *


def up(migrator, db):
    class ApiToken(Model):
        name = TextField()
        token_hash = TextField(unique=True)
        prefix = TextField()
        scopes = TextField()
        created_at = FloatField()
        last_used_at = FloatField(null=True)
        revoked_at = FloatField(null=True)
        class Meta:
            database = db
            table_name = 'api_token'
    db.create_tables([ApiToken])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('api_token'))
