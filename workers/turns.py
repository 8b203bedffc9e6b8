"""Speaker turns inside transcript segments: cut segments into word pieces, regroup them by speaker.

Whisper often puts the end of one person's turn and the start of the next in one segment. Labelling
whole segments would give both people one name, so diarization labels smaller pieces (sentences, or
stretches between pauses), and a segment whose pieces have different speakers is split there.
"""
from __future__ import annotations

import dataclasses

SENTENCE_END = (".", "?", "!", "。", "？", "！")
PAUSE_S = 0.5  # a silence this long between two words may be a change of speaker


@dataclasses.dataclass
class Piece:
    segment: int  # index into the segment list
    words: list[dict]
    start: float
    end: float


def split_into_pieces(segments: list[dict], *, pause_s: float = PAUSE_S) -> list[Piece]:
    """Pieces of each segment, cut after sentence-ending words and at pauses; in time order."""
    pieces: list[Piece] = []
    for index, seg in enumerate(segments):
        words = seg.get("words") or []
        if not words:
            pieces.append(Piece(index, [], seg["start"], seg["end"]))
            continue
        current: list[dict] = []
        for i, word in enumerate(words):
            current.append(word)
            last = i == len(words) - 1
            ends_sentence = word["word"].strip().endswith(SENTENCE_END)
            pause = not last and words[i + 1]["start"] - word["end"] >= pause_s
            if last or ends_sentence or pause:
                pieces.append(Piece(index, current, current[0]["start"], current[-1]["end"]))
                current = []
    return pieces


def regroup(segments: list[dict], pieces: list[Piece], labels: list[tuple[str, float]]) -> list[dict]:
    """Segments again, split where the speaker changes, each with `speaker` and `speaker_confidence`.

    `labels` holds (speaker, confidence) per piece. A segment spoken by one person keeps its text as
    the engine wrote it; the parts of a split segment are made of their words.
    """
    out: list[dict] = []
    by_segment: dict[int, list[tuple[Piece, tuple[str, float]]]] = {}
    for piece, label in zip(pieces, labels):
        by_segment.setdefault(piece.segment, []).append((piece, label))
    for index, seg in enumerate(segments):
        runs: list[list[tuple[Piece, tuple[str, float]]]] = []
        for item in by_segment.get(index, []):
            if runs and runs[-1][-1][1][0] == item[1][0]:
                runs[-1].append(item)
            else:
                runs.append([item])
        if len(runs) <= 1:
            out.append(dict(seg, speaker=runs[0][0][1][0] if runs else None,
                            speaker_confidence=_confidence(runs[0]) if runs else None))
            continue
        for n, run in enumerate(runs):
            words = [w for piece, _ in run for w in piece.words]
            out.append(dict(
                seg,
                start=seg["start"] if n == 0 else words[0]["start"],
                end=seg["end"] if n == len(runs) - 1 else words[-1]["end"],
                text="".join(w["word"] for w in words).strip(),
                words=words,
                speaker=run[0][1][0],
                speaker_confidence=_confidence(run),
            ))
    return out


def _confidence(run: list[tuple[Piece, tuple[str, float]]]) -> float:
    """Duration-weighted mean confidence of the pieces of one run."""
    weights = [max(piece.end - piece.start, 0.01) for piece, _ in run]
    return sum(w * label[1] for w, (_, label) in zip(weights, run)) / sum(weights)
