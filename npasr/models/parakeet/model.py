"""NeMo FastConformer + TDT / RNN-T / CTC heads (Parakeet) in NumPy on the shared Conformer.

Reference: NVIDIA NeMo 3.0.0, nemo/collections/asr/{modules/audio_preprocessing.py,
parts/preprocessing/features.py, parts/submodules/subsampling.py, modules/conformer_encoder.py,
modules/rnnt.py, modules/conv_asr.py} (facts only; shared/REFERENCE.md §2).
Attribute paths equal NeMo's state_dict keys (`encoder.pre_encode.conv.0`,
`decoder.prediction.dec_rnn.lstm`, `joint.joint_net.2`, ...). Shapes: N samples, M mels,
T_mel frames (10 ms), T encoder frames (80 ms), C subsampling channels, D = d_model,
V = vocabulary (blank = V).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from npasr.audio.features import log_mel
from npasr.io.gguf import RawTensor
from npasr.io.weights import Weights
from npasr.models.conformer import ConformerStack
from npasr.models.parakeet.config import ParakeetConfig
from npasr.models.transducer import Joint, PredictionNet, Transducer
from npasr.nn import ref
from npasr.nn.layers import Linear
from npasr.types import F32

SUBSAMPLING_CHUNK = 256  # output frames per subsampling pass (20 s of audio; 135 MB transient)
WINDOW = "preprocessor.featurizer.window"  # (win_length,)
FILTERBANK = "preprocessor.featurizer.fb"  # (1, M, n_fft // 2 + 1)


@dataclass
class Preprocessor:
    """NeMo FilterbankFeatures: pre-emphasis, |STFT|^2 with the symmetric Hann window centred
    in n_fft and zero padding, Slaney mels, ln(x + 2^-24), per-mel mean/std over the N // hop
    valid frames; the last frame (beyond them) is zeroed. Window and filterbank come from the
    checkpoint, as NeMo's restored buffers do."""

    window: F32
    filterbank: F32  # (M, F)
    cfg: ParakeetConfig

    @classmethod
    def load(cls, w: Weights, cfg: ParakeetConfig) -> Preprocessor:
        fb = w.f32(FILTERBANK)
        return cls(w.f32(WINDOW), np.ascontiguousarray(fb.reshape(fb.shape[-2:])), cfg)

    def __call__(self, audio: F32) -> F32:  # (N,) -> (M, N // hop + 1)
        return log_mel(audio, self.cfg.mel(), window=self.window, filterbank=self.filterbank)


def conv_length(n: int) -> int:
    """Frames after one kernel-3, stride-2, padding-1 convolution (NeMo calc_length)."""
    return (n + 2 - 3) // 2 + 1


def _depthwise3x3_s2(x: F32, w: F32, b: F32) -> F32:
    """Conv2d(C, C, 3, stride 2, padding 1, groups=C): (C, H, W) -> (C, H', W'); nine strided
    multiply-adds instead of an im2col buffer nine times the input."""
    c, h, wd = x.shape
    ho, wo = conv_length(h), conv_length(wd)
    xp = np.zeros((c, h + 2, wd + 2), np.float32)
    xp[:, 1:-1, 1:-1] = x
    out = np.empty((c, ho, wo), np.float32)
    out[:] = b[:, None, None]
    for ky in range(3):
        for kx in range(3):
            tap = xp[:, ky : ky + 2 * ho : 2, kx : kx + 2 * wo : 2]
            out += w[:, 0, ky, kx][:, None, None] * tap
    return out


@dataclass
class DwStridingSubsampling:
    """NeMo ConvSubsampling 'dw_striding': log2(factor) stride-2 stages over the (T_mel, M)
    image (time = height), the first a full Conv2d(1, C, 3), the others depthwise 3x3 + pointwise
    1x1, each followed by ReLU; then the channel-major flatten (C * M') and Linear(C * M', D).

    Masking as NeMo >= 2.5 (MaskedConvSequential): after every layer, time rows at or beyond
    the running length are zeroed, and the length shrinks with each stride. For one utterance
    this only matters at its end: with an odd intermediate length the last valid output reads
    one row past the audio, which must be zero."""

    conv0: tuple[F32, F32]  # (C, 1, 3, 3), (C,)
    stages: list[tuple[F32, F32, F32, F32]]  # depthwise (C, 1, 3, 3), bias, pointwise (C, C), bias
    out: Linear  # (D, C * M')

    @classmethod
    def load(cls, w: Weights, cfg: ParakeetConfig) -> DwStridingSubsampling:
        n = cfg.subsampling_factor.bit_length() - 1  # stride-2 stages
        conv = w.sub("conv")
        stages = []
        for s in range(1, n):
            dw, pw = conv.sub(3 * s - 1), conv.sub(3 * s)
            stages.append((dw.f32("weight"), dw.f32("bias"),
                           pw.f32("weight")[:, :, 0, 0].copy(), pw.f32("bias")))  # fmt: skip
        out = Linear.load(w.sub("out"))
        out.prepare_gemm()
        return cls((conv.f32("0.weight"), conv.f32("0.bias")), stages, out)

    @property
    def factor(self) -> int:
        return 2 ** (len(self.stages) + 1)

    def __call__(self, mel: F32, length: int, chunk: int = SUBSAMPLING_CHUNK,
                 ) -> tuple[F32, int]:  # fmt: skip
        """(M, T_mel) features, valid length -> (T, D) frames (only the valid ones), T.

        Long inputs go `chunk` output frames at a time (the first convolution's output is
        C / 2 times the size of the mel: 12 GB for an hour): output frame t depends on mel
        frames 8t - 7 ... 8t + 7 only, so each chunk takes its mel with `factor` frames of
        margin on each side and keeps the outputs that the margin's edges cannot reach."""
        n = length
        for _ in range(len(self.stages) + 1):
            n = conv_length(n)
        if n <= chunk:
            return self._run(mel, length, 0)[:n], n
        f, margin = self.factor, 2  # outputs lost at a cut edge: 1; keep one more
        out = np.empty((n, self.out.weight.shape[0]), np.float32)  # written chunk by chunk
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            s0 = max(0, a - margin) * f  # a multiple of the factor keeps every stage's grid
            s1 = min(mel.shape[1], (b + margin) * f)
            y = self._run(mel[:, s0:s1], length - s0, s0)
            out[a:b] = y[a - s0 // f : b - s0 // f]
        return out, n

    def _run(self, mel: F32, length: int, start: int) -> F32:
        """Every output frame of `mel` (a slice starting at mel frame `start`, with `length`
        valid frames from its first); masking in the slice's own frame numbers."""
        x = np.ascontiguousarray(mel.T)[None]  # (1, T_mel, M)
        x[:, max(length, 0) :] = 0.0
        w0, b0 = self.conv0
        x = ref.conv2d(x, w0, b0, stride=2, padding=1)  # (C, T1, M1)
        length = _shrink(length, start)
        x[:, max(length, 0) :] = 0.0
        np.maximum(x, 0.0, out=x)
        for k, (wd, bd, wp, bp) in enumerate(self.stages, start=1):
            x = _depthwise3x3_s2(x, wd, bd)
            length = _shrink(length, start >> k)
            x[:, max(length, 0) :] = 0.0
            c, t, f = x.shape
            x = (wp @ x.reshape(c, t * f)).reshape(c, t, f)  # pointwise 1x1
            x += bp[:, None, None]
            x[:, max(length, 0) :] = 0.0
            np.maximum(x, 0.0, out=x)
        c, t, f = x.shape
        return self.out(np.ascontiguousarray(x.transpose(1, 0, 2)).reshape(t, c * f))


def _shrink(length: int, start: int) -> int:
    """Valid length after one stride-2 stage, counted from a slice that starts at `start` (a
    multiple of 2 in the stage's input frames): the global length shrinks, then is re-based."""
    return conv_length(length + start) - start // 2


@dataclass
class CTCHead:
    decoder_layers: Linear  # kernel-1 Conv1d (V + 1, D, 1) as a Linear

    @classmethod
    def load(cls, w: Weights) -> CTCHead:
        head = cls(Linear.load(w.sub("decoder_layers").sub(0)))
        head.decoder_layers.prepare_gemm()
        return head

    def __call__(self, enc: F32) -> F32:  # (T, D) -> log-probs (T, V + 1)
        return ref.log_softmax(self.decoder_layers(enc), axis=-1)


@dataclass
class Parakeet:
    """Features -> encoder -> heads, and the decoding protocols of npasr.decoding (STYLE B8):
    CTC `log_probs(enc)`; transducer `transducer.predict(token, state)`, `transducer.project`
    and `transducer(enc_proj_t, g)`."""

    config: ParakeetConfig
    preprocessor: Preprocessor
    pre_encode: DwStridingSubsampling
    layers: ConformerStack
    transducer: Transducer | None
    ctc: CTCHead | None

    @classmethod
    def load(cls, tensors: Mapping[str, np.ndarray | RawTensor], cfg: ParakeetConfig,
             origin: str = "parakeet") -> Parakeet:  # fmt: skip
        w = Weights(tensors, origin=origin)
        enc = w.sub("encoder")
        transducer = ctc = None
        if cfg.head == "ctc":
            ctc = CTCHead.load(w.sub("decoder"))
        else:
            pred = w.sub("decoder").sub("prediction")
            net = PredictionNet.load(pred.sub("embed"), pred.sub("dec_rnn").sub("lstm"),
                                     cfg.pred_rnn_layers, start_token=cfg.blank_id)  # fmt: skip
            j = w.sub("joint")
            transducer = Transducer(net, Joint.load(j.sub("enc"), j.sub("pred"),
                                                    j.sub("joint_net").sub(2)))  # fmt: skip
            if cfg.aux_ctc:
                ctc = CTCHead.load(w.sub("ctc_decoder"))
        model = cls(cfg, Preprocessor.load(w, cfg),
                    DwStridingSubsampling.load(enc.sub("pre_encode"), cfg),
                    ConformerStack.load(enc.sub("layers"), cfg.conformer()),
                    transducer, ctc)  # fmt: skip
        w.assert_all_used()
        return model

    def features(self, audio: F32) -> F32:  # (N,) -> (M, N // hop + 1)
        return self.preprocessor(audio)

    def feature_length(self, n_samples: int) -> int:
        return n_samples // self.config.hop_length  # NeMo seq_len: the last frame is padding

    def encode(self, mel: F32, length: int | None = None,
               context: tuple[int, int] | None = None) -> F32:  # fmt: skip
        """(M, T_mel) -> (T, D), the valid encoder frames only; `context` (L, R): limited-context
        attention (NeMo rel_pos_local_attn), None: full."""
        length = mel.shape[1] - 1 if length is None else length
        if length <= 0:
            return np.zeros((0, self.config.d_model), np.float32)
        x, _ = self.pre_encode(mel, length)
        if self.config.xscaling:
            x *= np.float32(np.sqrt(self.config.d_model))
        return self.layers(x, context)

    def encode_audio(self, audio: F32, context: tuple[int, int] | None = None,
                     progress: Callable[[int, int], None] | None = None) -> F32:  # fmt: skip
        """Audio (N,) -> (T, D): features and encoder, the features freed once subsampled (an
        hour's (128, 360000) mel is 184 MB the layers do not need)."""
        length = self.feature_length(audio.shape[0])
        if length < 2:  # under 20 ms: no speech, and NeMo's normalisation would divide by 0
            return np.zeros((0, self.config.d_model), np.float32)
        mel = self.features(audio)
        x, _ = self.pre_encode(mel, length)
        del mel
        if self.config.xscaling:
            x *= np.float32(np.sqrt(self.config.d_model))
        return self.layers(x, context, inplace=True, progress=progress)  # x is ours: no copy

    def log_probs(self, enc: F32) -> F32:  # (T, D) -> (T, V + 1)
        if self.ctc is None:
            raise ValueError("this model has no CTC head")
        return self.ctc(enc)
