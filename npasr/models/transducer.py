"""The transducer's two small networks, shared by GigaAM RNN-T and NeMo RNN-T/TDT heads.

Prediction net: Embedding(C, P) -> LSTM(P, P) x n_layers. Joint: z = out(ReLU(enc(f) + pred(g))).
Both families use these shapes (GigaAM gigaam/decoder.py RNNTHead; NeMo modules/rnnt.py
RNNTDecoder with blank_as_pad and RNNTJoint); they differ only in tensor names, which each
family passes as the `Weights` views, and in the start step (`start_token`).

`predict` returns g already projected by the joint's `pred` Linear: the projection is done once
per emitted token instead of once per joint call (NeMo's label-looping decoder does the same);
`joint` then adds the pre-projected encoder frame. Shapes: P = pred_hidden, J = joint_hidden,
C = classes (+ TDT duration scores in the joint's output).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npasr.io.weights import Weights
from npasr.nn.layers import LSTM, Linear
from npasr.types import F32

LSTMState = tuple[F32, F32]  # (h, c), each (n_layers, P)


@dataclass
class PredictionNet:
    embed: F32  # (C, P); the blank row is zero in both families (padding_idx)
    lstm: LSTM
    # None: the first step feeds a zero vector (GigaAM's predict(None)); a token id: its
    # embedding row (NeMo feeds the blank as SOS, whose padding row is zero as well)
    start_token: int | None

    @classmethod
    def load(cls, embed: Weights, lstm: Weights, n_layers: int,
             start_token: int | None = None) -> PredictionNet:  # fmt: skip
        return cls(embed.f32("weight"), LSTM.load(lstm, n_layers), start_token)

    def step(self, token: int | None, state: LSTMState | None) -> tuple[F32, LSTMState]:
        """token None = the start step (zero state). -> LSTM output (P,), new state."""
        if token is None:
            token = self.start_token
        x = np.zeros(self.embed.shape[1], np.float32) if token is None else self.embed[token]
        return self.lstm.step(x, self.lstm.zero_state() if state is None else state)


@dataclass
class Joint:
    enc: Linear  # (J, D): applied to all encoder frames at once
    pred: Linear  # (J, P)
    out: Linear  # (C', J) after the ReLU

    @classmethod
    def load(cls, enc: Weights, pred: Weights, out: Weights) -> Joint:
        # enc runs once over all frames; pred and out one row per decoding step. Their kernel
        # layouts are built now: the model's file is not read after its load.
        joint = cls(Linear.load(enc), Linear.load(pred, panels=False),
                    Linear.load(out, panels=False))  # fmt: skip
        joint.enc.prepare_gemm()
        joint.pred.prepare_gemv()
        joint.out.prepare_gemv()
        return joint

    def __call__(self, enc_proj: F32, g_proj: F32) -> F32:
        """Raw scores (C',) of one frame (from `enc`) and one prediction (from `pred`)."""
        return self.out(np.maximum(enc_proj + g_proj, 0.0))


@dataclass
class Transducer:
    """The decoder protocol of npasr.decoding.transducer (STYLE B8) over the two nets."""

    prediction: PredictionNet
    joint: Joint

    def predict(self, token: int | None, state: LSTMState | None) -> tuple[F32, LSTMState]:
        g, state = self.prediction.step(token, state)
        return self.joint.pred(g), state

    def project(self, enc: F32) -> F32:  # (T, D) -> (T, J)
        return self.joint.enc(enc)

    def __call__(self, enc_proj: F32, g_proj: F32) -> F32:
        return self.joint(enc_proj, g_proj)
