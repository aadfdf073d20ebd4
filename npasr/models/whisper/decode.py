"""Decoding one 30-second Whisper window: options, initial tokens, filters, result.

Semantics follow openai/whisper decoding.py (DecodingOptions, DecodingTask). One difference of
implementation, not of results: the encoder output and the cross-attention keys/values of a
window are computed once and reused by every temperature of the fallback (openai recomputes them).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from npasr.decoding import whisper_rules as rules
from npasr.decoding.autoregressive import (
    BeamSearchDecoder,
    GreedyDecoder,
    generate,
    rank_by_likelihood,
)
from npasr.models.whisper.model import CrossKV, KVCache, Whisper
from npasr.models.whisper.tokenizer import WhisperTokenizer
from npasr.nn.ref import softmax

CHUNK_LENGTH = 30  # seconds per window


@dataclass(frozen=True)
class DecodingOptions:
    task: str = "transcribe"  # or "translate" (X -> English)
    language: str | None = None  # None: detect (multilingual models) / "en"
    temperature: float = 0.0
    sample_len: int | None = None  # max tokens to sample; default n_text_ctx // 2
    best_of: int | None = None  # independent samples when temperature > 0
    beam_size: int | None = None  # beam search when temperature == 0
    patience: float | None = None  # beam search: stop after round(beam_size * patience) finished
    length_penalty: float | None = None  # None: rank by logprob / length
    prompt: str | list[int] | None = None  # previous text, fed after <|startofprev|>
    prefix: str | list[int] | None = None  # forced start of the current window's text
    suppress_tokens: str | list[int] | None = "-1"  # "-1": the non-speech symbol set
    suppress_blank: bool = True
    without_timestamps: bool = False
    max_initial_timestamp: float | None = 1.0
    seed: int = 0  # sampling RNG seed (temperature > 0)

    def replace(self, **kw: object) -> DecodingOptions:
        return replace(self, **kw)  # type: ignore[arg-type]


@dataclass
class DecodingResult:
    language: str | None
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    avg_logprob: float = float("nan")
    no_speech_prob: float = float("nan")
    temperature: float = float("nan")
    compression_ratio: float = float("nan")


class WhisperInference:
    """The decoder's side of the autoregressive loop: feeds only the new tokens after the first
    call, keeps the KV cache, and records <|nospeech|> probability at the first step."""

    def __init__(
        self, model: Whisper, cross: CrossKV, n_rows: int, sot_index: int, no_speech: int
    ) -> None:
        self.model, self.cross, self.n_rows = model, cross, n_rows
        self.sot_index, self.no_speech_id = sot_index, no_speech
        self.cache: KVCache | None = None
        self.slots = np.arange(n_rows)  # decoding row i lives in cache row slots[i]
        self.no_speech_prob = float("nan")

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        dec = self.model.decoder
        if self.cache is None:  # identical prompts in every row: run one and copy its cache
            self.cache = KVCache.empty(self.model.config, 1)
            h = dec(tokens[:1], self.cross, self.cache)  # (1, L, D)
            probs = softmax(dec.logits(h[0, self.sot_index]).astype(np.float32))
            self.no_speech_prob = float(probs[self.no_speech_id])
            if self.n_rows > 1:  # the prompt's keys stay one copy that every row reads
                self.cache = self.cache.branch(self.n_rows)
            return np.repeat(dec.logits(h[:, -1]), self.n_rows, axis=0)
        new = np.empty((self.n_rows, 1), tokens.dtype)
        new[self.slots] = tokens[:, -1:]  # in cache-row order
        return dec.logits(dec(new, self.cross, self.cache)[:, -1])[self.slots]

    def reorder(self, rows: np.ndarray) -> None:
        assert self.cache is not None
        self.slots = self.cache.follow(self.slots, rows)


def detect_language(
    model: Whisper, tokenizer: WhisperTokenizer, cross: CrossKV
) -> dict[str, float]:
    """Probability of each language token right after <|startoftranscript|>."""
    cache = KVCache.empty(model.config, 1)
    h = model.decoder(np.array([[tokenizer.sot]]), cross, cache)
    logits = model.decoder.logits(h[0, 0])
    codes = list(tokenizer.language_tokens)
    ids = np.array([tokenizer.language_tokens[c] for c in codes])
    p = softmax(logits[ids].astype(np.float64))
    return dict(zip(codes, p.tolist(), strict=True))


def _suppress_ids(tokenizer: WhisperTokenizer, spec: str | list[int] | None) -> list[int]:
    ids = [int(t) for t in spec.split(",")] if isinstance(spec, str) else list(spec or [])
    if -1 in ids:
        ids = [t for t in ids if t >= 0] + list(tokenizer.non_speech_tokens)
    elif not ids:
        return []
    ids += [
        tokenizer.transcribe,
        tokenizer.translate,
        tokenizer.sot,
        tokenizer.sot_prev,
        tokenizer.sot_lm,
        tokenizer.no_speech,
    ]
    return sorted(set(ids))


def initial_tokens(
    tokenizer: WhisperTokenizer, opts: DecodingOptions, n_ctx: int, sample_len: int
) -> list[int]:
    tokens = list(
        tokenizer.sot_sequence_including_notimestamps
        if opts.without_timestamps
        else tokenizer.sot_sequence
    )
    if opts.prefix:
        pre = (
            tokenizer.encode(" " + opts.prefix.strip())
            if isinstance(opts.prefix, str)
            else opts.prefix
        )
        tokens += pre[-(n_ctx // 2 - sample_len) :]
    if opts.prompt:
        prm = (
            tokenizer.encode(" " + opts.prompt.strip())
            if isinstance(opts.prompt, str)
            else opts.prompt
        )
        tokens = [tokenizer.sot_prev, *prm[-(n_ctx // 2 - 1) :], *tokens]
    return tokens


def decode_window(
    model: Whisper, tokenizer: WhisperTokenizer, cross: CrossKV, opts: DecodingOptions
) -> DecodingResult:
    """Decode one window whose cross-attention K/V are `cross`, with `tokenizer` already set to
    the window's language and task."""
    cfg = model.config
    n_ctx = cfg.n_text_ctx
    sample_len = opts.sample_len or n_ctx // 2
    if opts.beam_size is not None and opts.best_of is not None:
        raise ValueError("beam_size and best_of can't be given together")
    if opts.temperature == 0 and opts.best_of is not None:
        raise ValueError("best_of with greedy sampling (temperature 0) is not compatible")
    if opts.patience is not None and opts.beam_size is None:
        raise ValueError("patience requires beam_size to be given")
    n_group = opts.beam_size or opts.best_of or 1
    init = initial_tokens(tokenizer, opts, n_ctx, sample_len)
    sample_begin = len(init)
    filters: list = []
    if opts.suppress_blank:
        filters.append(rules.SuppressBlank([*tokenizer.encode(" "), tokenizer.eot], sample_begin))
    if opts.suppress_tokens:
        filters.append(rules.SuppressTokens(_suppress_ids(tokenizer, opts.suppress_tokens)))
    if not opts.without_timestamps:
        precision = CHUNK_LENGTH / cfg.n_audio_ctx  # 0.02 s per timestamp step
        max_idx = (
            None
            if opts.max_initial_timestamp is None
            else round(opts.max_initial_timestamp / precision)
        )
        filters.append(
            rules.ApplyTimestampRules(
                tokenizer.eot,
                tokenizer.no_timestamps,
                tokenizer.timestamp_begin,
                sample_begin,
                max_idx,
            )
        )
    if opts.beam_size is not None:
        decoder: GreedyDecoder | BeamSearchDecoder = BeamSearchDecoder(
            opts.beam_size, tokenizer.eot, opts.patience
        )
    else:
        decoder = GreedyDecoder(opts.temperature, tokenizer.eot, np.random.default_rng(opts.seed))
    inference = WhisperInference(
        model, cross, n_group, init.index(tokenizer.sot), tokenizer.no_speech
    )
    tokens = np.tile(np.asarray(init, np.int64), (n_group, 1))
    tokens, sum_logprobs = generate(inference, tokens, decoder, filters, sample_len, n_ctx)
    cands, cand_logprobs = decoder.finalize(
        tokens.reshape(1, n_group, -1), sum_logprobs.reshape(1, n_group)
    )
    texts = [seq[sample_begin : seq.index(tokenizer.eot, sample_begin)] for seq in cands[0]]
    best = rank_by_likelihood(texts, cand_logprobs[0], opts.length_penalty)
    out = texts[best]
    text = tokenizer.decode(out).strip()
    return DecodingResult(
        language=tokenizer.language,
        tokens=out,
        text=text,
        avg_logprob=cand_logprobs[0][best] / (len(out) + 1),
        no_speech_prob=inference.no_speech_prob,
        temperature=opts.temperature,
        compression_ratio=rules.compression_ratio(text),
    )
