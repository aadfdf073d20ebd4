"""Parakeet / NeMo FastConformer architecture record, read from a NeMo model_config.yaml or a
transformers ParakeetFor{TDT,CTC} config.json, and stored in GGUF as `parakeet.<field>`.

Field names follow NeMo's config keys (`subsampling_conv_channels`, `pred_hidden`, ...).
Defaults are those of parakeet-tdt-0.6b-v3 (shared/REFERENCE.md §2.2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from npasr.audio.features import NEMO_128, MelConfig
from npasr.models.conformer import ConformerConfig
from npasr.types import ModelFileError

Head = Literal["tdt", "rnnt", "ctc"]


@dataclass(frozen=True)
class ParakeetConfig:
    # preprocessor (NeMo AudioToMelSpectrogramPreprocessor -> FilterbankFeatures)
    sample_rate: int = 16000
    features: int = 128  # mel bins
    n_fft: int = 512
    win_length: int = 400  # window_size 0.025 s
    hop_length: int = 160  # window_stride 0.01 s
    preemph: float = 0.97
    log_guard: float = 2.0**-24  # ln(x + guard)
    # encoder (NeMo ConformerEncoder)
    feat_in: int = 128
    n_layers: int = 24
    d_model: int = 1024
    n_heads: int = 8
    ff_expansion_factor: int = 4
    subsampling_factor: int = 8  # 80 ms per encoder frame
    subsampling_conv_channels: int = 256
    conv_kernel_size: int = 9
    conv_norm_type: Literal["batch_norm", "layer_norm"] = "batch_norm"
    xscaling: bool = False  # multiply the subsampled input by sqrt(d_model)
    use_bias: bool = False  # biases in the Conformer's linear and conv layers
    pos_emb_max_len: int = 5000
    # decoder: the head the model transcribes with, and the vocabulary (blank = vocab_size)
    head: Head = "tdt"
    vocab_size: int = 8192
    pred_hidden: int = 640  # prediction net embedding and LSTM width (transducers)
    pred_rnn_layers: int = 2
    joint_hidden: int = 640
    durations: tuple[int, ...] = (0, 1, 2, 3, 4)  # TDT duration classes; () otherwise
    max_symbols: int = 10  # tokens per frame before the transducer loop moves on
    aux_ctc: bool = False  # a hybrid TDT/RNN-T + CTC checkpoint also carries a CTC head

    @property
    def blank_id(self) -> int:
        return self.vocab_size

    @property
    def frame_seconds(self) -> float:
        return self.hop_length * self.subsampling_factor / self.sample_rate  # 0.08

    def mel(self) -> MelConfig:
        """The front end; window and filterbank come from the checkpoint at run time."""
        return replace(NEMO_128, sample_rate=self.sample_rate, n_fft=self.n_fft,
                       hop_length=self.hop_length, win_length=self.win_length,
                       n_mels=self.features, preemphasis=self.preemph or None,
                       log_floor=self.log_guard)  # fmt: skip

    def conformer(self) -> ConformerConfig:
        return ConformerConfig(
            d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads,
            ff_expansion_factor=self.ff_expansion_factor, conv_kernel_size=self.conv_kernel_size,
            conv_norm_type=self.conv_norm_type, self_attention_model="rel_pos",
            pos_emb_max_len=self.pos_emb_max_len, use_bias=self.use_bias,
        )  # fmt: skip

    @classmethod
    def from_gguf(cls, meta: dict[str, Any]) -> ParakeetConfig:
        kw: dict[str, Any] = {}
        for f in fields(cls):
            v = meta[f"parakeet.{f.name}"]
            kw[f.name] = tuple(int(d) for d in v) if f.name == "durations" else v
        return cls(**kw)

    def to_gguf(self) -> dict[str, Any]:
        import numpy as np  # noqa: PLC0415

        return {f"parakeet.{k}": np.asarray(v, np.int32) if k == "durations" else v
                for k, v in asdict(self).items()}  # fmt: skip


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise ModelFileError(f"unsupported NeMo model: {what}")


def from_nemo(cfg: dict[str, Any], vocab_size: int) -> ParakeetConfig:
    """From a NeMo model_config.yaml (interpolations resolved). Keys a config leaves out take
    the defaults of NeMo's constructors; settings npasr does not implement are refused by name
    rather than silently ignored."""
    pre, enc = cfg.get("preprocessor") or {}, cfg.get("encoder") or {}
    dec, joint = cfg.get("decoder") or {}, cfg.get("joint") or {}
    _need("ConformerEncoder" in str(enc.get("_target_", "")), f"encoder {enc.get('_target_')!r} "
          "(npasr runs NeMo's ConformerEncoder / FastConformer)")  # fmt: skip
    _need(enc.get("subsampling", "striding") == "dw_striding",
          f"subsampling {enc.get('subsampling')!r} (only dw_striding)")  # fmt: skip
    _need(enc.get("self_attention_model", "rel_pos") == "rel_pos",
          f"self_attention_model {enc.get('self_attention_model')!r} (only rel_pos)")  # fmt: skip
    _need(bool(enc.get("untie_biases", True)), "untie_biases: false")
    _need(not enc.get("causal_downsampling", False), "causal_downsampling")
    _need(enc.get("reduction") in (None, "null"), f"reduction {enc.get('reduction')!r}")
    ctx = enc.get("att_context_size") or [-1, -1]
    _need(list(ctx) == [-1, -1], f"att_context_size {ctx} (a streaming model)")
    _need(int(pre.get("frame_splicing", 1)) == 1, "frame_splicing != 1")
    _need(pre.get("normalize", "per_feature") == "per_feature",
          f"normalize {pre.get('normalize')!r} (only per_feature)")  # fmt: skip
    _need(str(pre.get("window", "hann")) == "hann", f"window {pre.get('window')!r}")
    _need(pre.get("log", True) and pre.get("log_zero_guard_type", "add") == "add",
          "log features with an 'add' zero guard")  # fmt: skip
    _need(float(pre.get("mag_power", 2.0)) == 2.0, "mag_power != 2")
    _need(not pre.get("exact_pad", False), "exact_pad")
    sr = int(pre.get("sample_rate", cfg.get("sample_rate", 16000)))
    guard = pre.get("log_zero_guard_value", 2.0**-24)
    target = str(cfg.get("target", "")) + str(dec.get("_target_", ""))
    if "ConvASRDecoder" in str(dec.get("_target_", "")):
        head: Head = "ctc"
    else:
        _need("RNNTDecoder" in target or "prednet" in dec, f"decoder {dec.get('_target_')!r}")
        durs = (cfg.get("decoding") or {}).get("durations") or \
            (cfg.get("model_defaults") or {}).get("tdt_durations") or []  # fmt: skip
        head = "tdt" if durs else "rnnt"
    prednet, jointnet = dec.get("prednet") or {}, joint.get("jointnet") or {}
    if head != "ctc":
        act = str(jointnet.get("activation", "relu")).lower()
        _need(act == "relu", f"joint activation {act!r} (only relu)")
    greedy = ((cfg.get("decoding") or {}).get("greedy") or {})
    win = int(round(float(pre.get("window_size", 0.02)) * sr))
    return ParakeetConfig(
        sample_rate=sr, features=int(pre.get("features", 64)),
        n_fft=int(pre.get("n_fft") or 2 ** (win - 1).bit_length()), win_length=win,
        hop_length=int(round(float(pre.get("window_stride", 0.01)) * sr)),
        preemph=float(pre.get("preemph", 0.97) or 0.0),
        log_guard=float(guard) if not isinstance(guard, str) else _guard(guard),
        feat_in=int(enc.get("feat_in", pre.get("features", 128))),
        n_layers=int(enc["n_layers"]), d_model=int(enc["d_model"]),
        n_heads=int(enc.get("n_heads", 4)),
        ff_expansion_factor=int(enc.get("ff_expansion_factor", 4)),
        subsampling_factor=int(enc.get("subsampling_factor", 4)),
        subsampling_conv_channels=_channels(enc),
        conv_kernel_size=int(enc.get("conv_kernel_size", 31)),
        conv_norm_type=enc.get("conv_norm_type", "batch_norm"),
        xscaling=bool(enc.get("xscaling", True)), use_bias=bool(enc.get("use_bias", True)),
        pos_emb_max_len=int(enc.get("pos_emb_max_len", 5000)),
        head=head, vocab_size=vocab_size,
        pred_hidden=int(prednet.get("pred_hidden", 0)) if head != "ctc" else 0,
        pred_rnn_layers=int(prednet.get("pred_rnn_layers", 1)) if head != "ctc" else 0,
        joint_hidden=int(jointnet.get("joint_hidden", 0)) if head != "ctc" else 0,
        durations=tuple(int(d) for d in durs) if head == "tdt" else (),
        max_symbols=int(greedy.get("max_symbols", 10) or 10),
        aux_ctc=bool((cfg.get("aux_ctc") or {}).get("decoder")),
    )  # fmt: skip


def _channels(enc: dict[str, Any]) -> int:
    c = enc.get("subsampling_conv_channels", -1)
    return int(enc["d_model"]) if c in (-1, None) else int(c)


def _guard(name: str) -> float:
    import numpy as np  # noqa: PLC0415

    if name == "tiny":
        return float(np.finfo(np.float32).tiny)
    if name == "eps":
        return float(np.finfo(np.float32).eps)
    raise ModelFileError(f"unsupported NeMo model: log_zero_guard_value {name!r}")


def from_hf(cfg: dict[str, Any], pre: dict[str, Any]) -> ParakeetConfig:
    """From a transformers ParakeetFor{TDT,RNNT,CTC} config.json (and its
    preprocessor_config.json, ParakeetFeatureExtractor). The vocabulary in `vocab_size`
    includes the blank, which is its last id."""
    kind = str(cfg.get("model_type", ""))
    heads = {"parakeet_tdt": "tdt", "parakeet_rnnt": "rnnt", "parakeet_ctc": "ctc"}
    _need(kind in heads, f"model_type {kind!r} (npasr reads {', '.join(heads)})")
    enc = cfg.get("encoder_config") or {}
    kernel = int(enc.get("subsampling_conv_kernel_size", 3))
    _need(kernel == 3 and int(enc.get("subsampling_conv_stride", 2)) == 2,
          "subsampling other than 3x3, stride 2")  # fmt: skip
    _need(bool(enc.get("attention_bias", True)) == bool(enc.get("convolution_bias", True)),
          "attention_bias != convolution_bias")  # fmt: skip
    vocab = int(cfg.get("vocab_size", 8193)) - 1
    blank = cfg.get("blank_token_id" if kind != "parakeet_ctc" else "pad_token_id", vocab)
    _need(int(blank) == vocab, f"blank id {blank} is not the last of {vocab + 1} classes")
    d = int(enc.get("hidden_size", 1024))
    head: Head = heads[kind]  # type: ignore[assignment]
    hidden = int(cfg.get("decoder_hidden_size", 640)) if head != "ctc" else 0
    return ParakeetConfig(
        sample_rate=int(pre.get("sampling_rate", 16000)),
        features=int(pre.get("feature_size", enc.get("num_mel_bins", 80))),
        n_fft=int(pre.get("n_fft", 512)), win_length=int(pre.get("win_length", 400)),
        hop_length=int(pre.get("hop_length", 160)), preemph=float(pre.get("preemphasis", 0.97)),
        feat_in=int(enc.get("num_mel_bins", 80)),
        n_layers=int(enc.get("num_hidden_layers", 24)), d_model=d,
        n_heads=int(enc.get("num_attention_heads", 8)),
        ff_expansion_factor=int(enc.get("intermediate_size", 4 * d)) // d,
        subsampling_factor=int(enc.get("subsampling_factor", 8)),
        subsampling_conv_channels=int(enc.get("subsampling_conv_channels", 256)),
        conv_kernel_size=int(enc.get("conv_kernel_size", 9)),
        xscaling=bool(enc.get("scale_input", True)), use_bias=bool(enc.get("attention_bias", True)),
        pos_emb_max_len=int(enc.get("max_position_embeddings", 5000)),
        head=head, vocab_size=vocab, pred_hidden=hidden,
        pred_rnn_layers=int(cfg.get("num_decoder_layers", 2)) if head != "ctc" else 0,
        joint_hidden=hidden,
        durations=tuple(int(x) for x in cfg.get("durations", ())) if head == "tdt" else (),
        max_symbols=int(cfg.get("max_symbols_per_step", 10) or 10),
    )  # fmt: skip
