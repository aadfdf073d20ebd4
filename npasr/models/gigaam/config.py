"""GigaAM architecture record. Field names follow the checkpoint's hydra `cfg` (GigaAM's own)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from npasr.audio.features import GIGAAM_V3, MelConfig
from npasr.models.conformer import ConformerConfig


@dataclass(frozen=True)
class GigaAMConfig:
    # preprocessor (gigaam/preprocess.py FeatureExtractor: torchaudio MelSpectrogram + ln clamp)
    sample_rate: int  # 16000
    features: int  # mel bins: 64
    n_fft: int  # 320 (v3) | 400 (v2: sample_rate // 40)
    win_length: int  # = n_fft
    hop_length: int  # 160 = 10 ms
    center: bool  # False (v3) | True (v2: reflect-pad n_fft // 2)
    # encoder (gigaam/encoder.py ConformerEncoder)
    feat_in: int  # = features
    n_layers: int  # 16
    d_model: int  # 768
    n_heads: int  # 16
    ff_expansion_factor: int  # 4
    subsampling: Literal["conv1d", "conv2d"]  # v3 conv1d | v2 conv2d (+ Linear)
    subs_kernel_size: int  # 5 (v3) | 3 (v2)
    subsampling_factor: int  # 4: two stride-2 convolutions, 40 ms per encoder frame
    self_attention_model: Literal["rotary", "rel_pos"]  # rotary in every released model
    pos_emb_max_len: int  # 5000, also the RoPE base
    conv_kernel_size: int  # 5 (v3) | 31 (v2)
    conv_norm_type: Literal["batch_norm", "layer_norm"]  # v3 layer_norm | v2 batch_norm
    # head (gigaam/decoder.py CTCHead | RNNTHead)
    head: Literal["ctc", "rnnt"]
    num_classes: int  # vocabulary + 1; the blank is the last class
    pred_hidden: int = 0  # RNNT prediction net (embedding and LSTM) width: 320
    pred_rnn_layers: int = 0  # 1
    joint_hidden: int = 0  # 320

    @property
    def blank_id(self) -> int:
        return self.num_classes - 1

    @property
    def frame_samples(self) -> int:
        """Audio samples per encoder frame: 160 * 4 = 640 (40 ms)."""
        return self.hop_length * self.subsampling_factor

    def mel(self) -> MelConfig:
        """The front end; window and filterbank come from the checkpoint at run time."""
        return MelConfig(
            sample_rate=self.sample_rate, n_fft=self.n_fft, hop_length=self.hop_length,
            win_length=self.win_length, window="hann_periodic", center=self.center,
            pad_mode="reflect", n_mels=self.features, mel_scale="htk", mel_norm=None,
            log="ln_clamp", log_floor=GIGAAM_V3.log_floor, log_ceil=GIGAAM_V3.log_ceil,
        )  # fmt: skip

    def conformer(self) -> ConformerConfig:
        return ConformerConfig(
            d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads,
            ff_expansion_factor=self.ff_expansion_factor, conv_kernel_size=self.conv_kernel_size,
            conv_norm_type=self.conv_norm_type, self_attention_model=self.self_attention_model,
            pos_emb_max_len=self.pos_emb_max_len,
        )  # fmt: skip

    @classmethod
    def from_checkpoint(cls, cfg: dict[str, Any]) -> GigaAMConfig:
        """From the pickled hydra cfg (as plain dicts). Keys a cfg leaves out take the defaults
        of the official constructors (FeatureExtractor kwargs, ConformerEncoder signature)."""
        pre, enc, head = cfg["preprocessor"], cfg["encoder"], cfg["head"]
        sr = int(pre.get("sample_rate", 16000))
        n_fft = int(pre.get("n_fft", sr // 40))
        is_rnnt = "decoder" in head
        return cls(
            sample_rate=sr, features=int(pre["features"]), n_fft=n_fft,
            win_length=int(pre.get("win_length", sr // 40)),
            hop_length=int(pre.get("hop_length", sr // 100)), center=bool(pre.get("center", True)),
            feat_in=int(enc.get("feat_in", 64)), n_layers=int(enc.get("n_layers", 16)),
            d_model=int(enc.get("d_model", 768)), n_heads=int(enc.get("n_heads", 16)),
            ff_expansion_factor=int(enc.get("ff_expansion_factor", 4)),
            subsampling=enc.get("subsampling", "conv2d"),
            subs_kernel_size=int(enc.get("subs_kernel_size", 3)),
            subsampling_factor=int(enc.get("subsampling_factor", 4)),
            self_attention_model=enc.get("self_attention_model", "rotary"),
            pos_emb_max_len=int(enc.get("pos_emb_max_len", 5000)),
            conv_kernel_size=int(enc.get("conv_kernel_size", 31)),
            conv_norm_type=enc.get("conv_norm_type", "batch_norm"),
            head="rnnt" if is_rnnt else "ctc",
            num_classes=int(head["decoder"]["num_classes"] if is_rnnt else head["num_classes"]),
            pred_hidden=int(head["decoder"]["pred_hidden"]) if is_rnnt else 0,
            pred_rnn_layers=int(head["decoder"]["pred_rnn_layers"]) if is_rnnt else 0,
            joint_hidden=int(head["joint"]["joint_hidden"]) if is_rnnt else 0,
        )  # fmt: skip

    @classmethod
    def from_gguf(cls, meta: dict[str, Any]) -> GigaAMConfig:
        kinds = {f.name: f.type for f in fields(cls)}
        cast = {"int": int, "bool": bool}
        return cls(**{name: cast.get(str(t), str)(meta[f"gigaam.{name}"])
                      for name, t in kinds.items()})  # fmt: skip

    def to_gguf(self) -> dict[str, Any]:
        return {f"gigaam.{k}": v for k, v in asdict(self).items()}
