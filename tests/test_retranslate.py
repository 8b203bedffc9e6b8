"""Re-transcription of one segment: from an uploaded clip and from the stored full audio; 202 when slow."""
from __future__ import annotations

import pytest

from conftest import AUDIO, clip, truth
from helpers import wer


@pytest.fixture(scope="module")
def finished_job(stack):
    job_id = stack.upload(AUDIO / "two_speakers.mp3", diarize="true").json()["job_id"]
    assert stack.wait_job(job_id)["status"] == "completed"
    return job_id


def test_segment_from_uploaded_clip(stack, tmp_path):
    turn = truth("two_speakers")["turns"][2]
    piece = clip(AUDIO / "two_speakers.mp3", tmp_path / "turn.wav", turn["start"] - 0.2, turn["end"] + 0.2)
    with open(piece, "rb") as fh:
        response = stack.post("/api/retranslate/segment", files={"file": ("turn.wav", fh)},
                              data={"segment_id": "seg-3", "start_time": turn["start"], "end_time": turn["end"],
                                    "model_name": "base"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["segment_id"] == "seg-3" and body["model_used"] == "base" and body["speaker"] is None
    assert wer(turn["text"], body["text"]) < 0.2, body["text"]
    assert 0.5 < body["confidence"] <= 1.0


def test_segment_from_full_audio_keeps_the_speaker(stack, finished_job):
    result = stack.get(f"/api/transcribe/result/{finished_job}").json()
    turn = truth("two_speakers")["turns"][3]
    original = max(result["segments"], key=lambda s: min(s["end"], turn["end"]) - max(s["start"], turn["start"]))
    response = stack.post("/api/retranslate/segment-from-full", params={"job_id": finished_job},
                          json={"segment_id": "seg-4", "start_time": turn["start"] - 0.2,
                                "end_time": turn["end"] + 0.2, "language": "en"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert wer(turn["text"], body["text"]) < 0.2, body
    assert body["speaker"] == original["speaker"]
    # No model named and large-v3-turbo not in the store: the source job's own model is used.
    assert body["model_used"] == "tiny.en"


@pytest.mark.parametrize("body, status, words", [
    ({"segment_id": "s", "start_time": 5, "end_time": 2}, 400, "greater than"),
    ({"segment_id": "s", "start_time": 500, "end_time": 501}, 400, "beyond the end"),
    ({"segment_id": "s", "start_time": 0}, 400, "required"),
    ({"start_time": 0, "end_time": 1}, 400, "segment_id"),
    ({"segment_id": "s", "start_time": "soon", "end_time": 1}, 400, "start_time"),
])
def test_segment_from_full_bad_input(stack, finished_job, body, status, words):
    response = stack.post("/api/retranslate/segment-from-full", params={"job_id": finished_job}, json=body)
    assert response.status_code == status and words in response.json()["detail"], response.text


def test_segment_from_full_unknown_job_and_bad_json(stack, finished_job):
    unknown = stack.post("/api/retranslate/segment-from-full", params={"job_id": "nope"},
                         json={"segment_id": "s", "start_time": 0, "end_time": 1})
    assert unknown.status_code == 404
    garbled = stack.post("/api/retranslate/segment-from-full", params={"job_id": finished_job},
                         data="{not json", headers={"Content-Type": "application/json"})
    assert garbled.status_code == 400 and "JSON object" in garbled.json()["detail"]


def test_refused_clip_is_not_kept(stack, tmp_path):
    """A clip whose times are wrong is answered 400 and is not left in the audio directory."""
    before = sorted(p.name for p in (stack.data_dir / "audio").iterdir())
    piece = clip(AUDIO / "two_speakers.mp3", tmp_path / "bad.wav", 0.0, 2.0)
    with open(piece, "rb") as fh:
        response = stack.post("/api/retranslate/segment", files={"file": ("bad.wav", fh)},
                              data={"segment_id": "s", "start_time": 5, "end_time": 2})
    assert response.status_code == 400 and "greater than" in response.json()["message"]
    assert sorted(p.name for p in (stack.data_dir / "audio").iterdir()) == before


def test_slow_worker_gets_202_then_the_result(stack, finished_job):
    """With no worker on the quick queue, the web tier stops waiting and hands back a job id."""
    stack.workers["asr_quick"].stop()
    try:
        response = stack.post("/api/retranslate/segment-from-full", params={"job_id": finished_job},
                              json={"segment_id": "late", "start_time": 0.2, "end_time": 4.5}, timeout=90)
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        assert stack.get(f"/api/transcribe/status/{job_id}").json()["state"] == "queued"
    finally:
        stack.start_worker("asr_quick", "asr_quick")
    assert stack.wait_job(job_id)["status"] == "completed"
    late = stack.get(f"/api/transcribe/result/{job_id}").json()
    assert late["segment_id"] == "late" and "thank you" in late["text"].lower()
