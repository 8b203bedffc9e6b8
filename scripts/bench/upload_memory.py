#!/usr/bin/env python
"""Benchmark: a multi-gigabyte upload streams to disk while the web processes' memory stays flat.

Starts a real stack (redis-server + gunicorn with the Procfile's `web:` flags, see api_latency.py; no
worker: the job just waits in the queue) with MAX_UPLOAD_MB large enough, makes a `--size-mb` WAV file
(a valid 16 kHz mono PCM header, then silence as a sparse file, so making it costs no disk writes) and
POSTs it to /api/transcribe/ as multipart/form-data with a Content-Length, read from disk as it is sent
(the client never holds the file). /api/sessions/upload takes files through the same code
(web/uploads.py: StreamingRequest writes each part to disk as it arrives), but refuses after the upload
unless a transcription worker is alive, so this script uses /api/transcribe/.

Every 50 ms it samples VmRSS (/proc/<pid>/status) of the gunicorn master and each of its worker
processes. Baseline = the mean of the second before the upload, after a few small warm-up uploads (a
process's first upload imports and initialises code once). It also checks the stored copy: its size
and its SHA-256 (from /api/transcribe/debug/<job>) must be the file's.

Target: no web process grows by 50 MB or more. Exits non-zero only when the benchmark itself fails.
The generated file and the stack's data (the stored copy) are deleted at the end. Needs free disk of
about the file's size plus 1 GB (the stored copy; the sparse source takes none); with less, it says so
and uses 200 MB.

    .venv/bin/python scripts/bench/upload_memory.py [--quick] [--size-mb 2048] [--dir /tmp]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_latency import ProductionStack, gunicorn_pids, procfile_web_shape  # noqa: E402
from conftest import RedisServer  # noqa: E402

import requests  # noqa: E402

TARGET_GROWTH_MB = 50.0
SAMPLE_S = 0.05


def make_wav(path: Path, size: int) -> None:
    """A WAV file of exactly `size` bytes: a 44-byte PCM header, then silence (a hole in a sparse file)."""
    data = size - 44
    rate, channels, bits = 16_000, 1, 16
    header = (b"RIFF" + struct.pack("<I", size - 8) + b"WAVE" + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate,
              rate * channels * bits // 8, channels * bits // 8, bits) + b"data" + struct.pack("<I", data))
    with open(path, "wb") as fh:
        fh.write(header)
        fh.truncate(size)


class MultipartFile:
    """A multipart/form-data body read from disk as it is sent; hashes the file part on the way."""

    def __init__(self, path: Path, *, field: str, boundary: str):
        self._head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{path.name}\"\r\n"
                      "Content-Type: audio/wav\r\n\r\n").encode()
        self._tail = (f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"diarize\"\r\n\r\nfalse\r\n"
                      f"--{boundary}--\r\n").encode()
        self._file = open(path, "rb")
        self._size = path.stat().st_size
        self._stage = 0
        self.sha256 = hashlib.sha256()
        self.sent = 0

    def __len__(self) -> int:
        return len(self._head) + self._size + len(self._tail)

    def read(self, n: int = -1) -> bytes:
        n = 1 << 20 if n is None or n < 0 else max(n, 1 << 20)  # 1 MiB reads: fewer Python round trips
        if self._stage == 0:
            self._stage = 1
            return self._head
        if self._stage == 1:
            chunk = self._file.read(n)
            if chunk:
                self.sha256.update(chunk)
                self.sent += len(chunk)
                return chunk
            self._stage = 2
            self._file.close()
            return self._tail
        return b""


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Sampler(threading.Thread):
    def __init__(self, pids: list[int]):
        super().__init__(daemon=True)
        self.pids = pids
        self.samples: list[tuple[float, dict[int, float]]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.samples.append((time.perf_counter(), {p: rss_mb(p) or 0.0 for p in self.pids}))
            self.stopped.wait(SAMPLE_S)


def main() -> int:
    processes, threads = procfile_web_shape()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: a 200 MB file")
    parser.add_argument("--size-mb", type=int, default=2048, help="size of the uploaded file in MiB (default 2048)")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the file and the stack's data go (default: the temp dir)")
    parser.add_argument("--processes", type=int, default=int(os.environ.get("PARLEY_WEB_PROCESSES", processes)),
                        help=f"gunicorn processes (default: PARLEY_WEB_PROCESSES or the Procfile's {processes})")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("PARLEY_WEB_THREADS", threads)),
                        help=f"gthreads per process (default: PARLEY_WEB_THREADS or the Procfile's {threads})")
    args = parser.parse_args()
    if args.quick:
        args.size_mb = 200
    free_mb = shutil.disk_usage(args.dir).free / 2**20
    if free_mb < args.size_mb + 1024:
        print(f"only {free_mb:.0f} MiB free in {args.dir}; a {args.size_mb} MiB upload needs {args.size_mb + 1024}: using 200 MiB")
        args.size_mb = 200
    size = args.size_mb * 2**20

    with tempfile.TemporaryDirectory(prefix="parley-bench-upload-", dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "redis").mkdir()
        source = tmp / "big.wav"
        make_wav(source, size)
        small = tmp / "small.wav"
        make_wav(small, 2**20)
        redis = RedisServer(tmp / "redis")
        redis.start()
        stack = ProductionStack(tmp, redis, f"sqlite:///{tmp / 'data' / 'parley.db'}", processes=args.processes,
                                threads=args.threads, MAX_UPLOAD_MB=str(args.size_mb + 16),
                                PARLEY_RATE_LIMIT="1000000 per minute")
        try:
            stack.start_web()
            pids = gunicorn_pids(stack.web.proc.pid)
            for _ in range(4 * args.processes):  # warm every process's upload path
                with open(small, "rb") as fh:
                    answer = stack.post("/api/transcribe/", files={"file": ("small.wav", fh)}, data={"diarize": "false"})
                if answer.status_code != 200:
                    raise SystemExit(f"warm-up upload failed: HTTP {answer.status_code} {answer.text}")
            sampler = Sampler(pids)
            sampler.start()
            time.sleep(1.0)
            upload_started = time.perf_counter()
            boundary = "parleybench" + os.urandom(8).hex()
            body = MultipartFile(source, field="file", boundary=boundary)
            answer = requests.post(stack.url("/api/transcribe/"), data=body, timeout=1800,
                                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            upload_s = time.perf_counter() - upload_started
            time.sleep(1.0)
            sampler.stopped.set()
            sampler.join()
            if answer.status_code != 200:
                raise SystemExit(f"the upload failed: HTTP {answer.status_code} {answer.text[:300]}")
            debug = stack.get(f"/api/transcribe/debug/{answer.json()['job_id']}").json()
            stored = list((stack.data_dir / "audio").glob("*.wav"))
            stored_size = max((p.stat().st_size for p in stored), default=0)
            intact = debug["audio_sha256"] == body.sha256.hexdigest() and stored_size == size

            before = [s for t, s in sampler.samples if t < upload_started]
            print(f"web: gunicorn gthread {args.processes} processes x {args.threads} threads; upload of a "
                  f"{args.size_mb} MiB WAV to POST /api/transcribe/ in {upload_s:.1f} s "
                  f"({args.size_mb / upload_s:.0f} MiB/s); {len(sampler.samples)} RSS samples every {SAMPLE_S * 1000:.0f} ms")
            print(f"stored copy: {stored_size} bytes, sha256 {'matches' if intact else 'DIFFERS'} (job {debug['job_id']})")
            print(f"\n{'process':<16} {'baseline MB':>12} {'peak MB':>9} {'growth MB':>10}")
            worst = 0.0
            for pid in pids:
                base = sum(s[pid] for s in before) / len(before)
                peak = max(s[pid] for _, s in sampler.samples)
                worst = max(worst, peak - base)
                role = "master" if pid == pids[0] else "worker"
                print(f"{role + ' ' + str(pid):<16} {base:>12.1f} {peak:>9.1f} {peak - base:>10.1f}")
            base_total = sum(sum(s.values()) for s in before) / len(before)
            peak_total = max(sum(s.values()) for _, s in sampler.samples)
            print(f"{'all (sum)':<16} {base_total:>12.1f} {peak_total:>9.1f} {peak_total - base_total:>10.1f}")
            ok = worst < TARGET_GROWTH_MB and intact
            print(f"\ntarget: every web process grows < {TARGET_GROWTH_MB:g} MB and the stored copy is intact -> "
                  f"largest growth {worst:.1f} MB: {'MET' if ok else 'MISSED'}")
        finally:
            stack.stop()
            redis.stop()
    # The temporary directory, with the generated file and the stored copy, is gone now.
    return 0


if __name__ == "__main__":
    sys.exit(main())
