"""Label transcript segments with speakers, offline, from voice embeddings of the audio.

Each transcript span gets one Resemblyzer embedding (a small LSTM speaker encoder whose weights
ship inside the `resemblyzer` wheel, so nothing is downloaded); the embeddings are clustered with
average-linkage agglomerative clustering on cosine distance. When the caller does not know how
many people spoke, the count is estimated from the cluster structure (silhouette score of each
candidate split) instead of a fixed distance threshold, because absolute similarities differ a lot
between recordings and voices. Labels are per span: a span in which two people speak gets one
label (the caller should cut segments at speaker turns where it can).

Public API (called by the transcription worker):

- ``assign_speakers(audio, spans, *, num_speakers=None, max_speakers=8, sample_rate=16000)``
- ``warm_up()``
- ``SpeakerAssignment``
- ``estimate_num_speakers(embeddings, *, max_speakers=8)`` (helper, for tuning and tests)

Optional: when ``pyannote.audio`` is importable and ``PARLEY_PYANNOTE_MODEL`` names a local
pipeline directory (or its config.yaml), that pipeline is used instead. It cannot be exercised on
the offline CPU test machines (pyannote's weights are gated downloads), so it is kept small and any
failure in it falls back to the Resemblyzer path.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

ENCODER_SAMPLE_RATE = 16000

# Spans shorter than this are widened symmetrically (into the surrounding audio) before embedding,
# so a short interjection still gets some of its own acoustic context.
MIN_CONTEXT_S = 1.5

# Resemblyzer embeds 1.6 s windows and zero-pads shorter input. Voiced audio shorter than
# TILE_TO_S is tiled (repeated) up to that length instead, which gives two overlapping windows to
# average: the zero padding had pulled short-span embeddings away from their speaker (measured:
# same-voice similarity 0.85 instead of 0.93 on a 1 s question).
ENCODER_WINDOW_S = 1.6
TILE_TO_S = 2.0
ENCODER_BATCH = 256  # partial windows per LSTM call: bounds memory on hour-long recordings

# After Resemblyzer's silence trimming, a span with less voiced audio than this gives an
# embedding too noisy to use at all; such spans borrow the label of the nearest span in time.
MIN_VOICED_S = 0.3

# Spans with at least this much voiced audio (one full encoder window) define the clusters;
# shorter ones are then given the nearest cluster. Short spans are the noisiest embeddings and
# were what made a single voice look like two.
RELIABLE_VOICED_S = ENCODER_WINDOW_S

# A group of spans is split into several speakers while its best split scores at least this
# cosine silhouette. Measured on the espeak test voices (tests/audio, 41 subsets: single voices,
# pairs, trios, balanced and lopsided): one voice's best split scored 0.08-0.32, groups of two or
# three voices 0.39-0.69, and every count came out right for thresholds 0.32-0.39. Real voices
# separate more than espeak voices do.
MIN_SILHOUETTE = 0.355

# Clusters smaller than this (single spans) are treated as outliers, not speakers, as long as they
# are at most MAX_OUTLIER_FRACTION of the spans; they are then given the nearest speaker. A person
# who says one sentence in a long recording is therefore folded into someone else.
MIN_CLUSTER_SPANS = 2
MAX_OUTLIER_FRACTION = 0.1

# With only two usable spans there is no cluster structure to score; fall back to a plain cosine
# similarity threshold (fragile, but there is nothing better to go on). Same-voice spans score
# ~0.85-0.95; different espeak voices 0.70-0.88 and different real speakers usually lower still.
TWO_SPAN_SAME_SPEAKER_SIM = 0.86

# Confidence with several speakers is a two-way softmax of (similarity to own centroid, similarity
# to the nearest other centroid) with this temperature: a 0.08 margin (typical for two espeak
# voices) gives ~0.93, a zero margin 0.5 (a coin toss between two speakers).
CONFIDENCE_TEMPERATURE = 0.03

# With one speaker, confidence ramps linearly from 0 at this similarity to the centroid (about what
# unrelated voices score) up to 1 at SINGLE_SPEAKER_SIM_HIGH (typical for the same voice).
SINGLE_SPEAKER_SIM_LOW = 0.5
SINGLE_SPEAKER_SIM_HIGH = 0.9

PYANNOTE_ENV = "PARLEY_PYANNOTE_MODEL"


@dataclass
class SpeakerAssignment:
    """Speaker label for one transcript span."""

    speaker: str  # "SPEAKER_1", "SPEAKER_2", ... numbered by order of first appearance in time
    confidence: float  # in [0, 1]: how sure the assignment is


_encoder = None
_encoder_lock = threading.Lock()


def _get_encoder():
    """Load the Resemblyzer encoder once per process (double-checked so threads share one copy)."""
    global _encoder
    if _encoder is None:
        with _encoder_lock:
            if _encoder is None:
                with warnings.catch_warnings():
                    # resemblyzer imports scipy.ndimage.morphology, deprecated in scipy >= 1.8.
                    warnings.simplefilter("ignore", DeprecationWarning)
                    from resemblyzer import VoiceEncoder
                import torch

                # The encoder runs a small LSTM on one short span at a time: torch's intra-op threads
                # only add synchronisation, and spin against the speech engine's threads (measured on
                # 2 busy cores: 130 ms per span with 1 thread, 1300 ms with 2). Process-wide, but the
                # speech worker's other engine (CTranslate2) keeps its own thread pool.
                torch.set_num_threads(int(os.environ.get("PARLEY_DIARIZATION_THREADS", "1")))
                _encoder = VoiceEncoder("cpu", verbose=False)
    return _encoder


def warm_up() -> None:
    """Load the encoder and push two seconds of noise through every step of an embedding.

    The first librosa/numba call in a process JIT-compiles for 20-30 s; workers call this at start
    so the first real job does not pay for it.
    """
    from resemblyzer import preprocess_wav

    encoder = _get_encoder()
    rng = np.random.default_rng(0)
    noise = (0.05 * rng.standard_normal(ENCODER_SAMPLE_RATE * 2)).astype(np.float32)
    # Called directly rather than through _embed: the VAD may drop all of the noise, and the
    # mel spectrogram + LSTM path must run anyway.
    preprocess_wav(noise)
    encoder.embed_utterance(noise)


def assign_speakers(
    audio: np.ndarray,
    spans: list[tuple[float, float]],
    *,
    num_speakers: int | None = None,
    max_speakers: int = 8,
    sample_rate: int = 16000,
) -> list[SpeakerAssignment]:
    """Label each transcript span with a speaker.

    audio: float32 mono at sample_rate; spans: (start_s, end_s) of each transcript segment, in
    time order. Returns one assignment per span. num_speakers is honoured when given (clamped to
    the number of spans); when None (the default) the count is estimated, between 1 and
    max_speakers (default 8). sample_rate defaults to 16000 Hz; other rates are resampled.
    """
    if num_speakers is not None and num_speakers < 1:
        raise ValueError(f"num_speakers must be >= 1 or None, got {num_speakers}")
    if max_speakers < 1:
        raise ValueError(f"max_speakers must be >= 1, got {max_speakers}")
    if not spans:
        return []

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {audio.shape}")
    if sample_rate != ENCODER_SAMPLE_RATE:
        import librosa

        audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=ENCODER_SAMPLE_RATE)

    if len(spans) == 1:
        return [SpeakerAssignment("SPEAKER_1", _single_span_confidence(audio, spans[0]))]

    if os.environ.get(PYANNOTE_ENV):
        result = _try_pyannote(audio, spans, num_speakers=num_speakers, max_speakers=max_speakers)
        if result is not None:
            return result

    embedded = _embed_spans(audio, spans)
    usable = [i for i, (emb, _) in enumerate(embedded) if emb is not None]
    if not usable:
        # No span holds enough voice to tell anything: one speaker, no confidence.
        return [SpeakerAssignment("SPEAKER_1", 0.0) for _ in spans]
    X_all = np.stack([embedded[i][0] for i in usable])

    # Clusters are built from the reliable (long enough) spans when there are enough of them to
    # show structure, otherwise from every usable span.
    reliable = [j for j, i in enumerate(usable) if embedded[i][1] >= RELIABLE_VOICED_S]
    wanted = num_speakers or 1
    core = reliable if len(reliable) >= max(3, wanted) else list(range(len(usable)))
    X = X_all[core]

    core_labels = _core_labels(X, num_speakers=num_speakers, max_speakers=max_speakers)
    k = int(core_labels.max()) + 1
    members = np.full(len(usable), -1)  # cluster each usable span helped build, -1 if none
    clustered = core_labels >= 0
    members[np.asarray(core)[clustered]] = core_labels[clustered]
    sums = np.stack([X_all[members == c].sum(axis=0) for c in range(k)])
    centroids = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    # Clustered spans keep their cluster even when average linkage left one nearer another
    # centroid: the clustering saw the whole structure, the centroid test only one point. Short
    # spans and outliers go to the nearest centroid.
    labels = np.where(members >= 0, members, (X_all @ centroids.T).argmax(axis=1))
    confidences = _confidences(X_all, labels, members, sums)

    # Spans without usable voice take the label of the nearest usable span in time (usually the
    # same turn continuing) with zero confidence.
    centres = np.array([(s + e) / 2 for s, e in spans])
    usable_centres = centres[usable]
    full_labels = np.empty(len(spans), dtype=int)
    full_conf = np.zeros(len(spans))
    full_labels[usable] = labels
    full_conf[usable] = confidences
    for i, (emb, _) in enumerate(embedded):
        if emb is None:
            full_labels[i] = labels[int(np.argmin(np.abs(usable_centres - centres[i])))]

    names = _names_by_first_appearance(full_labels)
    return [SpeakerAssignment(names[lab], float(np.clip(c, 0.0, 1.0)))
            for lab, c in zip(full_labels, full_conf)]


def estimate_num_speakers(embeddings: np.ndarray, *, max_speakers: int = 8) -> int:
    """Estimate how many speakers produced these L2-normalised embeddings (one per span)."""
    labels = _core_labels(np.asarray(embeddings), num_speakers=None, max_speakers=max_speakers)
    return int(labels.max()) + 1


def _core_labels(X: np.ndarray, *, num_speakers: int | None, max_speakers: int) -> np.ndarray:
    """Cluster labels 0..k-1 for these embeddings, -1 for outliers (see _split).

    With num_speakers None the count is estimated divisively: a group is split into its best k
    (cosine silhouette over k = 2..max_speakers) while that best split scores at least
    MIN_SILHOUETTE, and each part is tested again. Testing every group with the same yardstick
    matters: a flat silhouette over k prefers merging two close voices (two of the three test
    voices) into one cluster when a third voice is far away.
    """
    n = len(X)
    if n == 1:
        return np.zeros(1, dtype=int)
    dist = _cosine_distances(X)
    if num_speakers is not None:
        return _split(dist, min(num_speakers, n))
    if n == 2 or max_speakers == 1:
        same = max_speakers == 1 or 1.0 - dist[0, 1] >= TWO_SPAN_SAME_SPEAKER_SIM
        return np.zeros(n, dtype=int) if same else np.arange(n)

    groups: list[np.ndarray] = []
    pending = [np.arange(n)]
    while pending:
        idx = pending.pop()
        sub = _best_split(dist[np.ix_(idx, idx)], max_speakers=max_speakers)
        if sub is None:
            groups.append(idx)
            continue
        # Outliers of this split (sub == -1) are left out of every group.
        pending.extend(idx[sub == c] for c in range(int(sub.max()) + 1))
        if len(groups) + len(pending) > max_speakers:
            return _split(dist, max_speakers)

    labels = np.full(n, -1)
    for g, idx in enumerate(groups):
        labels[idx] = g
    return labels


def _best_split(dist: np.ndarray, *, max_speakers: int) -> np.ndarray | None:
    """Labels of the best-scoring split of this group, or None when it looks like one speaker."""
    from sklearn.metrics import silhouette_score

    n = len(dist)
    if n < 3:  # no split of fewer than three spans can be scored
        return None
    tree = _average_linkage(dist)
    best, best_score = None, -1.0
    for k in range(2, min(max_speakers, n - 1) + 1):
        labels = _split(dist, k, tree)
        keep = labels >= 0
        # Silhouette needs 2 <= clusters <= points - 1; outliers are scored out, not in.
        if not 2 <= len(np.unique(labels[keep])) <= keep.sum() - 1:
            continue
        score = float(silhouette_score(dist[np.ix_(keep, keep)], labels[keep], metric="precomputed"))
        if score > best_score:
            best, best_score = labels, score
    return best if best_score >= MIN_SILHOUETTE else None


def _split(dist: np.ndarray, k: int, tree: np.ndarray | None = None) -> np.ndarray:
    """k clusters of at least MIN_CLUSTER_SPANS spans each, odd single spans marked -1.

    Average linkage isolates a single odd span (an unusual utterance, a span straddling two
    speakers) as its own cluster before it separates two real voices. So when cutting into k
    leaves singletons, cut a little finer and set the singletons aside as outliers, as long as
    they are at most MAX_OUTLIER_FRACTION of the spans; otherwise plain k clusters.
    """
    n = len(dist)
    if k <= 1:
        return np.zeros(n, dtype=int)
    if k >= n:
        return np.arange(n)
    from scipy.cluster.hierarchy import cut_tree

    tree = _average_linkage(dist) if tree is None else tree
    budget = int(MAX_OUTLIER_FRACTION * n)
    # All candidate cuts in one pass over the tree (cut_tree walks every merge per call).
    cuts = cut_tree(tree, n_clusters=list(range(k, min(k + budget, n - 1) + 1)))
    for labels in cuts.T:
        sizes = np.bincount(labels)
        big = np.flatnonzero(sizes >= MIN_CLUSTER_SPANS)
        if len(big) > k:
            break
        if len(big) == k and sizes[sizes < MIN_CLUSTER_SPANS].sum() <= budget:
            remap = np.full(len(sizes), -1)
            remap[big] = np.arange(k)
            return remap[labels]
    return cuts[:, 0].astype(int)


def _average_linkage(dist: np.ndarray) -> np.ndarray:
    """Average-linkage (UPGMA) merge tree over a square cosine distance matrix."""
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    return linkage(squareform(dist, checks=False), method="average")


def _voiced(wav: np.ndarray) -> tuple[np.ndarray | None, float]:
    """(the voiced samples, tiled up to TILE_TO_S, voiced seconds) of a 16 kHz waveform; None if too little voice."""
    if wav.size == 0 or not np.any(wav):
        # preprocess_wav's volume normalisation divides by the RMS: all-zero input gives NaNs.
        return None, 0.0
    from resemblyzer import preprocess_wav

    # source_sr stays None: the audio is already 16 kHz, and passing it would only add a no-op
    # resample. preprocess_wav raises quiet audio to -30 dBFS and cuts pauses (webrtcvad).
    processed = preprocess_wav(wav)
    voiced_s = processed.size / ENCODER_SAMPLE_RATE
    if voiced_s < MIN_VOICED_S:
        return None, voiced_s
    target = int(TILE_TO_S * ENCODER_SAMPLE_RATE)
    if processed.size < target:
        processed = np.tile(processed, -(-target // processed.size))[:target]
    return processed, voiced_s


def _embed_many(wavs: list[np.ndarray]) -> list[tuple[np.ndarray | None, float]]:
    """(Resemblyzer embedding, voiced seconds) of each 16 kHz waveform; None where too little voice.

    The same arithmetic as the encoder's embed_utterance (the mean of its 1.6 s partial windows,
    L2-normed), but the partial windows of every waveform go through the LSTM together: the LSTM is
    nearly all of the cost, and one batch of ~140 windows runs twice as fast as 40 calls of 3.
    """
    import torch
    from resemblyzer import audio as resemblyzer_audio

    encoder = _get_encoder()
    voiced = [_voiced(wav) for wav in wavs]
    windows, owners = [], []
    for i, (samples, _) in enumerate(voiced):
        if samples is None:
            continue
        # embed_utterance's defaults: 1.3 windows a second, a last window kept when 75% covered.
        wav_slices, mel_slices = encoder.compute_partial_slices(len(samples), 1.3, 0.75)
        if wav_slices[-1].stop >= len(samples):
            samples = np.pad(samples, (0, wav_slices[-1].stop - len(samples)))
        mel = resemblyzer_audio.wav_to_mel_spectrogram(samples)
        windows += [mel[window] for window in mel_slices]
        owners += [i] * len(mel_slices)
    results: list[tuple[np.ndarray | None, float]] = [(None, seconds) for _, seconds in voiced]
    if not windows:
        return results
    with torch.no_grad():
        partials = np.concatenate([encoder(torch.from_numpy(np.array(windows[k:k + ENCODER_BATCH]))).cpu().numpy()
                                   for k in range(0, len(windows), ENCODER_BATCH)])
    owners_arr = np.array(owners)
    for i in dict.fromkeys(owners):
        raw = partials[owners_arr == i].mean(axis=0)
        emb = raw / np.linalg.norm(raw)
        if np.all(np.isfinite(emb)):
            results[i] = (emb.astype(np.float64), voiced[i][1])
    return results


def _span_window(audio_len: int, start_s: float, end_s: float) -> tuple[int, int]:
    """Sample range for a span, widened symmetrically to MIN_CONTEXT_S and kept inside the audio."""
    sr = ENCODER_SAMPLE_RATE
    start_s, end_s = min(start_s, end_s), max(start_s, end_s)
    a, b = int(round(start_s * sr)), int(round(end_s * sr))
    need = int(MIN_CONTEXT_S * sr) - (b - a)
    if need > 0:
        a -= need // 2
        b += need - need // 2
        # Shift rather than shrink at the edges of the recording.
        if a < 0:
            b -= a
            a = 0
        if b > audio_len:
            a -= b - audio_len
            b = audio_len
    return max(a, 0), min(b, audio_len)


def _embed_spans(audio: np.ndarray, spans: list[tuple[float, float]]) -> list[tuple[np.ndarray | None, float]]:
    windows = [_span_window(len(audio), start_s, end_s) for start_s, end_s in spans]
    return _embed_many([audio[a:b] if b > a else audio[:0] for a, b in windows])


def _single_span_confidence(audio: np.ndarray, span: tuple[float, float]) -> float:
    # A lone span is trivially SPEAKER_1; it is only "unsure" when it holds no sound at all,
    # which a cheap check answers without loading the encoder.
    a, b = _span_window(len(audio), *span)
    return 1.0 if b > a and np.any(audio[a:b]) else 0.0


def _cosine_distances(X: np.ndarray) -> np.ndarray:
    # Embeddings are L2-normalised, so cosine distance is 1 - dot product; clip rounding noise.
    dist = np.clip(1.0 - X @ X.T, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    return dist


def _confidences(X: np.ndarray, labels: np.ndarray, members: np.ndarray,
                 sums: np.ndarray) -> np.ndarray:
    """Confidence per span from its cosine similarity to each speaker's centroid.

    X: embeddings (n x d); labels: assigned speaker; members: speaker whose centroid the span is
    part of, or -1; sums: per-speaker sum of member embeddings (k x d).
    """
    n, k = len(X), len(sums)
    counts = np.bincount(members[members >= 0], minlength=k)
    norm = lambda v: v / max(np.linalg.norm(v), 1e-12)  # noqa: E731
    conf = np.empty(n)
    for i in range(n):
        own_label = labels[i]
        if members[i] == own_label:
            # Leave the span out of its own centroid, or small clusters look certain just
            # because the span is most of its centroid. A span that is a cluster on its own
            # is scored against the typical same-speaker similarity instead.
            rest = sums[own_label] - X[i]
            own = (float(X[i] @ norm(rest)) if counts[own_label] > 1
                   else TWO_SPAN_SAME_SPEAKER_SIM)
        else:
            own = float(X[i] @ norm(sums[own_label]))
        if k == 1:
            ramp = (own - SINGLE_SPEAKER_SIM_LOW) / (SINGLE_SPEAKER_SIM_HIGH - SINGLE_SPEAKER_SIM_LOW)
            conf[i] = ramp
            continue
        other = max(float(X[i] @ norm(sums[c])) for c in range(k) if c != own_label)
        # Two-way softmax of (own, nearest other) == logistic of the margin.
        conf[i] = 1.0 / (1.0 + np.exp(-(own - other) / CONFIDENCE_TEMPERATURE))
    return np.clip(conf, 0.0, 1.0)


def _names_by_first_appearance(labels) -> dict:
    names: dict = {}
    for lab in labels:
        if lab not in names:
            names[lab] = f"SPEAKER_{len(names) + 1}"
    return names


_pyannote_pipeline = None


def _try_pyannote(audio: np.ndarray, spans, *, num_speakers, max_speakers):
    """Diarize with a local pyannote pipeline; None when unavailable or failing.

    Untested here: pyannote's pipelines are gated downloads, absent from the offline CPU machines.
    """
    global _pyannote_pipeline
    try:
        import torch
        from pyannote.audio import Pipeline
    except ImportError:
        return None
    try:
        with _encoder_lock:
            if _pyannote_pipeline is None:
                path = os.environ[PYANNOTE_ENV]
                config = os.path.join(path, "config.yaml")
                # pyannote 3.x wants the config file; 4.x also takes the directory.
                _pyannote_pipeline = Pipeline.from_pretrained(config if os.path.isfile(config) else path)
        kwargs = {"num_speakers": num_speakers} if num_speakers else {"max_speakers": max_speakers}
        result = _pyannote_pipeline(
            {"waveform": torch.from_numpy(audio)[None], "sample_rate": ENCODER_SAMPLE_RATE}, **kwargs)
        # pyannote 4 returns an object with .speaker_diarization; 3.x returns the Annotation.
        annotation = getattr(result, "speaker_diarization", result)
        turns = [(t.start, t.end, spk) for t, _, spk in annotation.itertracks(yield_label=True)]
    except Exception:  # noqa: BLE001 - any failure here must not lose the job; fall back
        log.exception("pyannote diarization failed; falling back to Resemblyzer")
        return None

    picked = []
    for s, e in spans:
        overlap: dict = {}
        for ts, te, spk in turns:
            ov = min(e, te) - max(s, ts)
            if ov > 0:
                overlap[spk] = overlap.get(spk, 0.0) + ov
        if overlap:
            spk = max(overlap, key=overlap.get)
            # Share of the span's speech that the chosen speaker covers.
            picked.append((spk, overlap[spk] / sum(overlap.values())))
        else:
            picked.append((None, 0.0))
    # Spans pyannote saw no speech in take the previous span's speaker (or the first one seen).
    first = next((spk for spk, _ in picked if spk is not None), "none")
    last = first
    filled = []
    for spk, c in picked:
        last = spk if spk is not None else last
        filled.append((last, c))
    names = _names_by_first_appearance(spk for spk, _ in filled)
    return [SpeakerAssignment(names[spk], float(np.clip(c, 0.0, 1.0))) for spk, c in filled]
