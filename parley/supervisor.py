"""Runs every Procfile line as its own process group and restarts any that dies, with backoff, until told to stop.

Why our own and not honcho: honcho (which reads Procfiles too) stops the whole stack when one process
exits, by design, and has no restart policy. supervisord and circus restart well but read their own
configuration files, so the Procfile would stop being the one list of processes. This module keeps the
Procfile (parsed with honcho's parser) and adds what a queue platform needs:

- each line runs under `/bin/sh -c` in a new session, so the line's whole process tree (a Dramatiq main
  process and its children, gunicorn's master and workers) is one process group we can signal;
- when a line's first process exits, whatever is left of its group gets SIGTERM, then SIGKILL, and the
  line starts again after a backoff: `min_backoff_s` after a run that lasted `stable_s` or more, doubling
  for each quick failure in a row, up to `max_backoff_s`;
- `crash_loop_after` quick failures in a row mark the line `crash-loop`: logged as an error, and kept in
  the state file the web tier reads for GET /api/docker/status, the dashboard and /metrics. It keeps
  being retried (a model file may come back), at the longest backoff;
- SIGINT or SIGTERM stops every line (SIGTERM to each group, SIGKILL after `stop_timeout_s`) and exits
  once no process of any group is left, so a second start finds free ports.

Dramatiq's main process exits when one of its worker processes dies; we keep that and restart the line,
so that one place owns the restart policy and its backoff and counts are visible.

The state file (`<data_dir>/run/supervisor.<pid>.json`, written atomically on every change, removed at a
clean exit; several supervisors may share a data directory, e.g. with `--only`) holds, per line:
state (starting, running, backoff, crash-loop, stopped), pid, started_at, restarts, crash_looping (stays
true while it runs again, until a run lasts `stable_s`), last_exit (e.g. "killed by SIGKILL", "exit code
1"), last_exit_at, last_output (the line's last output before it exited).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

# setpriv (util-linux) sets the line's parent-death signal: should the supervisor itself be killed (kill -9,
# OOM), each line gets SIGTERM instead of living on as an orphan. It fires when the spawning thread ends,
# and each line's thread lives as long as the line is supervised.
_DEATH_SIGNAL = ["setpriv", "--pdeathsig", "TERM"] if shutil.which("setpriv") else []
STATE_DIR = "run"  # under the data directory: one state file per running supervisor


@dataclasses.dataclass
class LineState:
    """What the supervisor knows of one Procfile line."""

    name: str
    command: str
    state: str = "starting"  # starting, running, backoff, crash-loop, stopped
    pid: int | None = None
    started_at: float | None = None
    restarts: int = 0
    quick_failures: int = 0  # exits in a row, each within stable_s of its start
    crash_looping: bool = False  # quick_failures reached crash_loop_after; cleared by a run of stable_s
    last_exit: str | None = None
    last_exit_at: float | None = None
    last_output: str | None = None
    next_start_at: float | None = None


def exit_reason(returncode: int) -> str:
    """'exit code 1', 'killed by SIGKILL': how a process ended, in words."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def read_procfile(path: Path) -> dict[str, str]:
    """Process name -> shell command, in the Procfile's order."""
    from honcho.environ import parse_procfile

    return dict(parse_procfile(path.read_text()).processes)


def state_path(data_dir: Path, pid: int | None = None) -> Path:
    return Path(data_dir) / STATE_DIR / f"supervisor.{pid or os.getpid()}.json"


def read_states(data_dir: Path) -> dict[str, dict]:
    """Process name -> its line's state, from every live supervisor of this data directory ({} when none)."""
    lines: dict[str, dict] = {}
    for path in sorted((Path(data_dir) / STATE_DIR).glob("supervisor.*.json")):
        try:
            state = json.loads(path.read_text())
            os.kill(int(state["supervisor_pid"]), 0)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a foreign file, or its supervisor is gone (killed: the file is stale)
        lines.update(state.get("processes") or {})
    return lines


class Supervisor:
    """Starts, watches and restarts the processes of a Procfile; `run()` blocks until SIGINT/SIGTERM."""

    def __init__(self, commands: dict[str, str], *, data_dir: Path, min_backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0, stable_s: float = 10.0, crash_loop_after: int = 3,
                 stop_timeout_s: float = 10.0, out=None):
        """
        min_backoff_s (default 0.5): wait before restarting a line whose process ran `stable_s` or more.
        max_backoff_s (default 30): the longest wait; reached after a few quick failures in a row.
        stable_s (default 10): a run at least this long resets the count of quick failures.
        crash_loop_after (default 3): quick failures in a row after which a line is reported crash-looping.
        stop_timeout_s (default 10): on stop, how long a group has after SIGTERM before SIGKILL.
        """
        self.lines = {name: LineState(name, command) for name, command in commands.items()}
        self.path = state_path(data_dir)
        self.min_backoff_s, self.max_backoff_s = min_backoff_s, max_backoff_s
        self.stable_s, self.crash_loop_after, self.stop_timeout_s = stable_s, crash_loop_after, stop_timeout_s
        self.out = out or sys.stdout
        self.started_at = time.time()
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # guards the states, the state file and the output stream
        self._groups: dict[str, int] = {}  # name -> process group id of its current run
        self._width = max((len(n) for n in self.lines), default=6)

    # --- output ------------------------------------------------------------------------------------
    def say(self, name: str, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            self.out.write(f"{stamp} {name:<{self._width}} | {text}\n")
            self.out.flush()

    def _write_state(self) -> None:
        """Atomically: a reader never sees half a file. Called with the lock held."""
        body = {"supervisor_pid": os.getpid(), "started_at": self.started_at,
                "processes": {n: dataclasses.asdict(s) for n, s in self.lines.items()}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(body, indent=1))
        os.replace(tmp, self.path)

    def _update(self, line: LineState, **changes) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(line, key, value)
            self._write_state()

    # --- one line ----------------------------------------------------------------------------------
    def _pump(self, name: str, stream, tail: deque) -> None:
        for raw in iter(stream.readline, b""):
            text = raw.decode("utf-8", "replace").rstrip("\n")
            tail.append(text)
            self.say(name, text)
        stream.close()

    def _run_line(self, line: LineState) -> None:
        while not self._stopping.is_set():
            tail: deque[str] = deque(maxlen=5)
            child = subprocess.Popen([*_DEATH_SIGNAL, "/bin/sh", "-c", line.command], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            self._groups[line.name] = child.pid  # a new session: its group id is its pid
            started = time.time()
            self._update(line, state="running", pid=child.pid, started_at=started, next_start_at=None)
            self.say("system", f"{line.name} started with pid {child.pid}")
            pump = threading.Thread(target=self._pump, args=(line.name, child.stdout, tail), daemon=True)
            pump.start()
            try:
                returncode = child.wait(timeout=self.stable_s)
            except subprocess.TimeoutExpired:
                if line.quick_failures or line.crash_looping:
                    self._update(line, quick_failures=0, crash_looping=False)
                    self.say("system", f"{line.name} has run {self.stable_s:g} s: no longer counted as failing")
                returncode = child.wait()
            self._sweep(child.pid, grace_s=2.0 if not self._stopping.is_set() else self.stop_timeout_s)
            pump.join(timeout=2.0)
            if self._stopping.is_set():
                self._update(line, state="stopped", pid=None, last_exit=exit_reason(returncode), last_exit_at=time.time())
                self.say("system", f"{line.name} stopped ({exit_reason(returncode)})")
                return
            ran_s = time.time() - started
            quick = line.quick_failures + 1 if ran_s < self.stable_s else 0
            delay = self.min_backoff_s if quick == 0 else min(self.max_backoff_s, self.min_backoff_s * 2 ** quick)
            looping = quick >= self.crash_loop_after
            if looping:
                delay = self.max_backoff_s
            reason = exit_reason(returncode)
            last_output = next((t for t in reversed(tail) if t.strip()), None)
            self._update(line, state="crash-loop" if looping else "backoff", pid=None, last_exit=reason,
                         last_exit_at=time.time(), last_output=last_output, quick_failures=quick,
                         crash_looping=looping or line.crash_looping and quick > 0,
                         restarts=line.restarts + 1, next_start_at=time.time() + delay)
            if looping:
                self.say("system", f"ERROR {line.name} is crash-looping: {quick} exits in a row within "
                                   f"{self.stable_s:g} s of starting (last: {reason}; its last output: "
                                   f"{last_output!r}); next try in {delay:g} s")
            else:
                self.say("system", f"{line.name} exited after {ran_s:.1f} s ({reason}); restarting in {delay:g} s")
            self._stopping.wait(delay)
        self._update(line, state="stopped", pid=None)

    def _sweep(self, pgid: int, *, grace_s: float) -> None:
        """Ends whatever is left of a process group: SIGTERM, then SIGKILL after `grace_s`."""
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            if not _group_alive(pgid):
                return
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait_s
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.05)  # polling: a group's members are not our children, nothing to wait on

    # --- the whole stack -----------------------------------------------------------------------------
    def run(self) -> int:
        # The handler only records the request: stopping takes the lock, which the interrupted code may hold.
        requested: list[str] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, frame: requested.append(signal.Signals(signum).name))
        threads = [threading.Thread(target=self._run_line, args=(line,), name=f"supervise-{line.name}")
                   for line in self.lines.values()]
        with self._lock:
            self._write_state()
        for thread in threads:
            thread.start()
        stop_deadline = None
        while any(t.is_alive() for t in threads):
            if requested and stop_deadline is None:
                self.stop(f"received {requested[0]}")
                stop_deadline = time.monotonic() + self.stop_timeout_s
            if stop_deadline is not None and time.monotonic() > stop_deadline:
                self._kill_all()  # a line ignoring SIGTERM: its leader's wait() only returns after this
                stop_deadline = float("inf")
            for thread in threads:
                thread.join(timeout=0.1)  # short joins: the main thread must stay free for signals
        with self._lock:
            self.path.unlink(missing_ok=True)
        self.say("system", "every process has stopped")
        return 0

    def stop(self, why: str) -> None:
        if self._stopping.is_set():
            return
        self.say("system", f"stopping every process ({why})")
        self._stopping.set()
        for pgid in list(self._groups.values()):
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass


    def _kill_all(self) -> None:
        for name, pgid in list(self._groups.items()):
            if _group_alive(pgid):
                self.say("system", f"{name} did not stop within {self.stop_timeout_s:g} s: SIGKILL")
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _group_alive(pgid: int) -> bool:
    """Whether any process (zombies aside) is still in process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(0) also succeeds for zombies waiting for a parent; look for a member that is not one.
    return bool(group_members(pgid))


def group_members(pgid: int) -> list[int]:
    """The pids of the live (not zombie) processes of process group `pgid`, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members
