"""Whisper's logit rules (openai/whisper decoding.py SuppressBlank, SuppressTokens,
ApplyTimestampRules) and the compression-ratio test used by temperature fallback."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from npasr.nn.ref import log_softmax


def compression_ratio(text: str) -> float:
    """len(utf8) / len(zlib(utf8)): repetitive (looping) output compresses well, ratio > 2.4."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))


class SuppressBlank:
    """At the first sampled position, forbid a bare space and end-of-text."""

    def __init__(self, blank_ids: Sequence[int], sample_begin: int) -> None:
        self.ids = list(blank_ids)
        self.sample_begin = sample_begin

    def apply(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        if tokens.shape[1] == self.sample_begin:
            logits[:, self.ids] = -np.inf


class SuppressTokens:
    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = list(ids)

    def apply(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        logits[:, self.ids] = -np.inf


class ApplyTimestampRules:
    """Timestamps come in pairs (start, end) except right before end-of-text, never decrease,
    the first token is a timestamp <= max_initial_timestamp, and a timestamp is forced when the
    total timestamp probability beats every single text token."""

    def __init__(
        self,
        eot: int,
        no_timestamps: int,
        timestamp_begin: int,
        sample_begin: int,
        max_initial_timestamp_index: int | None,
    ) -> None:
        self.eot, self.no_timestamps, self.ts0 = eot, no_timestamps, timestamp_begin
        self.sample_begin = sample_begin
        self.max_initial_index = max_initial_timestamp_index

    def apply(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        ts0 = self.ts0
        logits[:, self.no_timestamps] = -np.inf
        for k in range(tokens.shape[0]):
            seq = tokens[k, self.sample_begin :]
            last_ts = len(seq) >= 1 and seq[-1] >= ts0
            penult_ts = len(seq) < 2 or seq[-2] >= ts0
            if last_ts:
                if penult_ts:  # a pair just closed: text (or eot) must follow
                    logits[k, ts0:] = -np.inf
                else:  # an opening timestamp: its closing timestamp or eot must follow
                    logits[k, : self.eot] = -np.inf
            stamps = seq[seq >= ts0]
            if stamps.size:
                # never go back in time; a closing timestamp may equal its opening one only
                # when it closes the pair (then the segment gets nonzero length next)
                last = stamps[-1] if (last_ts and not penult_ts) else stamps[-1] + 1
                logits[k, ts0:last] = -np.inf
        if tokens.shape[1] == self.sample_begin:
            logits[:, :ts0] = -np.inf
            if self.max_initial_index is not None:
                logits[:, ts0 + self.max_initial_index + 1 :] = -np.inf
        logprobs = log_softmax(logits.astype(np.float32))
        for k in range(tokens.shape[0]):
            ts_logprob = _logsumexp(logprobs[k, ts0:])
            if ts_logprob > logprobs[k, :ts0].max():
                logits[k, :ts0] = -np.inf


def _logsumexp(x: np.ndarray) -> float:
    """log(sum(exp(x))) of a 1-D array, shifted by its maximum (as torch.logsumexp, which
    openai-whisper uses here; 10x faster than np.logaddexp.reduce over the 1501 timestamps)."""
    m = x.max()
    if not np.isfinite(m):
        return float(m)  # all -inf (or a +inf / NaN that the shift would turn into NaN)
    return float(m + np.log(np.exp(x - m).sum()))
