"""Words onto speaker turns: each word to the speaker active at its time, segments split where it changes."""
from __future__ import annotations

from workers.turns import SpeakerTurn, label_segments, label_word


def word(start: float, end: float, text: str) -> dict:
    return {"start": start, "end": end, "word": text, "probability": 0.9}


def segment(words: list[dict]) -> dict:
    return {"chunk_index": 0, "start": words[0]["start"], "end": words[-1]["end"],
            "text": "".join(w["word"] for w in words).strip(), "words": words, "avg_logprob": -0.2,
            "no_speech_prob": 0.01}


def test_a_quick_reply_inside_one_engine_segment_gets_its_own_speaker():
    seg = segment([word(0.0, 0.4, " I"), word(0.4, 0.8, " never"), word(0.8, 1.2, " liked"), word(1.2, 1.6, " it."),
                   word(1.8, 2.2, " Neither"), word(2.2, 2.4, " did"), word(2.4, 2.7, " I.")])
    turns = [SpeakerTurn(0.0, 1.65, "SPEAKER_1"), SpeakerTurn(1.75, 2.8, "SPEAKER_2")]
    out = label_segments([seg], turns)
    assert [(s["speaker"], s["text"]) for s in out] == [("SPEAKER_1", "I never liked it."),
                                                        ("SPEAKER_2", "Neither did I.")]
    assert out[0]["start"] == 0.0 and out[0]["end"] == 1.6
    assert out[1]["start"] == 1.8 and out[1]["end"] == 2.7
    assert all(w["speaker"] == "SPEAKER_2" for w in out[1]["words"])
    assert all(0.0 < s["speaker_confidence"] <= 1.0 for s in out)


def test_one_speaker_segment_keeps_the_engines_text():
    seg = segment([word(0.0, 0.5, " Hello"), word(0.5, 1.0, " there.")])
    seg["text"] = "Hello there."
    (out,) = label_segments([seg], [SpeakerTurn(0.0, 1.2, "SPEAKER_1")])
    assert out["text"] == "Hello there." and out["speaker"] == "SPEAKER_1"


def test_overlapped_word_goes_to_the_dominant_speaker_and_records_the_other():
    label = label_word(1.0, 2.0, [SpeakerTurn(0.0, 2.0, "SPEAKER_1"), SpeakerTurn(1.3, 3.0, "SPEAKER_2")])
    assert label.speaker == "SPEAKER_1" and label.overlap == ["SPEAKER_2"]
    seg = segment([word(1.0, 2.0, " yes")])
    (out,) = label_segments([seg], [SpeakerTurn(0.0, 2.0, "SPEAKER_1"), SpeakerTurn(1.3, 3.0, "SPEAKER_2")])
    assert out["words"][0]["overlap"] == ["SPEAKER_2"]


def test_word_outside_every_turn_takes_the_nearest_or_its_neighbour():
    turns = [SpeakerTurn(0.0, 1.0, "SPEAKER_1"), SpeakerTurn(5.0, 6.0, "SPEAKER_2")]
    assert label_word(1.2, 1.4, turns).speaker == "SPEAKER_1"  # 0.2 s after SPEAKER_1's turn
    assert label_word(3.0, 3.2, turns).speaker is None  # nobody near
    seg = segment([word(0.5, 0.9, " so"), word(3.0, 3.2, " um")])
    (out,) = label_segments([seg], turns)
    assert [w["speaker"] for w in out["words"]] == ["SPEAKER_1", "SPEAKER_1"]


def test_no_turns_gives_no_speaker():
    (out,) = label_segments([segment([word(0.0, 0.5, " hi")])], [])
    assert out["speaker"] is None and out["speaker_confidence"] is None


def test_a_stray_word_inside_a_sentence_stays_with_its_sentence():
    """Word timings straddling a turn edge must not cut "Has it been done | anything?" in two."""
    seg = segment([word(0.0, 0.3, " Has"), word(0.3, 0.5, " it"), word(0.5, 0.7, " been"), word(0.7, 1.0, " done"),
                   word(1.0, 1.6, " anything?")])
    turns = [SpeakerTurn(0.0, 1.05, "SPEAKER_1"), SpeakerTurn(1.05, 2.0, "SPEAKER_2")]
    (out,) = label_segments([seg], turns)
    assert out["speaker"] == "SPEAKER_1" and out["words"][-1]["overlap"] == ["SPEAKER_2"]


def test_a_one_word_sentence_keeps_its_own_speaker():
    seg = segment([word(0.0, 0.4, " Are"), word(0.4, 0.7, " you"), word(0.7, 1.0, " there?"), word(1.2, 1.5, " Yes.")])
    turns = [SpeakerTurn(0.0, 1.05, "SPEAKER_1"), SpeakerTurn(1.1, 1.6, "SPEAKER_2")]
    out = label_segments([seg], turns)
    assert [(s["speaker"], s["text"]) for s in out] == [("SPEAKER_1", "Are you there?"), ("SPEAKER_2", "Yes.")]
