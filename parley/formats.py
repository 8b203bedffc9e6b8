"""Transcript renderings: display times, SRT, WebVTT and plain text with speaker labels."""
from __future__ import annotations

from collections.abc import Iterable, Mapping


def clock(seconds: float, *, sep: str = ".") -> str:
    """00:01:02.345 (sep="," gives the SRT form)."""
    millis = max(0, int(round(seconds * 1000)))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"


def _labelled(segment: Mapping) -> str:
    text = segment["text"].strip()
    speaker = segment.get("speaker")
    return f"{speaker}: {text}" if speaker else text


def to_srt(segments: Iterable[Mapping]) -> str:
    blocks = []
    for number, seg in enumerate(segments, start=1):
        blocks.append(f"{number}\n{clock(seg['start'], sep=',')} --> {clock(seg['end'], sep=',')}\n{_labelled(seg)}\n")
    return "\n".join(blocks)


def to_vtt(segments: Iterable[Mapping]) -> str:
    blocks = ["WEBVTT\n"]
    for seg in segments:
        text = seg["text"].strip()
        speaker = seg.get("speaker")
        # WebVTT's voice tag lets players style or filter by speaker.
        cue = f"<v {speaker}>{text}" if speaker else text
        blocks.append(f"{clock(seg['start'])} --> {clock(seg['end'])}\n{cue}\n")
    return "\n".join(blocks)


def to_txt(segments: Iterable[Mapping]) -> str:
    """One line per speaker turn: consecutive segments of one speaker are joined."""
    lines: list[str] = []
    current = object()
    for seg in segments:
        speaker = seg.get("speaker")
        text = seg["text"].strip()
        if lines and speaker == current:
            lines[-1] += " " + text
        else:
            stamp = f"[{clock(seg['start'])[:8]}]"
            lines.append(f"{stamp} {speaker}: {text}" if speaker else f"{stamp} {text}")
        current = speaker
    return "\n".join(lines) + ("\n" if lines else "")


def to_docx(segments: Iterable[Mapping], *, title: str, details: str = "") -> bytes:
    """A Word document: title, details line, one paragraph per speaker turn with its time."""
    import io

    from docx import Document  # python-docx, imported here: only exports need it

    document = Document()
    document.add_heading(title, level=1)
    if details:
        document.add_paragraph(details).italic = True
    for seg in segments:
        para = document.add_paragraph()
        para.add_run(f"[{clock(seg['start'])[:8]}] ").italic = True
        if seg.get("speaker"):
            para.add_run(f"{seg['speaker']}: ").bold = True
        para.add_run(seg["text"].strip())
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()
