#!/usr/bin/env python
"""Benchmark: known-voice recognition on real voices: false accepts and rejects vs threshold and speech seconds.

Data: scripts/bench/realvoices.py (nine Seattle City Council members in 3-5 meetings each, AMI meeting
participants, a telephone call, JFK, a LibriVox reader, a card-name speaker; split by SPEAKER into 'tune' and
'test'). Thresholds are chosen on 'tune' only; every figure called "test" is on the held-out speakers.

How a voiceprint is made (as the pipeline does): each recording goes through workers/audio.py `plan_chunks`
(PARLEY_CHUNK_SECONDS), `diarize.diarize` per chunk (speaker count not given) into a `SpeakerTracker`, then
`final_turns()` and `final_voices()` (label -> L2-normalised, speech-weighted mean of the chunk voices, and the
seconds of speech behind it). A reference speaker's voiceprint is that of the final speaker it overlaps most,
kept only when that final speaker is mostly theirs (else diarization did not give them a speaker of their own:
counted as "not found"). For the speech-seconds curve, a voiceprint from N seconds is rebuilt from that final
speaker's first N seconds of solo speech (its turns minus everyone else's), embedded in pieces of at most
VOICE_SAMPLE_S with workers.diarize.embed and averaged by length, as chunk voices are.

Trials: a profile is the centroid (services.voices.centroid) of one speaker's voiceprints from 1 (or 2)
recordings; a same-person trial compares it with that speaker's voiceprint in ANOTHER session (never the same
meeting); a different-person trial with every other speaker of the same split in any recording the profile
did not come from. Score = cosine(voiceprint, centroid). A probe or enrolment voiceprint with less than
MIN_RECOGNITION_SPEECH_S seconds is never matched: it counts as a reject (a false one for the same person).

Choice (on tune only; see `choose`): for each candidate minimum speech, the thresholds (0.01 steps) whose false
accepts are at most 1% in every condition (1 and 2 enrolment recordings; full voiceprints and voiceprints cut to
exactly the minimum) and whose false rejects are fewest; the threshold is the middle of that range; then the
minimum with the fewest false rejects. A mislabelled speaker is worse than an unnamed one, so every condition
must pass, not their average, and ties go to the longer minimum. "Clean" rows keep only voiceprints whose final
speaker is at least CLEAN_PURITY one person's, to tell the threshold's errors from diarization's merges.

Merge guard (voices_guard.py, workers/voiceprints.py): each voiceprint's final speaker also gets up to 8 embedded
pieces of its solo speech (cached with the voiceprints); the guard's cut-off is chosen on tune and its FA/FR are
printed beside the unguarded figures of the same run.

    .venv/bin/python scripts/bench/voices.py [--json FILE] [--no-cache] [--baseline 0.5]
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts" / "bench")]

import numpy as np  # noqa: E402

import realvoices  # noqa: E402
import voices_guard  # noqa: E402
from benchlib import host_line, table  # noqa: E402

MODEL_DIR = Path(os.environ.get("PARLEY_MODEL_DIR", ROOT / "data" / "models"))
SAMPLE_RATE = 16000
SPEECH_S = (3.0, 5.0, 10.0, 20.0)  # probe lengths for the speech curve, and candidate minimums
MIN_CANDIDATES = (3.0, 5.0, 10.0)  # 20 s needs two chunks' voices (each holds at most VOICE_SAMPLE_S)
TARGET_FA = 0.01
CLEAN_PURITY = 0.8
GRID = np.round(np.arange(0.20, 0.96, 0.01), 2)


@dataclass
class Voice:
    """One reference speaker's voiceprint in one recording, full and cut to N seconds of speech."""

    speaker: str
    recording: str
    session: str
    split: str
    vector: np.ndarray
    voiced_s: float
    purity: float  # share of the final speaker's turns that are this reference speaker's
    cut: dict[float, np.ndarray]  # N seconds -> voiceprint from the first N s of solo speech (when there are N s)
    # workers.voiceprints.speaker_pieces of the final speaker: (vector, seconds, share of the piece that is this
    # reference speaker's); what the merge guard looks at (voices_guard.py)
    pieces: list[tuple[np.ndarray, float, float]] = field(default_factory=list)


def log(msg: str) -> None:
    print(f"[voices] {msg}", file=sys.stderr, flush=True)


def _overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in a for s2, e2 in b)


def _cut_voice(audio: np.ndarray, stretches: list[tuple[float, float]], seconds: float) -> np.ndarray | None:
    """A voiceprint from the first `seconds` of these stretches, made as chunk voices are (<= VOICE_SAMPLE_S each)."""
    from workers.diarize import VOICE_SAMPLE_S, embed

    pieces, total = [], 0
    want = int(seconds * SAMPLE_RATE)
    for start, end in stretches:
        piece = audio[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)][: want - total]
        pieces.append(piece)
        total += len(piece)
        if total >= want:
            break
    if total < want:
        return None
    samples = np.concatenate(pieces)
    block = int(VOICE_SAMPLE_S * SAMPLE_RATE)
    acc = 0
    for i in range(0, len(samples), block):
        part = samples[i:i + block]
        vec = embed(part, model_dir=MODEL_DIR) if len(part) >= SAMPLE_RATE // 2 else None
        if vec is not None:
            acc = acc + len(part) * vec
    norm = float(np.linalg.norm(acc))
    return acc / norm if norm > 0 else None


def voices_of(rec, settings) -> tuple[list[Voice], list[str], float]:
    """Voiceprints of a recording's reference speakers through the pipeline path; speakers not found; seconds."""
    from workers import diarize
    from workers.audio import decode, plan_chunks
    from workers.voiceprints import solo_stretches

    audio = decode(rec.wav)
    started = time.perf_counter()
    tracker = diarize.SpeakerTracker()
    plan = plan_chunks(audio, target_s=settings.chunk_seconds)
    for index, (start, end) in enumerate(plan):
        chunk = audio[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)]
        tracker.add(index, diarize.diarize(chunk, model_dir=MODEL_DIR, offset=start))
    final = tracker.final_turns()
    prints = tracker.final_voices()
    seconds = time.perf_counter() - started
    hyp: dict[str, list] = {}
    for t in final:
        hyp.setdefault(t.speaker, []).append((t.start, t.end))
    ref: dict[str, list] = {}
    for s, e, who in rec.turns:
        ref.setdefault(who, []).append((s, e))
    overlap = {(r, h): _overlap(ref[r], hyp[h]) for r in ref for h in hyp}
    found, missing = [], []
    for r in rec.speakers:
        best = max(hyp, key=lambda h: overlap[(r, h)], default=None)
        # The final speaker must be mostly this person: a user names the label after whom they hear in it.
        owner = max(ref, key=lambda x: overlap[(x, best)]) if best is not None else None
        if best is None or overlap[(r, best)] <= 0 or owner != r or best not in prints:
            missing.append(r)
            continue
        total = sum(overlap[(x, best)] for x in ref)
        stretches = solo_stretches(final, best)
        cut = {n: v for n in SPEECH_S if (v := _cut_voice(audio, stretches, n)) is not None}
        vector, voiced = prints[best]
        found.append(Voice(r, rec.name, rec.session, rec.splits[r], np.asarray(vector, dtype=np.float64),
                           float(voiced), overlap[(r, best)] / total if total else 0.0, cut,
                           voices_guard.pieces_of(audio, final, best, ref[r], model_dir=MODEL_DIR)))
    return found, missing, seconds


def _cache_key(recs) -> str:
    h = hashlib.sha256()
    for r in recs:
        h.update(r.sha256.encode())
    for f in sorted((ROOT / "workers").glob("diarize*.py")) + [ROOT / "workers" / "audio.py"]:
        h.update(f.read_bytes())
    h.update(repr(SPEECH_S).encode())
    h.update(voices_guard.pieces_key().encode())
    h.update(os.environ.get("PARLEY_CHUNK_SECONDS", "").encode())
    return h.hexdigest()[:16]


def all_voices(recs, settings, *, use_cache: bool) -> tuple[list[Voice], dict[str, list[str]], float]:
    """Every recording's voiceprints, reused from the cache while recordings and engine code are unchanged."""
    path = realvoices.default_cache_dir() / f"voiceprints-{_cache_key(recs)}.json"
    if use_cache and path.exists():
        d = json.loads(path.read_text())
        voices = [Voice(**{**v, "vector": np.array(v["vector"]),
                           "cut": {float(k): np.array(x) for k, x in v["cut"].items()},
                           "pieces": [(np.array(x), s, o) for x, s, o in v["pieces"]]}) for v in d["voices"]]
        return voices, d["missing"], d["seconds"]
    from workers import diarize

    diarize.warm_up(MODEL_DIR)
    voices, missing, seconds = [], {}, 0.0
    for rec in recs:
        log(f"diarize {rec.name} ({rec.duration:.0f} s)")
        found, lost, took = voices_of(rec, settings)
        voices += found
        missing[rec.name] = lost
        seconds += took
    rows = [{**v.__dict__, "vector": v.vector.tolist(), "cut": {str(k): x.tolist() for k, x in v.cut.items()},
             "pieces": [(x.tolist(), s, o) for x, s, o in v.pieces]} for v in voices]
    path.write_text(json.dumps({"voices": rows, "missing": missing, "seconds": seconds}))
    return voices, missing, seconds


# --- trials -----------------------------------------------------------------------------------------------
@dataclass
class Trials:
    """Scores of one condition: same-person and different-person trials (None = probe too short to match)."""

    same: list[float | None]
    diff: list[float | None]
    same_pairs: list[tuple[str, str, str, float | None]]  # (speaker, enrolled recordings, probe recording, score)
    diff_pairs: list[tuple[str, str, str, float | None]]  # (profile's speaker, its recordings, probe, score)

    def fa(self, t: float) -> float:
        return sum(s is not None and s >= t for s in self.diff) / max(1, len(self.diff))

    def fr(self, t: float) -> float:
        return sum(s is None or s < t for s in self.same) / max(1, len(self.same))


def trials(voices: list[Voice], split: str, *, enrol: int, min_speech: float, probe_s: float | None,
           guard=None) -> Trials:
    """All trials of a split; probes cut to `probe_s` seconds (None: the full voiceprint). guard(voice, centroid):
    whether a probe may be matched to that profile, and guard(voice, None) whether a voiceprint may be enrolled;
    a trial it stops scores None (a reject), so the trials are the same with and without it."""
    from services.voices import centroid

    mine = [v for v in voices if v.split == split]
    by_speaker: dict[str, list[Voice]] = {}
    for v in mine:
        by_speaker.setdefault(v.speaker, []).append(v)

    def probe(v: Voice) -> tuple[np.ndarray | None, float]:
        if probe_s is None:
            return v.vector, v.voiced_s
        return v.cut.get(probe_s), probe_s

    out = Trials([], [], [], [])
    for speaker, own in sorted(by_speaker.items()):
        usable = [v for v in own if v.voiced_s >= min_speech]  # nobody names a profile from a few words
        for group in itertools.combinations(usable, enrol):
            sessions = {g.session for g in group}
            if len(sessions) < enrol:
                continue
            c = centroid([g.vector for g in group])
            names = {g.recording for g in group}
            enrolled = guard is None or all(guard(g, None) for g in group)
            for v in mine:
                if v.recording in names:
                    continue
                if v.speaker == speaker and v.session in sessions:
                    continue  # the same meeting again is not a new recording of the person
                vec, secs = probe(v)
                if vec is None and probe_s is not None:
                    continue  # this probe does not have N seconds of solo speech: not part of the N-second curve
                stopped = not enrolled or (guard is not None and not guard(v, c))
                score = None if vec is None or secs < min_speech or stopped else float(vec @ c)
                if v.speaker == speaker:
                    out.same.append(score)
                    out.same_pairs.append((speaker, "+".join(sorted(names)), v.recording, score))
                else:
                    out.diff.append(score)
                    out.diff_pairs.append((speaker, "+".join(sorted(names)), f"{v.speaker}@{v.recording}", score))
    return out


def _pooled_fr(conds: list[Trials], t: float) -> float:
    return sum(c.fr(t) * len(c.same) for c in conds) / max(1, sum(len(c.same) for c in conds))


def choose(voices: list[Voice]) -> tuple[float, float, list[list]]:
    """(RECOGNITION_SIMILARITY, MIN_RECOGNITION_SPEECH_S) from the TUNE speakers, and the table behind it.

    For each candidate minimum: the thresholds at which every condition (1 and 2 enrolment recordings; full
    voiceprints and voiceprints of exactly the minimum) has at most TARGET_FA false accepts; among them those with
    the fewest false rejects (full voiceprints, too-short ones counted) form a range [lo, hi], and the threshold is
    its middle: the lowest passing threshold sits right on the worst tune impostor and the highest right under the
    weakest tune match, and a few hundred trials place neither edge well. Then the minimum with the fewest false
    rejects (ties: the longer one; a mislabelled speaker is worse than an unnamed one).
    """
    rows, best = [], None
    for m in MIN_CANDIDATES:
        conds = [trials(voices, "tune", enrol=k, min_speech=m, probe_s=p) for k in (1, 2) for p in (None, m)]
        full = [conds[0], conds[2]]
        passing = [float(t) for t in GRID if all(c.fa(t) <= TARGET_FA for c in conds if c.diff)]
        if not passing:
            rows.append([f"{m:g}", "-", "no threshold passes", "", "", "", "", "", ""])
            continue
        fewest = min(_pooled_fr(full, t) for t in passing)
        plateau = [t for t in passing if _pooled_fr(full, t) <= fewest + 1e-9]
        t = round((min(plateau) + max(plateau)) / 2, 2)
        rows.append([f"{m:g}", f"{min(plateau):.2f}-{max(plateau):.2f}", f"{t:.2f}",
                     pct(conds[0].fa(t), len(conds[0].diff)), pct(conds[0].fr(t), len(conds[0].same)),
                     pct(conds[1].fa(t), len(conds[1].diff)), pct(conds[1].fr(t), len(conds[1].same)),
                     pct(conds[2].fa(t), len(conds[2].diff)), pct(conds[2].fr(t), len(conds[2].same))])
        if best is None or fewest <= best[2] + 1e-9:
            best = (t, m, fewest)
    if best is None:
        raise RuntimeError("no threshold keeps false accepts under the target on the tune speakers")
    return best[0], best[1], rows


CHOICE_HEADERS = ["min speech", "passing, fewest FR", "threshold", "FA full, 1 rec", "FR full, 1 rec",
                  "FA at min, 1 rec", "FR at min, 1 rec", "FA full, 2 rec", "FR full, 2 rec"]


def pct(x: float, n: int) -> str:
    return f"{100 * x:.1f}% (n={n})" if n else "-"


def clean(voices: list[Voice]) -> list[Voice]:
    """Voiceprints whose final speaker is at least CLEAN_PURITY one person's: what the threshold does where
    diarization did not merge people."""
    return [v for v in voices if v.purity >= CLEAN_PURITY]


def evaluate(voices: list[Voice], split: str, t: float, m: float, *, guard=None) -> dict:
    """FA/FR of a split at (threshold, minimum speech): full voiceprints, enrolled from 1 and from 2 recordings;
    guard as `trials` takes it (default None: none)."""
    out = {}
    for k in (1, 2):
        c = trials(voices, split, enrol=k, min_speech=m, probe_s=None, guard=guard)
        out[f"enrol{k}"] = {"fa": c.fa(t), "fr": c.fr(t), "diff_trials": len(c.diff), "same_trials": len(c.same),
                            "false_accepts": round(c.fa(t) * len(c.diff)),
                            "false_rejects": round(c.fr(t) * len(c.same))}
    return out


def speech_curve(voices: list[Voice], split: str, t: float) -> list[list]:
    rows = []
    for n in SPEECH_S:
        c = trials(voices, split, enrol=1, min_speech=0.0, probe_s=n)
        rows.append([f"{n:g} s", pct(c.fa(t), len(c.diff)), pct(c.fr(t), len(c.same))])
    return rows


def threshold_curve(voices: list[Voice], split: str, m: float, marks: list[float]) -> list[list]:
    c = trials(voices, split, enrol=1, min_speech=m, probe_s=None)
    rows = []
    for t in sorted({*np.round(np.arange(0.3, 0.81, 0.05), 2).tolist(), *marks}):
        rows.append([f"{t:.2f}", pct(c.fa(t), len(c.diff)), pct(c.fr(t), len(c.same))])
    return rows


def identification(voices: list[Voice], split: str, t: float, m: float) -> dict:
    """What a user sees: each voiceprint of the split (>= m seconds) is matched against one profile per other
    speaker (their longest voiceprint from another session) and, where they have one, their own (likewise); the
    best at or above `t` names it. Counted with their own profile present (right, wrong, unnamed) and absent (a
    stranger: named = a mislabelled speaker).
    """
    mine = [v for v in voices if v.split == split and v.voiced_s >= m]
    out = {"with_profile": 0, "right": 0, "wrong": 0, "unnamed": 0, "strangers": 0, "stranger_named": 0}
    for v in mine:
        profiles: dict[str, Voice] = {}
        for p in mine:
            if p.session != v.session and (p.speaker not in profiles or p.voiced_s > profiles[p.speaker].voiced_s):
                profiles[p.speaker] = p
        for own_profile in (True, False):
            pool = {s: p for s, p in profiles.items() if own_profile or s != v.speaker}
            if own_profile and v.speaker not in pool:
                continue
            scores = {s: float(v.vector @ p.vector) for s, p in pool.items()}
            best = max(scores, key=scores.get, default=None)
            named = best if best is not None and scores[best] >= t else None
            if own_profile:
                out["with_profile"] += 1
                out["right" if named == v.speaker else "unnamed" if named is None else "wrong"] += 1
            else:
                out["strangers"] += 1
                out["stranger_named"] += named is not None
    return out


def score_spread(voices: list[Voice], split: str) -> str:
    c = trials(voices, split, enrol=1, min_speech=0.0, probe_s=None)
    same = [s for s in c.same if s is not None]
    diff = [s for s in c.diff if s is not None]
    q = lambda xs, p: f"{np.percentile(xs, p):.2f}" if xs else "-"  # noqa: E731
    return (f"same person: min {q(same, 0)} / median {q(same, 50)} / max {q(same, 100)} ({len(same)} trials); "
            f"different people: median {q(diff, 50)} / 99th pct {q(diff, 99)} / max {q(diff, 100)} ({len(diff)})")


def run(*, use_cache: bool = True, baseline: float | None = None) -> dict:
    """Everything the report prints, as a dict (the --json output)."""
    from parley.config import get_settings
    from services import voices as service
    from workers.diarize import SAME_VOICE_SIMILARITY

    os.chdir(ROOT)  # Settings resolve ./data (and so the model store) against the working directory
    settings = get_settings()
    baseline = SAME_VOICE_SIMILARITY if baseline is None else baseline
    recs = realvoices.fetch()
    voices, missing, seconds = all_voices(recs, settings, use_cache=use_cache)
    t, m, choice_rows = choose(voices)
    current = (service.RECOGNITION_SIMILARITY, service.MIN_RECOGNITION_SPEECH_S)
    result = {
        "recordings": len(recs), "audio_min": round(sum(r.duration for r in recs) / 60, 1),
        "diarize_s": round(seconds, 1), "voiceprints": len(voices),
        "not_found": {k: v for k, v in missing.items() if v},
        "speakers": {s: sum(v.split == s for v in voices) for s in ("tune", "test")},
        "chosen": {"recognition_similarity": t, "min_recognition_speech_s": m}, "choice_table": choice_rows,
        "test": evaluate(voices, "test", t, m), "tune": evaluate(voices, "tune", t, m),
        "test_clean": evaluate(clean(voices), "test", t, m),
        "false_accepts_test": sorted(([a, b, c, round(x, 3)] for a, b, c, x in trials(
            voices, "test", enrol=1, min_speech=m, probe_s=None).diff_pairs if x is not None and x >= t),
            key=lambda r: -r[3]),
        "baseline": {"threshold": baseline, "min_speech_s": m, "test": evaluate(voices, "test", baseline, m)},
        "current": {"threshold": current[0], "min_speech_s": current[1], "test": evaluate(voices, "test", *current)},
        "speech_curve": {s: speech_curve(voices, s, t) for s in ("tune", "test")},
        "threshold_curve": {s: threshold_curve(voices, s, m, [t, baseline]) for s in ("tune", "test")},
        "spread": {s: score_spread(voices, s) for s in ("tune", "test")},
        "identification": {"chosen": identification(voices, "test", t, m),
                           "baseline": identification(voices, "test", baseline, m)},
        "same_pairs_test": trials(voices, "test", enrol=1, min_speech=m, probe_s=None).same_pairs,
        "guard": voices_guard.run(voices, threshold=t, min_speech=m, clean_purity=CLEAN_PURITY, evaluate=evaluate,
                                  recordings=recs, model_dir=MODEL_DIR),
    }
    return result


def summary_rows(res: dict) -> list[list]:
    """The headline rows (test speakers): the chosen pair with the merge guard (Parley's recognition) and without
    (also on clean voiceprints), the baseline threshold and the constants services/voices.py has now."""
    chosen = (res["chosen"]["recognition_similarity"], res["chosen"]["min_recognition_speech_s"])
    guarded = res["guard"]["trials"]["test"]["probe+enrol"]["all"]
    rows = []
    for label, (t, m), ev in ((f"chosen + merge guard {res['guard']['cut']:.2f} (what Parley does)", chosen, guarded),
                              ("chosen, no merge guard", chosen, res["test"]),
                              (f"chosen, clean voiceprints (purity >= {CLEAN_PURITY:g})", chosen, res["test_clean"]),
                              ("baseline", (res["baseline"]["threshold"], res["baseline"]["min_speech_s"]),
                               res["baseline"]["test"]),
                              ("current constants", (res["current"]["threshold"], res["current"]["min_speech_s"]),
                               res["current"]["test"])):
        for k in (1, 2):
            e = ev[f"enrol{k}"]
            rows.append([label, f"{t:.2f}", f"{m:g} s", k, pct(e["fa"], e["diff_trials"]),
                         pct(e["fr"], e["same_trials"])])
    return rows


SUMMARY_HEADERS = ["setting", "threshold", "min speech", "enrolled recordings", "FA (test)", "FR (test)"]


def report(res: dict) -> None:
    print(f"{res['recordings']} recordings ({res['audio_min']} min), {res['voiceprints']} voiceprints "
          f"(tune {res['speakers']['tune']}, test {res['speakers']['test']}); diarization {res['diarize_s']} s")
    lost = sum(len(v) for v in res["not_found"].values())
    print(f"reference speakers without a final speaker of their own (not found): {lost}")
    print("\n## Choice on TUNE speakers (FA <= 1% for full voiceprints and for voiceprints of exactly the minimum)")
    print(table(CHOICE_HEADERS, res["choice_table"]))
    c = res["chosen"]
    print(f"chosen: RECOGNITION_SIMILARITY = {c['recognition_similarity']:.2f}, "
          f"MIN_RECOGNITION_SPEECH_S = {c['min_recognition_speech_s']:g}")
    print("\n## Held-out TEST speakers, beside the baseline (cross-chunk SAME_VOICE_SIMILARITY) and current constants")
    print(table(SUMMARY_HEADERS, summary_rows(res)))
    fas = res["false_accepts_test"]
    print(f"test false accepts at the chosen pair (1 enrolment recording): {len(fas)}"
          + "".join(f"\n  {p} ({r}) <- {q}: {x:.2f}" for p, r, q, x in fas[:12]))
    print("\n## Identification on TEST speakers: each voiceprint against every other speaker's profile, with and "
          "without its own")
    rows = [[k, i["with_profile"], i["right"], i["wrong"], i["unnamed"], f"{i['stranger_named']}/{i['strangers']}"]
            for k, i in res["identification"].items()]
    print(table(["setting", "voiceprints with own profile", "right name", "wrong name", "unnamed",
                 "named without own profile"], rows))
    for s in ("tune", "test"):
        print(f"\n## FA/FR vs threshold ({s}, full voiceprints, 1 enrolment recording, "
              f"min speech {c['min_recognition_speech_s']:g} s)")
        print(table(["threshold", "FA", "FR"], res["threshold_curve"][s]))
        print(f"\n## FA/FR vs speech behind the voiceprint ({s}, threshold {c['recognition_similarity']:.2f}, "
              "1 enrolment recording)")
        print(table(["probe speech", "FA", "FR"], res["speech_curve"][s]))
        print(f"scores: {res['spread'][s]}")
    voices_guard.report(res["guard"], table=table, pct=pct)


def quality_hook(*, use_cache: bool = True) -> None:
    """A short section for scripts/bench/quality.py: the test figures at the chosen pair and the baseline."""
    res = run(use_cache=use_cache)
    print("\n## Known voices (scripts/bench/voices.py; real voices, threshold chosen on tune speakers)")
    print(table(SUMMARY_HEADERS, summary_rows(res)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="", help="also write every figure to this file")
    parser.add_argument("--no-cache", action="store_true", help="diarize again even when the voiceprints are cached")
    parser.add_argument("--baseline", type=float, default=None,
                        help="baseline threshold (default: workers.diarize.SAME_VOICE_SIMILARITY)")
    args = parser.parse_args()
    out = Path(args.json).resolve() if args.json else None  # run() changes to the repository root
    started = time.perf_counter()
    print("# Known voices on real recordings")
    print(host_line())
    res = run(use_cache=not args.no_cache, baseline=args.baseline)
    report(res)
    res["wall_s"] = round(time.perf_counter() - started, 1)
    print(f"\nwall time {res['wall_s']} s")
    if out:
        out.write_text(json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
