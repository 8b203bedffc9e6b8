"""Sessions made by the transcription API before 0009 get the values such sessions now get.

The sessions contract requires clientName, sessionType and therapy to be non-empty; those sessions
had empty strings, which its web client cannot show or save. Written by hand and frozen.
"""

FIELDS = (("client_name", "Transcription API"), ("session_type", "Transcription API"), ("therapy", "N/A"))


def up(migrator, db):
    for column, value in FIELDS:
        db.execute_sql(f"UPDATE session SET {column} = {db.param} WHERE {column} = ''", (value,))


def down(migrator, db):
    pass  # the old empty values were never valid; nothing to restore
