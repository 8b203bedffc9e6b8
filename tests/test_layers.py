"""The layering of .importlinter holds (import-linter), and every module has a place in it."""
from __future__ import annotations

import configparser
import re
import subprocess

from conftest import ROOT, VENV_BIN


def test_every_import_linter_contract_is_kept():
    run = subprocess.run([str(VENV_BIN / "lint-imports"), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "BROKEN" not in run.stdout and run.stdout.count("KEPT") >= 4


def test_every_module_is_in_a_layer():
    """A module no layer names would escape the layers contract: each must be in one, or under one that is."""
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    layers = config["importlinter:contract:layers"]["layers"].split("\n")
    named = {name.strip() for line in layers for name in line.replace("|", ":").split(":") if name.strip()}
    roots = config["importlinter"]["root_packages"].split()
    unplaced = []
    for root in roots:
        for path in (ROOT / root).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            module = module.removesuffix(".__init__")
            if module in roots and not re.search(r"^(from|import) ", path.read_text(), re.M):
                continue  # a package's own __init__ that only documents it: it imports nothing
            if not any(module == n or module.startswith(n + ".") for n in named):
                unplaced.append(module)
    assert unplaced == [], "add these to a layer in .importlinter"


MAX_MODULE_LINES = 500


def test_every_module_is_short_and_says_its_job():
    """The style rule: a module over 500 lines is split by responsibility, and each starts with one line saying
    its job (a docstring, after a script's #! line)."""
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True)
    long, silent = [], []
    for name in tracked.stdout.split():
        lines = (ROOT / name).read_text().splitlines()
        if len(lines) > MAX_MODULE_LINES:
            long.append(f"{name} ({len(lines)} lines)")
        first = next((line for line in lines if not line.startswith("#!")), "")
        if lines and not (first.startswith('"""') and len(first.strip('"').strip()) > 10):
            silent.append(name)
    assert long == [], "split these by responsibility"
    assert silent == [], "start these with a one-line docstring saying the module's job"
