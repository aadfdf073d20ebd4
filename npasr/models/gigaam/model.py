"""GigaAM (v2, v3; CTC and RNN-T heads) in NumPy on the shared Conformer.

Reference: salute-developers/GigaAM@8555893 gigaam/{preprocess,encoder,decoder}.py (facts only).
Attribute paths equal the official state_dict keys (`encoder.pre_encode.conv.0`,
`head.joint.joint_net.1`, ...). Shapes: N samples, M mels, T encoder frames (40 ms each),
D = d_model, P = pred_hidden, J = joint_hidden, C = num_classes (vocabulary + blank).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from npasr.audio.features import log_mel
from npasr.io.gguf import RawTensor
from npasr.io.weights import Weights
from npasr.models.conformer import ConformerStack
from npasr.models.gigaam.config import GigaAMConfig
from npasr.models.gigaam.weights import FILTERBANK, WINDOW
from npasr.models.transducer import Joint, LSTMState, PredictionNet, Transducer
from npasr.nn import ref
from npasr.nn.layers import Conv1d, Linear
from npasr.types import F32


@dataclass
class Preprocessor:
    """torchaudio MelSpectrogram + ln(clamp(x, 1e-9, 1e9)) with the checkpoint's own window and
    filterbank (v3 stores both rounded to bfloat16, so recomputing them would not match)."""

    window: F32  # (win_length,)
    filterbank: F32  # (M, n_fft // 2 + 1)
    cfg: GigaAMConfig

    @classmethod
    def load(cls, w: Weights, cfg: GigaAMConfig) -> Preprocessor:
        return cls(w.f32(WINDOW), np.ascontiguousarray(w.f32(FILTERBANK).T), cfg)

    def __call__(self, audio: F32) -> F32:  # (N,) -> (M, T_mel)
        return log_mel(audio, self.cfg.mel(), window=self.window, filterbank=self.filterbank)


@dataclass
class StridingSubsampling:
    """Two stride-2 convolutions with ReLU: x4 fewer frames. v3 conv1d over (M, T) channels;
    v2 conv2d over a 1-channel (T, M) image, then the Linear `out` on the flattened (C, M/4)."""

    conv: list[Conv1d | tuple[F32, F32]]  # conv.0, conv.2 (1-D layers, or 2-D weight + bias)
    out: Linear | None  # conv2d only: (D, D * M / 4)
    padding: int

    @classmethod
    def load(cls, w: Weights, cfg: GigaAMConfig) -> StridingSubsampling:
        pad = (cfg.subs_kernel_size - 1) // 2
        if cfg.subsampling == "conv1d":
            convs: list = [Conv1d.load(w.sub("conv").sub(i), stride=2, padding=pad) for i in (0, 2)]
            return cls(convs, None, pad)
        convs = [(w.f32(f"conv.{i}.weight"), w.f32(f"conv.{i}.bias")) for i in (0, 2)]
        out = Linear.load(w.sub("out"))
        out.prepare_gemm()  # all frames at once; built now, the file is not read after load
        return cls(convs, out, pad)

    def __call__(self, mel: F32) -> F32:  # (M, T_mel) -> (T, D)
        if self.out is None:
            x = mel
            for conv in self.conv:
                x = np.maximum(conv(x), 0.0)  # type: ignore[operator]  (D, T)
            return np.ascontiguousarray(x.T)
        x = mel.T[None]  # (1, T_mel, M): time is the image height
        for w, b in self.conv:  # type: ignore[misc]
            x = np.maximum(ref.conv2d(x, w, b, stride=2, padding=self.padding), 0.0)
        c, t, f = x.shape  # (D, T, M / 4)
        return self.out(x.transpose(1, 0, 2).reshape(t, c * f))  # channel-major flatten


@dataclass
class CTCHead:
    decoder_layers: Linear  # kernel-1 Conv1d (C, D, 1) as a Linear

    @classmethod
    def load(cls, w: Weights) -> CTCHead:
        return cls(Linear.load(w.sub("decoder_layers").sub(0)))

    def __call__(self, enc: F32) -> F32:  # (T, D) -> log-probs (T, C)
        return ref.log_softmax(self.decoder_layers(enc), axis=-1)


def load_rnnt_head(w: Weights, cfg: GigaAMConfig) -> Transducer:
    """Prediction net `decoder.{embed,lstm}` and joint `joint.{enc,pred,joint_net.1}`; the very
    first step feeds a zero vector with zero state (GigaAM `predict(None, None)`)."""
    dec, joint = w.sub("decoder"), w.sub("joint")
    net = PredictionNet.load(dec.sub("embed"), dec.sub("lstm"), cfg.pred_rnn_layers)
    return Transducer(net, Joint.load(joint.sub("enc"), joint.sub("pred"),
                                      joint.sub("joint_net").sub(1)))  # fmt: skip


@dataclass
class GigaAM:
    """Features -> encoder -> head, plus the decoder protocol of npasr.decoding (STYLE B8):
    CTC `log_probs(enc)`; transducer `predict(token, state)` and `joint(enc_t, g)`."""

    config: GigaAMConfig
    preprocessor: Preprocessor
    pre_encode: StridingSubsampling
    layers: ConformerStack
    head: CTCHead | Transducer

    @classmethod
    def load(cls, tensors: Mapping[str, np.ndarray | RawTensor], cfg: GigaAMConfig,
             origin: str = "gigaam") -> GigaAM:  # fmt: skip
        w = Weights(tensors, origin=origin)
        enc = w.sub("encoder")
        head: CTCHead | Transducer = (CTCHead.load(w.sub("head")) if cfg.head == "ctc"
                                      else load_rnnt_head(w.sub("head"), cfg))  # fmt: skip
        model = cls(cfg, Preprocessor.load(w, cfg),
                    StridingSubsampling.load(enc.sub("pre_encode"), cfg),
                    ConformerStack.load(enc.sub("layers"), cfg.conformer()), head)  # fmt: skip
        w.assert_all_used()
        return model

    def features(self, audio: F32) -> F32:  # (N,) -> (M, T_mel)
        return self.preprocessor(audio)

    def encode(self, mel: F32) -> F32:  # (M, T_mel) -> (T, D)
        if mel.shape[1] == 0:
            return np.zeros((0, self.config.d_model), np.float32)
        return self.layers(self.pre_encode(mel))

    # CTC
    def log_probs(self, enc: F32) -> F32:  # (T, D) -> (T, C)
        assert isinstance(self.head, CTCHead)
        return self.head(enc)

    # transducer
    def predict(self, token: int | None, state: LSTMState | None) -> tuple[F32, LSTMState]:
        """One prediction-net step (token None = start), projected by the joint: g (J,)."""
        return self.head.predict(token, state)  # type: ignore[union-attr]

    def joint_enc(self, enc: F32) -> F32:
        """The encoder half of the joint for all frames at once: (T, D) -> (T, J)."""
        return self.head.project(enc)  # type: ignore[union-attr]

    def joint(self, enc_proj: F32, g: F32) -> F32:
        """Logits (C,) of one (frame, prediction); `enc_proj` comes from `joint_enc`, `g` from
        `predict`. The reference applies log_softmax, which does not change the argmax."""
        return self.head(enc_proj, g)  # type: ignore[operator]
