"""CTC decoders: greedy rules on hand-made paths, prefix beam search vs brute force, and
shallow fusion with a word n-gram LM on log-probs built so that the LM must flip the result."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from npasr.decoding import ctc
from npasr.decoding.lm import LN10, NgramLM, read_arpa


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


# ------------------------------------------------------------------ shallow fusion with a word LM

LM_ARPA = """\\data\\
ngram 1=6
ngram 2=2

\\1-grams:
-99\t<s>\t0
-1.0\t</s>
-0.5\ta\t-0.1
-3.0\tb
-1.0\tax
-2.0\t<unk>

\\2-grams:
-0.2\t<s> a
-0.05\ta a

\\end\\
"""


def _probs(rows: list[dict[int, float]], v: int) -> np.ndarray:
    """Log-probs from {class: prob} rows; the rest of each row's mass spread thin."""
    p = np.full((len(rows), v), 1e-4)
    for t, row in enumerate(rows):
        for c, q in row.items():
            p[t, c] = q
    return np.log(p / p.sum(-1, keepdims=True)).astype(np.float32)


@pytest.fixture()
def word_lm(tmp_path) -> NgramLM:
    (tmp_path / "lm.arpa").write_text(LM_ARPA)
    return read_arpa(tmp_path / "lm.arpa")


def test_lm_flips_a_word_at_the_end_and_at_a_space(word_lm: NgramLM) -> None:
    chars, blank = [" ", "a", "b"], 3
    fuse = ctc.WordLM(word_lm, chars, alpha=1.0, beta=0.0)
    # one word: acoustics say "b" (0.55 vs 0.45); P(a | <s>) = 10^-0.2 >> P(b) = 10^-3
    lp = _probs([{1: 0.45, 2: 0.55}, {blank: 1.0}], 4)
    assert ctc.prefix_beam_search(lp, blank, beam_size=4).tokens == [2]
    r = ctc.prefix_beam_search(lp, blank, beam_size=4, lm=fuse)
    assert r.tokens == [1]
    assert r.score == pytest.approx(
        float(np.logaddexp(lp[0, 1] + lp[1, blank], lp[0, 1] + lp[1, 1]))
    )
    # two words "a ?": the first completes at the space, the bigram P(a | a) decides the second
    lp = _probs(
        [{1: 1.0}, {blank: 1.0}, {0: 1.0}, {blank: 1.0}, {1: 0.45, 2: 0.55}, {blank: 1.0}], 4
    )
    assert ctc.prefix_beam_search(lp, blank, beam_size=4).tokens == [1, 0, 2]
    assert ctc.prefix_beam_search(lp, blank, beam_size=4, lm=fuse).tokens == [1, 0, 1]


def test_lm_words_from_sentencepiece_pieces(word_lm: NgramLM) -> None:
    pieces, blank = ["\u2581a", "\u2581b", "x"], 3
    # "▁a" then "x" (0.45: one word "ax") or "▁b" (0.55: words "a b")
    lp = _probs([{0: 1.0}, {blank: 1.0}, {2: 0.45, 1: 0.55}, {blank: 1.0}], 4)
    assert ctc.prefix_beam_search(lp, blank, beam_size=4).tokens == [0, 1]
    fuse = ctc.WordLM(word_lm, pieces, alpha=1.0, beta=0.0)
    # ax </s>: -1.0 - 1.0; a b </s>: -0.2 - (0.1 + 3.0) - 1.0 (log10)
    assert fuse.finish(fuse.extend(fuse.extend(fuse.start(), 0), 2)) == pytest.approx(-2 * LN10)
    assert ctc.prefix_beam_search(lp, blank, beam_size=4, lm=fuse).tokens == [0, 2]
    # beta rewards words: with a large enough bonus "a b" (2 words) beats "ax" (1 word)
    fuse_b = ctc.WordLM(word_lm, pieces, alpha=1.0, beta=3.0 * LN10)
    assert ctc.prefix_beam_search(lp, blank, beam_size=4, lm=fuse_b).tokens == [0, 1]


def test_lm_with_alpha_and_beta_zero_is_the_plain_search(word_lm: NgramLM) -> None:
    rng = np.random.default_rng(1)
    chars, blank = [" ", "a", "b", "x"], 4
    fuse = ctc.WordLM(word_lm, chars, alpha=0.0, beta=0.0)
    for _ in range(5):
        logits = rng.normal(size=(40, 5)).astype(np.float32) * 3
        lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        a = ctc.prefix_beam_search(lp, blank, beam_size=6)
        b = ctc.prefix_beam_search(lp, blank, beam_size=6, lm=fuse)
        assert (a.tokens, a.frames, a.score) == (b.tokens, b.frames, b.score)
        assert any(t == 0 for t in a.tokens)  # the words did pass through the LM
