"""Settings read once from the environment; every process (web, worker, CLI) shares them."""
from __future__ import annotations

import dataclasses
import os
from functools import lru_cache
from pathlib import Path


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Configuration of a Parley deployment.

    Every field comes from the environment variable named in its comment; the defaults make a
    single-machine deployment that needs no account, key or extra server.
    """

    data_dir: Path  # PARLEY_DATA_DIR, default ./data: database, audio, temporary uploads
    model_dir: Path  # PARLEY_MODEL_DIR, default <data_dir>/models: the model store
    database_url: str  # DATABASE_URL, default sqlite:///<data_dir>/parley.db; postgresql://... for scale
    redis_url: str  # REDIS_URL, default redis://127.0.0.1:6379/0
    max_upload_mb: int  # MAX_UPLOAD_MB, default 2048
    default_model: str  # PARLEY_DEFAULT_MODEL, default tiny.en
    retranslate_model: str  # PARLEY_RETRANSLATE_MODEL, default large-v3-turbo (falls back to default_model when not in the store)
    chunk_seconds: float  # PARLEY_CHUNK_SECONDS, default 120: target length of a processing chunk
    asr_engine: str  # PARLEY_ASR_ENGINE, default auto: faster-whisper, or whisperx on CUDA hosts that have it
    device: str  # PARLEY_DEVICE, default auto: cpu, cuda or auto
    compute_type: str  # PARLEY_COMPUTE_TYPE, default auto: int8 on CPU, float16 on GPU
    cpu_threads: int  # PARLEY_CPU_THREADS, default 0 (= the engine's choice)
    batch_size: int  # PARLEY_BATCH_SIZE, default -1 = auto: 16 on GPU, sequential (0) on CPU
    beam_size: int  # PARLEY_BEAM_SIZE, default 5
    retranslate_wait_s: float  # PARLEY_RETRANSLATE_WAIT_S, default 30: how long the web tier waits for a re-transcription
    heartbeat_s: float  # PARLEY_HEARTBEAT_S, default 15: idle interval between stream heartbeats
    job_max_retries: int  # PARLEY_JOB_MAX_RETRIES, default 3: redeliveries of a failing transcription
    log_dir: Path  # PARLEY_LOG_DIR, default <data_dir>/logs: one rotating log file per process

    @property
    def audio_dir(self) -> Path:
        return self.data_dir / "audio"

    @property
    def tmp_dir(self) -> Path:
        # Uploads land here first; same file system as audio_dir so the final move is a rename.
        return self.data_dir / "tmp"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    env = os.environ
    data_dir = Path(env.get("PARLEY_DATA_DIR", "data")).resolve()
    return Settings(
        data_dir=data_dir,
        model_dir=Path(env.get("PARLEY_MODEL_DIR", str(data_dir / "models"))).resolve(),
        database_url=env.get("DATABASE_URL", f"sqlite:///{data_dir / 'parley.db'}"),
        redis_url=env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        max_upload_mb=int(env.get("MAX_UPLOAD_MB", "2048")),
        default_model=env.get("PARLEY_DEFAULT_MODEL", "tiny.en"),
        retranslate_model=env.get("PARLEY_RETRANSLATE_MODEL", "large-v3-turbo"),
        chunk_seconds=float(env.get("PARLEY_CHUNK_SECONDS", "120")),
        asr_engine=env.get("PARLEY_ASR_ENGINE", "auto"),
        device=env.get("PARLEY_DEVICE", "auto"),
        compute_type=env.get("PARLEY_COMPUTE_TYPE", "auto"),
        cpu_threads=int(env.get("PARLEY_CPU_THREADS", "0")),
        batch_size=int(env.get("PARLEY_BATCH_SIZE", "-1")),
        beam_size=int(env.get("PARLEY_BEAM_SIZE", "5")),
        retranslate_wait_s=float(env.get("PARLEY_RETRANSLATE_WAIT_S", "30")),
        heartbeat_s=float(env.get("PARLEY_HEARTBEAT_S", "15")),
        job_max_retries=int(env.get("PARLEY_JOB_MAX_RETRIES", "3")),
        log_dir=Path(env.get("PARLEY_LOG_DIR", str(data_dir / "logs"))).resolve(),
    )


def ensure_dirs(settings: Settings) -> None:
    for path in (settings.data_dir, settings.audio_dir, settings.tmp_dir, settings.model_dir):
        path.mkdir(parents=True, exist_ok=True)


def broker_options() -> dict:
    """How quickly the Redis broker gives a dead worker's messages to another worker.

    PARLEY_BROKER_HEARTBEAT_TIMEOUT_MS (default 30000): silence after which a worker counts as dead.
    PARLEY_BROKER_MAINTENANCE_CHANCE (default 10000, per million commands): how often a broker
    command also requeues dead workers' messages.
    """
    return {
        "heartbeat_timeout": int(os.environ.get("PARLEY_BROKER_HEARTBEAT_TIMEOUT_MS", "30000")),
        "maintenance_chance": int(os.environ.get("PARLEY_BROKER_MAINTENANCE_CHANCE", "10000")),
    }
