"""The diarization engine on real speech: turns, chunk-by-chunk stitching, edge cases."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from conftest import MODEL_DIR
from helpers import real_recordings
from workers import diarize

pytestmark = pytest.mark.skipif(not diarize.available(MODEL_DIR), reason="diarization models not exported")


def der(reference, turns) -> float:
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    ref, hyp = Annotation(), Annotation()
    for start, end, name in reference:
        ref[Segment(start, end)] = name
    for turn in turns:
        hyp[Segment(turn.start, turn.end)] = turn.speaker
    return DiarizationErrorRate(collar=0.25, skip_overlap=False)(ref, hyp)


@pytest.fixture(scope="module")
def call():
    recording = real_recordings()["call-diane-sheila"]
    audio, _ = sf.read(recording.wav, dtype="float32")
    return audio, recording


def test_two_person_call_in_one_piece(call):
    audio, recording = call
    found = diarize.diarize(audio, model_dir=MODEL_DIR)
    assert {t.speaker for t in found.turns} == {"0", "1"}
    assert der(recording.turns, found.turns) <= 0.10
    assert set(found.voices) == {"0", "1"} and all(abs(np.linalg.norm(v) - 1) < 1e-6 for v in found.voices.values())
    # Overlapped speech is reported: in the reference, the two speak at once around 8.3, 10.6 and 14.5 s.
    overlaps = [(a, b) for a in found.turns for b in found.turns
                if a.speaker < b.speaker and a.start < b.end and b.start < a.end]
    assert overlaps


def twice(call):
    """The call played twice (60 s): two chunks with the same two people in each."""
    audio, recording = call
    reference = recording.turns + [(a + 30.0, b + 30.0, name) for a, b, name in recording.turns]
    return np.concatenate([audio, audio]), reference


def test_chunks_are_stitched_into_the_recordings_speakers(call):
    """Diarized in two chunks, as a worker does with long audio: the second chunk's people get the first
    chunk's provisional names, and the final clustering gives the same two people."""
    audio, reference = twice(call)
    tracker = diarize.SpeakerTracker()
    rate = diarize.SAMPLE_RATE
    provisional = []
    for index, (start, end) in enumerate([(0.0, 30.0), (30.0, 60.0)]):
        found = diarize.diarize(audio[int(start * rate):int(end * rate)], model_dir=MODEL_DIR, offset=start)
        provisional += tracker.add(index, found)
    assert {t.speaker for t in provisional} == {"SPEAKER_1", "SPEAKER_2"}
    assert der(reference, provisional) <= 0.10
    final = tracker.final_turns()
    assert {t.speaker for t in final} == {"SPEAKER_1", "SPEAKER_2"}
    assert der(reference, final) <= 0.10
    assert final[0].speaker == "SPEAKER_1"  # numbered by first appearance


def test_given_count_across_chunks(call):
    audio, _ = twice(call)
    rate = diarize.SAMPLE_RATE
    for wanted in (1, 2, 3):
        tracker = diarize.SpeakerTracker(num_speakers=wanted)
        for index, (start, end) in enumerate([(0.0, 30.0), (30.0, 60.0)]):
            tracker.add(index, diarize.diarize(audio[int(start * rate):int(end * rate)], model_dir=MODEL_DIR,
                                               offset=start))
        assert len({t.speaker for t in tracker.final_turns()}) == wanted


def test_a_chunk_where_nobody_has_a_voice_takes_a_speaker_already_there():
    """A long recording whose chunk holds only a brief utterance (real AMI speech, cut where the worker's chunking
    cut it with 10 s chunks): that chunk's speaker has no voice to match, and the chunks after it must still be
    matched (this raised ValueError in SpeakerTracker.add), and it must not become a person of its own."""
    recording = real_recordings()["ami-trn00"]
    audio, _ = sf.read(recording.wav, dtype="float32")
    rate = diarize.SAMPLE_RATE
    brief, rest = audio[:int(9.3 * rate)], audio[int(9.3 * rate):]
    tracker = diarize.SpeakerTracker()
    first = diarize.diarize(brief, model_dir=MODEL_DIR)
    assert first.turns and not first.voices  # what this test is about: speech, but too little for a voice
    second = diarize.diarize(rest, model_dir=MODEL_DIR, offset=9.3)
    assert len(second.voices) == 2
    provisional = tracker.add(0, first) + tracker.add(1, second)
    # The same brief stretch again after voiced chunks: it takes the latest speaker, not a new one.
    again = tracker.add(2, diarize.diarize(brief, model_dir=MODEL_DIR, offset=30.0))
    assert again and {t.speaker for t in again} <= {t.speaker for t in provisional[len(first.turns):]}
    final = tracker.final_turns()
    assert len(final) == len(first.turns) + len(second.turns) + len(again)
    assert len({t.speaker for t in final}) == 2  # the voiceless turns went to the nearest of the two people
    assert final[0].speaker == final[1].speaker  # the brief turn (5.6 s) and the next one (10.5 s)


def test_silence_noise_and_bad_input():
    assert diarize.diarize(np.zeros(16000 * 5, np.float32), model_dir=MODEL_DIR).turns == []
    assert diarize.diarize(np.zeros(100, np.float32), model_dir=MODEL_DIR).turns == []
    noise = (0.01 * np.random.default_rng(1).standard_normal(16000 * 2)).astype(np.float32)
    diarize.diarize(noise, model_dir=MODEL_DIR)  # no crash on noise
    with pytest.raises(ValueError):
        diarize.diarize(noise, model_dir=MODEL_DIR, num_speakers=0)
    with pytest.raises(ValueError):
        diarize.diarize(np.zeros((2, 16000), np.float32), model_dir=MODEL_DIR)
    tracker = diarize.SpeakerTracker()
    assert tracker.add(0, diarize.Diarization([], {}, {})) == [] and tracker.final_turns() == []


def test_missing_models_are_reported(tmp_path):
    assert not diarize.available(tmp_path)
    with pytest.raises(diarize.DiarizationUnavailable):
        diarize.diarize(np.ones(16000, np.float32), model_dir=tmp_path)
