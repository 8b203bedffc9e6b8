"""Generate the synthetic test clips (espeak-ng dialogues) and their ground-truth JSON files.

Run from anywhere:  .venv/bin/python tests/audio/make_audio.py

Needs the Debian packages espeak-ng, sox and ffmpeg (libmp3lame); no network. The output is
deterministic: running it again rewrites byte-identical files, so the committed clips only change
when the dialogue, voices or encoding settings below change.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

SAMPLE_RATE = 16000
MP3_BITRATE = "32k"
# Slightly slower than espeak's default 175 wpm: Whisper tiny.en makes fewer mistakes on it.
SPEED_WPM = 160
LEAD_SILENCE_S = 0.4
TAIL_SILENCE_S = 0.5
TURN_PAUSE_S = 0.7

# (espeak voice, pitch 0-99). Chosen by measuring Resemblyzer embeddings of espeak voices:
# these three are the most distinguishable combination that Whisper still transcribes well
# (mean cross-voice cosine 0.70-0.83 versus 0.90+ within one voice).
VOICE_A = ("en-us", 35)  # low male-ish American voice
VOICE_B = ("en-gb+f4", 75)  # high female British variant
VOICE_C = ("en-us+f2", 60)  # second female variant, far from both others for the encoder

TWO_SPEAKERS = [
    ("A", "Hello, and thank you for coming in. How have you been this week?"),
    ("B", "I have been very tired. Work is busy, and I do not sleep well."),
    ("A", "I am sorry to hear that. What time do you usually go to bed?"),
    ("B", "Most nights I go to bed late, because I keep looking at my phone."),
    ("A", "That happens to a lot of people. Could you leave the phone in the kitchen?"),
    ("B", "Yes, I could try that. It might help me relax before I sleep."),
    ("A", "Good. Now tell me a little more about your job."),
    ("B", "We have a big project this month, and our team is very small."),
    ("A", "That sounds hard. We can make a simple plan for next week together."),
    ("B", "Thank you. I would like that very much."),
]

THREE_SPEAKERS = [
    ("A", "Good morning and welcome to the show. Today we are talking about city parks."),
    ("B", "Thank you for having me. Parks are one of my favorite things about this city."),
    ("C", "Thanks for the invitation. I think parks help people feel happy and healthy."),
    ("A", "What do you think is the biggest problem with our parks right now?"),
    ("B", "Many of them are too small, and some of them are not very clean."),
    ("C", "I agree. We also need more trees and more places to sit in the shade."),
    ("A", "How could people in the city help with that?"),
    ("C", "They could join a local group and spend a weekend every month planting trees."),
    ("B", "Families could also pick up trash when they go for a walk in the park."),
    ("A", "Those are great ideas. Thank you both for coming in today."),
    ("B", "It was a pleasure to be here. Thank you very much."),
    ("C", "Thank you, and have a nice day, everyone."),
]

LONG_TWO_SPEAKERS = [
    ("A", "Good afternoon. Please sit down and make yourself comfortable."),
    ("B", "Good afternoon. Thank you for meeting with me today."),
    ("A", "Let us start with an easy question. Can you tell me about yourself?"),
    ("B", "Sure. I grew up in a small town, and I moved to the city to study computer science."),
    ("A", "What did you enjoy most about your studies?"),
    ("B", "I liked working in teams. We built a small app that helped students find study rooms."),
    ("A", "That sounds useful. How many people used it?"),
    ("B", "Many students used it every week, most of all during the exam season."),
    ("A", "Very nice. What are you doing in your current job?"),
    ("B", "I work at a shop that sells bikes online. I take care of the website and the orders."),
    ("A", "Why do you want to leave that job?"),
    ("B", "The team is great, but I want to learn more and work on bigger projects."),
    ("A", "What do you know about our company?"),
    ("B", "You make software for hospitals, and your tools help doctors save time."),
    ("A", "That is right. Tell me about a time when something went wrong at work."),
    ("B", "Last year our website stopped working on a busy Friday night."),
    ("A", "What did you do?"),
    ("B", "I called my manager, found the problem, and fixed it before midnight."),
    ("A", "What did you learn from that night?"),
    ("B", "I learned to test every change and to write down what we do."),
    ("A", "Good. How do you deal with stress?"),
    ("B", "I go for a run in the morning, and I try to plan my day in small steps."),
    ("A", "Do you prefer to work alone or with other people?"),
    ("B", "I like both, but I think the best ideas come when people talk to each other."),
    ("A", "Where do you see yourself a few years from now?"),
    ("B", "I hope to lead a small team and help new people grow."),
    ("A", "Thank you. Do you have any questions for me?"),
    ("B", "Yes. What does a normal day look like for your team?"),
    ("A", "We meet every morning for a short talk, and then everyone works on their own tasks."),
    ("B", "That sounds good. When will I hear back from you?"),
    ("A", "We will call you by the end of next week."),
    ("B", "Great. Thank you again for your time."),
    ("A", "Thank you for coming. Have a good day."),
    ("B", "You too. Oh, one more thing. Should I bring anything to the next meeting?"),
    ("A", "Yes, please bring a short list of the projects you are most proud of."),
    ("B", "I will do that. Is it fine to show some of my own code as well?"),
    ("A", "Of course. We like to see real work, even if it is small."),
    ("B", "Perfect. Then I will bring the study room app and a few notes about it."),
    ("A", "That sounds great. Our team lead will join us next time, so you can ask her anything."),
    ("B", "Wonderful. I am looking forward to meeting her."),
    ("A", "Good. Let me walk you back to the front door."),
]

# Pauses cycle through these in the long clip so turn gaps are not all identical
# (chunking code should not be tuned to one gap length by accident).
LONG_PAUSES_S = [0.7, 0.9, 0.6, 1.1, 0.8]

CLIPS = {
    "two_speakers": {"voices": {"A": VOICE_A, "B": VOICE_B}, "turns": TWO_SPEAKERS},
    "three_speakers": {"voices": {"A": VOICE_A, "B": VOICE_B, "C": VOICE_C}, "turns": THREE_SPEAKERS},
    "long_two_speakers": {
        "voices": {"A": VOICE_A, "B": VOICE_B},
        "turns": LONG_TWO_SPEAKERS,
        "pauses": LONG_PAUSES_S,
    },
}
SILENCE_S = 5.0


def run(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def num_samples(wav: Path) -> int:
    # Sample counts, not `soxi -D`, so start/end times add up without rounding drift.
    return int(run(["soxi", "-s", str(wav)]).strip())


def make_silence(path: Path, seconds: float) -> None:
    # Format options before `-n` so the null input is already 16 kHz (otherwise sox makes it at
    # 48 kHz, resamples and dithers, and the "silence" is random +-1 LSB noise); -D: no dither.
    run(["sox", "-R", "-D", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-n", str(path),
         "trim", "0", f"{seconds:.3f}"])


def synth(path: Path, voice: tuple[str, int], text: str, tmp: Path) -> None:
    raw = tmp / "raw.wav"
    name, pitch = voice
    run(["espeak-ng", "-v", name, "-p", str(pitch), "-s", str(SPEED_WPM), "-w", str(raw), text])
    # Resample to 16 kHz mono and cut espeak's own leading/trailing silence so the turn
    # boundaries in the JSON are where speech starts and stops.
    # -R: seed sox's dither generator the same way every run (byte-identical output).
    run(["sox", "-R", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(path),
         "silence", "1", "0.005", "0.1%", "reverse", "silence", "1", "0.005", "0.1%", "reverse"])


def encode_mp3(wav: Path, mp3: Path) -> None:
    # bitexact + no metadata: no encoder version or date in the file, so reruns are identical.
    run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(wav),
         "-ac", "1", "-ar", str(SAMPLE_RATE), "-c:a", "libmp3lame", "-b:a", MP3_BITRATE,
         "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:a", "+bitexact", str(mp3)])


def build_clip(name: str, spec: dict, tmp: Path) -> dict:
    pauses = spec.get("pauses", [TURN_PAUSE_S])
    pieces: list[Path] = []
    turns = []

    lead = tmp / "lead.wav"
    make_silence(lead, LEAD_SILENCE_S)
    pieces.append(lead)
    cursor = num_samples(lead)

    for i, (speaker, text) in enumerate(spec["turns"]):
        if i > 0:
            gap = tmp / f"gap{i:03d}.wav"
            make_silence(gap, pauses[(i - 1) % len(pauses)])
            pieces.append(gap)
            cursor += num_samples(gap)
        piece = tmp / f"turn{i:03d}.wav"
        synth(piece, spec["voices"][speaker], text, tmp)
        pieces.append(piece)
        n = num_samples(piece)
        turns.append({"speaker": speaker, "text": text,
                      "start": round(cursor / SAMPLE_RATE, 3),
                      "end": round((cursor + n) / SAMPLE_RATE, 3)})
        cursor += n

    tail = tmp / "tail.wav"
    make_silence(tail, TAIL_SILENCE_S)
    pieces.append(tail)

    full = tmp / f"{name}.wav"
    run(["sox", "-R", *map(str, pieces), str(full)])
    encode_mp3(full, HERE / f"{name}.mp3")
    return {
        "audio": f"{name}.mp3",
        "duration": round(num_samples(full) / SAMPLE_RATE, 3),
        "voices": {k: f"{v}, pitch {p}, {SPEED_WPM} wpm" for k, (v, p) in spec["voices"].items()},
        "turns": turns,
    }


def write_json(name: str, data: dict) -> None:
    (HERE / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def main() -> int:
    missing = [t for t in ("espeak-ng", "sox", "soxi", "ffmpeg") if shutil.which(t) is None]
    if missing:
        print(f"missing tools: {', '.join(missing)} (apt-get install espeak-ng sox ffmpeg)",
              file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="parley-audio-") as tmpdir:
        tmp = Path(tmpdir)
        for name, spec in CLIPS.items():
            data = build_clip(name, spec, tmp)
            write_json(name, data)
            print(f"{name}.mp3: {data['duration']:.1f} s, {len(data['turns'])} turns")

        silent = tmp / "silence.wav"
        make_silence(silent, SILENCE_S)
        encode_mp3(silent, HERE / "silence.mp3")
        write_json("silence", {"audio": "silence.mp3", "duration": SILENCE_S, "voices": {},
                               "turns": []})
        print(f"silence.mp3: {SILENCE_S:.1f} s, 0 turns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
