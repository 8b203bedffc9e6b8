"""`parley llm install`: a model from the hub with progress and a checksum, made active; offline it fails
cleanly. A fresh install whose store holds one model makes it active. The hub is a local file server
(HF_ENDPOINT): this machine cannot reach huggingface.co."""
from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess

from conftest import ROOT, VENV_BIN, free_port
from test_model_pulls import files, gguf_bytes  # noqa: F401  (fixtures: a local file server, a small GGUF)

NAME = "qwen-test-instruct-q4_k_m.gguf"
HUB_PATH = f"/parley-tests/Model-GGUF/resolve/main/{NAME}"


def install(tmp_path, *args: str, endpoint: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PARLEY_DATA_DIR": str(tmp_path / "data"), "PARLEY_MODEL_DIR": str(tmp_path / "models"),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'parley.db'}", "HF_ENDPOINT": endpoint}
    return subprocess.run([str(VENV_BIN / "parley"), "llm", "install", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def active_model(tmp_path) -> str:
    with sqlite3.connect(tmp_path / "data" / "parley.db") as conn:
        row = conn.execute("SELECT active_model FROM llm_settings").fetchone()
    return row[0] if row else ""


def store(tmp_path) -> list[str]:
    folder = tmp_path / "models" / "llm"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_install_checks_the_hubs_checksum_shows_progress_and_activates(tmp_path, files, gguf_bytes):
    files.serve(HUB_PATH, gguf_bytes, linked_etag=hashlib.sha256(gguf_bytes).hexdigest())
    done = install(tmp_path, f"parley-tests/Model-GGUF/{NAME}", endpoint=files.base)
    assert done.returncode == 0, done.stderr
    assert "downloading" in done.stderr and "(100%)" in done.stderr and "checking the sha256" in done.stderr
    assert "sha256 verified" in done.stdout and "an instruct model" in done.stdout
    assert store(tmp_path) == [NAME] and (tmp_path / "models" / "llm" / NAME).read_bytes() == gguf_bytes
    assert active_model(tmp_path) == NAME
    again = install(tmp_path, f"parley-tests/Model-GGUF/{NAME}", endpoint=files.base)  # idempotent
    assert again.returncode == 0 and "already in the store" in again.stdout


def test_a_checksum_mismatch_installs_nothing(tmp_path, files, gguf_bytes):
    files.serve(HUB_PATH, gguf_bytes, linked_etag="0" * 64)
    failed = install(tmp_path, f"parley-tests/Model-GGUF/{NAME}", endpoint=files.base)
    assert failed.returncode != 0 and "sha256 mismatch" in failed.stderr and "nothing was installed" in failed.stderr
    assert store(tmp_path) == [] and active_model(tmp_path) == ""
    # An explicit --sha256 is what counts when given.
    given = install(tmp_path, f"parley-tests/Model-GGUF/{NAME}", "--sha256", hashlib.sha256(gguf_bytes).hexdigest(),
                    "--no-activate", endpoint=files.base)
    assert given.returncode == 0, given.stderr
    assert store(tmp_path) == [NAME] and active_model(tmp_path) == ""


def test_no_checksum_no_install(tmp_path, files, gguf_bytes):
    files.serve(HUB_PATH, gguf_bytes)  # a server that reports no sha256
    refused = install(tmp_path, f"parley-tests/Model-GGUF/{NAME}", endpoint=files.base)
    assert refused.returncode != 0 and "pass --sha256" in refused.stderr
    assert store(tmp_path) == []


def test_offline_the_recommended_model_fails_cleanly(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: what an offline machine sees
    failed = install(tmp_path, endpoint=closed)
    assert failed.returncode != 0
    assert "could not connect" in failed.stderr and "nothing was installed" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert store(tmp_path) == [] and active_model(tmp_path) == ""


def test_the_only_model_of_a_fresh_install_is_made_active(tmp_path, monkeypatch, gguf_bytes):
    """The first chat must work without a set-model call; the status says when that model is a base model."""
    from parley.config import get_settings
    from web import create_app

    models = tmp_path / "models" / "llm"
    models.mkdir(parents=True)
    (models / "gemma-like-base.gguf").write_bytes(gguf_bytes)
    monkeypatch.setenv("PARLEY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PARLEY_MODEL_DIR", str(tmp_path / "models"))
    get_settings.cache_clear()
    try:
        status = create_app().test_client().get("/api/llm/status").get_json()
        assert status["activeModel"] == "gemma-like-base.gguf"
        assert status["activeModelIsInstruct"] is False and "is a base model" in status["notice"]
        assert "parley llm install" in status["notice"]

        # A choice once made stays; with two models and none chosen, nothing is guessed.
        (models / "other-instruct.gguf").write_bytes(gguf_bytes)
        get_settings.cache_clear()
        assert create_app().test_client().get("/api/llm/status").get_json()["activeModel"] == "gemma-like-base.gguf"
        monkeypatch.setenv("PARLEY_DATA_DIR", str(tmp_path / "data2"))
        get_settings.cache_clear()
        assert create_app().test_client().get("/api/llm/status").get_json()["activeModel"] == ""
    finally:
        get_settings.cache_clear()
