#!/usr/bin/env python
"""Benchmark: a transcription through the full stack versus a bare faster-whisper call, and the cost of speakers.

The same audio (tests/audio clips joined by ffmpeg into one file of at least `--minutes` minutes), the same
model, compute type and CPU threads go through:

1. bare: one faster-whisper call in this process, set up exactly as workers/asr_faster_whisper.py sets it up (see
   `bare_transcribe`): audio decoded by workers.audio.decode (the worker's ffmpeg pipe), WhisperModel(path,
   device, compute_type, cpu_threads) from the same Settings fields, transcribe(language=None, beam_size=
   settings.beam_size, word_timestamps=True, vad_filter=True, initial_prompt=None), or
   BatchedInferencePipeline(model).transcribe(..., batch_size=PARLEY_BATCH_SIZE) when batching is on, and
   every segment consumed. Model loading is outside the timing on both sides (the worker loads at boot).
   What it does NOT mirror, because that is the stack's own design and part of what is measured: the
   worker cuts the audio into ~PARLEY_CHUNK_SECONDS chunks at pauses and calls the engine once per chunk;
   it commits every segment to the database and publishes it.
2. stack: HTTP upload to /api/transcribe/ (diarize=false: speakers off) -> Redis queue -> Dramatiq `asr`
   worker -> completed status, timed from the upload's first byte until a status poll (every 0.1 s) says
   completed. The worker-side time (job started_at..finished_at) is reported too.
3. stack with batching: a fresh worker with PARLEY_BATCH_SIZE=`--batch-size`, versus the bare sequential call.
4. speakers: the same upload with diarize=true (count estimated). Speakers are found chunk by chunk while
   the job runs (each chunk is diarized before it is recognised, so live segments carry a speaker), so the
   cost is the whole job's extra time: (worker seconds with speakers - without) / without. The final stage
   alone ("Identifying speakers..." to completed, from the job's event log) is reported too. The worker's
   peak memory (VmHWM of its processes) is read after the plain runs and again after the speaker runs.

Real-time factor (RTF) = processing seconds / audio seconds (lower is faster); speed ratio = bare seconds /
stack seconds (1.0 = no overhead). Targets: stack >= 0.9x the bare call without diarization; with batching,
faster than the bare sequential call; speaker labelling adds at most 35% to the job (report tiny.en and base). A missed target is reported,
never an error: the exit status is non-zero only when the benchmark itself fails.

    .venv/bin/python scripts/bench/transcription_overhead.py [--quick] [--minutes 5] [--model tiny.en]
        [--threads 2] [--batch-size 8] [--repeats 1] [--no-batching] [--no-speakers] [--device cpu|cuda]
        [--compute-type auto]

On a GPU host (issue item 9): `--device cuda --model large-v3 --batch-size 16` after `parley models pull
large-v3`; compare the stack batched RTF with WhisperX's published 70x real time (large-v2, batched).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from conftest import AUDIO, MODEL_DIR, RedisServer, running_stack, wait_until  # noqa: E402
from benchlib import PRODUCTION_ENV, host_line, table  # noqa: E402
from helpers import read_sse  # noqa: E402

TARGET_OVERHEAD_RATIO = 0.9  # stack speed / bare speed, without diarization
TARGET_SPEAKER_ADDED = 0.35

# The harness's Stack is tuned for tests (dead-worker detection in 3 s, broker maintenance on every
# command); a benchmark measures the production defaults instead.
# --- audio ------------------------------------------------------------------------------------------------
def long_audio(dest: Path, *, minutes: float) -> tuple[Path, float, list[str]]:
    """Test clips joined (re-encoded to one mp3) until at least `minutes` long; returns (path, seconds, clips)."""
    lengths = {"long_two_speakers": 176.0, "two_speakers": 44.0, "three_speakers": 55.0}
    goal = minutes * 60
    order = ["long_two_speakers"] if goal > 150 else []
    while sum(lengths[c] for c in order) < goal:
        order.append("two_speakers" if order.count("two_speakers") <= order.count("three_speakers")
                     else "three_speakers")
    listing = dest.with_suffix(".txt")
    listing.write_text("".join(f"file '{AUDIO / (c + '.mp3')}'\n" for c in order))
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0", "-i",
                    str(listing), "-ac", "1", "-ar", "16000", "-c:a", "libmp3lame", "-b:a", "64k", str(dest)],
                   check=True)
    seconds = float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                                    str(dest)], capture_output=True, text=True, check=True).stdout)
    return dest, seconds, order


# --- bare -------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Run:
    label: str
    seconds: float  # wall time the user waits
    worker_seconds: float | None = None  # started_at..finished_at inside the worker
    segments: int = 0
    words: int = 0
    speaker_seconds: float | None = None


def settings_for(env: dict):
    """The Settings a worker with `env` gets (same fields, same defaults), built in this process."""
    from parley import config

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        config.get_settings.cache_clear()
        return config.get_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
        config.get_settings.cache_clear()


class Bare:
    """faster-whisper in this process, configured from the same Settings fields the worker reads."""

    def __init__(self, env: dict, model_name: str):
        from faster_whisper import WhisperModel

        from services import modelstore
        from workers.recognition import device_and_compute

        self.settings = settings_for(env)
        device, compute = device_and_compute(self.settings)
        self.describe = (f"device={device} compute_type={compute} cpu_threads={self.settings.cpu_threads} "
                         f"beam_size={self.settings.beam_size} word_timestamps=True vad_filter=True")
        self.model = WhisperModel(str(modelstore.model_path(MODEL_DIR, model_name)), device=device,
                                  compute_type=compute, cpu_threads=self.settings.cpu_threads)

    def transcribe(self, audio_path: Path, *, batch_size: int, label: str) -> Run:
        from workers.audio import decode

        started = time.monotonic()
        audio = decode(audio_path)
        kwargs = dict(language=None, beam_size=self.settings.beam_size, word_timestamps=True, vad_filter=True,
                      initial_prompt=None)
        if batch_size > 0:
            from faster_whisper import BatchedInferencePipeline

            segments, _ = BatchedInferencePipeline(self.model).transcribe(audio, batch_size=batch_size, **kwargs)
        else:
            segments, _ = self.model.transcribe(audio, **kwargs)
        kept = [s for s in segments if s.text.strip()]
        return Run(label, time.monotonic() - started, segments=len(kept),
                   words=sum(len(s.words or []) for s in kept))


# --- stack ------------------------------------------------------------------------------------------------
def worker_peak_mb(stack) -> float:
    """Peak resident memory (VmHWM) of the `asr` worker's largest process (Dramatiq's child does the work)."""
    pending, peak = [stack.workers["asr"].proc.pid], 0.0
    while pending:
        pid = pending.pop()
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            for task in Path(f"/proc/{pid}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        hwm = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("VmHWM:")), "0")
        peak = max(peak, int(hwm) / 1024)
    return peak


def through_stack(stack, audio_path: Path, *, label: str, model: str, speakers: bool) -> Run:
    fields = {"model_name": model, "diarize": "true" if speakers else "false"}
    started = time.monotonic()
    answer = stack.upload(audio_path, **fields)
    if answer.status_code != 200:
        raise RuntimeError(f"upload refused: {answer.status_code} {answer.text}")
    job_id = answer.json()["job_id"]

    def finished():
        body = stack.get(f"/api/transcribe/status/{job_id}").json()
        return body if body["status"] in ("completed", "failed") else None
    body = wait_until(finished, timeout=3600, interval=0.1, what=f"job {job_id}")
    seconds = time.monotonic() - started
    if body["status"] != "completed":
        raise RuntimeError(f"job {job_id} failed: {body.get('error')}")
    debug = stack.get(f"/api/transcribe/debug/{job_id}").json()
    result = stack.get(f"/api/transcribe/result/{job_id}").json()
    run = Run(label, seconds, worker_seconds=debug["finished_at"] - debug["started_at"],
              segments=len(result["segments"]), words=sum(len(s.get("words") or []) for s in result["segments"]))
    if speakers:
        log = [f["data"] for f in read_sse(stack.url(f"/api/transcribe/events/{job_id}?last_event_id=0"))
               if f.get("event") != "heartbeat"]
        marks = [e for e in log if e["type"] == "status" and e.get("message", "").startswith("Identifying speakers")]
        done = [e for e in log if e["type"] == "status" and e.get("status") == "completed"]
        if not marks or not done:
            raise RuntimeError(f"job {job_id}: no 'Identifying speakers' or completed event in its log")
        run.speaker_seconds = done[-1]["updated_at"] - marks[0]["updated_at"]
    return run


def restart_worker(stack, **env: str) -> None:
    """Replace the `asr` worker by one started with `env` on top of the stack's environment."""
    if "asr" in stack.workers:
        stack.workers.pop("asr").stop()
    stack.env.update(env)
    stack.start_worker("asr", "asr")


def median_run(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1.5 minutes of audio, tiny.en")
    parser.add_argument("--minutes", type=float, default=5.0, help="audio length at least (default 5)")
    parser.add_argument("--model", default="tiny.en", help="Whisper model on both sides (default tiny.en)")
    parser.add_argument("--threads", type=int, default=2, help="cpu_threads on both sides (default 2)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="PARLEY_DEVICE on both sides (default cpu; cuda for the GPU run with large-v3)")
    parser.add_argument("--compute-type", default="auto",
                        help="PARLEY_COMPUTE_TYPE on both sides (default auto: int8 on cpu, float16 on cuda)")
    parser.add_argument("--batch-size", type=int, default=8, help="PARLEY_BATCH_SIZE of the batching run (default 8)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration, median kept (default 1)")
    parser.add_argument("--no-batching", action="store_true", help="skip the batching comparison")
    parser.add_argument("--no-speakers", action="store_true", help="skip the speaker-labelling cost")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.repeats = 1.5, 1

    print(host_line())
    tmp = Path(tempfile.mkdtemp(prefix="bench-asr-"))
    audio_path, audio_s, clips = long_audio(tmp / "joined.mp3", minutes=args.minutes)
    print(f"audio: {audio_s:.1f} s ({' + '.join(clips)}), model {args.model}")

    env = {**PRODUCTION_ENV, "PARLEY_CPU_THREADS": str(args.threads), "PARLEY_DEFAULT_MODEL": args.model,
           "PARLEY_DEVICE": args.device, "PARLEY_COMPUTE_TYPE": args.compute_type, "PARLEY_BATCH_SIZE": "0",
           "MAX_UPLOAD_MB": "500"}
    redis = RedisServer(tmp)
    redis.start()
    try:
        bare = Bare(env, args.model)
        print(f"mirrored settings: {bare.describe}")
        with running_stack(tmp, redis, workers=[("asr", "asr")], **env) as stack:
            runs: dict[str, list[Run]] = {}

            def measure(label: str, fn) -> None:
                run = fn()
                runs.setdefault(label, []).append(run)
                print(f"  {label}: {run.seconds:.1f} s", flush=True)

            # Bare and stack alternate, so a change of machine load hits both about equally.
            for _ in range(args.repeats):
                measure("bare sequential", lambda: bare.transcribe(audio_path, batch_size=0, label="bare sequential"))
                measure("stack sequential", lambda: through_stack(stack, audio_path, label="stack sequential",
                                                                  model=args.model, speakers=False))
            peak_plain = worker_peak_mb(stack)
            if not args.no_speakers:
                for _ in range(args.repeats):
                    measure("stack + speakers", lambda: through_stack(
                        stack, audio_path, label="stack + speakers", model=args.model, speakers=True))
                peak_speakers = worker_peak_mb(stack)
            if not args.no_batching:
                restart_worker(stack, PARLEY_BATCH_SIZE=str(args.batch_size))
                label_b, label_s = f"bare batched ({args.batch_size})", f"stack batched ({args.batch_size})"
                for _ in range(args.repeats):
                    measure(label_b, lambda: bare.transcribe(audio_path, batch_size=args.batch_size, label=label_b))
                    measure(label_s, lambda: through_stack(stack, audio_path, label=label_s, model=args.model,
                                                           speakers=False))
    finally:
        redis.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    kept = {label: median_run(rs) for label, rs in runs.items()}
    base = kept["bare sequential"]
    rows = []
    for label, run in kept.items():
        rows.append([label, f"{run.seconds:.1f}", f"{run.seconds / audio_s:.3f}", f"{audio_s / run.seconds:.1f}x",
                     "-" if run.worker_seconds is None else f"{run.worker_seconds:.1f}",
                     f"{base.seconds / run.seconds:.2f}x", run.segments, run.words])
    print()
    print(table(["run", "seconds", "RTF", "x real time", "worker s", "speed vs bare seq", "segments", "words"], rows))

    verdicts = []
    ratio = base.seconds / kept["stack sequential"].seconds
    verdicts.append(["stack vs bare (no speakers)", f"{ratio:.2f}x", f">= {TARGET_OVERHEAD_RATIO}x",
                     "met" if ratio >= TARGET_OVERHEAD_RATIO else "MISSED"])
    if not args.no_batching:
        batched = kept[f"stack batched ({args.batch_size})"]
        ratio_b = base.seconds / batched.seconds
        verdicts.append(["stack batched vs bare sequential", f"{ratio_b:.2f}x", "> 1.00x",
                         "met" if ratio_b > 1.0 else "MISSED"])
    if not args.no_speakers:
        spk, plain = kept["stack + speakers"], kept["stack sequential"]
        added = (spk.worker_seconds - plain.worker_seconds) / plain.worker_seconds
        verdicts.append([f"speaker labelling adds to the {args.model} job", f"{100 * added:+.1f}% "
                         f"({spk.worker_seconds:.1f} s vs {plain.worker_seconds:.1f} s)",
                         f"<= {100 * TARGET_SPEAKER_ADDED:.0f}%", "met" if added <= TARGET_SPEAKER_ADDED else "MISSED"])
        verdicts.append(["  of which the final relabelling stage", f"{spk.speaker_seconds:.1f} s", "-", "-"])
        verdicts.append(["worker peak memory without / with speakers", f"{peak_plain:.0f} MB / {peak_speakers:.0f} MB",
                         "-", "-"])
    print()
    print(table(["measure", "value", "target", "verdict"], verdicts))
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
