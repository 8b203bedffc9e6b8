"""The deployment's processes in the shape of the sessions API's Docker endpoints.

Parley runs no containers, so GET /api/docker/status lists its processes instead, each as a
"container" named:

- `parley-web`: this web tier (gunicorn); id `host:pid` of its master process; ports from PARLEY_BIND.
- `parley-worker-<name>`: each Dramatiq worker, `<name>` being its PARLEY_PROCESS_NAME (the Procfile line).
  State comes from heartbeats: running while one beats; exited when its last heartbeat has stopped;
  not_found when the Procfile (PARLEY_PROCFILE, default ./Procfile) expects it and none ever beat.
  Several live workers of one name are `parley-worker-<name>.1`, `.2`, ...
- `parley-redis`: PING and INFO server. `parley-database`: SELECT 1. `parley-search`: a probe query on
  the search backend. Each is running, or unhealthy when it does not answer.
- Under `parley supervise` (scripts/start), the web, worker and Redis entries also carry the supervisor's
  view in `details.supervisor` (state, restarts, last exit and its last output line), and a line waiting
  to be restarted, or crash-looping and not up, is `restarting` ("Restarting (killed by SIGKILL) 3 seconds
  ago", Docker's wording), whatever its heartbeat said.
- `therascript_whisper_service` (the transcription workers) and `therascript_elasticsearch_service`
  (the search backend): the names the sessions client asks for, as aliases.

GET /api/docker/logs/{name} gives the last 200 lines of a process's log (`<log_dir>/<name>.log`).
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import re
import shlex
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import psutil
import redis
from flask import Blueprint, current_app, request
from pydantic import ConfigDict

from jobs.heartbeats import SPEECH_QUEUES, alive_workers, last_beats
from parley import logs
from parley.config import get_settings
from parley.supervisor import read_states
from web.declared import Field, SparseWireModel, WireModel, endpoint
from web.errors import ApiError

processes_bp = Blueprint("processes", __name__, url_prefix="/api/docker")

LOG_LINES = 200
WHISPER_ALIAS = "therascript_whisper_service"
SEARCH_ALIAS = "therascript_elasticsearch_service"
NOT_FOUND_STATUS = "Container not found"


@dataclasses.dataclass
class Process:
    """One process of the deployment, as a container of the Docker endpoints."""

    name: str
    id: str = "N/A"
    image: str = "N/A"
    state: str = "not_found"  # running, restarting, exited, not_found or unhealthy
    status: str = NOT_FOUND_STATUS
    ports: list[dict] = dataclasses.field(default_factory=list)
    details: dict = dataclasses.field(default_factory=dict)
    log_names: list[str] = dataclasses.field(default_factory=list)  # log files (process names) it writes
    no_log: str = ""  # why it has no log of its own, when log_names is empty

    def container(self) -> dict:
        return {"id": self.id, "name": self.name, "image": self.image, "state": self.state, "status": self.status,
                "ports": self.ports, "details": self.details}


def _version() -> str:
    try:
        return importlib.metadata.version("parley")
    except importlib.metadata.PackageNotFoundError:
        return "dev"


def _duration(seconds: float) -> str:
    """Docker's wording of a duration: '5 seconds', 'About a minute', '3 hours'."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = seconds // 60
    if minutes < 2:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} hour{'s' if hours != 1 else ''}"
    return f"{hours // 24} days"


def _started_at(pid: int) -> float | None:
    """When process `pid` started (Unix time); None where that cannot be known (gone, not ours to see)."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _host_port(address: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(address if "//" in address else f"//{address}")
    return parts.hostname or "127.0.0.1", parts.port or default_port


# --- the processes ---------------------------------------------------------------------------------
def _web() -> Process:
    under_gunicorn = "gunicorn" in os.path.basename(sys.argv[0] if sys.argv else "")
    master = os.getppid() if under_gunicorn else os.getpid()
    started = _started_at(master)
    bind = get_settings().bind  # unset: the Procfile's default, read from the request below
    ports = []
    if bind and not bind.startswith("unix:"):
        host, port = _host_port(bind.split(",")[0].strip(), 8000)
        ports = [{"PrivatePort": port, "PublicPort": port, "Type": "tcp", "IP": host}]
    elif not bind and request.environ.get("SERVER_PORT", "").isdigit():
        port = int(request.environ["SERVER_PORT"])
        ports = [{"PrivatePort": port, "PublicPort": port, "Type": "tcp", "IP": request.environ.get("SERVER_NAME", "")}]
    name = get_settings().process_name or "web"
    return Process("parley-web", id=f"{socket.gethostname()}:{master}", image=f"parley-web:{_version()}",
                   state="running", status=f"Up {_duration(time.time() - started)}" if started else "Up",
                   ports=ports, log_names=[name],
                   details={"kind": "web", "host": socket.gethostname(), "pid": master, "servingPid": os.getpid()})


def expected_workers(procfile: Path | None = None) -> dict[str, list[str]]:
    """Worker name -> queues, for each Dramatiq line of the Procfile (PARLEY_PROCFILE, default ./Procfile)."""
    path = procfile or get_settings().procfile
    try:
        text = path.read_text()
    except OSError:
        return {}
    workers = {}
    for line in text.splitlines():
        key, _, command = line.partition(":")
        if line.lstrip().startswith("#") or not command or "dramatiq" not in command:
            continue
        try:
            words = shlex.split(command)
        except ValueError:
            continue
        name = next((w.split("=", 1)[1] for w in words if w.startswith("PARLEY_PROCESS_NAME=")), key.strip())
        queues = []
        if "--queues" in words:
            for word in words[words.index("--queues") + 1:]:
                if word.startswith("-"):
                    break
                queues.append(word)
        workers[name] = queues
    return workers


def expected_names(procfile: Path | None = None) -> list[str]:
    """The process names this deployment's Procfile stands for, as /api/docker/status names them."""
    return sorted(["parley-web", "parley-redis", "parley-database", "parley-search", WHISPER_ALIAS, SEARCH_ALIAS,
                   *(f"parley-worker-{name}" for name in expected_workers(procfile))])


def _worker_name(beat: dict) -> str:
    name = beat.get("name") or "-".join(beat.get("queues") or []) or "worker"
    try:
        return logs.check_name(name)
    except logs.UnknownName:
        return "unnamed"


def _workers(conn: redis.Redis) -> list[Process]:
    expected = expected_workers()
    try:
        alive, last = alive_workers(conn), last_beats(conn)
    except redis.RedisError as exc:
        return [Process(f"parley-worker-{name}", state="unhealthy", details={"kind": "worker", "queues": queues},
                        status=f"State unknown: Redis, where heartbeats are kept, does not answer ({type(exc).__name__})",
                        log_names=[name]) for name, queues in expected.items()]
    by_name: dict[str, list[dict]] = {}
    for beat in alive:
        by_name.setdefault(_worker_name(beat), []).append(beat)
    processes = []
    image = f"parley-worker:{_version()}"
    for name, beats in by_name.items():
        beats.sort(key=lambda b: (str(b.get("host")), int(b.get("pid") or 0)))
        for number, beat in enumerate(beats, 1):
            busy = beat.get("busy") or []
            status = f"Up {_duration(time.time() - float(beat.get('started_at') or time.time()))}"
            processes.append(Process(
                f"parley-worker-{name}" if len(beats) == 1 else f"parley-worker-{name}.{number}",
                id=f"{beat.get('host')}:{beat.get('pid')}", image=image, state="running",
                status=status + (f" (busy: {', '.join(busy)})" if busy else " (idle)"), log_names=[name],
                details=_worker_details(beat)))
    for beat in last:
        name = _worker_name(beat)
        if name in by_name:
            continue
        by_name[name] = [beat]
        when = float(beat.get("stopped_at") or beat.get("seen_at") or time.time())
        how = "stopped" if beat.get("stopped_at") else "last heartbeat"
        processes.append(Process(f"parley-worker-{name}", id=f"{beat.get('host')}:{beat.get('pid')}", image=image,
                                 state="exited", status=f"Exited ({how} {_duration(time.time() - when)} ago)",
                                 log_names=[name], details=_worker_details(beat)))
    for name, queues in expected.items():
        if name not in by_name:
            processes.append(Process(f"parley-worker-{name}", log_names=[name],
                                     details={"kind": "worker", "queues": queues, "expectedBy": "Procfile"}))
    return processes


def _worker_details(beat: dict) -> dict:
    return {"kind": "worker", "host": beat.get("host"), "pid": beat.get("pid"), "queues": beat.get("queues") or [],
            "device": beat.get("device"), "busy": beat.get("busy") or [], "diarization": beat.get("diarization")}


def _redis(conn: redis.Redis, url: str) -> Process:
    host, port = _host_port(url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1], 6379)
    name = "parley-redis"
    reason = "Redis writes <log_dir>/redis.log when the Procfile starts it (scripts/run-redis)."
    try:
        conn.ping()
        info = conn.info("server")
    except redis.RedisError as exc:
        return Process(name, id=f"{host}:{port}", image="redis", state="unhealthy", log_names=["redis"], no_log=reason,
                       status=f"Not answering at {host}:{port} ({type(exc).__name__})", details={"kind": "redis"})
    return Process(name, id=f"{host}:{info.get('process_id')}", image=f"redis:{info.get('redis_version')}",
                   state="running", status=f"Up {_duration(float(info.get('uptime_in_seconds') or 0))}",
                   ports=[{"PrivatePort": int(info.get("tcp_port") or port), "PublicPort": port, "Type": "tcp",
                           "IP": host}], log_names=["redis"], no_log=reason,
                   details={"kind": "redis", "host": host, "pid": info.get("process_id")})


def _database(database_url: str) -> Process:
    from models import db

    name = "parley-database"
    no_log = "Parley keeps no log of the database server; SQLite has none, and PostgreSQL logs where its server is set to."
    if database_url.startswith("sqlite"):
        where, image, ports = database_url.split(":///", 1)[-1], f"sqlite:{sqlite3.sqlite_version}", []
        version_sql = None
    else:
        parts = urlsplit(database_url)  # never parts.password: it must not reach the output
        host, port = parts.hostname or "localhost", parts.port or 5432
        where, image = f"{host}:{port}{parts.path}", "postgresql"
        ports = [{"PrivatePort": port, "PublicPort": port, "Type": "tcp", "IP": host}]
        version_sql = "SHOW server_version"
    try:
        db.execute_sql("SELECT 1")
        if version_sql:
            image = f"postgresql:{db.execute_sql(version_sql).fetchone()[0].split()[0]}"
    except Exception as exc:  # noqa: BLE001  (any failure means "not answering")
        return Process(name, id=where, image=image, state="unhealthy", ports=ports, no_log=no_log,
                       status=f"Not answering ({type(exc).__name__})", details={"kind": "database"})
    return Process(name, id=where, image=image, state="running", status="Up (SELECT 1 answered)", ports=ports,
                   no_log=no_log, details={"kind": "database"})


def _search(database_url: str) -> Process:
    from services import search

    name = "parley-search"
    try:
        backend = search.backend()
    except Exception as exc:  # noqa: BLE001  (a misconfigured backend is reported, not raised)
        return Process(name, image="unknown", state="unhealthy", status=f"Not configured: {exc}",
                       details={"kind": "search"}, no_log="There is no search backend to read a log from.")
    if backend.name == "opensearch":
        parts = urlsplit(getattr(backend, "url", ""))
        host, port = parts.hostname or "127.0.0.1", parts.port or 9200
        where, image = f"{host}:{port}", "opensearch"
        ports = [{"PrivatePort": port, "PublicPort": port, "Type": "tcp", "IP": host}]
        no_log = "Parley keeps no log of the OpenSearch cluster; index updates are logged by the io worker."
    else:
        engine = "sqlite-fts5" if database_url.startswith("sqlite") else "postgresql-fts"
        where, image, ports = "database", engine, []
        no_log = "Search runs inside the database (full-text index); index updates are logged by the io worker."
    ok = search.healthy()
    return Process(name, id=where, image=image, state="running" if ok else "unhealthy", ports=ports,
                   status="Up (a probe query answered)" if ok else "Not answering a probe query", no_log=no_log,
                   details={"kind": "search", "backend": backend.name})


def _supervised(processes: list[Process], data_dir: Path) -> None:
    """Adds the process supervisor's view (restarts, last exit, crash loops) to the processes it runs."""
    lines = read_states(data_dir)
    if not lines:
        return
    # A line's process name is the PARLEY_PROCESS_NAME its command sets (the line's key otherwise).
    by_name = {}
    for key, line in lines.items():
        found = re.search(r"PARLEY_PROCESS_NAME=([\w.-]+)", line.get("command") or "")
        by_name[found.group(1) if found else key] = line
    now = time.time()
    for process in processes:
        line = by_name.get(process.log_names[0]) if process.log_names else None
        if line is None:
            continue
        process.details["supervisor"] = {
            "state": line.get("state"), "pid": line.get("pid"), "restarts": line.get("restarts") or 0,
            "crashLooping": bool(line.get("crash_looping")), "lastExit": line.get("last_exit"),
            "lastExitAt": line.get("last_exit_at"), "lastOutput": line.get("last_output")}
        waiting = line.get("state") in ("backoff", "crash-loop")
        # The web entry is written by a web process that answers: it is up, whatever the line's state.
        if process.details.get("kind") != "web" and (
                waiting or line.get("crash_looping") and process.state != "running"):
            ago = _duration(now - float(line.get("last_exit_at") or now))
            process.state = "restarting"
            process.status = f"Restarting ({line.get('last_exit')}) {ago} ago"
        if line.get("restarts"):
            process.status += f"; restarted {line['restarts']} time{'s' if line['restarts'] != 1 else ''}"
        if line.get("crash_looping"):
            process.status += f"; crash loop, last output: {line.get('last_output') or '-'}"


def _aliases(processes: list[Process]) -> list[Process]:
    """The two names the sessions client asks for, standing for the processes that do that work today."""
    speech = [p for p in processes if p.details.get("kind") == "worker"
              and set(p.details.get("queues") or []) & SPEECH_QUEUES]
    whisper = Process(WHISPER_ALIAS, details={"kind": "alias", "aliasOf": [p.name for p in speech]},
                      no_log="No transcription worker is configured or has run (see the Procfile).")
    for state in ("running", "restarting", "exited", "unhealthy"):
        chosen = [p for p in speech if p.state == state]
        if chosen:
            whisper.id = ",".join(p.id for p in chosen)
            whisper.image, whisper.state = chosen[0].image, state
            whisper.status = f"{chosen[0].status} (alias of {', '.join(p.name for p in chosen)})"
            break
    whisper.log_names = sorted({n for p in speech if p.state != "not_found" for n in p.log_names})
    aliases = [whisper]
    found = [p for p in processes if p.name == "parley-search"]
    if found:
        search = found[0]
        aliases.append(dataclasses.replace(search, name=SEARCH_ALIAS, status=f"{search.status} (alias of parley-search)",
                                           details={**search.details, "kind": "alias", "aliasOf": ["parley-search"]}))
    return aliases


def deployment() -> list[Process]:
    """Every process of the deployment, aliases included, sorted by name."""
    settings = current_app.config["PARLEY_SETTINGS"]
    conn = current_app.extensions["parley_redis"]
    processes = [_web(), *_workers(conn), _redis(conn, settings.redis_url), _database(settings.database_url),
                 _search(settings.database_url)]
    _supervised(processes, settings.data_dir)
    processes += _aliases(processes)
    return sorted(processes, key=lambda p: p.name)


# --- shapes ------------------------------------------------------------------------------------------
class DockerPort(SparseWireModel):
    private_port: int = Field(alias="PrivatePort", description="Port the process listens on")
    public_port: int | None = Field(None, alias="PublicPort", description="Port clients use")
    type: Literal["tcp"] = Field(alias="Type")
    ip: str | None = Field(None, alias="IP", description="Address it is reached at")


class DockerContainer(WireModel):
    model_config = ConfigDict(str_strip_whitespace=False)  # statuses quote a process's last output as it was

    id: str = Field(description="host:pid of the process (the database: its file or host:port/name); N/A when not "
                    "found")
    name: str = Field(description="parley-web, parley-worker-<name>, parley-redis, parley-database, parley-search, "
                      "or an alias: therascript_whisper_service, therascript_elasticsearch_service")
    image: str = Field(description="What runs, as name:version, e.g. redis:7.0.15, sqlite:3.40.1; N/A when not found")
    state: Literal["running", "restarting", "exited", "not_found", "unhealthy"]
    status: str = Field(description="Docker-style wording, e.g. 'Up 3 minutes (idle)', 'Exited (stopped 2 minutes "
                        "ago)', 'Container not found'")
    ports: list[DockerPort]
    details: dict[str, Any] = Field(default_factory=dict, description=(
        "kind (web, worker, redis, database, search, alias); workers: host, pid, queues, device, busy; aliases: "
        "aliasOf. Under `parley supervise`: supervisor {state, pid, restarts, crashLooping, lastExit, lastExitAt, "
        "lastOutput}"))


class DockerStatus(WireModel):
    containers: list[DockerContainer]


class DockerLogs(WireModel):
    model_config = ConfigDict(str_strip_whitespace=False)  # a log's first line may well start with spaces

    logs: str = Field(description="The last 200 lines, with UTC timestamps, secrets redacted; or why there is no log")
    container_name: str = Field(description="The name asked for")


# --- routes ------------------------------------------------------------------------------------------
@processes_bp.get("/status")
@endpoint(tag="monitoring", operation_id="docker_status",
          responses={200: (DockerStatus, "Every process, sorted by name")})
def status():
    """The deployment's processes, as containers

    Parley runs no containers: this lists its processes in the sessions API's shape. Workers' state comes from
    heartbeats (running; exited once a worker's heartbeat stopped; not_found when the Procfile expects one that
    never beat); Redis, the database and search are probed (running or unhealthy). Under `parley supervise`
    (scripts/start) a process waiting to be restarted, or crash-looping and not up, is restarting, and its status
    names its last exit and restart count. therascript_whisper_service stands for the transcription workers and
    therascript_elasticsearch_service for the search backend.
    """
    return DockerStatus.model_validate({"containers": [p.container() for p in deployment()]})


# <path:...>: an encoded slash (..%2Fetc%2Fpasswd) arrives decoded and must reach the 400 below, not a 404.
@processes_bp.get("/logs/<path:name>")
@endpoint(tag="monitoring", operation_id="docker_logs", path_parameters={"name": (
    "A name from GET /api/docker/status: those the Procfile stands for (listed here). Workers beyond them "
    "(another machine's, or a second process of one line: name.1, name.2) are answered too",
    lambda: {"type": "string", "enum": expected_names()})}, responses={
    200: (DockerLogs, "The log's last 200 lines, or a sentence saying why the process has none"),
    400: "Not a known process name; the message lists the known names",
    404: "The name holds a line break, which no process name has: no route matches it"})
def process_logs(name: str):
    """The last lines of a process's log

    Each process writes `<PARLEY_LOG_DIR>/<process name>.log` (default `<data_dir>/logs`). An alias gives the logs
    of the processes it stands for.
    """
    known = {p.name: p for p in deployment()}
    process = known.get(name)
    if process is None:
        raise ApiError(400, f"unknown process {name!r}; known names: {', '.join(sorted(known))}")
    return DockerLogs(logs=_log_text(process), container_name=name)


def _log_text(process: Process) -> str:
    if not process.log_names:
        return f"No log for {process.name}: {process.no_log}"
    log_dir = current_app.config["PARLEY_SETTINGS"].log_dir
    several = len(process.log_names) > 1
    # A header line per file when there are several; all together stay within LOG_LINES lines.
    per_file = max(1, (LOG_LINES - len(process.log_names)) // len(process.log_names)) if several else LOG_LINES
    sections = []
    for log_name in process.log_names:
        try:
            path = logs.log_path(log_dir, log_name)
        except logs.UnknownName:
            continue
        if not path.is_file():
            host = process.details.get("host") if process.details.get("kind") == "worker" else None
            elsewhere = f" It runs on {host}; its log is on that machine." if host and host != socket.gethostname() else ""
            sections.append(f"No log file for {process.name} yet at {path}.{elsewhere} "
                            + (process.no_log or "The process writes it once it has started."))
            continue
        text = "\n".join(logs.tail(path, per_file))
        sections.append(f"==> {log_name}.log <==\n{text}" if several else text)
    # Files written before a secret was registered in this process, or by Redis, get the same redaction.
    return logs.redact("\n".join(sections))
