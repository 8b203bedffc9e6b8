"""Speaker labels on a real two-person telephone call, through the whole stack, with provisional labels live.

The call (30 s, Diane and Sheila, from the pyannote-audio sdist, with reference turns and a speaker-attributed
transcript) is one of the recordings scripts/bench/quality.py scores; the confidence curve and the clustering
threshold were fitted on other recordings (its 'tune' files).
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from conftest import running_stack
from helpers import real_recordings, ws_collector

CALL = "call-diane-sheila"


def speaker_mapping(reference: list[tuple[float, float, str]], segments: list[dict]) -> dict[str, str]:
    """Hypothesis speaker -> reference speaker, one to one, by the time they share (words' times)."""
    ref_names = sorted({s for _, _, s in reference})
    hyp_names = sorted({w["speaker"] for seg in segments for w in seg["words"]})
    shared = np.zeros((len(hyp_names), len(ref_names)))
    for seg in segments:
        for w in seg["words"]:
            for start, end, name in reference:
                shared[hyp_names.index(w["speaker"]), ref_names.index(name)] += max(
                    0.0, min(end, w["end"]) - max(start, w["start"]))
    rows, cols = linear_sum_assignment(-shared)
    return {hyp_names[r]: ref_names[c] for r, c in zip(rows, cols)}


def utterance_speakers(recording, segments: list[dict]) -> list[tuple[str, str, str | None]]:
    """(reference text, reference speaker, speaker the transcript gives most of its words) per utterance."""
    mapping = speaker_mapping([(a, b, s) for a, b, s, _ in recording.segments], segments)
    out = []
    for start, end, name, text in recording.segments:
        votes: dict[str, float] = {}
        for seg in segments:
            for w in seg["words"]:
                mid = (w["start"] + w["end"]) / 2
                if start <= mid <= end:
                    who = mapping.get(w["speaker"], w["speaker"])
                    votes[who] = votes.get(who, 0.0) + w["end"] - w["start"]
        out.append((text, name, max(votes, key=votes.get) if votes else None))
    return out


def test_two_person_call_count_quick_exchanges_and_live_labels(stack):
    recording = real_recordings()[CALL]
    job_id = stack.upload(recording.wav, diarize="true", model_name="base").json()["job_id"]
    reader = ws_collector(stack, job_id)
    assert stack.wait_job(job_id)["status"] == "completed"
    events = reader.result(timeout=60)
    result = stack.get(f"/api/transcribe/result/{job_id}").json()
    segments = result["segments"]

    # The count is estimated right: two people.
    assert {s["speaker"] for s in segments} == {"SPEAKER_1", "SPEAKER_2"}, [(s["speaker"], s["text"]) for s in segments]
    # Every utterance, the one-word "Hello?" and "Neither did I." replies included, goes to its speaker.
    per_utterance = utterance_speakers(recording, segments)
    wrong = [(text, who, got) for text, who, got in per_utterance if got is not None and got != who]
    assert not wrong, wrong
    heard = {text: got for text, _, got in per_utterance}
    assert heard["Neither did I."] == "Sheila" and heard["I didn't know you were there."] == "Diane"
    # The quick reply (9.84-10.78 s) is a segment of its own, not merged into Diane's turn around it.
    reply = [s for s in segments if s["words"][0]["start"] >= 9.7 and s["words"][-1]["end"] <= 11.2]
    assert reply, [(s["start"], s["end"], s["text"]) for s in segments]
    for seg in segments:
        assert 0.0 <= seg["speaker_confidence"] <= 1.0 and isinstance(seg["overlap_speakers"], list)
        assert all(w["speaker"] == seg["speaker"] for w in seg["words"])

    # Live: the segments streamed during the job already carried a (provisional) speaker, before the final
    # `speakers` message relabelled them; the stored result is that final message's transcript.
    live = [e for e in events if e["type"] == "segment"]
    final = [e for e in events if e["type"] == "speakers"]
    assert live and all(e["speaker"] in {"SPEAKER_1", "SPEAKER_2"} for e in live), [e.get("speaker") for e in live]
    assert len(final) == 1 and final[0]["segments"] == segments
    assert events.index(final[0]) > max(events.index(e) for e in live)

    # Exports carry the labels: one line per turn in the text export, alternating between the two people.
    txt = stack.get(f"/api/transcribe/result/{job_id}", params={"format": "txt"}).text
    lines = [re.match(r"\[\d\d:\d\d:\d\d\] (SPEAKER_\d):", line).group(1) for line in txt.splitlines()]
    assert len(lines) >= 6 and all(a != b for a, b in zip(lines, lines[1:])), txt
    assert "<v SPEAKER_2>" in stack.get(f"/api/transcribe/result/{job_id}", params={"format": "vtt"}).text

    # A client that joins after the job sees the current (final) labels in the replay.
    replay = ws_collector(stack, job_id).result(timeout=60)
    assert [e for e in replay if e["type"] == "speakers"][-1]["segments"] == segments


def test_a_meeting_in_short_chunks_is_labelled_to_the_end(tmp_path, redis_server, models_ready):
    """A real meeting cut into 10 s chunks, as a long recording is cut into 120 s ones: its first chunk holds one
    brief utterance, too short for a voice. The job completes with every segment labelled by one of the
    recording's speakers, live and final (it failed before: the chunks after a voiceless one raised ValueError)."""
    recording = real_recordings()["ami-trn00"]
    with running_stack(tmp_path, redis_server, workers=[("asr", "asr")], PARLEY_CHUNK_SECONDS="10") as chunked:
        job_id = chunked.upload(recording.wav, diarize="true", model_name="tiny.en").json()["job_id"]
        reader = ws_collector(chunked, job_id)
        status = chunked.wait_job(job_id)
        assert status["status"] == "completed", status
        assert chunked.get(f"/api/transcribe/debug/{job_id}").json()["total_chunks"] >= 3
        events = reader.result(timeout=60)
        segments = chunked.get(f"/api/transcribe/result/{job_id}").json()["segments"]
    assert segments and all(re.fullmatch(r"SPEAKER_\d", s["speaker"]) for s in segments), segments
    speakers = {s["speaker"] for s in segments}
    # Three people speak. Whisper writes no words in the voiceless first chunk, so where its turn goes is shown
    # by tests/test_diarize.py::test_a_chunk_where_nobody_has_a_voice_takes_a_speaker_already_there.
    assert len(speakers) <= 3
    live = [e for e in events if e["type"] == "segment"]
    assert live and all(re.fullmatch(r"SPEAKER_\d", e["speaker"]) for e in live)
    assert [e for e in events if e["type"] == "speakers"][-1]["segments"] == segments


@pytest.mark.parametrize("wanted", [1, 3])
def test_a_given_speaker_count_is_honoured(stack, wanted):
    """A 4-person meeting labelled with 1 or 3 speakers, because the user said so."""
    recording = real_recordings()["ami-trn05"]
    job_id = stack.upload(recording.wav, diarize="true", num_speakers=str(wanted), model_name="tiny.en").json()["job_id"]
    assert stack.wait_job(job_id)["status"] == "completed"
    segments = stack.get(f"/api/transcribe/result/{job_id}").json()["segments"]
    turns_speakers = {s["speaker"] for s in segments}
    assert len(turns_speakers) == wanted, [(s["speaker"], s["text"]) for s in segments]


def test_speaker_count_is_exact_in_the_engine():
    """The diarization engine returns exactly the requested number of speakers on real speech."""
    import soundfile as sf

    from conftest import MODEL_DIR
    from workers import diarize

    audio, _ = sf.read(real_recordings()["ami-tst00"].wav, dtype="float32")
    for wanted in (1, 2, 3, 4):
        found = diarize.diarize(audio, model_dir=MODEL_DIR, num_speakers=wanted)
        assert len({t.speaker for t in found.turns}) == wanted, wanted
