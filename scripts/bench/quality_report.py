"""Report of the quality benchmark: the WER, DER, speaker count, confidence, time and target tables of one run."""
from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import numpy as np

from benchlib import table
from quality_scores import (Der, calibration, confidence_features, der, judged_segments, logistic, num, pct,
                            pooled_der, pooled_wer, seg_items, speaker_count, word_score)
from quality_speakers import MODES, clustering_floor, oracle_transcript

COLLARS = (0.25, 0.0)

TARGET_DER = 0.20
TARGET_DER_TWO = 0.10
TARGET_COUNT = 0.80


@dataclass
class Results:
    """What one run recognised and labelled: everything the report reads."""

    recs: list  # realspeech.Recording, in the corpus's order
    audio: dict[str, np.ndarray]
    models: list[str]
    speaker_model: str  # the model whose segments get speaker labels
    variants: dict[str, dict]  # bare-call variant -> its extra transcribe() arguments
    parley: dict  # (model, file) -> Transcribed through Parley's path
    bare: dict  # (model, variant, file) -> Transcribed by the bare call
    new: dict  # (count mode, file) -> Labelled by the new engine
    prev: dict  # (count mode, file) -> Labelled by the previous engine; empty when it did not run
    prev_info: dict

    @property
    def multi(self) -> list:
        return [r for r in self.recs if r.kind == "multi"]

    @property
    def single(self) -> list:
        return [r for r in self.recs if r.kind == "single"]

    @property
    def wer_files(self) -> list:
        return [r for r in self.recs if r.text]  # single-speaker files and the telephone call

    def transcribed(self, model: str, name: str, variant: str | None = None):
        """Parley's recognition of a file (variant None) or a bare-call variant's."""
        return self.parley[(model, name)] if variant is None else self.bare[(model, variant, name)]

    def wer(self, model: str, files, variant: str | None = None) -> float | None:
        return pooled_wer([word_score(r.text, self.transcribed(model, r.name, variant).text) for r in files])

    def systems(self) -> dict:
        """The speaker hypotheses scored, by name: (count mode, recording) -> (start, end, speaker) items."""
        out = {"new turns": lambda mode, r: self.new[(mode, r.name)].turns,
               "new transcript": lambda mode, r: seg_items(self.new[(mode, r.name)].segments)}
        if self.prev:
            out["prev transcript"] = lambda mode, r: seg_items(self.prev[(mode, r.name)].segments)
        return out


def file_label(r) -> str:
    return r.name + (" (tuning)" if r.split == "tune" else "")


def report_wer(res: Results) -> None:
    print("\n## Word error rate (normalised; errors / reference words)")
    for model in res.models:
        rows = []
        for r in res.wer_files:
            p = word_score(r.text, res.transcribed(model, r.name).text)
            b = word_score(r.text, res.transcribed(model, r.name, "bare").text)
            t = res.transcribed(model, r.name)
            rows.append([file_label(r), r.kind, p.words, pct(p.wer), pct(b.wer),
                         f"{t.dropped_words} ({t.dropped_segments} seg)"])
        print(f"\n### {model}: per file (Parley path vs bare faster-whisper)")
        print(table(["file", "kind", "ref words", "Parley", "bare", "dropped by guard"], rows))

        scored_single = [r for r in res.single if r.split == "test"]
        call = [r for r in res.multi if r.text and r.split == "test"]
        scored = scored_single + call
        tune = [r for r in res.wer_files if r.split == "tune"]
        audio_s = sum(r.duration for r in scored + tune)
        rows = []
        for label, variant in [("Parley (vad, words, guard)", None)] + [(v, v) for v in res.variants]:
            secs = sum(res.transcribed(model, r.name, variant).seconds for r in scored + tune)
            rows.append([label, pct(res.wer(model, scored_single, variant)), pct(res.wer(model, call, variant)),
                         pct(res.wer(model, scored, variant)), pct(res.wer(model, tune, variant)),
                         f"{secs:.1f}", num(secs / max(audio_s, 1e-9), 3)])
        print(f"\n### {model}: pooled WER (scored = test split; tuning files apart) and time")
        print(table(["path", "single (test)", "call (test)", "scored pooled", "tuning files", "seconds", "RTF"], rows))


def score_der(res: Results, window_shift: float) -> dict[tuple[str, str, float, str], Der]:
    """DER of every system, count mode, collar and multi-speaker file, and of the two floors."""
    ders: dict[tuple[str, str, float, str], Der] = {}
    for r in res.multi:
        for name, hyp in res.systems().items():
            for mode in MODES:
                for collar in COLLARS:
                    ders[(name, mode, collar, r.name)] = der(r.turns, hyp(mode, r), r.duration, collar, r.name)
        # The floor of the transcript view: the same segments labelled from the REFERENCE turns, so what is
        # left is Whisper's coverage and word timing, not the speaker engine.
        floor = seg_items(oracle_transcript(res.parley[(res.speaker_model, r.name)].segments, r.turns))
        best = clustering_floor(res.audio[r.name], r.turns, window_shift)
        for collar in COLLARS:
            ders[("floor", "", collar, r.name)] = der(r.turns, floor, r.duration, collar, r.name)
            ders[("clustering floor", "", collar, r.name)] = der(r.turns, best, r.duration, collar, r.name)
    return ders


def report_der(res: Results, ders: dict) -> None:
    systems = res.systems()
    print(f"\n## Speakers (labels on {res.speaker_model} segments): DER per file"
          + ("" if res.prev else "; previous engine unavailable"))
    headers = ["file", "ref spk"] + [f"{s} ({m})" for m in MODES for s in systems] + [
        "floor: ref turns", "turns floor: perfect clustering"]
    for split, title in (("test", "scored files"), ("tune", "TUNING files (not scored)")):
        files = [r for r in res.multi if r.split == split]
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

    scored_multi = [r for r in res.multi if r.split == "test"]
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


def report_count(res: Results) -> dict[str, float | None]:
    """Print the speaker count found with the count not given; return each system's share right on the scored files."""
    systems = res.systems()
    found = {(s, r.name): speaker_count(hyp("est", r)) for s, hyp in systems.items() for r in res.recs}
    print("\n## Speaker count when not given (found / reference)")
    rows = [[file_label(r), r.kind, r.speakers] + [found[(s, r.name)] for s in systems] for r in res.recs]
    print(table(["file", "kind", "ref"] + list(systems), rows))
    count_share: dict[str, float | None] = {}
    rows = []
    for label, group in (("scored multi-speaker", [r for r in res.multi if r.split == "test"]),
                         ("scored single-speaker", [r for r in res.single if r.split == "test"]),
                         ("scored all", [r for r in res.recs if r.split == "test"]),
                         ("TUNING files (not scored)", [r for r in res.recs if r.split == "tune"])):
        cells = []
        for s in systems:
            right = sum(found[(s, r.name)] == r.speakers for r in group)
            share = right / len(group) if group else None
            if label == "scored all":
                count_share[s] = share
            cells.append(f"{right}/{len(group)} ({pct(share, 0)})")
        rows.append([label] + cells)
    print(table(["files", *systems], rows))
    return count_share


def report_confidence(res: Results) -> None:
    print("\n## speaker_confidence calibration (transcript segments of the multi-speaker files)")
    rows = []
    for split in ("test", "tune"):
        files = [r for r in res.multi if r.split == split]
        for src_name, src in (("new", res.new), ("prev", res.prev)):
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
        files = [r for r in res.multi if r.split == split]
        for m in MODES:
            parts = []
            for r in files:
                spans = {(s["start"], s["end"]) for s in res.parley[(res.speaker_model, r.name)].segments}
                parts += [(c, ok, len(seg.get("words") or [])) for c, ok, seg
                          in judged_segments(res.new[(m, r.name)].segments, r.turns)
                          if (seg["start"], seg["end"]) not in spans]
            one = [(c, ok) for c, ok, n in parts if n <= 1]
            rows.append([("scored" if split == "test" else "TUNING"), f"new ({m})", len(parts),
                         pct(sum(ok for _, ok, _ in parts) / len(parts)) if parts else "-", len(one),
                         pct(sum(ok for _, ok in one) / len(one)) if one else "-",
                         num(sum(c for c, _ in one) / len(one), 2) if one else "-"])
    print("split-off parts (segments cut at a speaker change inside one recognised segment):")
    print(table(["files", "engine", "parts", "right", "one-word parts", "right", "mean conf"], rows))


def fit_confidence(multi, new: dict) -> None:
    """Fit speaker_confidence's logistic curve on the TUNE files; print the constants and their effect when scored."""
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


def report_time(res: Results, baseline_ref: str, run_started: float) -> None:
    print("\n## Time (speaker work per file: diarization + tracking + labelling; recognition excluded)")
    rows = []
    multi_s = sum(r.duration for r in res.multi)
    for label, src in (("new (sherpa-onnx)", res.new), (f"previous ({baseline_ref}, Resemblyzer)", res.prev)):
        if not src:
            continue
        for m in MODES:
            secs = sum(src[(m, r.name)].seconds for r in res.multi)
            rows.append([label, m, f"{multi_s:.0f}", f"{secs:.1f}", num(secs / multi_s, 3)])
    print(table(["engine", "count", "audio s", "seconds", "RTF"], rows))
    if res.prev_info:
        print(f"previous engine: warm-up (numba JIT, encoder load) {res.prev_info['warm_up_s']:.1f} s, outside the "
              f"timing; peak RSS of its process {res.prev_info['peak_rss_mb']:.0f} MB")
    rows = []
    wer_files = res.wer_files
    for model in res.models:
        files = res.recs if model == res.speaker_model else wer_files
        secs = sum(res.transcribed(model, r.name).seconds for r in files)
        dur = sum(r.duration for r in files)
        rows.append([model, "Parley path", len(files), f"{dur:.0f}", f"{secs:.1f}", num(secs / dur, 3)])
        secs = sum(res.transcribed(model, r.name, "bare").seconds for r in wer_files)
        dur = sum(r.duration for r in wer_files)
        rows.append([model, "bare", len(wer_files), f"{dur:.0f}", f"{secs:.1f}", num(secs / dur, 3)])
    print(table(["model", "recognition", "files", "audio s", "seconds", "RTF"], rows))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {rss:.0f} MB; whole run {time.perf_counter() - run_started:.0f} s")


def report_targets(res: Results, ders: dict, count_share: dict[str, float | None]) -> None:
    print("\n## Targets (scored files only)")
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    systems = res.systems()
    scored_multi = [r for r in res.multi if r.split == "test"]
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
    for model in res.models:
        scored = [r for r in res.wer_files if r.split == "test"]
        p, b = res.wer(model, scored), res.wer(model, scored, "bare")
        print(f"WER through Parley no worse than bare, {model}: Parley {pct(p)} vs bare {pct(b)} {verdict(p <= b)}")
