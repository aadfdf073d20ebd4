"""Greedy transducer decoding: one loop for RNN-T (GigaAM) and, later, TDT (Parakeet).

Protocol (STYLE B8): the model gives `predict(token | None, state) -> (g, state)` (None = the
start step) and `joint(enc_t, g) -> logits`. For TDT the logits end with `len(durations)`
duration scores after the V token+blank scores; for RNN-T `durations` is None (always 1 on
blank, 0 after a token). The loop follows GigaAM gigaam/decoding.py RNNTGreedyDecoding for one
utterance (at most `max_symbols` tokens per frame, state kept on blank) and NeMo's TDT rule
(a blank with duration 0 still advances one frame). Shapes: T frames.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from npasr.types import F32

Predict = Callable[[int | None, Any], tuple[F32, Any]]
Joint = Callable[[F32, F32], F32]


@dataclass
class TransducerResult:
    tokens: list[int] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)  # encoder frame of each token
    durations: list[int] = field(default_factory=list)  # TDT only


def greedy(
    enc: F32,
    predict: Predict,
    joint: Joint,
    blank: int,
    *,
    max_symbols: int = 10,
    durations: Sequence[int] | None = None,
) -> TransducerResult:
    """Greedy search over `enc` (T, ...): each row is handed to `joint` as it is.

    `max_symbols` caps the tokens emitted at one frame (GigaAM 10; its ONNX path uses 3).
    """
    out = TransducerResult()
    g, state = predict(None, None)  # prediction for the empty history
    t, n_frames, emitted = 0, enc.shape[0], 0
    while t < n_frames:
        logits = joint(enc[t], g)
        k = int(np.argmax(logits[: blank + 1]))
        step = 0 if k != blank else 1  # RNN-T: stay on the frame after a token
        if durations is not None:
            step = int(durations[int(np.argmax(logits[blank + 1 :]))])
            if k == blank:
                step = max(step, 1)  # a blank must move on, or the loop would not end
        if k != blank:
            out.tokens.append(k)
            out.frames.append(t)
            if durations is not None:
                out.durations.append(step)
            g, state = predict(k, state)  # on blank the prediction and its state are kept
            emitted += 1
        if step == 0 and emitted >= max_symbols:
            step = 1
        if step > 0:
            t, emitted = t + step, 0
    return out
