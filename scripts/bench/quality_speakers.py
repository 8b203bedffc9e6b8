"""Speaker labels for the quality benchmark: Parley's pipeline path, reference floors and the previous engine."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = Path(os.environ.get("PARLEY_MODEL_DIR", ROOT / "data" / "models"))
SAMPLE_RATE = 16000
MODES = ("est", "given")  # speaker count estimated / given as the reference's count


def count_modes(rec) -> tuple[str, ...]:
    """The count modes a recording is labelled in: a single-speaker one only with its count estimated."""
    return MODES if rec.kind == "multi" else ("est",)


@dataclass
class Labelled:
    """One engine's answer for one file and count mode."""

    turns: list[tuple[float, float, str]] | None  # diarization turns (new engine only)
    segments: list[dict]  # labelled transcript segments
    seconds: float  # speaker work only (diarization, tracking, labelling)
    final_turns: list = field(default_factory=list)  # SpeakerTurn objects, to re-derive confidence features


def parley_speakers(settings, audio: np.ndarray, chunks: list[tuple[int, list[dict]]],
                    num_speakers: int | None, *, chunk_s: float | None = None) -> Labelled:
    """Diarize and label as the pipeline does: per chunk before recognition, then the final relabelling.

    `chunks` are the recognised segments per chunk index, as quality.Transcribed holds them; chunk_s (default
    settings.chunk_seconds) is the chunk length the audio is planned in.
    """
    from workers import diarize, turns
    from workers.audio import plan_chunks

    plan = plan_chunks(audio, target_s=chunk_s or settings.chunk_seconds)
    by_chunk = dict(chunks)
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


def meetings(recs: list) -> list[list]:
    """Multi-speaker clips of one meeting, in order: those of one split that share two reference speakers or more.

    Joined, they are a longer recording of the same people, on which the chunk-by-chunk tracking can be scored.
    """
    groups: list[list] = []
    for r in sorted((r for r in recs if r.kind == "multi"), key=lambda r: r.name):
        people = {name for _, _, name in r.turns}
        home = next((g for g in groups if g[0].split == r.split
                     and any(len(people & {name for _, _, name in o.turns}) >= 2 for o in g)), None)
        if home is None:
            groups.append([r])
        else:
            home.append(r)
    return [g for g in groups if len(g) > 1]


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
    # Shape (windows, frames, 3 local speakers).
    active = POWERSET[_segmentation_model().run(None, {"x": batch})[0].argmax(-1)]
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
