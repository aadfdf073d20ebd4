"""CTC decoding: greedy (vectorised) and prefix beam search, over per-frame log-probabilities.

Greedy follows the usual rule (GigaAM gigaam/decoding.py CTCGreedyDecoding, onnx-asr
_AsrWithCtcDecoding): argmax per frame, collapse repeats, drop blanks. Prefix beam search is
Hannun et al. 2014 ("First-pass large vocabulary continuous speech recognition using
bi-directional recurrent DNNs", Algorithm 1), optionally with a word n-gram LM by shallow fusion
(`WordLM`): a prefix ranks by its CTC log-probability plus alpha * ln P_lm(its words) + beta *
its word count. The LM part is a function of the prefix alone, so it is kept beside the two CTC
sums instead of inside them (the same ranking as the paper's p^alpha factor on each extension).
Words complete at a space token (character vocabularies) or when the next piece starts with
'\u2581' (SentencePiece), and the last word plus `</s>` are scored after the final frame.
Shapes: T frames, V classes including the blank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from npasr.decoding.lm import BOS, EOS, LN10, NgramLM
from npasr.types import F32

LMState = tuple[tuple[str, ...], str, float]  # (LM context words, open word, fused score (ln))


@dataclass
class CTCResult:
    tokens: list[int]  # blank-free token ids
    frames: list[int]  # frame at which each token was emitted (its first frame)
    score: float = 0.0  # log-probability of the prefix (beam search), 0 for greedy


def greedy(log_probs: F32, blank: int) -> CTCResult:
    """Best path: argmax per frame, merge repeats, remove blanks. log_probs (T, V)."""
    lab = log_probs.argmax(axis=-1)  # (T,)
    keep = lab != blank
    keep[1:] &= lab[1:] != lab[:-1]  # a repeat is a new token only after a blank or other label
    frames = np.nonzero(keep)[0]
    return CTCResult(lab[frames].tolist(), frames.tolist())


@dataclass(frozen=True)
class WordLM:
    """Shallow fusion of a word LM into prefix beam search."""

    lm: NgramLM
    tokens: Sequence[str]  # text of every non-blank class id (' ' or '\u2581...' mark words)
    alpha: float = 0.5  # weight of ln P_lm per word
    beta: float = 1.0  # bonus per word (offsets the LM's preference for few words)

    def start(self) -> LMState:
        return ((BOS,), "", 0.0)

    def _word(self, ctx: tuple[str, ...], word: str) -> float:
        return self.alpha * LN10 * self.lm.log10_prob(ctx, word) + self.beta

    def extend(self, st: LMState, c: int) -> LMState:
        """The state after appending class `c`; a completed word is scored here."""
        ctx, word, score = st
        piece = self.tokens[c]
        if piece != " " and not piece.startswith("\u2581"):
            return ctx, word + piece, score
        if word:  # the open word ends here
            score += self._word(ctx, word)
            ctx = self.lm.state(ctx, word)
        return ctx, piece[1:] if piece != " " else "", score

    def finish(self, st: LMState) -> float:
        """The fused score once the utterance ends: the open word, then </s>."""
        ctx, word, score = st
        if word:
            score += self._word(ctx, word)
            ctx = self.lm.state(ctx, word)
        return score + self.alpha * LN10 * self.lm.log10_prob(ctx, EOS)


_NO_LM: LMState = ((), "", 0.0)


@dataclass
class _Beam:
    p_blank: float = -np.inf  # log P(prefix, path ends in blank)
    p_token: float = -np.inf  # log P(prefix, path ends in its last token)
    frames: tuple[int, ...] = field(default=())
    lm: LMState = _NO_LM  # a function of the prefix: copied, never summed

    @property
    def total(self) -> float:
        return float(np.logaddexp(self.p_blank, self.p_token))

    @property
    def rank(self) -> float:
        return self.total + self.lm[2]


def prefix_beam_search(log_probs: F32, blank: int, beam_size: int = 8, top_k: int = 16,
                       lm: WordLM | None = None) -> CTCResult:  # fmt: skip
    """Most probable label sequence summed over its alignments (approximately: `beam_size`
    prefixes survive each frame, and only each frame's `top_k` classes extend them), ranked
    with the LM when `lm` is given. `score` of the result is the CTC log-probability alone."""
    beams: dict[tuple[int, ...], _Beam] = {(): _Beam(p_blank=0.0, lm=lm.start() if lm else _NO_LM)}

    def child(nxt: dict[tuple[int, ...], _Beam], ext: tuple[int, ...], b: _Beam, t: int) -> _Beam:
        if ext not in nxt:
            nxt[ext] = _Beam(frames=(*b.frames, t), lm=lm.extend(b.lm, ext[-1]) if lm else _NO_LM)
        return nxt[ext]

    for t, lp in enumerate(log_probs):
        cand = np.argsort(lp)[::-1][: min(top_k, lp.shape[0])]  # this frame's likeliest classes
        nxt: dict[tuple[int, ...], _Beam] = {}
        for prefix, b in beams.items():
            total = b.total
            for c in cand.tolist():
                p = float(lp[c])
                if c == blank:  # prefix unchanged, path now ends in blank
                    nb = nxt.setdefault(prefix, _Beam(frames=b.frames, lm=b.lm))
                    nb.p_blank = np.logaddexp(nb.p_blank, total + p)
                    continue
                ext = (*prefix, c)
                if prefix and c == prefix[-1]:
                    # a repeat without a blank in between stays the same prefix ...
                    nb = nxt.setdefault(prefix, _Beam(frames=b.frames, lm=b.lm))
                    nb.p_token = np.logaddexp(nb.p_token, b.p_token + p)
                    # ... and only a path through a blank extends it
                    ne = child(nxt, ext, b, t)
                    ne.p_token = np.logaddexp(ne.p_token, b.p_blank + p)
                else:
                    ne = child(nxt, ext, b, t)
                    ne.p_token = np.logaddexp(ne.p_token, total + p)
        ranked = sorted(nxt.items(), key=lambda kv: kv[1].rank, reverse=True)
        beams = dict(ranked[:beam_size])

    def final(kv: tuple[tuple[int, ...], _Beam]) -> float:
        return kv[1].total + (lm.finish(kv[1].lm) if lm else 0.0)

    prefix, best = max(beams.items(), key=final)
    return CTCResult(list(prefix), list(best.frames), best.total)
