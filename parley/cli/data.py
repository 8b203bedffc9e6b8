"""Commands on the recorded data: list sessions and jobs, a job's events, re-transcribe, re-queue stuck jobs."""
from __future__ import annotations

import sys
import threading

import click

from parley.cli import main, open_db, when
from parley.config import get_settings
from services import modelstore


# --- sessions and jobs ----------------------------------------------------------------------------
@main.group()
def sessions() -> None:
    """Recorded sessions."""


@sessions.command("list")
@click.option("--status", help="Only sessions in this status (queued, transcribing, completed, failed).")
@click.option("--client", "client_name", help="Only this client's sessions.")
@click.option("--limit", default=100, show_default=True)
def sessions_list(status, client_name, limit) -> None:
    """Sessions with their status, newest first."""
    from models import Session

    open_db()
    query = Session.select().order_by(Session.date.desc(), Session.id.desc()).limit(limit)
    if status:
        query = query.where(Session.status == status)
    if client_name:
        query = query.where(Session.client_name == client_name)
    click.echo(f"{'id':>5}  {'date':<10}  {'status':<12}  {'client':<18}  name")
    for s in query:
        click.echo(f"{s.id:>5}  {s.date[:10]:<10}  {s.status:<12}  {s.client_name[:18]:<18}  {s.session_name or s.file_name}")


@main.group()
def jobs() -> None:
    """Transcription jobs."""


@jobs.command("list")
@click.option("--status", help="Only jobs in this status (queued, processing, completed, failed, canceled).")
@click.option("--limit", default=50, show_default=True)
def jobs_list(status, limit) -> None:
    """Jobs with status and progress, newest first."""
    from models import Job

    open_db()
    query = Job.select().order_by(Job.created_at_ms.desc()).limit(limit)
    if status:
        query = query.where(Job.status == status)
    click.echo(f"{'job':<36}  {'kind':<12}  {'session':>7}  {'status':<10}  {'progress':>8}  {'model':<10}  updated")
    for j in query:
        click.echo(f"{j.id:<36}  {j.kind:<12}  {j.session_id or '-':>7}  {j.status:<10}  {j.progress:>7.0f}%  "
                   f"{j.model_name:<10}  {when(j.updated_at_ms)}")


@jobs.command("events")
@click.argument("job_id")
def jobs_events(job_id) -> None:
    """Every event a job logged, in order."""
    from models import Job
    from services import events

    open_db()
    if Job.get_or_none(Job.id == job_id) is None:
        raise click.ClickException(f"job {job_id} not found")
    for event in events.read_log(job_id):
        if event["type"] == "status":
            detail = f"{event['status']:<10} {event['progress']:>5.1f}%  {event['message']}"
        elif event["type"] == "segment":
            detail = f"[{event['start_display']}] {event['text']}"
        else:
            detail = f"{len(event.get('segments', []))} segments labelled"
        click.echo(f"{event['seq']:>5}  {event['type']:<8}  {detail}")


# --- re-transcription -----------------------------------------------------------------------------
def _selected_sessions(session_ids, failed, client_name, since, until, from_model):
    from models import Job, Session

    query = Session.select().order_by(Session.id)
    if session_ids:
        query = query.where(Session.id.in_(session_ids))
    if failed:
        query = query.where(Session.status == "failed")
    if client_name:
        query = query.where(Session.client_name == client_name)
    if since:
        query = query.where(Session.date >= since.strftime("%Y-%m-%d"))
    if until:
        query = query.where(Session.date <= until.strftime("%Y-%m-%dT23:59:59.999Z"))
    chosen = list(query)
    if from_model:
        model = modelstore.canonical_name(from_model)
        latest = {}
        for job in Job.select().where(Job.session.in_([s.id for s in chosen])).order_by(Job.created_at_ms):
            latest[job.session_id] = job.model_name
        chosen = [s for s in chosen if latest.get(s.id) == model]
    return chosen


def _run_inline(job) -> None:
    """Run the job in this process, with a progress bar fed from the job's row."""
    from tqdm import tqdm

    from models import Job
    from workers.pipeline import JobFailed, run_transcription

    error: list[BaseException] = []

    def work():
        try:
            run_transcription(job.id)
        except JobFailed:
            pass
        except BaseException as exc:  # shown once the bar is closed
            error.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    with tqdm(total=100, desc=f"session {job.session_id}", unit="%", bar_format="{l_bar}{bar}| {n:.0f}%") as bar:
        while thread.is_alive():
            thread.join(0.5)
            bar.n = Job.get_by_id(job.id).progress
            bar.refresh()
    if error:
        raise click.ClickException(f"job {job.id} failed: {error[0]}")


@main.command()
@click.argument("session_ids", nargs=-1, type=int)
@click.option("--failed", is_flag=True, help="Every session whose transcription failed.")
@click.option("--client", "client_name", help="Sessions of this client.")
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="Sessions dated on or after this day.")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]), help="Sessions dated on or before this day.")
@click.option("--from-model", help="Sessions last transcribed with this model.")
@click.option("--model", "model_name", help="Model to use (default: the one used last time).")
@click.option("--speakers", type=click.IntRange(0, 10), help="Number of speakers; 0 or 1 = no labels (default: as before).")
@click.option("--keep-edits", is_flag=True, help="Keep paragraphs the user edited or deleted, and speaker renames.")
@click.option("--inline", is_flag=True, help="Transcribe in this process (when no worker is running).")
@click.option("--dry-run", is_flag=True, help="Only show which sessions would be re-transcribed.")
def retranscribe(session_ids, failed, client_name, since, until, from_model, model_name, speakers, keep_edits,
                 inline, dry_run) -> None:
    """Transcribe sessions again: by id, or all failed ones, or by client, date range or model."""
    from models import Session
    from services.sessions import SessionBusy, create_retranscription

    if not (session_ids or failed or client_name or since or until or from_model):
        raise click.UsageError("name sessions, or choose them with --failed, --client, --since, --until or --from-model")
    open_db()
    settings = get_settings()
    if model_name:
        try:
            model_name = modelstore.canonical_name(model_name)
        except modelstore.ModelStoreError as exc:
            raise click.BadParameter(str(exc), param_hint="--model") from None
        if not modelstore.is_downloaded(settings.model_dir, model_name):
            raise click.BadParameter(f"{model_name} is not in the model store; run `parley models pull {model_name}`",
                                     param_hint="--model")
    chosen = _selected_sessions(session_ids, failed, client_name, since, until, from_model)
    missing = set(session_ids) - {s.id for s in chosen} if session_ids else set()
    for sid in sorted(missing):
        click.echo(f"session {sid}: not found", err=True)
    if not chosen:
        click.echo("no sessions match")
        return
    verb = "would re-transcribe" if dry_run else "re-transcribing"
    click.echo(f"{verb} {len(chosen)} session(s): {', '.join(str(s.id) for s in chosen)}")
    if dry_run:
        return
    from jobs.send import send

    for session in chosen:
        try:
            job = create_retranscription(Session.get_by_id(session.id), model_name=model_name,
                                         num_speakers=speakers, keep_edits=keep_edits)
        except SessionBusy as exc:
            click.echo(f"skipped: {exc}", err=True)
            continue
        if inline:
            _run_inline(job)
            click.echo(f"session {session.id}: {type(job).get_by_id(job.id).status}")
        else:
            send("transcribe", job.id)
            click.echo(f"session {session.id}: queued job {job.id}")
    if missing:
        sys.exit(1)


# --- stuck jobs -----------------------------------------------------------------------------------
@main.command()
@click.option("--older-than", default=120, show_default=True,
              help="Seconds a job must have been quiet; fresher ones may still be on their way to the queue.")
@click.option("--dry-run", is_flag=True, help="Only show which jobs would be re-queued.")
def requeue(older_than, dry_run) -> None:
    """Re-queue unfinished jobs whose queue message was lost (e.g. after a Redis flush).

    Speech, LLM, analysis and model-pull jobs; the workers do the same every PARLEY_RECONCILE_EVERY_S
    seconds (jobs/reconciler.py), so this is for when no worker runs or for an impatient operator.
    """
    from jobs.reconciler import Busy, reconcile
    from parley.redisconn import client

    open_db()
    try:
        found = reconcile(client(get_settings().redis_url), older_than_s=older_than, dry_run=dry_run,
                          lock_wait_s=30)
    except Busy as exc:
        raise click.ClickException(str(exc)) from None
    if not found:
        click.echo("no stuck jobs")
        return
    for job in found:
        action = "would re-queue" if dry_run else "re-queued"
        click.echo(f"{action} {job.kind} job {job.job_id} (session {job.session_id or '-'}, {job.status} since "
                   f"{when(job.quiet_since_ms)})")
