"""Decoding audio with ffmpeg and planning chunks that are cut at silences."""
from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from services.media import MediaError

SAMPLE_RATE = 16_000


def decode(path: Path, *, start: float | None = None, end: float | None = None,
           sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples of `path` (optionally only start..end seconds), decoded by ffmpeg.

    Raises MediaError with ffmpeg's own reason when the file is corrupt or unreadable.
    """
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
    if start is not None:
        cmd += ["-ss", f"{max(0.0, start):.3f}"]  # before -i: fast seek
    cmd += ["-i", str(path)]
    if end is not None:
        cmd += ["-t", f"{max(0.0, end - (start or 0.0)):.3f}"]
    cmd += ["-vn", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "-"]
    # The samples grow in one bytearray (realloc moves no bytes at this size) instead of capture_output's
    # list of pieces joined at the end: a 10-hour recording (2.3 GB of samples) peaks at 1x, not 2x.
    # stderr goes to a file so a corrupt input's thousands of complaints can never block the pipe.
    data = bytearray()
    with tempfile.TemporaryFile() as errors:
        with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors) as proc:
            while piece := proc.stdout.read(1 << 20):
                data += piece
        errors.seek(max(0, errors.seek(0, 2) - 65536))
        stderr = errors.read()
    reason = _ffmpeg_reason(stderr)
    if proc.returncode != 0:
        raise MediaError(f"the audio could not be decoded ({reason})")
    samples = np.frombuffer(data, dtype=np.float32, count=len(data) // 4)
    if samples.size == 0 and stderr.strip():
        # ffmpeg exits 0 on some corrupt inputs but produces nothing and says why.
        raise MediaError(f"the audio could not be decoded ({reason})")
    if samples.size == 0 and start is None and end is None:
        raise MediaError("the file contains no audio samples (only headers, or a stream of length zero)")
    return samples


def _ffmpeg_reason(stderr: bytes) -> str:
    """ffmpeg's last complaint without its "[aac @ 0x55d5...]" prefix; a corrupt file yields thousands."""
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
    if not lines:
        return "ffmpeg failed without a message"
    return re.sub(r"^\[[^\]]+\]\s*", "", lines[-1])[:200]


def plan_chunks(audio: np.ndarray, *, target_s: float, sample_rate: int = SAMPLE_RATE,
                search_s: float = 10.0, frame_s: float = 0.05) -> list[tuple[float, float]]:
    """Split `audio` into chunks of about `target_s` seconds, each cut at the quietest moment near its end.

    Energy of short frames is enough to find a pause between words or turns, and costs far less than a
    second VAD pass over the whole file (the engine runs its own VAD inside each chunk).
    """
    duration = len(audio) / sample_rate
    if duration <= target_s * 1.25:
        return [(0.0, round(duration, 3))]
    frame = max(1, int(frame_s * sample_rate))
    n_frames = len(audio) // frame
    # In blocks: squaring the whole of a 10-hour recording at once would double its memory for a moment.
    energy = np.empty(n_frames, dtype=np.float32)
    block = 20_000  # frames (1,000 s) per pass
    for first in range(0, n_frames, block):
        last = min(n_frames, first + block)
        part = audio[first * frame: last * frame].reshape(last - first, frame)
        energy[first:last] = np.sqrt(np.mean(part ** 2, axis=1) + 1e-12)
    # Smooth over ~0.3 s so one quiet frame inside a word does not count as a pause.
    width = max(1, int(0.3 / frame_s))
    energy = np.convolve(energy, np.ones(width) / width, mode="same")

    cuts = [0.0]
    while duration - cuts[-1] > target_s * 1.25:
        goal = cuts[-1] + target_s
        lo = max(int((goal - search_s) / frame_s), int((cuts[-1] + target_s / 2) / frame_s))
        hi = min(int((goal + search_s) / frame_s), n_frames - 1)
        if hi <= lo:
            cut = goal
        else:
            cut = (lo + int(np.argmin(energy[lo:hi]))) * frame_s + frame_s / 2
        cuts.append(round(cut, 3))
    cuts.append(round(duration, 3))
    return list(zip(cuts[:-1], cuts[1:]))
