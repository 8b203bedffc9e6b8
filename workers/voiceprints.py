"""Whether a final speaker is one voice: embeddings of pieces of its solo speech, and the guard built on them.

Diarization sometimes merges two similar voices into one final speaker; that speaker's voiceprint (the mean of
its chunk voices) then lies between the two people and can match either one's voice profile. Recognition must
not name such a speaker. `speaker_pieces` embeds a few short pieces of the speaker's solo speech spread over the
session; `split_contrast` tells how clearly those pieces fall into two groups that sound alike inside and unlike
each other (one voice: hardly; two voices: clearly), and `is_one_voice` applies the cut-off.

Cost: at most MAX_PIECES pieces of at most PIECE_S seconds, i.e. 24 s of audio through CAM++ per speaker
(~0.02 s per second embedded on one core: about half a second per speaker).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from services.voices import MERGE_CONTRAST  # the cut-off, and how it was chosen
from workers.diarize import SAMPLE_RATE, embed
from workers.turns import SpeakerTurn

PIECE_S = 3.0  # a piece of solo speech: long enough for a CAM++ voice, short enough to hold one talker
MIN_PIECE_S = 2.0  # shorter remainders are left out (their embeddings scatter)
MAX_PIECES = 8  # spread over the session; 8 x 3 s keeps the extra embedding under 30 s of audio per speaker
MIN_SPLIT_SHARE = 0.2  # a group with less of the pieces' seconds is an odd piece, not a second voice
MIN_GROUP_PIECES = 2  # a voice is at least two pieces that sound alike



def solo_stretches(turns: list[SpeakerTurn], speaker: str) -> list[tuple[float, float]]:
    """Stretches (start, end) of `speaker`'s turns where no other speaker talks, in time order."""
    others = sorted((t.start, t.end) for t in turns if t.speaker != speaker)
    out = []
    for turn in sorted((t for t in turns if t.speaker == speaker), key=lambda t: t.start):
        start = turn.start
        for o_start, o_end in others:
            if o_end <= start or o_start >= turn.end:
                continue
            if o_start > start:
                out.append((start, o_start))
            start = max(start, o_end)
        if start < turn.end:
            out.append((start, turn.end))
    return out


def piece_times(turns: list[SpeakerTurn], speaker: str, *, piece_s: float = PIECE_S,
                min_piece_s: float = MIN_PIECE_S, max_pieces: int = MAX_PIECES) -> list[tuple[float, float]]:
    """Where the pieces lie: solo stretches cut into `piece_s` seconds (default PIECE_S; a remainder of at least
    `min_piece_s`, default MIN_PIECE_S, is a piece too), then at most `max_pieces` (default MAX_PIECES) of them,
    evenly spread over the session so that a voice that talks only in one part of it is still sampled."""
    cuts = []
    for start, end in solo_stretches(turns, speaker):
        while end - start >= min_piece_s:
            cuts.append((start, min(end, start + piece_s)))
            start += piece_s
    if len(cuts) <= max_pieces:
        return cuts
    picks = sorted({int(round(i)) for i in np.linspace(0, len(cuts) - 1, max_pieces)})
    return [cuts[i] for i in picks]


def speaker_pieces(audio: np.ndarray, turns: list[SpeakerTurn], speaker: str, *, model_dir: Path,
                   offset: float = 0.0, piece_s: float = PIECE_S, min_piece_s: float = MIN_PIECE_S,
                   max_pieces: int = MAX_PIECES) -> list[tuple[np.ndarray, float]]:
    """(L2-normalised CAM++ embedding, seconds) of each piece of `speaker`'s solo speech (see `piece_times`).

    audio: 16 kHz mono float32, starting at `offset` seconds (default 0.0) of the turns' time line. An empty
    list when the speaker has no solo stretch of `min_piece_s`.
    """
    out = []
    for start, end in piece_times(turns, speaker, piece_s=piece_s, min_piece_s=min_piece_s, max_pieces=max_pieces):
        a, b = int((start - offset) * SAMPLE_RATE), int((end - offset) * SAMPLE_RATE)
        vector = embed(audio[max(a, 0):max(b, 0)], model_dir=model_dir)
        if vector is not None:
            out.append((vector, round(end - start, 3)))
    return out


def split_contrast(pieces: list[tuple[np.ndarray, float]], *, min_share: float = MIN_SPLIT_SHARE,
                   min_group: int = MIN_GROUP_PIECES) -> float:
    """How clearly the pieces fall into two voices: the largest, over every way of splitting them in two groups,
    of 1 - (mean cosine between the groups) / sqrt(mean cosine within one group x within the other).

    One voice: any split leaves the groups about as alike as each is to itself (near 0). Two voices: the split
    along the voices gives groups much less alike than each is inside. Only splits whose groups both hold at
    least `min_group` pieces (default MIN_GROUP_PIECES) and `min_share` of the seconds (default MIN_SPLIT_SHARE)
    count, so one odd piece (a cough, a stray word of someone else) is not a second voice; with fewer pieces
    than that allows the answer is 0.0. Every split is tried: at most 2^(n-1) of them, so n is at most 12.
    """
    n = len(pieces)
    if n > 12:
        raise ValueError(f"at most 12 pieces, got {n}")
    if n < 2 * min_group:
        return 0.0
    X = np.stack([np.asarray(v, dtype=np.float64) for v, _ in pieces])
    w = np.array([s for _, s in pieces], dtype=np.float64)
    sims = X @ X.T
    best = 0.0
    for mask in range(1, 2 ** (n - 1)):  # piece n-1 always in group b: each split once
        a = np.array([(mask >> i) & 1 for i in range(n)], dtype=bool)
        b = ~a
        if min(a.sum(), b.sum()) < min_group or min(w[a].sum(), w[b].sum()) < min_share * w.sum():
            continue
        within_a = sims[np.ix_(a, a)][np.triu_indices(int(a.sum()), 1)].mean()
        within_b = sims[np.ix_(b, b)][np.triu_indices(int(b.sum()), 1)].mean()
        if within_a <= 0 or within_b <= 0:
            continue  # a group of unlike pieces is not a voice
        best = max(best, 1.0 - float(sims[np.ix_(a, b)].mean()) / float(np.sqrt(within_a * within_b)))
    return best


def is_one_voice(pieces: list[tuple[np.ndarray, float]], *, threshold: float = MERGE_CONTRAST) -> bool:
    """Whether recognition may name this speaker: its pieces do not split into two voices (`split_contrast`
    below `threshold`, default MERGE_CONTRAST). A speaker with too few pieces to split passes: nothing shows a
    second voice, and MIN_RECOGNITION_SPEECH_S already keeps the shortest speakers unnamed."""
    return split_contrast(pieces) < threshold
