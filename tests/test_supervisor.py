"""`parley supervise` on a small Procfile of shell lines: restarts with backoff, crash loops reported, clean stop.

The whole-stack behaviour (kill -9 of each real process under scripts/start) is tests/test_supervision.py;
this file checks the supervisor's own rules quickly, with processes whose behaviour the test controls.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, VENV_BIN, wait_until
from parley.supervisor import group_members as _group_members

PROCFILE = """\
# a comment line, as in the real Procfile
steady: exec sleep 1000
other: exec sleep 1000
broken: echo "cannot load model file /models/missing.bin" >&2; exit 3
stubborn: trap '' TERM; sleep 1000 & wait; sleep 1000
"""


def _states(data_dir: Path) -> dict:
    files = list((data_dir / "run").glob("supervisor.*.json"))
    if len(files) != 1:
        return {}
    try:
        return json.loads(files[0].read_text())["processes"]
    except (ValueError, OSError):  # replaced while being read: the next poll reads the new file
        return {}


def _supervise(tmp_path: Path, procfile: str, **env) -> subprocess.Popen:
    (tmp_path / "Procfile").write_text(procfile)
    log = open(tmp_path / "supervise.log", "ab")
    return subprocess.Popen(
        [str(VENV_BIN / "parley"), "supervise", "--procfile", str(tmp_path / "Procfile")], cwd=ROOT,
        env={**os.environ, "PARLEY_DATA_DIR": str(tmp_path / "data"), "PARLEY_RESTART_MIN_S": "0.2",
             "PARLEY_RESTART_MAX_S": "2", "PARLEY_RESTART_STABLE_S": "3", "PARLEY_CRASH_LOOP_AFTER": "3",
             "PARLEY_STOP_TIMEOUT_S": "2", **env},
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture()
def supervised(tmp_path):
    proc = _supervise(tmp_path, PROCFILE)
    data = tmp_path / "data"
    wait_until(lambda: all(_states(data).get(n, {}).get("state") == "running" for n in ("steady", "other", "stubborn")),
               timeout=20, what="every line running")
    yield proc, data
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)


def test_a_killed_supervisor_takes_its_processes_with_it(supervised):
    proc, data = supervised
    states = _states(data)
    os.kill(proc.pid, signal.SIGKILL)  # no clean-up of its own: the parent-death signal must do it
    proc.wait()
    # `stubborn` ignores SIGTERM, so only the lines that honour it are expected gone.
    honouring = [states["steady"]["pid"], states["other"]["pid"]]
    wait_until(lambda: all(_group_members(g) == [] for g in honouring), timeout=10, what="orphans gone")
    stubborn = states["stubborn"]["pid"]
    if _group_members(stubborn):
        os.killpg(stubborn, signal.SIGKILL)


def test_a_killed_process_is_restarted_and_the_others_keep_running(supervised):
    proc, data = supervised
    before = _states(data)
    os.kill(before["steady"]["pid"], signal.SIGKILL)

    after = wait_until(lambda: (s := _states(data)) and s["steady"]["state"] == "running"
                       and s["steady"]["pid"] != before["steady"]["pid"] and s,
                       timeout=10, what="steady restarted")
    assert after["steady"]["restarts"] == 1
    assert after["steady"]["last_exit"] == "killed by SIGKILL"
    assert after["other"]["pid"] == before["other"]["pid"] and after["other"]["restarts"] == 0
    assert proc.poll() is None


def test_a_crash_loop_is_reported_with_its_exit_and_output(supervised, tmp_path):
    _, data = supervised
    line = wait_until(lambda: (b := _states(data).get("broken")) and b["crash_looping"] and b,
                      timeout=30, what="broken reported as crash-looping")
    assert line["restarts"] >= 3
    assert line["last_exit"] == "exit code 3"
    assert line["last_output"] == "cannot load model file /models/missing.bin"
    log = (tmp_path / "supervise.log").read_text()
    assert "ERROR broken is crash-looping" in log and "exit code 3" in log
    # It keeps being tried, at the longest backoff (2 s here), rather than given up on.
    restarts = line["restarts"]
    wait_until(lambda: _states(data)["broken"]["restarts"] > restarts, timeout=10, what="another try")


def test_sigterm_stops_everything_and_leaves_no_orphan(supervised, tmp_path):
    proc, data = supervised
    groups = [line["pid"] for line in _states(data).values() if line.get("pid")]
    # `stubborn` ignores SIGTERM and has a child of its own: both must go (SIGKILL after the stop timeout).
    assert len(_group_members(_states(data)["stubborn"]["pid"])) >= 2

    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert all(_group_members(g) == [] for g in groups), {g: _group_members(g) for g in groups}
    assert not list((data / "run").glob("supervisor.*.json"))  # a clean exit removes its state file
    assert "every process has stopped" in (tmp_path / "supervise.log").read_text()

    # A second start works, with the same lines.
    again = _supervise(tmp_path, PROCFILE)
    try:
        wait_until(lambda: _states(data).get("steady", {}).get("state") == "running", timeout=20, what="second start")
    finally:
        os.killpg(again.pid, signal.SIGINT)  # Ctrl-C reaches the supervisor's group, as in a terminal
        assert again.wait(timeout=20) == 0


def test_unknown_only_names_are_refused(tmp_path):
    (tmp_path / "Procfile").write_text(PROCFILE)
    result = subprocess.run([str(VENV_BIN / "parley"), "supervise", "--procfile", str(tmp_path / "Procfile"),
                             "--only", "steady,nope"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PARLEY_DATA_DIR": str(tmp_path / "data")})
    assert result.returncode == 2
    assert "not in" in result.stderr and "nope" in result.stderr
