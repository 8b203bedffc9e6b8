"""Scoring helpers for tests: word error rate and speaker-label agreement against ground truth."""
from __future__ import annotations

import re
from collections import Counter

import jiwer


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9' ]+", " ", text.lower())).strip()


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalise(reference), normalise(hypothesis))


def true_speaker_at(turns: list[dict], start: float, end: float) -> str | None:
    """The ground-truth speaker whose turn overlaps start..end the most."""
    best, best_overlap = None, 0.0
    for turn in turns:
        overlap = min(end, turn["end"]) - max(start, turn["start"])
        if overlap > best_overlap:
            best, best_overlap = turn["speaker"], overlap
    return best


def label_agreement(turns: list[dict], segments: list[dict]) -> tuple[float, dict]:
    """Share of segments whose label matches the truth under the best one-to-one renaming of labels."""
    pairs = [(true_speaker_at(turns, s["start"], s["end"]), s["speaker"]) for s in segments]
    pairs = [(t, p) for t, p in pairs if t is not None]
    counts = Counter(pairs)
    mapping, used = {}, set()
    for (t, p), _ in counts.most_common():
        if p not in mapping and t not in used:
            mapping[p] = t
            used.add(t)
    right = sum(1 for t, p in pairs if mapping.get(p) == t)
    return right / max(1, len(pairs)), mapping
