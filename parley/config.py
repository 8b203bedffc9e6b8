"""Settings: every environment variable Parley reads, typed and documented, read once per process.

`get_settings()` reads the environment the first time it is called and returns the same frozen object after
that; web, workers, CLI and supervisor all take their configuration from it. The README's configuration
table is generated from the fields below (`parley settings --markdown`; tests/test_units.py checks they agree),
so a new variable is documented by adding it here. Variables the Procfile's shell lines read (bind address,
web processes and threads, GPU pinning) are declared here too so the table lists everything in one place.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _var(default, env: str, doc: str, *, shown: str | None = None, aliases: tuple[str, ...] = (), **bounds):
    """A field read from the variable `env` (or one of `aliases`); `shown` is the README's default column;
    `bounds` (gt, ge, le) are checked at start like the type."""
    extra = {"env": env, **({"shown": shown} if shown is not None else {})}
    return Field(default, validation_alias=AliasChoices(env, *aliases) if aliases else env, description=doc,
                 json_schema_extra=extra, **bounds)


RATE_LIMIT_GROUPS = ("session uploads", "transcription uploads", "chat", "analysis")


class Settings(BaseSettings):
    """Configuration of a Parley deployment; the defaults make a single-machine deployment that needs no account,
    key or extra server. Construct one with keyword arguments (field names) in tests; `model_copy(update=...)`
    derives a variant."""

    # An empty variable means its default, as `VAR= command` does for most tools.
    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True, case_sensitive=True,
                                      env_ignore_empty=True)

    # --- storage --------------------------------------------------------------------------------------
    data_dir: Path = _var(Path("data"), "PARLEY_DATA_DIR", "database, audio, temporary uploads", shown="./data")
    model_dir: Path | None = _var(None, "PARLEY_MODEL_DIR", "the model store", shown="$PARLEY_DATA_DIR/models")
    database_url: str | None = _var(None, "DATABASE_URL", "`postgresql://user@host/db` for scale",
                                    shown="sqlite:///$PARLEY_DATA_DIR/parley.db")
    db_timeout_s: float = _var(10.0, "PARLEY_DB_TIMEOUT_S", "how long a request waits for a database lock or "
                               "connection before answering 503 (at most 3600)", shown="10", gt=0, le=3600)
    redis_url: str = _var("redis://127.0.0.1:6379/0", "REDIS_URL", "queues and pub/sub")
    max_upload_mb: int = _var(2048, "MAX_UPLOAD_MB", "larger uploads get 413", gt=0)
    backup_max_mb: int = _var(65536, "PARLEY_BACKUP_MAX_MB", "largest backup archive an import accepts")
    backup_max_json_mb: int = _var(512, "PARLEY_BACKUP_MAX_JSON_MB", "largest JSON member of a backup an import accepts")

    # --- speech ---------------------------------------------------------------------------------------
    default_model: str = _var("tiny.en", "PARLEY_DEFAULT_MODEL", "model when a request names none")
    retranslate_model: str = _var("large-v3-turbo", "PARLEY_RETRANSLATE_MODEL",
                                  "re-transcription model, when in the store (else the job's own)")
    chunk_seconds: float = _var(120.0, "PARLEY_CHUNK_SECONDS", "target chunk length", shown="120", gt=0)
    asr_engine: str = _var("auto", "PARLEY_ASR_ENGINE", "`faster-whisper`, or `whisperx` (used automatically on "
                           "CUDA hosts that have it installed with its alignment model)")
    device: str = _var("auto", "PARLEY_DEVICE", "`cuda` when a GPU is visible, else `cpu`; `cpu` or `cuda` to force")
    compute_type: str = _var("auto", "PARLEY_COMPUTE_TYPE", "`float16` on a GPU, `int8` on a CPU, or any CTranslate2 type")
    cpu_threads: int = _var(0, "PARLEY_CPU_THREADS", "CTranslate2 threads per worker", shown="0 (up to 4)")
    batch_size: int = _var(-1, "PARLEY_BATCH_SIZE", "batched inference", shown="-1 (auto: 16 on GPU, sequential on CPU)")
    beam_size: int = _var(5, "PARLEY_BEAM_SIZE", "beam search width", ge=1)
    retranslate_wait_s: float = _var(30.0, "PARLEY_RETRANSLATE_WAIT_S",
                                     "how long a re-transcription request waits before answering 202", shown="30")
    job_max_retries: int = _var(3, "PARLEY_JOB_MAX_RETRIES",
                                "redeliveries of a transcription that failed for a passing reason")
    warmup: bool = _var(True, "PARLEY_WARMUP", "load models before a speech worker takes its first job", shown="1")
    diarization: bool = _var(True, "PARLEY_DIARIZATION", "`0` switches speaker labelling off on a worker (uploads "
                             "asking for speakers then get 503)", shown="1")
    diarization_threads: int = _var(0, "PARLEY_DIARIZATION_THREADS", "onnxruntime threads of the diarization "
                                    "models (they run between two chunks' recognition, so they may take the speech "
                                    "engine's cores)", shown="0 (up to 2)")
    diarization_window_shift: float = _var(0.25, "PARLEY_DIARIZATION_WINDOW_SHIFT", "step of the 10 s segmentation "
                                           "window, as a share of it: `0.5` halves the cost of speaker labelling for "
                                           "about 2 points of DER (see Performance)")
    diarization_device: str = _var("auto", "PARLEY_DIARIZATION_DEVICE",
                                   "`cuda` when a GPU is visible, else `cpu`; `cpu` or `cuda` to force")
    pyannote_model: str = _var("", "PARLEY_PYANNOTE_MODEL", "a local pyannote.audio pipeline (folder or "
                               "config.yaml) used instead of sherpa-onnx on GPU hosts", shown="unset")
    voice_recognition: bool = _var(True, "PARLEY_VOICE_RECOGNITION", "`off`: new transcriptions neither keep their "
                                   "speakers' voiceprints nor name known voices (see Known voices)", shown="on")

    # --- language models --------------------------------------------------------------------------------
    llm_threads: int = _var(0, "PARLEY_LLM_THREADS", "CPU threads of the local LLM", shown="0 (llama.cpp's choice)")
    llm_default_context: int = _var(8192, "PARLEY_LLM_DEFAULT_CONTEXT", "context when none is configured (a "
                                    "model's own maximum can be far larger than a chat needs)")
    llm_chat_format: str = _var("", "PARLEY_LLM_CHAT_FORMAT", "force a llama-cpp-python chat format",
                                shown="from the GGUF")
    chat_max_tokens: int = _var(512, "PARLEY_CHAT_MAX_TOKENS", "longest chat reply; a message's `maxTokens` may ask "
                                "for less. Replies also end where the model starts another turn (`USER:`, "
                                "`SPEAKER_…:`, the chat format's turn markers)")
    chat_wait_s: float = _var(120.0, "PARLEY_CHAT_WAIT_S", "how long `POST /api/chat/` waits before answering 202",
                              shown="120")
    llm_aliases: str = _var("gpt-3.5-turbo,gpt-4,gpt-4o,default", "PARLEY_LLM_ALIASES",
                            "names that mean the configured model (comma-separated)")
    pricing_json: str = _var("", "PARLEY_PRICING_JSON", "prices for the usage pages", shown="zero cost")
    analysis_map_tokens: int = _var(512, "PARLEY_ANALYSIS_MAP_TOKENS", "longest per-session answer of an analysis")
    analysis_reduce_tokens: int = _var(1024, "PARLEY_ANALYSIS_REDUCE_TOKENS", "longest final answer of an analysis")
    hf_endpoint: str = _var("https://huggingface.co", "HF_ENDPOINT", "hub (or mirror) for model pulls by name")
    hf_token: str = _var("", "HF_TOKEN", "token for gated repositories on the hub", shown="unset")

    # --- search ---------------------------------------------------------------------------------------
    search_backend: str = _var("database", "PARLEY_SEARCH_BACKEND",
                               "`database` (SQLite FTS5 / PostgreSQL full text) or `opensearch`")
    opensearch_url: str = _var("http://127.0.0.1:9200", "OPENSEARCH_URL", "the OpenSearch cluster")
    opensearch_index: str = _var("parley", "PARLEY_OPENSEARCH_INDEX", "its index name")

    # --- web tier ---------------------------------------------------------------------------------------
    cors_origins: str = _var("", "CORS_ORIGINS", "comma-separated origins, or `*`", shown="empty (same origin only)")
    heartbeat_s: float = _var(15.0, "PARLEY_HEARTBEAT_S", "idle interval between stream heartbeats", shown="15")
    direct_writes: bool = _var(True, "PARLEY_DIRECT_WRITES", "`0`: live job events reach each stream through its "
                               "own greenlet instead of the event hub writing them into the sockets (gevent)",
                               shown="1")
    rate_limit: str = _var("30 per minute", "PARLEY_RATE_LIMIT", "per token and per group: session uploads, "
                           "transcription uploads, chat, analysis; not applied to the single user of a "
                           "loopback-only install; `off` to switch off")
    rate_limit_session_uploads: str | None = _var(None, "PARLEY_RATE_LIMIT_SESSION_UPLOADS",
                                                  "one group's limit, or `off`", shown="$PARLEY_RATE_LIMIT")
    rate_limit_transcription_uploads: str | None = _var(None, "PARLEY_RATE_LIMIT_TRANSCRIPTION_UPLOADS",
                                                        "one group's limit, or `off`", shown="$PARLEY_RATE_LIMIT")
    rate_limit_chat: str | None = _var(None, "PARLEY_RATE_LIMIT_CHAT", "one group's limit, or `off`",
                                       shown="$PARLEY_RATE_LIMIT")
    rate_limit_analysis: str | None = _var(None, "PARLEY_RATE_LIMIT_ANALYSIS", "one group's limit, or `off`",
                                           shown="$PARLEY_RATE_LIMIT")
    allow_unauthenticated: bool = _var(False, "PARLEY_ALLOW_UNAUTHENTICATED",
                                       "`1`: serve a non-loopback bind without API tokens", shown="unset")
    metrics_cache_s: float = _var(5.0, "PARLEY_METRICS_CACHE_S", "how long `/metrics` reuses its database figures",
                                  shown="5")
    prometheus_multiproc_dir: str = _var("", "PROMETHEUS_MULTIPROC_DIR", "where the web processes share their "
                                         "metrics (the Procfile sets it)", shown="$PARLEY_DATA_DIR/metrics-web",
                                         aliases=("prometheus_multiproc_dir",))
    bind: str | None = _var(None, "PARLEY_BIND", "address of the web tier (Procfile)", shown="127.0.0.1:8000")
    web_processes: int = _var(2, "PARLEY_WEB_PROCESSES", "gunicorn processes of the web tier (Procfile)")
    web_connections: int = _var(5000, "PARLEY_WEB_CONNECTIONS", "connections (open streams and requests) one web "
                                "process serves at once (Procfile; gevent worker)")

    # --- processes and queues -------------------------------------------------------------------------------
    procfile: Path = _var(Path("Procfile"), "PARLEY_PROCFILE",
                          "the processes `scripts/start` runs and `/api/docker/status` expects", shown="./Procfile")
    process_name: str = _var("", "PARLEY_PROCESS_NAME", "this process's name in logs and status",
                             shown="set per Procfile line")
    log_dir: Path | None = _var(None, "PARLEY_LOG_DIR", "one rotating log file per process",
                                shown="$PARLEY_DATA_DIR/logs")
    log_level: str = _var("INFO", "PARLEY_LOG_LEVEL", "`DEBUG`, `INFO`, `WARNING` or `ERROR`")
    asr_device: str = _var("0", "PARLEY_ASR_DEVICE", "GPU index the speech workers are pinned to (Procfile)")
    llm_device: str = _var("0", "PARLEY_LLM_DEVICE", "GPU index the LLM worker is pinned to (Procfile)")
    cuda_visible_devices: str | None = _var(None, "CUDA_VISIBLE_DEVICES", "the GPUs this process may use (the "
                                            "Procfile sets it from the two above)", shown="all")
    broker_heartbeat_timeout_ms: int = _var(30000, "PARLEY_BROKER_HEARTBEAT_TIMEOUT_MS", "silence after which a "
                                            "worker counts as dead and its messages are redelivered")
    broker_maintenance_chance: int = _var(10000, "PARLEY_BROKER_MAINTENANCE_CHANCE",
                                          "per million broker commands, how often dead workers' messages are requeued")
    broker_idle_poll_ms: int = _var(50, "PARLEY_BROKER_IDLE_POLL_MS",
                                    "how often an idle worker asks Redis for work (Dramatiq's default is up to 1 s)")
    reconcile_after_s: float = _var(120.0, "PARLEY_RECONCILE_AFTER_S", "a job quiet this long with no queue message "
                                    "and no worker holding it is re-sent", shown="120")
    reconcile_every_s: float = _var(30.0, "PARLEY_RECONCILE_EVERY_S", "how often workers look for such jobs (0: never)",
                                    shown="30")
    max_crashes: int = _var(3, "PARLEY_MAX_CRASHES", "a job whose worker died this many times while running it "
                            "fails instead of being tried again")
    restart_min_s: float = _var(0.5, "PARLEY_RESTART_MIN_S",
                                "supervisor: wait before restarting a process that ran a while")
    restart_max_s: float = _var(30.0, "PARLEY_RESTART_MAX_S",
                                "supervisor: longest wait (after quick failures in a row)", shown="30")
    restart_stable_s: float = _var(10.0, "PARLEY_RESTART_STABLE_S", "supervisor: a run this long resets the "
                                   "failure count", shown="10")
    crash_loop_after: int = _var(3, "PARLEY_CRASH_LOOP_AFTER",
                                 "supervisor: this many quick failures in a row is a crash loop")
    stop_timeout_s: float = _var(10.0, "PARLEY_STOP_TIMEOUT_S",
                                 "supervisor: on stop, how long a process has after SIGTERM before SIGKILL", shown="10")

    @field_validator("data_dir", "model_dir", "log_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value.resolve() if value is not None else None

    @model_validator(mode="after")
    def _derived_defaults(self) -> "Settings":
        # The model store, database and logs live under the data directory unless named; frozen models are
        # completed once here, while they are being built.
        for name, value in (("model_dir", self.data_dir / "models"), ("log_dir", self.data_dir / "logs"),
                            ("database_url", f"sqlite:///{self.data_dir / 'parley.db'}")):
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        return self

    @property
    def audio_dir(self) -> Path:
        return self.data_dir / "audio"

    @property
    def tmp_dir(self) -> Path:
        # Uploads land here first; same file system as audio_dir so the final move is a rename.
        return self.data_dir / "tmp"

    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    def rate_limit_of(self, group: str) -> tuple[str, str]:
        """(variable, value) of a rate-limit group: its own variable where set, else PARLEY_RATE_LIMIT."""
        name = "rate_limit_" + group.lower().replace(" ", "_")
        own = getattr(self, name)
        if own is not None:
            return _env_name(name), own
        return "PARLEY_RATE_LIMIT", self.rate_limit


def _env_name(field: str) -> str:
    return Settings.model_fields[field].json_schema_extra["env"]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read from the environment on the first call."""
    return Settings()


def ensure_dirs(settings: Settings) -> None:
    for path in (settings.data_dir, settings.audio_dir, settings.tmp_dir, settings.model_dir):
        path.mkdir(parents=True, exist_ok=True)


def broker_options(settings: Settings | None = None) -> dict:
    """How quickly the Redis broker gives a dead worker's messages to another worker."""
    settings = settings or get_settings()
    return {"heartbeat_timeout": settings.broker_heartbeat_timeout_ms,
            "maintenance_chance": settings.broker_maintenance_chance}


#: Variables that only the shell scripts read (before a virtualenv exists, or to lay out a demo):
#: name -> (default, what it sets). Listed with the settings so the README's table has every variable.
SCRIPT_VARIABLES = {
    "PARLEY_VENV": ("./.venv", "`scripts/bootstrap`: where the virtualenv goes"),
    "PARLEY_WHEEL_CACHE": ("~/.cache/parley/wheels", "`scripts/bootstrap`: where the llama-cpp-python wheel it "
                           "builds is kept (the build takes minutes)"),
    "PARLEY_BOOTSTRAP_MODELS": ("tiny.en base gemma-3-270m", "`scripts/bootstrap`: the models it puts in the store"),
    "PARLEY_DEMO_PORTS": ("8000 8001", "`scripts/scale-out-demo`: ports of its two stacks"),
    "PARLEY_DEMO_DEVICES": ("0 1", "`scripts/scale-out-demo`: GPU index of each stack's workers"),
}


def markdown_table() -> str:
    """The README's configuration table: one row per variable, in the order declared above, then the scripts'."""
    rows = ["| variable | default | what it sets |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra
        default = extra.get("shown")
        if default is None:
            default = "unset" if field.default in (None, "") else str(field.default)
        rows.append(f"| `{extra['env']}` | `{default}` | {field.description} |")
    rows += [f"| `{name}` | `{default}` | {doc} |" for name, (default, doc) in SCRIPT_VARIABLES.items()]
    return "\n".join(rows) + "\n"
