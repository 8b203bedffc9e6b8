"""Commands on known voices: list and delete voice profiles, and apply them to sessions already transcribed."""
from __future__ import annotations

import click

from parley.cli import main, open_db, when


@main.group()
def voices() -> None:
    """Known voices: speakers a user named once, recognised in later sessions (see the README's Known voices)."""


@voices.command("list")
def voices_list() -> None:
    """Every voice profile, with its owner (the id of the API token that made it) and the sessions it came from."""
    from services import voices as profiles

    open_db()
    click.echo(f"{'id':>5}  {'owner':>5}  {'created':<16}  {'name':<24}  sessions")
    for p in profiles.list_profiles(None, everyone=True):
        owner = "-" if p.owner_token_id is None else p.owner_token_id
        click.echo(f"{p.id:>5}  {owner:>5}  {when(p.created_at_ms):<16}  {p.name[:24]:<24}  "
                   f"{', '.join(map(str, p.session_ids)) or '-'}")


@voices.command("delete")
@click.argument("profile_id", type=int)
def voices_delete(profile_id: int) -> None:
    """Delete a voice profile and its voiceprints (transcripts keep its name until `apply --undo`)."""
    from services import voices as profiles

    open_db()
    try:
        name = profiles.delete_profile(profile_id, None, everyone=True)
    except profiles.UnknownVoiceProfile as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"deleted voice profile {profile_id} ({name}) and its voiceprints")


@voices.command("apply")
@click.option("--session", "session_ids", type=int, multiple=True, help="Only this session (repeatable).")
@click.option("--undo", is_flag=True, help="Put back the labels diarization gave where a known voice named a "
                                           "speaker (also the names of deleted profiles).")
def voices_apply(session_ids: tuple[int, ...], undo: bool) -> None:
    """Name the speakers of sessions already transcribed after the known voices, without transcribing again.

    Uses each session's kept voiceprints; a speaker renamed by hand keeps the name typed.
    """
    from services import voice_labels

    open_db()
    results = voice_labels.apply(session_ids=list(session_ids) or None, undo=undo)
    changed = 0
    for result in results:
        for old, new in result.changes.items():
            click.echo(f"session {result.session_id}: {old} -> {new}")
        for label, typed in result.left_alone.items():
            click.echo(f"session {result.session_id}: {label} left alone (renamed by hand to {typed!r})")
        changed += bool(result.changes)
    click.echo(f"{changed} of {len(results)} sessions with voiceprints relabelled")
