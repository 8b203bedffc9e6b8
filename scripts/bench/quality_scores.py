"""Scoring for the quality benchmark: text normalisation and WER, DER, speaker count, confidence calibration."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np


# --- text normalisation ---------------------------------------------------------------------------------
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
            "nine": "ninth", "twelve": "twelfth"}
# Both sides spell these out; the LibriVox transcripts write "mister", Whisper writes "Mr.".
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor"}


def number_words(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, name in ((10 ** 9, "billion"), (10 ** 6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= size:
            head, rest = divmod(n, size)
            return f"{number_words(head)} {name}" + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError(n)


def _ordinal(words: str) -> str:
    *head, last = words.split()
    last = _ORDINAL.get(last, last[:-1] + "ieth" if last.endswith("y") else last + "th")
    return " ".join(head + [last])


def normalise(text: str) -> str:
    text = text.lower().replace("\u2019", "'")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
    text = re.sub(r"[-\u2010-\u2014]", " ", text)
    text = re.sub(r"(\d+)\.(\d+)", lambda m: f" {number_words(int(m[1]))} point "
                  + " ".join(_ONES[int(d)] for d in m[2]) + " ", text)
    text = re.sub(r"(\d+)(st|nd|rd|th)\b", lambda m: " " + _ordinal(number_words(int(m[1]))) + " ", text)
    text = re.sub(r"\d+", lambda m: " " + number_words(int(m[0])) + " ", text)
    text = text.replace("%", " percent ")
    text = re.sub(r"[^\w\s']", " ", text)
    words = [w.strip("'") for w in text.split()]
    return " ".join(_ABBREVIATIONS.get(w, w) for w in words if w)


@dataclass
class WordScore:
    errors: int
    words: int  # reference words

    @property
    def wer(self) -> float:
        return self.errors / max(self.words, 1)


def word_score(reference: str, hypothesis: str) -> WordScore:
    import jiwer

    out = jiwer.process_words(normalise(reference), normalise(hypothesis))
    return WordScore(out.substitutions + out.deletions + out.insertions,
                     out.substitutions + out.deletions + out.hits)


def pooled_wer(scores: list[WordScore]) -> float | None:
    return sum(s.errors for s in scores) / sum(s.words for s in scores) if scores else None


# --- DER, speaker count, confidence ----------------------------------------------------------------------
def _merged(items: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Overlapping or touching stretches of one speaker joined, so no speaker is counted twice at a time."""
    out = []
    for spk in sorted({s for _, _, s in items}):
        spans = sorted((a, b) for a, b, s in items if s == spk and b > a)
        for a, b in spans:
            if out and out[-1][2] == spk and a <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], b), spk)
            else:
                out.append((a, b, spk))
    return out


def _annotation(items, uri: str):
    from pyannote.core import Annotation, Segment

    ann = Annotation(uri=uri)
    for i, (a, b, spk) in enumerate(_merged(items)):
        ann[Segment(a, b), i] = spk
    return ann


@dataclass
class Der:
    total: float
    confusion: float
    missed: float
    false_alarm: float

    @property
    def rate(self) -> float:
        return (self.confusion + self.missed + self.false_alarm) / max(self.total, 1e-9)


def der(reference, hypothesis, duration: float, collar: float, uri: str) -> Der:
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    metric = DiarizationErrorRate(collar=collar, skip_overlap=False)
    d = metric(_annotation(reference, uri), _annotation(hypothesis, uri),
               uem=Timeline([Segment(0.0, duration)], uri=uri), detailed=True)
    return Der(d["total"], d["confusion"], d["missed detection"], d["false alarm"])


def pooled_der(items: list[Der]) -> Der | None:
    # The same sums pyannote accumulates behind abs(metric).
    if not items:
        return None
    return Der(*(sum(getattr(d, f) for d in items) for f in ("total", "confusion", "missed", "false_alarm")))


def seg_items(segments: list[dict]) -> list[tuple[float, float, str]]:
    return [(s["start"], s["end"], s["speaker"]) for s in segments if s.get("speaker") is not None]


def speaker_count(items) -> int:
    return len({s for _, _, s in items if s is not None})


def _overlap(a0, a1, b0, b1) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def judged_segments(segments: list[dict], reference) -> list[tuple[float, bool, dict]]:
    """(confidence, correct, segment) for each labelled segment some reference turn touches."""
    from scipy.optimize import linear_sum_assignment

    hyp = sorted({s["speaker"] for s in segments if s.get("speaker") is not None})
    ref = sorted({s for _, _, s in reference})
    cost = np.zeros((len(hyp), len(ref)))
    for seg in segments:
        if seg.get("speaker") is None:
            continue
        for a, b, r in reference:
            cost[hyp.index(seg["speaker"]), ref.index(r)] += _overlap(seg["start"], seg["end"], a, b)
    rows, cols = linear_sum_assignment(-cost) if hyp else ([], [])
    mapping = {hyp[i]: ref[j] for i, j in zip(rows, cols)}
    out = []
    for seg in segments:
        if seg.get("speaker_confidence") is None:
            continue
        cover: dict[str, float] = {}
        for a, b, r in reference:
            cover[r] = cover.get(r, 0.0) + _overlap(seg["start"], seg["end"], a, b)
        if not cover or max(cover.values()) <= 0:
            continue
        truth = max(cover, key=cover.get)
        out.append((float(seg["speaker_confidence"]), mapping.get(seg["speaker"]) == truth, seg))
    return out


@dataclass
class Calibration:
    n: int
    accuracy: float
    mean_conf: float
    ece: float
    brier: float
    conf_right: float | None
    conf_wrong: float | None


def calibration(pairs: list[tuple[float, bool]], bins: int = 10) -> Calibration | None:
    if not pairs:
        return None
    conf = np.array([c for c, _ in pairs])
    ok = np.array([float(o) for _, o in pairs])
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    ece = sum((idx == b).sum() / len(conf) * abs(ok[idx == b].mean() - conf[idx == b].mean())
              for b in range(bins) if (idx == b).any())
    right, wrong = conf[ok == 1], conf[ok == 0]
    return Calibration(len(conf), float(ok.mean()), float(conf.mean()), float(ece), float(((conf - ok) ** 2).mean()),
                       float(right.mean()) if len(right) else None, float(wrong.mean()) if len(wrong) else None)


def confidence_features(seg: dict, final_turns) -> tuple[float, float, float]:
    """workers.turns._features of an output segment, re-derived from its words and the final turns."""
    from workers import turns

    if seg.get("words"):
        labelled = [(turns.label_word(w["start"], w["end"], final_turns), w["end"] - w["start"]) for w in seg["words"]]
    else:
        labelled = [(turns.label_word(seg["start"], seg["end"], final_turns), seg["end"] - seg["start"])]
    return turns._features(labelled, seg["end"] - seg["start"])


def logistic(weights, bias, features) -> float:
    return 1.0 / (1.0 + math.exp(-(bias + sum(w * f for w, f in zip(weights, features)))))


# --- formatting -----------------------------------------------------------------------------------------
def pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def num(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"
