"""Model-agnostic pieces of autoregressive decoding: token choosers, ranking, the step loop.

The loop talks to the model through a two-method protocol (`logits`, `reorder`), so Whisper and
later Qwen3-ASR share it. Semantics follow openai/whisper decoding.py (GreedyDecoder,
BeamSearchDecoder, MaximumLikelihoodRanker, DecodingTask._main_loop).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from npasr.nn import ops
from npasr.nn.ref import log_softmax


class Inference(Protocol):
    def logits(self, tokens: np.ndarray) -> np.ndarray:
        """tokens (B, L), all tokens so far -> logits (B, V) for the next token (float32)."""

    def reorder(self, rows: np.ndarray) -> None:
        """Keep the cached state of rows `rows` (beam search)."""


class LogitFilter(Protocol):
    def apply(self, logits: np.ndarray, tokens: np.ndarray) -> None:
        """Mask logits (B, V) in place given the tokens (B, L) so far."""


class GreedyDecoder:
    """argmax at temperature 0, else one sample from softmax(logits / temperature) per row."""

    def __init__(self, temperature: float, eot: int, rng: np.random.Generator) -> None:
        self.temperature, self.eot, self.rng = temperature, eot, rng

    def update(
        self, tokens: np.ndarray, logits: np.ndarray, sum_logprobs: np.ndarray, inference: Inference
    ) -> tuple[np.ndarray, bool]:
        if self.temperature == 0:
            nxt = logits.argmax(axis=-1)
        else:
            z = logits.astype(np.float64) / self.temperature
            p = np.exp(z - z.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
            nxt = np.array([self.rng.choice(p.shape[-1], p=row) for row in p])
        logprobs = log_softmax(logits.astype(np.float32))
        current = logprobs[np.arange(len(nxt)), nxt]
        done = tokens[:, -1] == self.eot
        sum_logprobs += np.where(done, 0.0, current)
        nxt[done] = self.eot
        tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
        return tokens, bool((tokens[:, -1] == self.eot).all())

    def finalize(
        self, tokens: np.ndarray, sum_logprobs: np.ndarray
    ) -> tuple[list[list[list[int]]], list[list[float]]]:
        """tokens (n_audio, n_group, L) -> candidate lists, each ending with eot."""
        cands = [[[*row.tolist(), self.eot] for row in group] for group in tokens]
        return cands, sum_logprobs.tolist()


class BeamSearchDecoder:
    """Beam search over `beam_size` rows per audio; stops once each audio has
    round(beam_size * patience) finished candidates."""

    def __init__(self, beam_size: int, eot: int, patience: float | None = None) -> None:
        self.beam_size, self.eot = beam_size, eot
        self.patience = 1.0 if patience is None else patience
        self.max_candidates = round(beam_size * self.patience)
        if self.max_candidates <= 0:
            raise ValueError(f"invalid beam size {beam_size} with patience {patience}")
        self.finished: list[dict[tuple[int, ...], float]] | None = None

    def update(
        self, tokens: np.ndarray, logits: np.ndarray, sum_logprobs: np.ndarray, inference: Inference
    ) -> tuple[np.ndarray, bool]:
        n_audio = tokens.shape[0] // self.beam_size
        if self.finished is None:
            self.finished = [{} for _ in range(n_audio)]
        logprobs = log_softmax(logits.astype(np.float32))
        k = self.beam_size + 1
        next_tokens: list[list[int]] = []
        sources: list[int] = []
        new_finished: list[dict[tuple[int, ...], float]] = []
        for i in range(n_audio):
            scores: dict[tuple[int, ...], float] = {}
            src: dict[tuple[int, ...], int] = {}
            for j in range(self.beam_size):
                row = i * self.beam_size + j
                prefix = tuple(tokens[row].tolist())
                top = ops.top_k(logprobs[row], k)
                for tok in top.tolist():
                    seq = (*prefix, tok)
                    scores[seq] = float(sum_logprobs[row] + logprobs[row, tok])
                    src[seq] = row
            saved = 0
            finished: dict[tuple[int, ...], float] = {}
            for seq in sorted(scores, key=scores.__getitem__, reverse=True):
                if seq[-1] == self.eot:
                    finished[seq] = scores[seq]
                else:
                    sum_logprobs[len(next_tokens)] = scores[seq]
                    next_tokens.append(list(seq))
                    sources.append(src[seq])
                    saved += 1
                    if saved == self.beam_size:
                        break
            new_finished.append(finished)
        inference.reorder(np.asarray(sources))
        for prev, new in zip(self.finished, new_finished, strict=True):
            for seq in sorted(new, key=new.__getitem__, reverse=True):
                if len(prev) >= self.max_candidates:
                    break
                prev[seq] = new[seq]
        completed = all(len(f) >= self.max_candidates for f in self.finished)
        return np.asarray(next_tokens, dtype=tokens.dtype), completed

    def finalize(
        self, tokens: np.ndarray, sum_logprobs: np.ndarray
    ) -> tuple[list[list[list[int]]], list[list[float]]]:
        assert self.finished is not None
        for i, fin in enumerate(self.finished):
            if len(fin) < self.beam_size:  # too few finished: take the best unfinished beams
                for j in np.argsort(sum_logprobs[i])[::-1]:
                    fin[(*tokens[i, j].tolist(), self.eot)] = float(sum_logprobs[i, j])
                    if len(fin) >= self.beam_size:
                        break
        cands = [[list(s) for s in fin] for fin in self.finished]
        return cands, [list(fin.values()) for fin in self.finished]


def rank_by_likelihood(
    cands: Sequence[Sequence[int]], sum_logprobs: Sequence[float], length_penalty: float | None
) -> int:
    """Index of the best candidate: sum logprob / length (or the Google NMT length penalty)."""
    scores = []
    for lp, seq in zip(sum_logprobs, cands, strict=True):
        n = len(seq)
        penalty = n if length_penalty is None else ((5 + n) / 6) ** length_penalty
        scores.append(lp / penalty)
    return int(np.argmax(scores))


def generate(
    inference: Inference,
    tokens: np.ndarray,
    decoder: GreedyDecoder | BeamSearchDecoder,
    filters: Sequence[LogitFilter],
    sample_len: int,
    n_ctx: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the step loop from `tokens` (B, L0) -> tokens (B, L) and their sum log-probs (B,)."""
    sum_logprobs = np.zeros(tokens.shape[0], np.float32)  # float32 like openai-whisper
    for _ in range(sample_len):
        logits = inference.logits(tokens)
        for f in filters:
            f.apply(logits, tokens)
        tokens, completed = decoder.update(tokens, logits, sum_logprobs, inference)
        if completed or tokens.shape[-1] > n_ctx:
            break
    return tokens, sum_logprobs
