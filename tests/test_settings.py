"""The typed settings: every variable declared once, read once, documented in the README, checked at start."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from conftest import ROOT, VENV_BIN
from parley.config import SCRIPT_VARIABLES, Settings, markdown_table

# Names that look like variables and are not: the test harness's own (they configure the tests) and two keys
# of Flask's app.config.
NOT_SETTINGS = ("PARLEY_TEST_", "PARLEY_NO_SKIPS", "PARLEY_SETTINGS", "PARLEY_OPEN_NETWORK")
APP_PACKAGES = ("web", "workers", "jobs", "models", "parley", "migrations")


def declared() -> set[str]:
    return {field.json_schema_extra["env"] for field in Settings.model_fields.values()}


def test_every_variable_the_code_names_is_a_declared_setting():
    named = set()
    files = [p for pkg in APP_PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    files += [ROOT / "Procfile", ROOT / "gunicorn.conf.py", *(ROOT / "scripts").glob("*")]
    for path in files:
        if path.is_file():
            named |= set(re.findall(r"\bPARLEY_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(errors="replace")))
    named = {n for n in named if not n.startswith(NOT_SETTINGS)}
    assert named - declared() - set(SCRIPT_VARIABLES) == set(), \
        "declare these in parley/config.py (they are then in the README)"


def test_no_module_reads_the_environment_but_the_settings():
    readers = []
    for pkg in APP_PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if path != ROOT / "parley" / "config.py" and re.search(r"os\.environ|os\.getenv",
                                                                     path.read_text()):
                readers.append(str(path.relative_to(ROOT)))
    assert readers == []


def test_the_readme_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- settings table:", 1)[1].split("-->\n", 1)[1].split("<!-- end of settings table -->")[0]
    assert table == markdown_table(), "run `parley settings --markdown` and paste it into the README"
    cli = subprocess.run([str(VENV_BIN / "parley"), "settings", "--markdown"], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert cli.returncode == 0 and cli.stdout == table


def test_defaults_follow_the_data_directory_and_named_values_win(tmp_path):
    settings = Settings(data_dir=tmp_path)
    assert settings.model_dir == tmp_path / "models" and settings.log_dir == tmp_path / "logs"
    assert settings.database_url == f"sqlite:///{tmp_path / 'parley.db'}"
    env = {"PARLEY_DATA_DIR": str(tmp_path), "PARLEY_MODEL_DIR": str(tmp_path / "store"),
           "DATABASE_URL": "postgresql://parley:s3cret@db.example/parley", "PARLEY_DIARIZATION": "0",
           "PARLEY_RATE_LIMIT": "5 per second", "PARLEY_RATE_LIMIT_CHAT": "off", "HF_TOKEN": "hf_abc",
           "PARLEY_CHUNK_SECONDS": ""}  # empty: the default
    old = dict(os.environ)
    try:
        os.environ.update(env)
        settings = Settings()
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert settings.model_dir == tmp_path / "store" and settings.diarization is False
    assert settings.chunk_seconds == 120
    assert settings.rate_limit_of("chat") == ("PARLEY_RATE_LIMIT_CHAT", "off")
    assert settings.rate_limit_of("session uploads") == ("PARLEY_RATE_LIMIT", "5 per second")
    with pytest.raises(Exception):  # frozen: read once, never changed in flight
        settings.redis_url = "redis://elsewhere"  # type: ignore[misc]


def test_parley_settings_shows_values_with_secrets_masked_and_names_a_bad_variable(tmp_path):
    env = {**os.environ, "PARLEY_DATA_DIR": str(tmp_path), "HF_TOKEN": "hf_secret_value",
           "DATABASE_URL": "postgresql://parley:s3cret@db.example/parley"}
    shown = subprocess.run([str(VENV_BIN / "parley"), "settings"], capture_output=True, text=True, env=env,
                           cwd=ROOT, timeout=60)
    assert shown.returncode == 0, shown.stderr
    lines = dict(line.split("=", 1) for line in shown.stdout.splitlines())
    assert lines["PARLEY_DATA_DIR"] == str(tmp_path) and lines["PARLEY_MODEL_DIR"] == str(tmp_path / "models")
    assert lines["HF_TOKEN"] == "(set)" and "hf_secret_value" not in shown.stdout
    assert lines["DATABASE_URL"] == "postgresql://parley:***@db.example/parley"
    assert set(lines) == declared()
    bad = subprocess.run([str(VENV_BIN / "parley"), "settings"], capture_output=True, text=True,
                         env={**env, "PARLEY_CHUNK_SECONDS": "two minutes"}, cwd=ROOT, timeout=60)
    assert bad.returncode != 0 and "PARLEY_CHUNK_SECONDS" in bad.stderr and "two minutes" in bad.stderr
    out_of_range = subprocess.run([str(VENV_BIN / "parley"), "settings"], capture_output=True, text=True,
                                  env={**env, "PARLEY_DB_TIMEOUT_S": "0"}, cwd=ROOT, timeout=60)
    assert out_of_range.returncode != 0 and "PARLEY_DB_TIMEOUT_S" in out_of_range.stderr
