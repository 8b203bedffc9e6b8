"""Who spoke when: runs a diarization engine on a stretch of audio and tracks speakers across a recording's chunks.

Engines (each a `Diarizer`, one per file): workers/diarize_sherpa.py (the default: pyannote
segmentation-3.0 and CAM++ embeddings under sherpa-onnx, offline) and workers/diarize_pyannote.py (a local
pyannote.audio pipeline on GPU hosts, where PARLEY_PYANNOTE_MODEL names one). Voices are CAM++ embeddings.

Accuracy and cost are measured by scripts/bench/quality.py on real recordings (figures in the README).
Most of its errors on meetings are missed overlapped speech (the segmentation model reports at most two
voices at once, often one) and changes of talker that a window keeps under one local speaker.

A long recording is diarized chunk by chunk as the transcription goes, so live segments carry a
provisional speaker. `SpeakerTracker` maps each chunk's local speakers onto the recording's speakers
by voice (one CAM++ embedding per local speaker) and, at the end, clusters all chunks' voices again
for the final labels.

Public API:

- ``diarize(audio, *, num_speakers=None, threshold=CLUSTER_THRESHOLD, offset=0.0) -> Diarization``
- ``SpeakerTracker(*, num_speakers=None)``: ``add(index, diarization)``, ``turns()``, ``final_turns()``,
  ``final_voices()``, ``final()`` (both from one clustering)
- ``available(model_dir)``, ``warm_up(model_dir)``
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from parley.config import get_settings
from workers import diarize_pyannote, diarize_sherpa
from workers.diarize_sherpa import CLUSTER_THRESHOLD, SAMPLE_RATE, DiarizationUnavailable, available, embed
from workers.turns import SpeakerTurn

log = logging.getLogger(__name__)

__all__ = ["CLUSTER_THRESHOLD", "SAMPLE_RATE", "Diarization", "DiarizationUnavailable", "Diarizer", "SpeakerTracker",
           "available", "available_here", "diarize", "embed", "warm_up"]

# Voice of a speaker in one chunk: one CAM++ embedding of up to this much of their speech, taken from
# the parts nobody else speaks over.
VOICE_SAMPLE_S = 10.0  # was 30: CAM++ costs ~0.02 s per second embedded (1 thread), paid on top
# of the pipeline's own embeddings; 10 s of solo speech gives a stable voice. Turns do not depend on it.
MIN_VOICE_S = 0.5

# Two chunks' speakers are the same person when their voices (one embedding of up to VOICE_SAMPLE_S of solo
# speech each) are at least this similar (cosine); the final clustering across chunks cuts at the same
# point. On the tuning recordings, voices of the same person in different clips scored 0.49-0.75 and of
# different people at most 0.48 (99th percentile 0.45, 25 pairs); the two voices of the scored telephone
# call score 0.47.
SAME_VOICE_SIMILARITY = 0.5


class Diarizer(Protocol):
    """A diarization engine: who speaks when in 16 kHz mono audio, speakers under any local names."""

    name: str

    def turns(self, audio: np.ndarray, *, model_dir: Path, num_speakers: int | None,
              threshold: float) -> list[tuple[float, float, object]] | None:
        """(start, end, speaker) in seconds of `audio`; None when this engine is not set up here (the next runs)."""


#: In order of preference: a configured pyannote.audio pipeline first, then sherpa-onnx (always answers).
ENGINES: list[Diarizer] = [diarize_pyannote.ENGINE, diarize_sherpa.ENGINE]


@dataclasses.dataclass
class Diarization:
    """Turns of one stretch of audio, with local speaker names, and one voice embedding per speaker."""

    turns: list[SpeakerTurn]
    voices: dict[str, np.ndarray]  # speaker -> L2-normalised CAM++ embedding
    voiced_s: dict[str, float]  # speaker -> seconds of speech behind that voice


def available_here() -> bool:
    """Whether this process can label speakers: not switched off (PARLEY_DIARIZATION=0), sherpa-onnx is
    installed, and the diarization models are in the model store (scripts/bootstrap makes them)."""
    if not get_settings().diarization:
        return False
    if importlib.util.find_spec("sherpa_onnx") is None:
        return False
    return available(get_settings().model_dir)


def warm_up(model_dir: Path) -> None:
    """Load both models and run two seconds of noise through them, so the first job pays for neither."""
    noise = (0.01 * np.random.default_rng(0).standard_normal(SAMPLE_RATE * 2)).astype(np.float32)
    diarize(noise, model_dir=model_dir)
    embed(noise, model_dir=model_dir)


def diarize(audio: np.ndarray, *, model_dir: Path, num_speakers: int | None = None,
            threshold: float = CLUSTER_THRESHOLD, offset: float = 0.0) -> Diarization:
    """Speaker turns of 16 kHz mono float32 audio; times shifted by `offset` seconds.

    num_speakers: cluster into exactly this many speakers (when the audio has enough speech for them);
    None (the default) estimates the count with `threshold` (cosine distance, default CLUSTER_THRESHOLD).
    Speakers are named "0", "1", ... in order of first appearance; `SpeakerTracker` names them for a
    whole recording.
    """
    if num_speakers is not None and num_speakers < 1:
        raise ValueError(f"num_speakers must be >= 1 or None, got {num_speakers}")
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {audio.shape}")
    if len(audio) < SAMPLE_RATE // 2 or not np.any(audio):
        return Diarization([], {}, {})
    found = None
    for engine in ENGINES:  # the first that answers
        found = engine.turns(audio, model_dir=model_dir, num_speakers=num_speakers, threshold=threshold)
        if found is not None:
            break
    order: dict[object, str] = {}
    turns = []
    for start, end, speaker in found:
        name = order.setdefault(speaker, str(len(order)))
        turns.append(SpeakerTurn(round(start + offset, 3), round(end + offset, 3), name))
    voices, voiced = {}, {}
    for name in order.values():
        samples = _solo_speech(audio, turns, name, offset)
        if len(samples) >= MIN_VOICE_S * SAMPLE_RATE:
            vector = embed(samples, model_dir=model_dir)
            if vector is not None:
                voices[name] = vector
                voiced[name] = len(samples) / SAMPLE_RATE
    return Diarization(turns, voices, voiced)


def _solo_speech(audio: np.ndarray, turns: list[SpeakerTurn], speaker: str, offset: float) -> np.ndarray:
    """Up to VOICE_SAMPLE_S of `speaker`'s speech where no one else speaks (longest stretches first)."""
    others = [(t.start, t.end) for t in turns if t.speaker != speaker]
    pieces = []
    for turn in (t for t in turns if t.speaker == speaker):
        start = turn.start
        for o_start, o_end in sorted(others):
            if o_end <= start or o_start >= turn.end:
                continue
            if o_start > start:
                pieces.append((start, o_start))
            start = max(start, o_end)
        if start < turn.end:
            pieces.append((start, turn.end))
    pieces.sort(key=lambda p: p[1] - p[0], reverse=True)
    out, total = [], 0
    limit = int(VOICE_SAMPLE_S * SAMPLE_RATE)
    for start, end in pieces:
        a, b = int((start - offset) * SAMPLE_RATE), int((end - offset) * SAMPLE_RATE)
        piece = audio[max(a, 0):max(b, 0)][: limit - total]
        out.append(piece)
        total += len(piece)
        if total >= limit:
            break
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


class SpeakerTracker:
    """The speakers of one recording, built chunk by chunk.

    `add` maps a chunk's local speakers onto the speakers seen so far, by voice, and returns the chunk's
    turns under provisional names (SPEAKER_1, SPEAKER_2, ... in order of first appearance). `final_turns`
    clusters every chunk's voices once more, into `num_speakers` when it was given, for the final labels.
    """

    def __init__(self, *, num_speakers: int | None = None):
        self.num_speakers = num_speakers
        self.chunks: dict[int, Diarization] = {}
        # provisional speaker -> sum of its voices, weighted by speech; None for one first heard without a voice
        self._sums: list[np.ndarray | None] = []
        self._last: int | None = None  # provisional speaker of the latest turn so far

    def add(self, index: int, diarization: Diarization) -> list[SpeakerTurn]:
        self.chunks[index] = diarization
        matched: dict[str, int] = {}
        # Longest-speaking local speakers choose first: their voices are the most reliable.
        for name in sorted(diarization.voices, key=lambda n: -diarization.voiced_s[n]):
            voice = diarization.voices[name]
            full = self.num_speakers is not None and len(self._sums) >= self.num_speakers
            sims = {g: float(voice @ total / np.linalg.norm(total)) for g, total in enumerate(self._sums)
                    if total is not None and g not in matched.values()}
            best = max(sims, key=sims.get, default=None)
            if best is not None and (sims[best] >= SAME_VOICE_SIMILARITY or full):
                matched[name] = best
        # New speakers are numbered in their order of first appearance (local names are in that order).
        for name in sorted(diarization.voices, key=int):
            if name not in matched:
                self._sums.append(np.zeros_like(diarization.voices[name]))
                matched[name] = len(self._sums) - 1
            self._sums[matched[name]] = self._sums[matched[name]] + diarization.voiced_s[name] * diarization.voices[name]
        # Speakers with too little speech for a voice take the chunk's main speaker. In a chunk where nobody has
        # a voice (a lone "mm-hmm" in a quiet stretch) they take the latest speaker so far (`final` gives them the
        # nearest in time): a new speaker for every such chunk would be a person who is not there.
        main = max(diarization.voices, key=diarization.voiced_s.get, default=None)
        for turn in diarization.turns:
            if turn.speaker not in matched:
                if main is not None:
                    matched[turn.speaker] = matched[main]
                elif self._last is not None:
                    matched[turn.speaker] = self._last
                else:
                    self._sums.append(None)
                    matched[turn.speaker] = len(self._sums) - 1
                    main = turn.speaker
        if diarization.turns:
            self._last = matched[max(diarization.turns, key=lambda t: t.end).speaker]
        return [SpeakerTurn(t.start, t.end, f"SPEAKER_{matched[t.speaker] + 1}") for t in diarization.turns]

    def final(self) -> tuple[list[SpeakerTurn], dict[str, tuple[np.ndarray, float]]]:
        """(`final_turns()`, `final_voices()`) from one final clustering."""
        labelled, clusters = self._final_clusters()
        names = _names_by_first_appearance(labelled)
        turns = [SpeakerTurn(t.start, t.end, names[c]) for t, c in sorted(labelled, key=lambda item: item[0].start)]
        sums: dict[int, np.ndarray] = {}
        seconds: dict[int, float] = {}
        for (i, name), cluster in clusters.items():
            d = self.chunks[i]
            sums[cluster] = sums.get(cluster, 0.0) + d.voiced_s[name] * d.voices[name]
            seconds[cluster] = seconds.get(cluster, 0.0) + d.voiced_s[name]
        voices = {}
        for cluster, total in sums.items():
            norm = float(np.linalg.norm(total))
            if cluster in names and norm > 0:
                voices[names[cluster]] = (total / norm, seconds[cluster])
        return turns, voices

    def final_turns(self) -> list[SpeakerTurn]:
        """All turns under final names: one chunk keeps its own clustering; several are clustered by voice."""
        return self.final()[0]

    def final_voices(self) -> dict[str, tuple[np.ndarray, float]]:
        """Each final speaker's voiceprint: {label: (vector, voiced_s)}, labels as `final_turns` gives them.

        The vector is the L2-normalised mean of the chunk voices the final clustering gave that speaker, each
        weighted by its seconds of speech; voiced_s is their sum. A speaker none of whose chunks had enough
        solo speech for a voice has no entry.
        """
        return self.final()[1]

    def _final_clusters(self) -> tuple[list[tuple[SpeakerTurn, int]], dict[tuple[int, str], int]]:
        """Every turn with its final cluster, and the cluster of each chunk voice (chunk index, local name)."""
        if len(self.chunks) == 1:
            ((index, only),) = self.chunks.items()
            return [(t, int(t.speaker)) for t in only.turns], {(index, n): int(n) for n in only.voices}
        keys = [(i, name) for i in sorted(self.chunks) for name in self.chunks[i].voices]
        cluster = self._cluster(keys) if len(keys) > 1 else {key: 0 for key in keys}
        labelled, voiceless = [], []
        for i in sorted(self.chunks):
            d = self.chunks[i]
            main = max(d.voices, key=d.voiced_s.get, default=None)
            for t in d.turns:
                key = (i, t.speaker) if (i, t.speaker) in cluster else (i, main)
                if key in cluster:
                    labelled.append((t, cluster[key]))
                else:
                    voiceless.append(t)
        # Turns of chunks where nobody had a voice go to the speaker of the nearest turn in time (-1, one
        # speaker, when the whole recording has no voice).
        voiced = list(labelled)
        for t in voiceless:
            nearest = min(voiced, key=lambda item: max(item[0].start - t.end, t.start - item[0].end), default=None)
            labelled.append((t, nearest[1] if nearest else -1))
        return labelled, cluster

    def _cluster(self, keys: list[tuple[int, str]]) -> dict[tuple[int, str], int]:
        from scipy.cluster.hierarchy import fcluster, linkage

        X = np.stack([self.chunks[i].voices[name] for i, name in keys])
        dist = np.clip(1.0 - X @ X.T, 0.0, 2.0)
        condensed = dist[np.triu_indices(len(X), 1)]
        tree = linkage(condensed, method="average")
        if self.num_speakers is not None:
            labels = fcluster(tree, t=min(self.num_speakers, len(X)), criterion="maxclust")
        else:
            labels = fcluster(tree, t=1.0 - SAME_VOICE_SIMILARITY, criterion="distance")
        return {key: int(label) - 1 for key, label in zip(keys, labels)}


def _names_by_first_appearance(labelled: list[tuple[SpeakerTurn, int]]) -> dict[int, str]:
    """Final names SPEAKER_1, SPEAKER_2, ... for clusters, in order of their first turn."""
    names: dict[int, str] = {}
    for turn, cluster in sorted(labelled, key=lambda item: item[0].start):
        names.setdefault(cluster, f"SPEAKER_{len(names) + 1}")
    return names
