"""Access control against a running stack: tokens and scopes on every route, the CLI, rate limits, bind refusal."""
from __future__ import annotations

import re
import subprocess

import pytest
import requests

from conftest import AUDIO, ROOT, VENV_BIN, Process, free_port, running_stack, wait_until

PUBLIC = {("/health", "GET"), ("/api/health", "GET"), ("/api/status/readiness", "GET"), ("/api/docs", "GET"),
          ("/api/openapi.json", "GET"), ("/api/schema", "GET"), ("/auth/login", "GET"), ("/auth/login", "POST"),
          ("/auth/logout", "POST"), ("/static/999999", "GET"), ("/api/docs/static/999999", "GET")}


def parley(stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "parley"), *args], env=stack.env, capture_output=True, text=True, timeout=60)


def create_token(stack, name: str, *scopes: str) -> str:
    done = parley(stack, "tokens", "create", name, *[a for s in scopes for a in ("--scope", s)])
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert re.fullmatch(r"parley_[A-Za-z0-9_-]{40,}", token), done.stdout
    return token


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, redis_server):
    """A stack with three tokens (read, write, admin) and a small rate limit."""
    with running_stack(tmp_path_factory.mktemp("access"), redis_server, PARLEY_RATE_LIMIT="3 per minute",
                       PARLEY_RATE_LIMIT_TRANSCRIPTION_UPLOADS="1 per minute") as s:
        s.tokens = {scope: create_token(s, f"{scope}-token", scope) for scope in ("read", "write", "admin")}
        yield s


def served_routes(stack, monkeypatch, tmp_path) -> list[tuple[str, str, str]]:
    """Every (concrete path, method, endpoint) the app serves, parameters filled with harmless values."""
    monkeypatch.setenv("PARLEY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("REDIS_URL", stack.env["REDIS_URL"])
    from parley.config import get_settings
    from web import create_app

    get_settings.cache_clear()
    try:
        app = create_app()
    finally:
        get_settings.cache_clear()
    routes = []
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", "999999", rule.rule)
        method_names = ["WEBSOCKET"] if rule.websocket else sorted(rule.methods - {"HEAD", "OPTIONS"})
        routes += [(path, method, rule.endpoint) for method in method_names]
    return routes


def call(stack, path: str, method: str, headers: dict | None = None) -> int:
    if method == "WEBSOCKET":  # the handshake is a GET with upgrade headers; its answer is the status
        import websocket

        try:
            websocket.create_connection(stack.url(path).replace("http", "ws", 1), timeout=10,
                                        header=[f"{k}: {v}" for k, v in (headers or {}).items()]).close()
            return 101
        except websocket.WebSocketBadStatusException as exc:
            return exc.status_code
    # stream=True: event streams answer 200 and stay open; the status is all this needs.
    with requests.request(method, stack.url(path), headers=headers, timeout=30, stream=True,
                          allow_redirects=False) as response:
        return response.status_code


def test_every_route_checks_its_scope(guarded, monkeypatch, tmp_path):
    """Walks the URL map, so a new route cannot be forgotten: 401 without a token, 403 below its scope."""
    from web.auth import required_scope

    routes = served_routes(guarded, monkeypatch, tmp_path)
    assert len(routes) > 60
    order = ("read", "write", "admin")
    needed = {}
    for path, method, endpoint in routes:
        needs = needed[(path, method)] = required_scope(endpoint, "GET" if method == "WEBSOCKET" else method)
        if needs is None:
            assert ((path.rstrip("/") or "/"), method) in PUBLIC, f"{method} {path} is public but not meant to be"
            assert call(guarded, path, method) not in (401, 403), (method, path)
            continue
        assert call(guarded, path, method) == 401, (method, path)
        assert call(guarded, path, method, bearer("parley_not-a-real-token")) == 401, (method, path)
        for scope in order:
            status = call(guarded, path, method, bearer(guarded.tokens[scope]))
            if order.index(scope) >= order.index(needs):
                assert status not in (401, 403), (method, path, scope, status)
            else:
                assert status == 403, (method, path, scope, status)
    # The operator areas need admin; reading a session needs read; changing one needs write.
    assert needed[("/api/admin/export-data", "GET")] == "admin"
    assert needed[("/metrics", "GET")] == "admin"
    assert needed[("/dashboard", "GET")] == "admin"
    assert needed[("/api/docker/status", "GET")] == "admin"
    assert needed[("/api/sessions/999999", "GET")] == "read"
    assert needed[("/api/sessions/999999", "DELETE")] == "write"


def test_the_denials_say_what_is_missing(guarded):
    missing = guarded.get("/api/sessions")
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "read scope" in missing.json()["message"]
    below = guarded.post("/api/templates", json={"title": "t", "text": "x"}, headers=bearer(guarded.tokens["read"]))
    assert below.status_code == 403 and below.json()["error"] == "ForbiddenError"
    assert "write scope" in below.json()["message"]
    made = guarded.post("/api/templates", json={"title": "Access test", "text": "x"},
                        headers=bearer(guarded.tokens["write"]))
    assert made.status_code == 201, made.text


def test_tokens_are_managed_by_the_cli_and_stored_hashed(guarded):
    token = create_token(guarded, "temporary", "read")
    listed = parley(guarded, "tokens", "list")
    assert listed.returncode == 0
    row = next(line for line in listed.stdout.splitlines() if "temporary" in line)
    assert "read" in row and token[:13] in row and token not in listed.stdout
    assert guarded.get("/api/sessions", headers=bearer(token)).status_code == 200
    database = b"".join(f.read_bytes() for f in guarded.data_dir.glob("parley.db*"))
    assert token.encode() not in database and token[7:].encode() not in database
    assert parley(guarded, "tokens", "revoke", "temporary").returncode == 0
    assert guarded.get("/api/sessions", headers=bearer(token)).status_code == 401  # at once, no restart
    assert "temporary" not in parley(guarded, "tokens", "list").stdout
    assert "temporary" in parley(guarded, "tokens", "list", "--all").stdout
    bad = parley(guarded, "tokens", "revoke", "no-such-token")
    assert bad.returncode != 0 and "no live token" in bad.stderr


def test_rate_limit_is_per_token_and_per_group(guarded):
    first, second = create_token(guarded, "busy", "write"), create_token(guarded, "calm", "write")
    # Empty uploads are refused with 400, but still count: the limit protects the server from the attempts.
    answers = [guarded.post("/api/sessions/upload", headers=bearer(first)) for _ in range(4)]
    assert [a.status_code for a in answers] == [400, 400, 400, 429]
    limited = answers[-1]
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json()["error"] == "TooManyRequestsError" and "session uploads" in limited.json()["message"]
    # The transcription API has its own budget, set apart (PARLEY_RATE_LIMIT_TRANSCRIPTION_UPLOADS=1 per minute).
    assert guarded.post("/api/transcribe/", headers=bearer(first)).status_code == 400
    again = guarded.post("/api/transcribe/", headers=bearer(first))
    assert again.status_code == 429 and "1 per 1 minute" in again.json()["message"], again.text
    assert "transcription uploads" in again.json()["message"]
    # Another token and another group do not share the budget.
    assert guarded.post("/api/sessions/upload", headers=bearer(second)).status_code == 400
    assert guarded.post("/api/analysis-jobs", json={}, headers=bearer(first)).status_code == 400
    assert guarded.get("/api/sessions", headers=bearer(first)).status_code == 200  # reads are not limited


def test_browser_login_cookie_opens_the_dashboard(guarded):
    browser = requests.Session()
    page = browser.get(guarded.url("/dashboard"), headers={"Accept": "text/html"}, allow_redirects=False)
    assert page.status_code == 303 and page.headers["Location"].startswith("/auth/login?next=/dashboard")
    refused = browser.post(guarded.url("/auth/login"), data={"token": "nope", "next": "/dashboard"},
                           allow_redirects=False)
    assert refused.status_code == 401 and "parley_token" not in browser.cookies
    # A read token logs in but cannot open an admin page.
    browser.post(guarded.url("/auth/login"), data={"token": guarded.tokens["read"]}, allow_redirects=False)
    assert browser.get(guarded.url("/dashboard"), allow_redirects=False).status_code == 403
    signed = browser.post(guarded.url("/auth/login"), data={"token": guarded.tokens["admin"], "next": "//evil.example/"},
                          allow_redirects=False)
    assert signed.status_code == 303 and signed.headers["Location"] == "/dashboard"  # never an open redirect
    cookie = signed.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert browser.get(guarded.url("/dashboard"), allow_redirects=False).status_code == 200
    # The cookie is not accepted for a write from another site.
    cross = browser.post(guarded.url("/api/templates"), json={"title": "x", "text": "y"},
                         headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403
    browser.post(guarded.url("/auth/logout"))
    assert browser.get(guarded.url("/dashboard"), headers={"Accept": "text/html"},
                       allow_redirects=False).status_code == 303


def test_without_tokens_only_loopback_clients_are_served(tmp_path, monkeypatch, redis_server):
    """The per-request guard (the bind refusal below keeps other interfaces closed in the first place)."""
    monkeypatch.setenv("PARLEY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    from parley.config import get_settings
    from web import create_app

    get_settings.cache_clear()
    try:
        client = create_app().test_client()
    finally:
        get_settings.cache_clear()
    assert client.get("/api/sessions", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    assert client.get("/api/sessions", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    remote = client.get("/api/sessions", environ_base={"REMOTE_ADDR": "192.168.1.20"})
    assert remote.status_code == 403 and "loopback" in remote.get_json()["message"]
    assert client.get("/api/health", environ_base={"REMOTE_ADDR": "192.168.1.20"}).status_code == 200


def _start_gunicorn(tmp, env, bind: str) -> Process:
    return Process("bind", [str(VENV_BIN / "gunicorn"), "--config", str(ROOT / "gunicorn.conf.py"), "--workers", "1",
                            "--bind", bind, "--no-control-socket", "web:create_app()"], env, tmp)


def test_binding_beyond_loopback_needs_a_token_or_an_explicit_opt_out(tmp_path, redis_server):
    from conftest import Stack

    stack = Stack(tmp_path, redis_server, f"sqlite:///{tmp_path / 'data' / 'parley.db'}")
    port = free_port()
    refused = _start_gunicorn(tmp_path, stack.env, f"0.0.0.0:{port}")
    wait_until(lambda: not refused.alive(), timeout=30, what="gunicorn to refuse")
    assert "refusing to listen on 0.0.0.0" in refused.log_path.read_text()
    assert "parley tokens create" in refused.log_path.read_text()

    def serves(process) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # the kernel accepts while the app still boots
            assert process.alive(), process.log_tail()
            return False

    opted = _start_gunicorn(tmp_path, {**stack.env, "PARLEY_ALLOW_UNAUTHENTICATED": "1"}, f"0.0.0.0:{port}")
    try:
        wait_until(lambda: serves(opted), timeout=60, what="gunicorn with the opt-out")
        assert "WITHOUT access control" in opted.log_path.read_text()
    finally:
        opted.stop()
    create_token(stack, "ops", "admin")
    with_token = _start_gunicorn(tmp_path, stack.env, f"0.0.0.0:{port}")
    try:
        wait_until(lambda: serves(with_token), timeout=60, what="gunicorn with a token")
        assert "API tokens are configured" in with_token.log_path.read_text()
        assert requests.get(f"http://127.0.0.1:{port}/api/sessions", timeout=5).status_code == 401
    finally:
        with_token.stop()


def test_loopback_start_says_so(guarded):
    assert "serving loopback clients only" in guarded.web.log_path.read_text() or \
        "API tokens are configured" in guarded.web.log_path.read_text()


def test_logs_hold_no_transcript_text_and_no_tokens(tmp_path_factory, redis_server, models_ready):
    """Drives a transcription and a token-bearing session through a stack, then reads every log it wrote."""
    with running_stack(tmp_path_factory.mktemp("quiet"), redis_server, workers=[("asr", "asr")],
                       PARLEY_LOG_LEVEL="DEBUG") as s:
        token = create_token(s, "ops", "admin")
        remote_key = "sk-remote-" + "k3y" * 8
        assert s.post("/api/llm/api-token", json={"token": remote_key}, headers=bearer(token)).status_code == 200
        with open(AUDIO / "two_speakers.mp3", "rb") as fh:
            job = s.post("/api/transcribe/", files={"file": ("two_speakers.mp3", fh)}, headers=bearer(token)).json()
        wait_until(lambda: s.get(f"/api/transcribe/status/{job['job_id']}", headers=bearer(token)).json()["status"]
                   in ("completed", "failed"), timeout=240, what="transcription")
        result = s.get(f"/api/transcribe/result/{job['job_id']}", headers=bearer(token)).json()
        words = {w.strip(".,?!").lower() for seg in result["segments"] for w in seg["text"].split() if len(w) > 6}
        assert len(words) >= 3, result
        s.get("/api/sessions", headers=bearer("parley_wrong-token-value"))
        # Every process runs unbuffered and logs before it answers or acknowledges: the files are complete.
        logs = "\n".join(p.read_text(errors="replace").lower()
                         for p in s.tmp.rglob("*.log"))
        assert len(logs) > 1000  # the processes did log (at DEBUG), so the absence below means something
        assert token.lower() not in logs and token[7:].lower() not in logs
        assert "wrong-token-value" not in logs
        assert remote_key.lower() not in logs
        leaked = sorted(w for w in words if re.search(rf"\b{re.escape(w)}\b", logs))
        assert leaked == [], f"transcript words in the logs: {leaked}"


def test_the_single_user_at_this_machine_is_not_rate_limited(tmp_path_factory, redis_server):
    """No token and a loopback client (the default mode): a batch import of a folder never meets a 429."""
    with running_stack(tmp_path_factory.mktemp("single"), redis_server, PARLEY_RATE_LIMIT="2 per minute") as s:
        answers = [s.post("/api/sessions/upload").status_code for _ in range(8)]
        answers += [s.post("/api/transcribe/").status_code for _ in range(8)]
    assert answers == [400] * 16


def test_a_malformed_limit_is_refused_at_start(monkeypatch):
    from parley.config import get_settings
    from web.auth import group_limit

    def environment(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()  # settings are read once per process: this test plays several starts

    try:
        environment(PARLEY_RATE_LIMIT_CHAT="lots")
        with pytest.raises(ValueError, match="PARLEY_RATE_LIMIT_CHAT must be a limit such as '30 per minute'"):
            group_limit("chat")
        environment(PARLEY_RATE_LIMIT_ANALYSIS="off")
        assert group_limit("analysis") is None
        environment(PARLEY_RATE_LIMIT="5 per second")
        assert group_limit("session uploads") == "5 per second"
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
