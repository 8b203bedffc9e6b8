"""Access control: API tokens with scopes, loopback-only serving without them, and rate limits."""
from __future__ import annotations

import html
import ipaddress
import logging
import time

from flask import Blueprint, Flask, Response, current_app, g, jsonify, redirect, request
from flask_limiter import Limiter, RequestLimit
from limits import parse_many

from parley.config import get_settings
from services import api_tokens
from web.declared import Documented, Field, FormModel, endpoint
from web.errors import error_body

log = logging.getLogger(__name__)

auth_bp = Blueprint("auth", __name__, url_prefix="/auth")

COOKIE = "parley_token"  # set by /auth/login so a browser can open the dashboard (it cannot send a Bearer header)
OPT_OUT_ENV = "PARLEY_ALLOW_UNAUTHENTICATED"

# Reachable by anyone: probes for load balancers and orchestrators, the API description, and the login form.
PUBLIC_ENDPOINTS = {"meta.health", "system.health", "system.readiness", "docs.swagger_ui", "docs.swagger_ui_static",
                    "docs.openapi_json", "docs.schema_redirect", "static", "auth.login_form", "auth.login", "auth.logout"}
# Everything about operating the deployment rather than using it.
ADMIN_BLUEPRINTS = {"admin", "dashboard", "metrics", "processes"}
ADMIN_ENDPOINTS = {"search.reindex", "system.reset_transcription", "llm.api_token"}
# The expensive endpoints, limited per token (or per client address on an open network without tokens),
# one budget per group. Each group's limit is PARLEY_RATE_LIMIT_<GROUP> (upper case, "_" for spaces),
# else PARLEY_RATE_LIMIT; "off" lifts it.
RATE_LIMITED = {
    "session uploads": ("sessions.upload_session",),
    "transcription uploads": ("transcribe.create_job", "retranslate.segment", "retranslate.segment_from_full"),
    "chat": ("chats.chat_message", "chats.session_chat_message", "summary.chat", "summary.create_summary"),
    "analysis": ("analysis.create_job",),
}


def required_scope(endpoint: str | None, method: str) -> str | None:
    """The scope a request needs: None for public endpoints, admin for operations, else read or write by method."""
    if endpoint is None or endpoint in PUBLIC_ENDPOINTS:
        return None
    if endpoint.split(".", 1)[0] in ADMIN_BLUEPRINTS or endpoint in ADMIN_ENDPOINTS:
        return "admin"
    return "read" if method in ("GET", "HEAD") else "write"


def is_loopback(address: str | None) -> bool:
    try:
        return ipaddress.ip_address((address or "").split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def bind_refusal(addresses: list[str], *, tokens_configured: bool, opted_out: bool) -> str | None:
    """Why serving on these addresses is refused (no token and not loopback-only), or None when it is fine."""
    if tokens_configured or opted_out:
        return None
    exposed = [a for a in addresses if not a.startswith("unix:") and not is_loopback(_host_of(a))]
    if not exposed:
        return None
    return (f"refusing to listen on {', '.join(exposed)}: no API token exists, so anyone who can reach this address "
            f"could read every session. Create one with `parley tokens create NAME --scope admin`, bind to "
            f"127.0.0.1, or set {OPT_OUT_ENV}=1 to serve without tokens anyway.")


def _host_of(address: str) -> str:
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else address
    host = host.strip("[]")
    return "127.0.0.1" if host in ("localhost", "") else ("0.0.0.0" if host == "*" else host)


def tokens_configured_safely() -> bool:
    """Whether a live token exists; False when the database is not set up yet (as on a first start)."""
    from models import db, init_db

    try:
        init_db(get_settings().database_url)
        with db.connection_context():
            return api_tokens.any_configured()
    except Exception:  # noqa: BLE001  (no table yet: nothing is configured)
        return False
    finally:
        # gunicorn asks in its master, before it forks the web processes: a pooled PostgreSQL
        # connection kept open here would be inherited and shared by all of them, mixing up their answers.
        close_all = getattr(db.obj, "close_all", None)
        if close_all:
            close_all()


def _presented_token() -> tuple[str | None, str | None]:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        return (value.strip() or None, "header") if scheme.lower() == "bearer" else (None, "header")
    cookie = request.cookies.get(COOKIE)
    return (cookie, "cookie") if cookie else (None, None)


def _deny(status: int, message: str) -> Response:
    # A browser opening the dashboard goes to the login form; API clients (Accept */* or JSON) get JSON.
    wants_page = (request.method == "GET" and request.blueprint == "dashboard"
                  and request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html")
    if status == 401 and wants_page:
        return redirect(f"/auth/login?next={request.full_path.rstrip('?')}", code=303)
    response = jsonify(error_body(status, message))
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="parley"'
    return response


def _check_access():
    if request.method == "OPTIONS":  # CORS preflights carry no credentials
        return None
    g.token = None
    scope = required_scope(request.endpoint, request.method)
    if scope is None:
        return None
    token, carried_by = _presented_token()
    if token is None:
        if api_tokens.any_configured():
            return _deny(401, f"this endpoint needs an API token with the {scope} scope: "
                              "send `Authorization: Bearer <token>`")
        if not is_loopback(request.remote_addr) and not current_app.config["PARLEY_OPEN_NETWORK"]:
            return _deny(403, "no API token is configured, so Parley serves loopback clients only; "
                              "create one with `parley tokens create`")
        return None
    info = api_tokens.verify(token)
    if info is None:
        return _deny(401, "the API token is unknown or revoked")
    if not info.allows(scope):
        return _deny(403, f"this endpoint needs the {scope} scope; the token has {', '.join(info.scopes)}")
    if carried_by == "cookie" and request.method not in ("GET", "HEAD") and not _same_origin():
        return _deny(403, "cross-site request refused (the login cookie only works from Parley's own pages)")
    g.token = info
    return None


def token_id() -> int | None:
    """The id of the API token this request came with; None where it came without one (no tokens in use)."""
    info = g.get("token")
    return info.id if info is not None else None


def _same_origin() -> bool:
    origin = request.headers.get("Origin")
    return origin is None or origin.rstrip("/") == request.host_url.rstrip("/")


def _rate_key() -> str:
    info = g.get("token")
    return f"token:{info.id}" if info else f"addr:{request.remote_addr}"


def _single_user() -> bool:
    """No token configured and a loopback client: the one person at this machine, who is not limited
    (a batch import of a folder must not hit 429). Behind a reverse proxy every client is loopback
    too, which is why Parley refuses to serve other addresses without tokens."""
    return g.get("token") is None and not api_tokens.any_configured() and is_loopback(request.remote_addr)


def group_limit(group: str) -> str | None:
    """The limit of a rate-limit group from the environment, None where it is off."""
    name, value = get_settings().rate_limit_of(group)
    value = value.strip()
    if value.lower() in ("off", "none", "0"):
        return None
    try:
        parse_many(value)
    except ValueError:
        raise ValueError(f"{name} must be a limit such as '30 per minute' or 'off', got {value!r}") from None
    return value


def _rate_limited(limit: RequestLimit) -> Response:
    seconds = max(1, int(limit.reset_at - time.time()))
    group = limit.request_args[-1]
    response = jsonify(error_body(429, f"rate limit of {limit.limit} reached for {group}; retry in {seconds} s"))
    response.status_code = 429
    response.headers["Retry-After"] = str(seconds)
    return response


def install_access_control(app: Flask) -> None:
    """Tokens and scopes on every route, loopback-only without tokens, rate limits on the expensive routes."""
    app.config["PARLEY_OPEN_NETWORK"] = app.config["PARLEY_SETTINGS"].allow_unauthenticated
    app.register_blueprint(auth_bp)
    app.before_request(_check_access)
    settings = app.config["PARLEY_SETTINGS"]
    # Redis-backed so every web process shares one budget per token; with Redis down the limit is not
    # enforced (swallow_errors) and the request fails on its own with a clear 503 where it needs the queue.
    limiter = Limiter(_rate_key, app=app, storage_uri=settings.redis_url, headers_enabled=False, swallow_errors=True,
                      strategy="moving-window", key_prefix="parley:ratelimit", on_breach=_rate_limited,
                      storage_options={"socket_timeout": 2, "socket_connect_timeout": 2})
    for group, endpoints in RATE_LIMITED.items():
        limit = group_limit(group)
        if limit is None:
            continue
        shared = limiter.shared_limit(limit, scope=group, exempt_when=_single_user)
        for name in endpoints:  # flask-limiter checks decorated limits inside the wrapped view
            app.view_functions[name] = shared(app.view_functions[name])
    app.extensions["parley_limiter"] = limiter


# --- the browser login for the dashboard -----------------------------------------------------------
LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Parley: sign in</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 28rem; margin: 4rem auto">
<h1>Parley</h1><p>{message}</p>
<form method="post" action="/auth/login"><input type="hidden" name="next" value="{next}">
<label>API token <input type="password" name="token" autocomplete="off" style="width: 100%"></label>
<p><button type="submit">Sign in</button></p></form></body></html>"""


def _safe_next(value: str | None) -> str:
    # Only paths on this server: never an absolute or scheme-relative URL (no open redirect).
    return value if value and value.startswith("/") and not value.startswith("//") and "\\" not in value else "/dashboard"


PAGE = {"text/html": {"schema": {"type": "string"}}}
REDIRECT = {"Location": {"schema": {"type": "string"}}}


class LoginForm(FormModel):
    """The sign-in form's fields."""

    token: str | None = Field(None, description="An API token")
    next: str | None = Field(None, description="Where to go afterwards (a path on this server)")


@auth_bp.get("/login")
@endpoint(tag="admin", responses={200: Documented("The sign-in form", PAGE)})
def login_form():
    """The sign-in form for the dashboard"""
    page = LOGIN_PAGE.format(message="Sign in with an API token that has the admin scope.",
                             next=html.escape(_safe_next(request.args.get("next"))))
    return Response(page, mimetype="text/html")


@auth_bp.post("/login")
@endpoint(tag="admin", form=LoginForm, form_media_type="application/x-www-form-urlencoded", responses={
    303: Documented("Signed in: the parley_token cookie (HttpOnly, SameSite=Strict) is set; redirect to `next`",
                    headers=REDIRECT),
    400: Documented("No token given", PAGE), 401: Documented("Unknown or revoked token", PAGE)})
def login(form: LoginForm):
    """Sign in with an API token"""
    token = (form.token or "").strip()
    info = api_tokens.verify(token) if token else None
    if info is None:
        message = "That token is unknown or revoked." if token else "Enter an API token."
        page = LOGIN_PAGE.format(message=message, next=html.escape(_safe_next(form.next)))
        return Response(page, status=401 if token else 400, mimetype="text/html")
    response = redirect(_safe_next(form.next), code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=request.is_secure, max_age=12 * 3600)
    return response


@auth_bp.post("/logout")
@endpoint(tag="admin", responses={303: Documented("Signed out; redirect to the sign-in form", headers=REDIRECT)})
def logout():
    """Sign out (clears the cookie)"""
    response = redirect("/auth/login", code=303)
    response.delete_cookie(COOKIE)
    return response
