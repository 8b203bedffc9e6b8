"""Use cases and stores that web handlers, the CLI and the workers share: sessions, search, models, backups, usage.

Every module here works on the database (models) and Redis through plain functions; none imports the web tier,
the job actors or a model engine. See .importlinter for the layering and CONTRIBUTING.md for where a change goes.
"""
