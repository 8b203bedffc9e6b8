"""The soak's end checks: every job terminal, transcripts as in the calm run, streams whole, no orphans, no leaks."""
from __future__ import annotations

import json
import sqlite3
from collections import Counter
from dataclasses import dataclass, field

from .load import TERMINAL, Load
from .stack import ProcessFigures, SoakStack
from .streams import StreamClient, sequence_faults

# A process whose file descriptors or memory grew more than this from the start to the end is reported as
# leaking. Generous on purpose: caches fill and allocators keep freed memory; a leak of one fd or buffer per
# job over hundreds of jobs shows far above these.
FD_SLACK = 24
RSS_SLACK_MIB = 96
RSS_SLACK_SHARE = 0.35


@dataclass
class Check:
    name: str
    ok: bool
    figures: list[str] = field(default_factory=list)


def segments_of(conn: sqlite3.Connection, job_id: str) -> list[tuple]:
    """(idx, start ms, end ms, text, speaker) of a job's stored segments, in order."""
    rows = conn.execute("SELECT idx, start, end, text, speaker FROM segment WHERE job_id = ? ORDER BY idx",
                        (job_id,)).fetchall()
    return [(i, round(s * 1000), round(e * 1000), t, sp) for i, s, e, t, sp in rows]


def connect(stack: SoakStack) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{stack.db_path}?mode=ro", uri=True, timeout=30)


def check_terminal(stack: SoakStack, load: Load) -> Check:
    summary = load.summary()
    unfinished = [i for i in load.items if not i.done]
    refused = [i for i in load.items if i.state == "refused"]
    no_reason = [i for i in load.items if i.state == "failed" and not (i.reason or "").strip()]
    figures = [f"{kind}: {states}" for kind, states in summary["by_kind"].items()]
    figures += [f"  failed/refused x{n}: {why}" for why, n in summary["reasons"].items()]
    with connect(stack) as conn:
        half = []
        for table, reason in (("job", "error"), ("llm_job", "error"), ("analysis_job", "error_message"),
                              ("model_pull", "error")):
            rows = conn.execute(f"SELECT status, count(*), sum({reason} IS NULL OR trim({reason}) = '') "
                                f"FROM {table} GROUP BY status").fetchall()
            figures.append(f"table {table}: " + ", ".join(f"{s} {n}" for s, n, _ in rows))
            half += [f"{table}: {n} {s}" for s, n, _ in rows if s not in TERMINAL]
            half += [f"{table}: {blank} failed without a reason" for s, _, blank in rows if s == "failed" and blank]
        rows = conn.execute("SELECT status, count(*) FROM session GROUP BY status").fetchall()
        figures.append("table session: " + ", ".join(f"{s} {n}" for s, n in rows))
        half += [f"session: {n} {s}" for s, n in rows if s not in ("completed", "failed")]
    figures += [f"  NOT TERMINAL: {h}" for h in half]
    figures += [f"  never answered: {i.kind} due at {i.at_s:.0f}s ({i.state})" for i in unfinished[:10]]
    figures.append(f"client retries while faults were on: {sum(sum(i.retries.values()) for i in load.items)} "
                   f"({summary['client_retries']}); longest waits for an answer: {summary['longest_answers']}")
    ok = not unfinished and not half and not no_reason and not refused
    return Check("every job is terminal (completed, or failed with a reason)", ok, figures)


def check_transcripts(stack: SoakStack, load: Load) -> Check:
    compared, same, speaker_only, faults = 0, 0, 0, []
    with connect(stack) as conn:
        for item in load.items:
            if item.state != "completed" or not item.job_id or not item.clip:
                continue
            reference = load.references[(item.clip, item.speakers)]["segments"]
            got = segments_of(conn, item.job_id)
            compared += 1
            bare = lambda segs: [s[:4] for s in segs]  # noqa: E731 - without the speaker
            if got == reference:
                same += 1
            elif bare(got) == bare(reference):
                speaker_only += 1
            else:
                texts_ref, texts_got = Counter(s[1:4] for s in reference), Counter(s[1:4] for s in got)
                lost, extra = texts_ref - texts_got, texts_got - texts_ref
                faults.append(f"{item.kind} {item.clip} job {item.job_id}: {len(got)} segments vs {len(reference)}; "
                              f"lost {sum(lost.values())}, duplicated/other {sum(extra.values())}: "
                              f"{list(lost)[:2]} / {list(extra)[:2]}")
    figures = [f"{compared} finished transcripts compared with the calm run: {same} identical, "
               f"{speaker_only} with the same segments but other speaker labels, {len(faults)} different"]
    figures += [f"  {f}" for f in faults[:12]]
    return Check("no transcript lost or duplicated a segment (vs the calm run)", not faults and compared > 0, figures)


def check_streams(stack: SoakStack, load: Load) -> Check:
    clients = [i.stream for i in load.items if i.stream]
    bad, resumes, hangups = [], 0, 0
    for client in clients:
        client.join(timeout=60)
        resumes += max(0, client.connections - 1)
        hangups += client.hung_up
        log_reader = StreamClient(stack.base, client.job_id, kind="sse", hangups=0, rng=client.rng, timeout=60)
        log_reader.run()  # the job's whole log, read now in one go
        problems = ([client.error] if client.error else []) + sequence_faults(client.events, log_reader.events)
        if log_reader.error:
            problems.append(f"whole log unreadable: {log_reader.error}")
        if problems:
            bad.append(f"{client.kind} job {client.job_id}: {'; '.join(problems)}")
    by_kind = Counter(c.kind for c in clients)
    figures = [f"{len(clients)} stream clients ({dict(by_kind)}): {hangups} hang-ups on purpose, {resumes} "
               f"resumed connections in all, {sum(len(c.events) for c in clients)} events; {len(bad)} with faults"]
    figures += [f"  {b}" for b in bad[:12]]
    return Check("every stream client got a gap-free, duplicate-free sequence", not bad and bool(clients), figures)


def check_leftovers(stack: SoakStack) -> Check:
    """No file in the data directory that no row references (or a row whose file is gone), no half-made rows."""
    audio_dir, tmp_dir = stack.data_dir / "audio", stack.data_dir / "tmp"
    files = {p.name for p in audio_dir.iterdir() if p.is_file()} if audio_dir.exists() else set()
    temporary = sorted(p.name for p in tmp_dir.rglob("*") if p.is_file()) if tmp_dir.exists() else []
    half = []
    with connect(stack) as conn:
        referenced = {r[0] for r in conn.execute("SELECT audio_path FROM job WHERE audio_path IS NOT NULL "
                                                 "UNION SELECT audio_path FROM session WHERE audio_path IS NOT NULL")}
        for job_id, plan_done, plan in conn.execute(
                "SELECT id, chunks_done, chunk_plan FROM job WHERE status = 'completed' AND kind = 'transcribe'"):
            chunks = len(json.loads(plan)) if plan else 0
            if plan and plan_done != chunks:
                half.append(f"job {job_id} completed with {plan_done}/{chunks} chunks done")
            idx = [r[0] for r in conn.execute("SELECT idx FROM segment WHERE job_id = ? ORDER BY idx", (job_id,))]
            if idx != list(range(len(idx))):
                half.append(f"job {job_id}: segment indexes not 0..n-1")
        half += [f"session {sid} is {st} but its job is {js}" for sid, st, js in conn.execute(
            "SELECT s.id, s.status, j.status FROM session s JOIN job j ON j.id = s.whisper_job_id "
            "WHERE j.status IN ('completed', 'failed') AND s.status != j.status")]
        half += [f"analysis {a}: session part {st} in a {ast} job" for a, st, ast in conn.execute(
            "SELECT a.id, s.status, a.status FROM analysis_summary s JOIN analysis_job a ON a.id = s.analysis_job_id "
            "WHERE a.status = 'completed' AND s.status != 'completed'")]
        # A session's first chat opens with an AI message of its own ("has been transcribed"), not a reply.
        half += [f"chat {c}: {ai} AI messages for {user} messages" for c, user, ai in conn.execute(
            "SELECT m.chat_id, sum(m.sender = 'user'), sum(m.sender = 'ai') FROM message m JOIN chat c "
            "ON c.id = m.chat_id GROUP BY m.chat_id "
            "HAVING sum(m.sender = 'ai') > sum(m.sender = 'user') + (c.session_id IS NOT NULL)")]
        half += [f"reply job {j} completed but its message {m} is gone" for j, m in conn.execute(
            "SELECT id, json_extract(result, '$.message_id') FROM llm_job WHERE kind = 'chat_reply' AND "
            "status = 'completed' AND json_extract(result, '$.message_id') IS NOT NULL AND "
            "json_extract(result, '$.message_id') NOT IN (SELECT id FROM message)")]
    orphans, missing = sorted(files - referenced), sorted(referenced - files)
    figures = [f"{len(files)} audio files, {len(referenced)} referenced by rows; {len(orphans)} orphan files, "
               f"{len(missing)} rows whose file is gone, {len(temporary)} files left in tmp/, "
               f"{len(half)} rows in a half state"]
    figures += [f"  orphan: {o}" for o in orphans[:5]] + [f"  missing: {m}" for m in missing[:5]]
    figures += [f"  tmp: {t}" for t in temporary[:5]] + [f"  half: {h}" for h in half[:10]]
    return Check("no orphan files and no rows in a half state", not (orphans or missing or temporary or half),
                 figures)


def check_processes(start: dict[str, ProcessFigures], end: dict[str, ProcessFigures]) -> Check:
    figures, leaks = [], []
    figures.append(f"{'line':<10} {'restarts':>8} {'RSS MiB start':>14} {'end':>8} {'fds start':>10} {'end':>6}")
    for line in sorted(set(start) | set(end)):
        a, b = start.get(line), end.get(line)
        if not a or not b:
            leaks.append(f"{line}: not running at the {'start' if not a else 'end'}")
            continue
        figures.append(f"{line:<10} {b.restarts - a.restarts:>8} {a.rss_mib:>14.0f} {b.rss_mib:>8.0f} "
                       f"{a.fds:>10} {b.fds:>6}")
        if not b.pids:
            leaks.append(f"{line}: no process at the end")
        if b.fds > a.fds + FD_SLACK:
            leaks.append(f"{line}: file descriptors {a.fds} -> {b.fds}")
        if b.rss_mib > a.rss_mib * (1 + RSS_SLACK_SHARE) + RSS_SLACK_MIB:
            leaks.append(f"{line}: memory {a.rss_mib:.0f} -> {b.rss_mib:.0f} MiB")
    figures += [f"  LEAK? {x}" for x in leaks]
    figures.append(f"(a leak: more than {FD_SLACK} more fds, or memory above start x{1 + RSS_SLACK_SHARE:.2f} "
                   f"+ {RSS_SLACK_MIB} MiB; a restarted line is compared in its new process)")
    return Check("memory and file descriptors of every process, start vs end (no leak)", not leaks, figures)
