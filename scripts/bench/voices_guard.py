"""Merge guard for known voices: a final speaker that holds two people must not be named; its cut-off, on tune.

Diarization sometimes merges two alike voices into one final speaker (here: council members Lewis and Pedersen,
in every meeting both speak); its voiceprint then matches either person's profile. workers/voiceprints.py embeds
up to MAX_PIECES pieces of the speaker's solo speech and measures how clearly they split into two voices
(`split_contrast`); recognition skips a speaker at or above MERGE_CONTRAST.

Cut-off (TUNE speakers only; see `choose`): the lowest value on a 0.01 grid above the contrast of every tune
voiceprint whose final speaker is at least CLEAN_PURITY one person's, i.e. blocking none of them. It must also
stop every merge of two tune speakers made on purpose (`made_merges`: pieces of two different tune speakers'
final speakers, 4+4 and 6+2, as speaker_pieces would pick them), else the run fails. Real merges are of voices
alike enough to fool the clustering, closer than the tune pairs, so the cut-off sits at the clean end.

Figures: FA/FR of the chosen recognition pair without the guard (baseline), with it on the probe only, and on
probe and enrolment (a profile is not made from a speaker the guard stops: its trials are rejects), on tune and
held-out test speakers; how many one-person voiceprints the guard stops; and the extra embedding per speaker.
"""
from __future__ import annotations

import hashlib
import inspect
import itertools
import time
from pathlib import Path

import numpy as np

GRID = np.round(np.arange(0.05, 0.61, 0.01), 2)


def pieces_key() -> str:
    """What the cached pieces depend on: workers/voiceprints.py's piece making (not its cut-offs)."""
    from workers import voiceprints as vp

    h = hashlib.sha256(repr((vp.PIECE_S, vp.MIN_PIECE_S, vp.MAX_PIECES)).encode())
    for f in (vp.solo_stretches, vp.piece_times, vp.speaker_pieces):
        h.update(inspect.getsource(f).encode())
    return h.hexdigest()[:16]


def pieces_of(audio: np.ndarray, final, label: str, ref_spans: list[tuple[float, float]], *,
              model_dir: Path) -> list[tuple[np.ndarray, float, float]]:
    """speaker_pieces of final speaker `label`, each with the share of it that is the reference speaker's."""
    from workers import voiceprints as vp

    times = vp.piece_times(final, label)
    pieces = vp.speaker_pieces(audio, final, label, model_dir=model_dir)
    if len(times) != len(pieces):
        raise RuntimeError(f"{label}: a piece could not be embedded")
    out = []
    for (start, end), (vector, seconds) in zip(times, pieces):
        mine = sum(max(0.0, min(end, e) - max(start, s)) for s, e in ref_spans)
        out.append((np.asarray(vector, dtype=np.float64), seconds, round(mine / (end - start), 3)))
    return out


def contrast(v) -> float:
    from workers.voiceprints import split_contrast

    if not hasattr(v, "_contrast"):
        v._contrast = split_contrast([(x, s) for x, s, _ in v.pieces])
    return v._contrast


def _spread(pieces: list, k: int) -> list:
    return [pieces[i] for i in sorted({int(round(i)) for i in np.linspace(0, len(pieces) - 1, k)})]


def made_merges(voices, split: str, *, clean_purity: float) -> list[float]:
    """split_contrast of merges made on purpose: k pieces of one speaker's final speaker and 8 - k of another's
    (k = 4 and 6), for every ordered pair of one-person voiceprints of different speakers of the split."""
    from workers.voiceprints import MAX_PIECES, split_contrast

    mine = [v for v in voices if v.split == split and v.purity >= clean_purity]
    out = []
    for a, b in itertools.permutations(mine, 2):
        for k in (MAX_PIECES // 2, MAX_PIECES * 3 // 4):
            if a.speaker != b.speaker and len(a.pieces) >= k and len(b.pieces) >= MAX_PIECES - k:
                both = _spread(a.pieces, k) + _spread(b.pieces, MAX_PIECES - k)
                out.append(split_contrast([(x, s) for x, s, _ in both]))
    return out


def choose(voices, *, clean_purity: float, min_speech: float) -> tuple[float, dict]:
    """MERGE_CONTRAST from the TUNE speakers (see the module docstring) and what it rests on."""
    clean = [contrast(v) for v in voices if v.split == "tune" and v.purity >= clean_purity and v.voiced_s >= min_speech]
    made = made_merges(voices, "tune", clean_purity=clean_purity)
    cut = float(min(t for t in GRID if t > max(clean)))
    if made and cut > min(made):
        raise RuntimeError(f"cut-off {cut} lets a made merge of two tune speakers through (min {min(made):.2f})")
    return cut, {"clean_tune_max": round(max(clean), 3), "clean_tune_n": len(clean),
                 "made_tune_min": round(min(made), 3) if made else None, "made_tune_n": len(made)}


def guards(cut: float) -> dict:
    """The guard as voices.trials takes it: on the probe only, and on probe and enrolment."""
    return {"none": None,
            "probe": lambda v, c: c is None or contrast(v) < cut,
            "probe+enrol": lambda v, c: contrast(v) < cut}


def embed_cost(recording, model_dir: Path) -> dict:
    """Seconds to embed one speaker's pieces beside one chunk voice as diarize makes it (same audio, same run)."""
    from workers.audio import decode
    from workers.diarize import SAMPLE_RATE, VOICE_SAMPLE_S, embed
    from workers.voiceprints import MAX_PIECES, PIECE_S, speaker_pieces
    from workers.turns import SpeakerTurn

    audio = decode(recording.wav)
    turns = [SpeakerTurn(s, e, who) for s, e, who in recording.turns]
    who = max(recording.speakers, key=recording.speech_s)
    embed(audio[: SAMPLE_RATE * 2], model_dir=model_dir)  # loaded before timing
    started = time.perf_counter()
    embed(audio[: int(VOICE_SAMPLE_S * SAMPLE_RATE)], model_dir=model_dir)
    voice = time.perf_counter() - started
    started = time.perf_counter()
    pieces = speaker_pieces(audio, turns, who, model_dir=model_dir)
    took = time.perf_counter() - started
    return {"chunk_voice_s": round(voice, 3), "chunk_voice_audio_s": VOICE_SAMPLE_S, "pieces_s": round(took, 3),
            "pieces_audio_s": round(sum(s for _, s in pieces), 1), "pieces_max_audio_s": MAX_PIECES * PIECE_S}


def run(voices, *, threshold: float, min_speech: float, clean_purity: float, evaluate, recordings,
        model_dir: Path) -> dict:
    """Every guard figure: the cut-off, FA/FR with and without the guard, the one-person voiceprints it stops."""
    cut, basis = choose(voices, clean_purity=clean_purity, min_speech=min_speech)
    clean = [v for v in voices if v.purity >= clean_purity]
    rows = {split: {name: {"all": evaluate(voices, split, threshold, min_speech, guard=g),
                           "clean": evaluate(clean, split, threshold, min_speech, guard=g)}
                    for name, g in guards(cut).items()} for split in ("tune", "test")}
    stopped = {}
    for split in ("tune", "test"):
        mine = [v for v in voices if v.split == split and v.voiced_s >= min_speech]
        stopped[split] = {
            "clean": [f"{v.speaker}@{v.recording}" for v in mine if v.purity >= clean_purity and contrast(v) >= cut],
            "clean_n": sum(v.purity >= clean_purity for v in mine),
            "impure": [f"{v.speaker}@{v.recording} ({v.purity:.2f})" for v in mine
                       if v.purity < clean_purity and contrast(v) >= cut],
            "impure_passed": [f"{v.speaker}@{v.recording} ({v.purity:.2f})" for v in mine
                              if v.purity < clean_purity and contrast(v) < cut]}
    made_test = made_merges(voices, "test", clean_purity=clean_purity)
    council = next(r for r in recordings if r.name.startswith("council-"))
    return {"cut": cut, "basis": basis, "trials": rows, "stopped": stopped,
            "made_test": {"n": len(made_test), "stopped": sum(c >= cut for c in made_test)},
            "contrasts": sorted([[v.split, f"{v.speaker}@{v.recording}", round(v.purity, 2), round(contrast(v), 3)]
                                 for v in voices if v.voiced_s >= min_speech], key=lambda r: (r[0], -r[3])),
            "cost": embed_cost(council, model_dir)}


def report(g: dict, *, table, pct) -> None:
    b = g["basis"]
    print(f"\n## Merge guard (workers/voiceprints.py split_contrast): cut-off chosen on TUNE speakers = {g['cut']:.2f}")
    print(f"tune one-person voiceprints: max contrast {b['clean_tune_max']:.2f} (n={b['clean_tune_n']}); "
          f"merges of two tune speakers made on purpose: min {b['made_tune_min']:.2f} (n={b['made_tune_n']}); "
          f"test merges made on purpose stopped: {g['made_test']['stopped']}/{g['made_test']['n']}")
    rows = []
    for split, by in g["trials"].items():
        for name, ev in by.items():
            for k in (1, 2):
                e, c = ev["all"][f"enrol{k}"], ev["clean"][f"enrol{k}"]
                rows.append([split, name, k, pct(e["fa"], e["diff_trials"]), pct(e["fr"], e["same_trials"]),
                             pct(c["fa"], c["diff_trials"]), pct(c["fr"], c["same_trials"])])
    print(table(["split", "guard", "enrolled recordings", "FA", "FR", "FA, one-person voiceprints",
                 "FR, one-person voiceprints"], rows))
    for split, s in g["stopped"].items():
        print(f"{split}: one-person voiceprints stopped {len(s['clean'])}/{s['clean_n']} {s['clean']}; "
              f"merged stopped {s['impure']}; merged passed {s['impure_passed']}")
    print("contrast per voiceprint (>= min speech): " + "; ".join(f"{a} {b} pur {c:.2f}: {d:.2f}"
                                                                 for a, b, c, d in g["contrasts"]))
    c = g["cost"]
    print(f"cost per speaker: pieces {c['pieces_audio_s']} s of audio (at most {c['pieces_max_audio_s']:g}) embedded "
          f"in {c['pieces_s']} s, beside one chunk voice ({c['chunk_voice_audio_s']:g} s) in {c['chunk_voice_s']} s")
