"""Speech recognition: picks the engine, then checks and shapes every segment it yields (one generator)."""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import numpy as np

from parley.config import Settings
from workers import asr_faster_whisper, asr_whisperx
from workers.recognition import Recognition, RecognisedSegment, SpeechEngine, Word
from workers.turns import SENTENCE_END

log = logging.getLogger(__name__)

#: In order of preference; whisperx declines (usable() False, or recognise() None) where it cannot run.
ENGINES: list[SpeechEngine] = [asr_whisperx.ENGINE, asr_faster_whisper.ENGINE]
load_model = asr_faster_whisper.load_model  # workers warm the default model up through this name


# Longer engine segments are cut (see split_long): a subtitle cue or transcript line should fit a glance.
MAX_SEGMENT_S = 12.0

# Hallucination guard (see `hallucination`). People speak at most ~6-7 words a second; Whisper's word
# timings squeeze a little, so only a rate far above that, over several words, marks invented text.
MAX_WORDS_PER_S = 12.0
MIN_WORDS_FOR_RATE = 4
# A segment's ends are placed from 20 ms attention frames and are often 0.1 s off each: a short real
# segment can come out squeezed ("So, what kind of thing?", 5 words in 0.38 s, decoded at temperature
# 0.2). The rate is taken over the duration plus this much, which a text invented in 1 s at 24 words
# a second (or 27 words in 0.24 s) still far exceeds.
SEGMENT_TIMING_SLACK_S = 0.2
# Whisper's own silence rule (openai-whisper and faster-whisper use these values for no_speech_threshold
# and log_prob_threshold): a likely-silent window whose text the decoder was unsure of.
NO_SPEECH_PROB = 0.6
SILENCE_LOGPROB = -1.0
# Whisper's compression_ratio_threshold: text that gzips this well is a repetition loop.
MAX_COMPRESSION_RATIO = 2.4

def transcribe(settings: Settings, audio: np.ndarray, *, model_name: str, language: str | None = None,
               offset: float = 0.0, word_timestamps: bool = True,
               vad_filter: bool = True) -> Recognition:
    """Recognise `audio` (16 kHz mono float32); segment times are shifted by `offset` seconds.

    The engine is whisperx where it is usable and word timings are wanted (its alignment gives them), else
    faster-whisper. Every engine segment then passes the same checks here: text nobody said is dropped
    (`hallucination`), and a long segment is cut at sentence ends and pauses (`split_long`).

    Segments come from a generator, one at a time as the engine decodes them, so callers can commit
    and publish each one before the next exists.

    No text from before `audio` is passed as a prompt: measured on 320 s of speech (tiny.en, int8), the
    previous chunk's text as initial_prompt raised word errors (2.9% -> 3.6%) and, with CTranslate2's MKL
    backend (its default on Intel CPUs), made decoding 35% slower; each chunk is cut at a pause anyway.
    """
    result = None
    for engine in ENGINES:
        if engine.usable(settings):
            result = engine.recognise(settings, audio, model_name=model_name, language=language,
                                      word_timestamps=word_timestamps, vad_filter=vad_filter)
            if result is not None:
                break

    def produce() -> Iterator[RecognisedSegment]:
        for seg in result.segments:
            text = seg.text.strip()
            if not text:
                continue
            reason = hallucination(seg)
            if reason:
                log.info("dropped a segment at %.2f-%.2f s (%s): %r", seg.start + offset, seg.end + offset,
                         reason, text[:80])
                continue
            words = [Word(round(w.start + offset, 3), round(w.end + offset, 3), w.word, round(w.probability, 4))
                     for w in seg.words]
            yield from split_long(RecognisedSegment(
                start=round(seg.start + offset, 3), end=round(seg.end + offset, 3), text=text, words=words,
                avg_logprob=seg.avg_logprob, no_speech_prob=seg.no_speech_prob,
            ))

    return Recognition(language=result.language, language_probability=result.language_probability,
                       segments=produce())


def hallucination(seg) -> str | None:
    """Why this engine segment is text nobody said, from the engine's own signals; None when it looks like speech.

    Whisper invents text in silence and at a clip's end (a 0.24 s segment of 27 words at the end of a
    real 30 s recording). Each rule is one the engine's own decoder uses or a physical limit of speech,
    and each is shown by tests/test_hallucination.py to keep every word of real recordings.
    """
    duration = max(seg.end - seg.start, 0.0)
    n_words = len(seg.words) if seg.words else len(seg.text.split())
    if n_words >= MIN_WORDS_FOR_RATE and n_words / (duration + SEGMENT_TIMING_SLACK_S) > MAX_WORDS_PER_S:
        return f"{n_words} words in {duration:.2f} s"
    if seg.no_speech_prob > NO_SPEECH_PROB and seg.avg_logprob < SILENCE_LOGPROB:
        return f"no speech (p={seg.no_speech_prob:.2f}, avg logprob {seg.avg_logprob:.2f})"
    if seg.compression_ratio > MAX_COMPRESSION_RATIO:
        return f"repetitive text (compression ratio {seg.compression_ratio:.1f})"
    return None


def split_long(segment: RecognisedSegment, *, max_s: float = MAX_SEGMENT_S) -> list[RecognisedSegment]:
    """A segment longer than `max_s` as its sentences; a sentence still longer is cut at its widest pauses.

    The batched pipeline returns one segment per stretch of speech, up to 30 s: too long for a subtitle
    cue or a line to read. Asking it for timestamps instead shortens them but doubled the word errors
    (tiny.en on 320 s of speech: 3.5% -> 7.0%), so the cut is made here, from the word timings.
    """
    if segment.end - segment.start <= max_s or len(segment.words) < 2:
        return [segment]
    sentences, current = [], []
    for word in segment.words:
        current.append(word)
        if word.word.strip().endswith(SENTENCE_END):
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    groups = [part for sentence in sentences for part in _cut_at_pauses(sentence, max_s)]
    return [dataclasses.replace(
        segment,
        start=segment.start if n == 0 else words[0].start,
        end=segment.end if n == len(groups) - 1 else words[-1].end,
        text="".join(w.word for w in words).strip(),
        words=words,
    ) for n, words in enumerate(groups)]


def _cut_at_pauses(words: list[Word], max_s: float) -> list[list[Word]]:
    if words[-1].end - words[0].start <= max_s or len(words) < 2:
        return [words]
    cut = max(range(1, len(words)), key=lambda i: words[i].start - words[i - 1].end)
    return _cut_at_pauses(words[:cut], max_s) + _cut_at_pauses(words[cut:], max_s)
