"""Speaker turns onto transcript words: each word goes to the speaker active at its time, segments split at changes.

Whisper often puts the end of one person's turn and the start of the next in one segment. Labelling
whole segments would give both people one name, so every word is labelled from the diarization's
speaker turns (by how much of the word each speaker covers), and a segment is split where the label
changes: a quick "Neither did I." becomes a segment of its own.

Overlap is kept, not hidden: a word goes to the speaker who covers most of it, and the other speakers
heard during it are listed in the word's `overlap` field (and, per segment, in `overlap_speakers`).
"""
from __future__ import annotations

import dataclasses
import math

SENTENCE_END = (".", "?", "!", "。", "？", "！")

# A word that no turn covers (diarization saw no speech there, e.g. a soft word at a turn's edge)
# takes the nearest turn within this distance, else the label of its neighbouring word.
NEAREST_TURN_S = 1.0

# Another speaker counts as overlapping a word when their turns cover at least this share of it:
# below that it is the usual jitter of turn edges against word timestamps.
OVERLAP_SHARE = 0.5

# Speakers covering at least this share of the best coverage of a word are a tie (see label_word).
TIE_SHARE = 0.9

# Calibration of speaker_confidence: a logistic curve over the features of `_features`, fitted on
# the benchmark's TUNE recordings (scripts/bench/quality.py --calibrate), never on the files it scores.
# Fitted (scripts/bench/quality.py --calibrate) on 96 segments of the 7 multi-speaker tuning recordings:
# provisional. On the scored recordings: expected calibration error 0.20, right segments 0.83 on average,
# wrong ones 0.70 (it tells them apart only weakly).
CONFIDENCE_WEIGHTS = (0.54, 0.22, -2.32)  # coverage, log2 of the duration, overlap share
CONFIDENCE_BIAS = 1.43


@dataclasses.dataclass
class SpeakerTurn:
    """One stretch of time in which one speaker talks (turns of different speakers may overlap)."""

    start: float
    end: float
    speaker: str


@dataclasses.dataclass
class WordLabel:
    speaker: str | None
    coverage: float  # share of the word covered by its speaker's turns, in [0, 1]
    overlap: list[str]  # other speakers heard during the word


def label_word(start: float, end: float, turns: list[SpeakerTurn]) -> WordLabel:
    """The speaker who covers most of [start, end], with the share covered and who else spoke meanwhile.

    When two speakers cover the word about equally (overlapped speech, or one speaker's turn bridged over a
    quick reply), the word goes to the one whose turn is shorter: a reply inside someone's long turn is
    the reply's word, and at a hand-over the turn just starting or ending is the tighter fit.
    """
    start, end = min(start, end), max(start, end)
    length = max(end - start, 0.02)
    cover: dict[str, float] = {}
    tightest: dict[str, float] = {}
    for turn in turns:
        if turn.start >= end:
            break  # turns are sorted by start
        ov = min(end, turn.end) - max(start, turn.start)
        if ov > 0:
            cover[turn.speaker] = cover.get(turn.speaker, 0.0) + ov
            tightest[turn.speaker] = min(tightest.get(turn.speaker, math.inf), turn.end - turn.start)
    if cover:
        most = max(cover.values())
        close = [s for s, c in cover.items() if c >= TIE_SHARE * most]
        speaker = min(close, key=lambda s: (tightest[s], -cover[s]))
        overlap = sorted(s for s, c in cover.items() if s != speaker and c / length >= OVERLAP_SHARE)
        return WordLabel(speaker, min(1.0, cover[speaker] / length), overlap)
    mid = (start + end) / 2
    gap, nearest = min(((max(t.start - mid, mid - t.end, 0.0), t.speaker) for t in turns), default=(math.inf, None))
    return WordLabel(nearest if gap <= NEAREST_TURN_S else None, 0.0, [])


def label_segments(segments: list[dict], turns: list[SpeakerTurn]) -> list[dict]:
    """Segments split where the speaker changes, each with `speaker`, `speaker_confidence` and labelled words.

    `segments` are stored-segment dicts (start, end, text, words: [{start, end, word, probability}]);
    `turns` come from diarization. Words get `speaker` and, where others spoke too, `overlap`. A segment
    spoken by one person keeps its text as the engine wrote it; parts of a split one are made of their words.
    """
    turns = sorted(turns, key=lambda t: t.start)
    out: list[dict] = []
    for seg in segments:
        words = [dict(w) for w in seg.get("words") or []]
        if not words:
            label = label_word(seg["start"], seg["end"], turns)
            out.append(dict(seg, speaker=label.speaker or _nearest_speaker(out), speaker_confidence=_confidence(
                [(label, seg["end"] - seg["start"])], seg["end"] - seg["start"])))
            continue
        labels = [label_word(w["start"], w["end"], turns) for w in words]
        _fill_unlabelled(labels, fallback=_nearest_speaker(out))
        _absorb_stray_words(words, labels)
        for word, label in zip(words, labels):
            word["speaker"] = label.speaker
            if label.overlap:
                word["overlap"] = label.overlap
            else:
                word.pop("overlap", None)
        runs: list[list[int]] = []
        for i, label in enumerate(labels):
            if runs and labels[runs[-1][-1]].speaker == label.speaker:
                runs[-1].append(i)
            else:
                runs.append([i])
        for n, run in enumerate(runs):
            part = [words[i] for i in run]
            start = seg["start"] if n == 0 else part[0]["start"]
            end = seg["end"] if n == len(runs) - 1 else part[-1]["end"]
            out.append(dict(
                seg, start=start, end=end,
                text=seg["text"] if len(runs) == 1 else "".join(w["word"] for w in part).strip(),
                words=part, speaker=labels[run[0]].speaker,
                speaker_confidence=_confidence([(labels[i], words[i]["end"] - words[i]["start"]) for i in run],
                                               end - start),
            ))
    return out


def _absorb_stray_words(words: list[dict], labels: list[WordLabel]) -> None:
    """A single word whose speaker differs from the words around it, inside a sentence, joins them.

    Measured on the tuning recordings, such one-word parts were right only a quarter of the time: the word's
    timestamps straddle a turn edge. A one-word reply that is a sentence of its own ("Yes.") is kept.
    """
    for i in range(1, len(words) - 1):
        before, after = labels[i - 1].speaker, labels[i + 1].speaker
        if labels[i].speaker in (before, after) or before != after:
            continue
        own_sentence = words[i]["word"].strip().endswith(SENTENCE_END) and words[i - 1]["word"].strip().endswith(
            SENTENCE_END)
        if not own_sentence:
            labels[i].speaker, labels[i].overlap = before, sorted(set(labels[i].overlap) | {labels[i].speaker})
    if len(words) >= 2:
        # A first word that does not end its sentence, or a last word whose sentence began before it, belongs
        # with the words of that sentence.
        ends = [w["word"].strip().endswith(SENTENCE_END) for w in words]
        if labels[0].speaker != labels[1].speaker and not ends[0]:
            labels[0].overlap = sorted(set(labels[0].overlap) | {labels[0].speaker})
            labels[0].speaker = labels[1].speaker
        if labels[-1].speaker != labels[-2].speaker and not ends[-2]:
            labels[-1].overlap = sorted(set(labels[-1].overlap) | {labels[-1].speaker})
            labels[-1].speaker = labels[-2].speaker


def overlap_speakers(words: list[dict] | None) -> list[str]:
    """The other speakers heard during a segment's words (its documented `overlap_speakers` field)."""
    return sorted({s for w in words or [] for s in w.get("overlap") or []})


def _fill_unlabelled(labels: list[WordLabel], *, fallback: str | None) -> None:
    """Words no turn came near take the label of the previous labelled word (else the next, else fallback)."""
    known = [i for i, label in enumerate(labels) if label.speaker is not None]
    for i, label in enumerate(labels):
        if label.speaker is None:
            before = [k for k in known if k < i]
            after = [k for k in known if k > i]
            source = before[-1] if before else (after[0] if after else None)
            label.speaker = labels[source].speaker if source is not None else fallback


def _nearest_speaker(done: list[dict]) -> str | None:
    return done[-1]["speaker"] if done else None


def _features(labelled: list[tuple[WordLabel, float]], duration: float) -> tuple[float, float, float]:
    """(time-weighted coverage by the chosen speaker, log2 of the duration, share of time with overlap)."""
    weights = [max(d, 0.02) for _, d in labelled]
    total = sum(weights)
    coverage = sum(w * label.coverage for w, (label, _) in zip(weights, labelled)) / total
    overlap = sum(w for w, (label, _) in zip(weights, labelled) if label.overlap) / total
    return coverage, math.log2(max(duration, 0.1)), overlap


def _confidence(labelled: list[tuple[WordLabel, float]], duration: float) -> float | None:
    if not labelled or labelled[0][0].speaker is None:
        return None
    features = _features(labelled, duration)
    z = CONFIDENCE_BIAS + sum(w * f for w, f in zip(CONFIDENCE_WEIGHTS, features))
    return 1.0 / (1.0 + math.exp(-z))
