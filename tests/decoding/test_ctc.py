"""CTC decoders: greedy rules on hand-made paths, prefix beam search vs brute force."""

from __future__ import annotations

import itertools

import numpy as np

from npasr.decoding import ctc


def _lp(path: list[int], v: int) -> np.ndarray:
    lp = np.full((len(path), v), -10.0, np.float32)
    lp[np.arange(len(path)), path] = 0.0
    return lp


def test_greedy_collapses_repeats_and_drops_blanks() -> None:
    b = 3  # blank last, as in GigaAM
    r = ctc.greedy(_lp([0, 0, b, 0, 1, 1, b, b, 2], 4), blank=b)
    assert r.tokens == [0, 0, 1, 2]
    assert r.frames == [0, 3, 4, 8]
    assert ctc.greedy(_lp([b, b], 4), blank=b).tokens == []
    assert ctc.greedy(np.zeros((0, 4), np.float32), blank=b).tokens == []


def _collapse(path: tuple[int, ...], blank: int) -> tuple[int, ...]:
    out = [c for i, c in enumerate(path) if c != blank and (i == 0 or c != path[i - 1])]
    return tuple(out)


def test_prefix_beam_search_finds_the_most_probable_labelling() -> None:
    rng = np.random.default_rng(0)
    t, v, blank = 5, 3, 2
    for _ in range(5):
        logits = rng.normal(size=(t, v)).astype(np.float32) * 2
        lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        totals: dict[tuple[int, ...], float] = {}
        for path in itertools.product(range(v), repeat=t):  # every alignment
            key = _collapse(path, blank)
            totals[key] = np.logaddexp(totals.get(key, -np.inf), lp[np.arange(t), path].sum())
        best = max(totals, key=totals.__getitem__)
        r = ctc.prefix_beam_search(lp, blank, beam_size=100, top_k=v)
        assert tuple(r.tokens) == best
        assert abs(r.score - totals[best]) < 1e-4
        assert len(r.frames) == len(r.tokens)
