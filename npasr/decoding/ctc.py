"""CTC decoding: greedy (vectorised) and prefix beam search, over per-frame log-probabilities.

Greedy follows the usual rule (GigaAM gigaam/decoding.py CTCGreedyDecoding, onnx-asr
_AsrWithCtcDecoding): argmax per frame, collapse repeats, drop blanks. Prefix beam search is
Hannun et al. 2014 ("First-pass large vocabulary continuous speech recognition using
bi-directional recurrent DNNs", Algorithm 1) without a language model; an n-gram LM (ARPA) hook
is not written yet. Shapes: T frames, V classes including the blank.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from npasr.types import F32


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


@dataclass
class _Beam:
    p_blank: float = -np.inf  # log P(prefix, path ends in blank)
    p_token: float = -np.inf  # log P(prefix, path ends in its last token)
    frames: tuple[int, ...] = field(default=())

    @property
    def total(self) -> float:
        return float(np.logaddexp(self.p_blank, self.p_token))


def prefix_beam_search(log_probs: F32, blank: int, beam_size: int = 8, top_k: int = 16,
                       ) -> CTCResult:  # fmt: skip
    """Most probable label sequence summed over its alignments (approximately: `beam_size`
    prefixes survive each frame, and only each frame's `top_k` classes extend them)."""
    beams: dict[tuple[int, ...], _Beam] = {(): _Beam(p_blank=0.0)}
    for t, lp in enumerate(log_probs):
        cand = np.argsort(lp)[::-1][: min(top_k, lp.shape[0])]  # this frame's likeliest classes
        nxt: dict[tuple[int, ...], _Beam] = {}
        for prefix, b in beams.items():
            total = b.total
            for c in cand.tolist():
                p = float(lp[c])
                if c == blank:  # prefix unchanged, path now ends in blank
                    nb = nxt.setdefault(prefix, _Beam(frames=b.frames))
                    nb.p_blank = np.logaddexp(nb.p_blank, total + p)
                    continue
                ext = (*prefix, c)
                if prefix and c == prefix[-1]:
                    # a repeat without a blank in between stays the same prefix ...
                    nb = nxt.setdefault(prefix, _Beam(frames=b.frames))
                    nb.p_token = np.logaddexp(nb.p_token, b.p_token + p)
                    # ... and only a path through a blank extends it
                    ne = nxt.setdefault(ext, _Beam(frames=(*b.frames, t)))
                    ne.p_token = np.logaddexp(ne.p_token, b.p_blank + p)
                else:
                    ne = nxt.setdefault(ext, _Beam(frames=(*b.frames, t)))
                    ne.p_token = np.logaddexp(ne.p_token, total + p)
        ranked = sorted(nxt.items(), key=lambda kv: kv[1].total, reverse=True)
        beams = dict(ranked[:beam_size])
    prefix, best = max(beams.items(), key=lambda kv: kv[1].total)
    return CTCResult(list(prefix), list(best.frames), best.total)
