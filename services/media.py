"""Probing audio files with ffprobe: is this audio, how long is it."""
from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

from parley.errors import InvalidInput


# ffmpeg's AVPROBE_SCORE_RETRY: at or below it ffmpeg warns "detected only with low score ... misdetection possible".
LOW_PROBE_SCORE = 25


class MediaError(InvalidInput):
    """The file is not audio we can read; the message says why, in words a user understands."""


@dataclasses.dataclass(frozen=True)
class MediaInfo:
    duration: float | None  # seconds; None when the container does not say
    format_name: str
    audio_codec: str
    sample_rate: int | None
    channels: int | None
    has_video: bool


def probe(path: Path, *, timeout: float = 30.0) -> MediaInfo:
    """Read the container and stream headers of `path` (the bytes, not the name or content type)."""
    if Path(path).stat().st_size == 0:
        raise MediaError("the file is empty")
    cmd = [
        "ffprobe", "-v", "error", "-print_format", "json",
        "-show_entries", "format=format_name,duration,probe_score:stream=codec_type,codec_name,sample_rate,channels",
        str(path),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise MediaError("the file could not be read as audio (probing timed out)") from exc
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        # ffprobe prefixes its reason with the path: the server's storage layout is no business of the user.
        reason = [line.replace(f"{path}: ", "") for line in reason]
        raise MediaError("not an audio file: " + (reason[-1] if reason else "unrecognised format"))
    data = json.loads(done.stdout or b"{}")
    streams = data.get("streams", [])
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not audio:
        raise MediaError("not an audio file: it has no audio stream")
    fmt = data.get("format", {})
    if int(fmt.get("probe_score") or 0) <= LOW_PROBE_SCORE:
        # Random bytes named .mp3 "probe" as mp3 on the strength of the name alone; ffmpeg itself calls
        # a score this low a likely misdetection, and decoding it yields noise or nothing.
        raise MediaError(f"not an audio file: its bytes do not look like {fmt.get('format_name') or 'audio'} "
                         "(only the file name suggests it), or too little of it is there")
    try:
        duration = float(fmt["duration"])
    except (KeyError, TypeError, ValueError):
        duration = None
    if not duration and not _decodes(path, timeout=timeout):
        # No length in the headers (fine for a browser's webm) is only judged by decoding a little.
        raise MediaError("no audio in the file: it has headers but no samples that decode")
    first = audio[0]
    return MediaInfo(
        duration=duration,
        format_name=fmt.get("format_name", ""),
        audio_codec=first.get("codec_name", ""),
        sample_rate=int(first["sample_rate"]) if first.get("sample_rate") else None,
        channels=first.get("channels"),
        has_video=any(s.get("codec_type") == "video" for s in streams),
    )


def _decodes(path: Path, *, timeout: float) -> bool:
    """Whether the first seconds of `path` decode to at least one sample."""
    cmd = ["ffmpeg", "-nostdin", "-v", "quiet", "-i", str(path), "-vn", "-t", "2", "-ac", "1", "-ar", "8000",
           "-f", "s16le", "-"]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False
    return len(done.stdout) > 0
