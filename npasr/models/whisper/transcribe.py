"""Whisper's long-form loop: 30-second windows, seek by the last timestamp, temperature
fallback, no-speech skipping, and conditioning on previous text.

Semantics follow openai/whisper transcribe.py (without word timestamps and clip_timestamps).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from npasr.audio.features import log_mel_whisper
from npasr.audio.io import SAMPLE_RATE, pad_or_trim
from npasr.models.whisper.decode import (
    DecodingOptions,
    DecodingResult,
    decode_window,
    detect_language,
)
from npasr.models.whisper.model import CrossKV, Whisper
from npasr.models.whisper.tokenizer import WhisperTokenizer
from npasr.threads import single_threaded
from npasr.types import Segment, TranscriptionResult

HOP_LENGTH = 160
N_SAMPLES = 30 * SAMPLE_RATE  # 480000 samples per window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames per window


def _decode_with_fallback(
    model: Whisper,
    tokenizer: WhisperTokenizer,
    mel_window: np.ndarray,
    base: DecodingOptions,
    temperatures: Sequence[float],
    compression_ratio_threshold: float | None,
    logprob_threshold: float | None,
    no_speech_threshold: float | None,
    encoded: np.ndarray | None = None,
) -> DecodingResult:
    feats = model.encoder(mel_window) if encoded is None else encoded
    cross = model.decoder.cross_kv(feats)
    with single_threaded():
        return _fallback_loop(
            model,
            tokenizer,
            cross,
            base,
            temperatures,
            compression_ratio_threshold,
            logprob_threshold,
            no_speech_threshold,
        )


def _fallback_loop(
    model: Whisper,
    tokenizer: WhisperTokenizer,
    cross: CrossKV,
    base: DecodingOptions,
    temperatures: Sequence[float],
    compression_ratio_threshold: float | None,
    logprob_threshold: float | None,
    no_speech_threshold: float | None,
) -> DecodingResult:
    result: DecodingResult | None = None
    for t in temperatures:
        if t > 0:  # sampling: beam search options do not apply
            opts = base.replace(temperature=t, beam_size=None, patience=None)
        else:  # greedy or beam: best_of does not apply
            opts = base.replace(temperature=t, best_of=None)
        result = decode_window(model, tokenizer, cross, opts)
        needs_fallback = False
        if (
            compression_ratio_threshold is not None
            and result.compression_ratio > compression_ratio_threshold
        ):
            needs_fallback = True  # too repetitive
        if logprob_threshold is not None and result.avg_logprob < logprob_threshold:
            needs_fallback = True  # too unlikely
        if (
            no_speech_threshold is not None
            and result.no_speech_prob > no_speech_threshold
            and logprob_threshold is not None
            and result.avg_logprob < logprob_threshold
        ):
            needs_fallback = False  # silence: keep it, the caller skips the window
        if not needs_fallback:
            break
    assert result is not None
    return result


def transcribe(
    model: Whisper,
    tokenizer: WhisperTokenizer,
    audio: np.ndarray,
    *,
    language: str | None = None,
    task: str = "transcribe",
    temperature: float | Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
    compression_ratio_threshold: float | None = 2.4,
    logprob_threshold: float | None = -1.0,
    no_speech_threshold: float | None = 0.6,
    condition_on_previous_text: bool = True,
    initial_prompt: str | None = None,
    beam_size: int | None = None,
    best_of: int | None = None,
    patience: float | None = None,
    length_penalty: float | None = None,
    suppress_tokens: str | list[int] | None = "-1",
    suppress_blank: bool = True,
    without_timestamps: bool = False,
    max_initial_timestamp: float | None = 1.0,
    progress_callback: Callable[[float, float], None] | None = None,
    segment_callback: Callable[[Segment], None] | None = None,
) -> TranscriptionResult:
    """Transcribe 16 kHz mono float32 audio of any length.

    `segment_callback(segment)` is called with each segment as soon as its window is decoded.
    """
    cfg = model.config
    if task not in ("transcribe", "translate"):
        raise ValueError(f"task must be 'transcribe' or 'translate', not {task!r}")
    mel = log_mel_whisper(audio, cfg.n_mels, padding=N_SAMPLES)  # (n_mels, frames + 3000)
    content_frames = mel.shape[-1] - N_FRAMES
    total_seconds = content_frames * HOP_LENGTH / SAMPLE_RATE
    first_encoded = None
    if not cfg.is_multilingual:
        if language not in (None, "en"):
            raise ValueError(f"this model is English-only; language {language!r} is not available")
        language = "en"
        if task == "translate":
            raise ValueError("this model is English-only; it cannot translate")
    elif language is None:
        first = pad_or_trim(mel, N_FRAMES)
        first_encoded = model.encoder(first)
        probs = detect_language(model, tokenizer, model.decoder.cross_kv(first_encoded))
        language = max(probs, key=probs.__getitem__)
        if content_frames < N_FRAMES:
            first_encoded = None  # the first window is zero-padded differently: re-encode it
    tok = tokenizer.with_options(language, task)
    temps = (temperature,) if isinstance(temperature, int | float) else tuple(temperature)
    base = DecodingOptions(
        task=task,
        language=language,
        beam_size=beam_size,
        best_of=best_of,
        patience=patience,
        length_penalty=length_penalty,
        suppress_tokens=suppress_tokens,
        suppress_blank=suppress_blank,
        without_timestamps=without_timestamps,
        max_initial_timestamp=max_initial_timestamp,
    )

    input_stride = N_FRAMES // cfg.n_audio_ctx  # 2 mel frames per encoder position
    time_precision = input_stride * HOP_LENGTH / SAMPLE_RATE  # 0.02 s per timestamp step
    all_tokens: list[int] = []
    segments: list[Segment] = []
    prompt_reset_since = 0
    prompt_tokens: list[int] = []
    if initial_prompt is not None:
        prompt_tokens = tok.encode(" " + initial_prompt.strip())
        all_tokens.extend(prompt_tokens)

    seek = 0
    while seek < content_frames:
        time_offset = seek * HOP_LENGTH / SAMPLE_RATE
        segment_size = min(N_FRAMES, content_frames - seek)
        window = pad_or_trim(mel[:, seek : seek + segment_size], N_FRAMES)
        opts = base.replace(prompt=all_tokens[prompt_reset_since:])
        encoded = first_encoded if seek == 0 else None
        result = _decode_with_fallback(
            model,
            tok,
            window,
            opts,
            temps,
            compression_ratio_threshold,
            logprob_threshold,
            no_speech_threshold,
            encoded,
        )
        if (
            no_speech_threshold is not None
            and result.no_speech_prob > no_speech_threshold
            and not (logprob_threshold is not None and result.avg_logprob > logprob_threshold)
        ):
            seek += segment_size  # silence: skip the window
            _report(progress_callback, seek, content_frames, total_seconds)
            continue
        new, seek = _split_segments(
            tok, result, seek, segment_size, time_offset, time_precision, input_stride
        )
        for s in new:
            if s.start == s.end or not s.text.strip():  # instantaneous or empty
                s.text, s.tokens = "", []
            s.id = len(segments)
            segments.append(s)
            all_tokens.extend(s.tokens)
            if segment_callback is not None:
                segment_callback(s)
        if not condition_on_previous_text or result.temperature > 0.5:
            prompt_reset_since = len(all_tokens)
        _report(progress_callback, seek, content_frames, total_seconds)
    text = tok.decode(all_tokens[len(prompt_tokens) :])
    return TranscriptionResult(text=text, segments=segments, language=language)


def _report(
    cb: Callable[[float, float], None] | None, seek: int, frames: int, total: float
) -> None:
    if cb is not None:
        cb(min(seek, frames) * HOP_LENGTH / SAMPLE_RATE, total)


def _split_segments(
    tok: WhisperTokenizer,
    result: DecodingResult,
    seek: int,
    segment_size: int,
    time_offset: float,
    time_precision: float,
    input_stride: int,
) -> tuple[list[Segment], int]:
    """Cut a window's tokens at consecutive timestamp pairs; returns segments and the next seek."""
    tokens = result.tokens
    ts0 = tok.timestamp_begin
    is_ts = [t >= ts0 for t in tokens]
    single_ending = is_ts[-2:] == [False, True]
    cuts = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]

    def seg(start: float, end: float, toks: list[int]) -> Segment:
        return Segment(
            id=0,
            seek=seek,
            start=start,
            end=end,
            text=tok.decode([t for t in toks if t < tok.eot]),
            tokens=list(toks),
            temperature=result.temperature,
            avg_logprob=result.avg_logprob,
            compression_ratio=result.compression_ratio,
            no_speech_prob=result.no_speech_prob,
        )

    out: list[Segment] = []
    if cuts:
        if single_ending:
            cuts.append(len(tokens))
        last = 0
        for cut in cuts:
            piece = tokens[last:cut]
            out.append(
                seg(
                    time_offset + (piece[0] - ts0) * time_precision,
                    time_offset + (piece[-1] - ts0) * time_precision,
                    piece,
                )
            )
            last = cut
        if single_ending:
            seek += segment_size
        else:  # continue from the last closing timestamp: the rest may be a cut-off word
            seek += (tokens[last - 1] - ts0) * input_stride
    else:
        duration = segment_size * HOP_LENGTH / SAMPLE_RATE
        stamps = [t for t in tokens if t >= ts0]
        if stamps and stamps[-1] != ts0:
            duration = (stamps[-1] - ts0) * time_precision
        out.append(seg(time_offset, time_offset + duration, tokens))
        seek += segment_size
    return out, seek
