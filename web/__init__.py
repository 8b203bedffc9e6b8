"""The Flask web tier: validates, persists and enqueues; relays job events; never runs a model."""
from __future__ import annotations

import time
import uuid

import peewee
from flask import Blueprint, Flask, g, request
from flask_cors import CORS

from parley.config import Settings, ensure_dirs, get_settings


def create_app(settings: Settings | None = None) -> Flask:
    from models import db, migrate
    from services import llm_config
    from parley.logs import configure_logging
    from parley.redisconn import client as redis_client
    from services.templates import ensure_system_templates
    from web.auth import install_access_control
    from web.errors import register_error_handlers
    from web.metrics import install_metrics
    from web.streams import EventHub
    from web.uploads import StreamingRequest, discard_unclaimed_uploads
    from web.websockets import sock, whole_writes_for_websockets

    _cooperative_postgres()
    settings = settings or get_settings()
    ensure_dirs(settings)
    configure_logging(settings.process_name or "web", log_dir=settings.log_dir)

    app = Flask(__name__)
    app.request_class = StreamingRequest
    app.config.update(
        PARLEY_SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_upload_mb * 1024 * 1024,
        MAX_UPLOAD_MB=settings.max_upload_mb,
        CORS_ORIGINS=settings.cors_origin_list(),
    )
    # The sessions client calls some routes with a trailing slash and some without.
    app.url_map.strict_slashes = False

    migrate(settings.database_url)
    with db.connection_context():
        ensure_system_templates()
        llm_config.activate_the_only_model(settings)
    app.extensions["parley_hub"] = EventHub(settings.redis_url)
    app.extensions["parley_redis"] = redis_client(settings.redis_url)

    for blueprint in api_blueprints():
        app.register_blueprint(blueprint)
    sock.init_app(app)
    app.before_request(whole_writes_for_websockets)
    register_error_handlers(app)
    _register_request_headers(app)
    install_access_control(app)
    install_metrics(app)

    app.teardown_request(discard_unclaimed_uploads)

    if _greenlets() and type(db.obj) is peewee.SqliteDatabase:
        _pool_sqlite_connections()
    keep_connections = isinstance(db.obj, peewee.SqliteDatabase) and not _greenlets()

    @app.teardown_appcontext
    def _close_db(exc=None):
        # A SQLite connection stays with its thread (gthread worker): opening one (and setting its pragmas)
        # cost as much as a status request's query. Under gevent, and for PostgreSQL, connections go back
        # to their pool.
        if not keep_connections and not db.is_closed():
            db.close()

    return app


def _greenlets() -> bool:
    """True under gunicorn's gevent worker, which patched the standard library before loading the app."""
    from gevent import monkey

    return monkey.is_module_patched("socket")


def _pool_sqlite_connections() -> None:
    """Bind the models to a pool of connections to the same SQLite file.

    Under gevent every request is a new greenlet, and peewee keeps a connection per greenlet: without a
    pool each request would open one and set its pragmas (scripts/bench/api_latency.py on a busy 2-core
    machine: 2.9-3.4 ms of web CPU per request with the pool, 4.7 ms without). All greenlets run on one OS
    thread, so a pooled connection never changes threads.
    """
    from playhouse.pool import PooledSqliteDatabase
    from models import db
    from models.db import SQLITE_PRAGMAS, lock_timeout_s

    timeout = lock_timeout_s()
    pragmas = {**SQLITE_PRAGMAS, "busy_timeout": int(timeout * 1000)}  # as models.db.open_database sets them
    db.initialize(PooledSqliteDatabase(db.obj.database, pragmas=pragmas, max_connections=64, stale_timeout=300,
                                       timeout=timeout))


def _cooperative_postgres() -> None:
    # Under gevent a PostgreSQL query must wait through gevent's loop, not block the process's every stream.
    if _greenlets():
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()


def api_blueprints() -> list[Blueprint]:
    """Every blueprint of the API, one per area (the sign-in pages come with access control)."""
    from web.admin import admin_bp
    from web.analysis import analysis_bp
    from web.chats import chats_bp
    from web.dashboard import dashboard_bp
    from web.docs import docs_bp
    from web.llm import llm_bp
    from web.meta import meta_bp
    from web.metrics import metrics_bp
    from web.model_pulls import model_pulls_bp
    from web.processes import processes_bp
    from web.retranslate import retranslate_bp
    from web.search import search_bp
    from web.sessions import sessions_bp
    from web.summary import summary_bp
    from web.system import system_bp
    from web.templates import templates_bp
    from web.transcribe import transcribe_bp
    from web.transcribe_live import live_bp
    from web.transcripts import transcripts_bp
    from web.usage import usage_bp
    from web.voices import voices_bp

    return [meta_bp, docs_bp, transcribe_bp, live_bp, retranslate_bp, sessions_bp, transcripts_bp, templates_bp,
            usage_bp, voices_bp, model_pulls_bp, llm_bp, chats_bp, summary_bp, analysis_bp, search_bp, system_bp,
            admin_bp, processes_bp, metrics_bp, dashboard_bp]


#: The longest path and query string answered; a longer one gets a JSON 414. gunicorn refuses request
#: lines over 8190 bytes itself (limit_request_line in gunicorn.conf.py), with a plain-text 414.
MAX_URL_BYTES = 4096


def _register_request_headers(app: Flask) -> None:
    """X-Request-ID and X-Process-Time-Ms on every response; CORS (flask-cors) for configured origins, errors included."""
    from web.errors import ApiError

    @app.before_request
    def _start_clock():
        g.started = time.perf_counter()
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else uuid.uuid4().hex
        if request.method == "OPTIONS" and _allowed_origin(app) and request.headers.get("Access-Control-Request-Method"):
            # Answered here, before access control and rate limits: a preflight carries no credentials.
            # flask-cors adds its headers in its after_request hook.
            return app.response_class(status=204)

    @app.before_request
    def _refuse_long_urls():
        url_bytes = len(request.environ.get("RAW_URI") or request.full_path)
        if url_bytes > MAX_URL_BYTES:
            raise ApiError(414, f"the URL is {url_bytes} bytes long; the limit is {MAX_URL_BYTES} "
                                "(send long values in a JSON body)")

    @app.after_request
    def _stamp(response):
        started = g.get("started", time.perf_counter())
        response.headers["X-Request-ID"] = g.get("request_id") or uuid.uuid4().hex
        response.headers["X-Process-Time-Ms"] = f"{(time.perf_counter() - started) * 1000:.2f}"
        return response

    # The origin is echoed (never "*"), so a configured "*" still works with credentials.
    CORS(app, origins=app.config["CORS_ORIGINS"] or [], send_wildcard=False, vary_header=True,
         methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
         allow_headers=["Content-Type", "Authorization", "X-Request-ID", "Last-Event-ID"],
         expose_headers=["X-Request-ID", "X-Process-Time-Ms", "X-User-Message-Id"])


def _allowed_origin(app: Flask) -> str | None:
    origin = request.headers.get("Origin")
    allowed = app.config["CORS_ORIGINS"]
    if origin and (origin in allowed or "*" in allowed):
        return origin
    return None
