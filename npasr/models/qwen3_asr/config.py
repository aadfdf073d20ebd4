"""Qwen3-ASR architecture record: read from either config.json layout and stored in GGUF as
`qwen3_asr.<field>`.

Two layouts exist (shared/REFERENCE.md §3.1):
* the original Qwen/Qwen3-ASR repos (qwen-asr package): `thinker_config` holding `audio_config`,
  `text_config` and the special token ids;
* the transformers-native one (`-hf` repos, transformers >= 5): `audio_config`, `text_config`
  and the ids at the top level.
The forced aligner has the same thinker with a classification head (`classify_num` classes).
Every size and id is read from the file; the defaults below only fill keys a layout leaves out
and are the class defaults of that layout (the tokenizer ids are checked against the tokenizer
at conversion).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from npasr.types import ModelFileError

PREFIX = "qwen3_asr."


@dataclass(frozen=True)
class Qwen3ASRConfig:
    # audio encoder (AuT)
    num_mel_bins: int = 128
    encoder_layers: int = 18
    encoder_attention_heads: int = 14
    encoder_ffn_dim: int = 3584
    d_model: int = 896
    n_window: int = 50  # a conv chunk is 2 * n_window mel frames
    n_window_infer: int = 800  # mel frames per attention window
    downsample_hidden_size: int = 480
    output_dim: int = 1024  # = the LLM width
    # LLM (Qwen3)
    vocab_size: int = 151936
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6
    max_position_embeddings: int = 65536
    # token ids the model itself uses (the prompt's others come from the tokenizer)
    audio_token_id: int = 151676
    # forced aligner: a classification head of classify_num classes (0: an ASR model)
    classify_num: int = 0
    timestamp_token_id: int = 151705
    timestamp_segment_time: float = 80.0  # ms per aligner class

    @property
    def aligner(self) -> bool:
        return self.classify_num > 0

    @property
    def chunk_frames(self) -> int:
        return 2 * self.n_window

    @property
    def tokens_per_chunk(self) -> int:
        return conv_out_length(self.chunk_frames)

    @property
    def window_tokens(self) -> int:
        """Audio tokens per attention window (104 at 13 tokens per 100-frame chunk)."""
        return self.tokens_per_chunk * (self.n_window_infer // self.chunk_frames)

    def audio_tokens(self, n_frames: int) -> int:
        """Audio tokens for n_frames mel frames: 13 per full chunk plus the tail's."""
        full, tail = divmod(n_frames, self.chunk_frames)
        return full * self.tokens_per_chunk + conv_out_length(tail)

    def to_gguf(self) -> dict[str, Any]:
        return {PREFIX + k: v for k, v in asdict(self).items()}

    @classmethod
    def from_gguf(cls, meta: dict[str, Any]) -> Qwen3ASRConfig:
        kw: dict[str, Any] = {}
        for f in fields(cls):
            key = PREFIX + f.name
            if key not in meta:
                raise ModelFileError(f"GGUF metadata has no {key}")
            kw[f.name] = type(f.default)(meta[key])
        return cls(**kw)

    def check(self) -> None:
        problems = []
        if self.d_model % self.encoder_attention_heads:
            problems.append(f"d_model {self.d_model} is not a multiple of "
                            f"{self.encoder_attention_heads} heads")  # fmt: skip
        if self.num_attention_heads % self.num_key_value_heads:
            problems.append(f"{self.num_attention_heads} query heads do not share "
                            f"{self.num_key_value_heads} key/value heads evenly")  # fmt: skip
        if self.head_dim % 2:
            problems.append(f"head_dim {self.head_dim} is odd (RoPE rotates pairs)")
        if self.n_window_infer % self.chunk_frames:
            problems.append(f"n_window_infer {self.n_window_infer} is not a multiple of the "
                            f"{self.chunk_frames}-frame chunk")  # fmt: skip
        if self.output_dim != self.hidden_size:
            problems.append(f"audio output_dim {self.output_dim} != LLM hidden_size "
                            f"{self.hidden_size}")  # fmt: skip
        if self.d_model % 2:
            problems.append(f"d_model {self.d_model} is odd (sinusoidal positions)")
        if problems:
            raise ModelFileError("Qwen3-ASR config: " + "; ".join(problems))


def conv_out_length(n: int) -> int:
    """Frames after the stem's three (kernel 3, stride 2, padding 1) convolutions; 0 stays 0."""
    for _ in range(3):
        n = (n - 1) // 2 + 1 if n > 0 else 0
    return n


_AUDIO_KEYS = ("num_mel_bins", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim",
               "d_model", "n_window", "n_window_infer", "downsample_hidden_size",
               "output_dim")  # fmt: skip
_TEXT_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
              "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps",
              "max_position_embeddings")  # fmt: skip
MODEL_TYPES = ("qwen3_asr", "qwen3_forced_aligner")


def is_qwen3_asr_config(cfg: dict[str, Any]) -> bool:
    """config.json of either layout (model_type, or the architectures it names)."""
    archs = cfg.get("architectures") or []
    return cfg.get("model_type") in MODEL_TYPES or any(
        isinstance(a, str) and a.startswith("Qwen3ASR") for a in archs
    )


def layout(cfg: dict[str, Any]) -> str:
    """'orig' (thinker_config: the Qwen/Qwen3-ASR repos) or 'hf' (transformers-native)."""
    return "orig" if isinstance(cfg.get("thinker_config"), dict) else "hf"


def from_hf_config(cfg: dict[str, Any], source: str = "config.json") -> Qwen3ASRConfig:
    """Qwen3ASRConfig from config.json of either layout; ModelFileError naming what is missing
    or of another architecture."""
    if not is_qwen3_asr_config(cfg):
        raise ModelFileError(f"{source}: model_type {cfg.get('model_type')!r} "
                             f"({cfg.get('architectures')}) is not Qwen3-ASR")  # fmt: skip
    top = cfg["thinker_config"] if layout(cfg) == "orig" else cfg
    audio, text = top.get("audio_config"), top.get("text_config")
    if not isinstance(audio, dict) or not isinstance(text, dict):
        raise ModelFileError(f"{source}: no audio_config / text_config")
    kw: dict[str, Any] = {}
    for keys, part in ((_AUDIO_KEYS, audio), (_TEXT_KEYS, text)):
        for k in keys:
            if k in part and part[k] is not None:
                kw[k] = part[k]
    kw["head_dim"] = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
    kw["rope_theta"] = _rope_theta(text, source)
    for k in ("audio_token_id", "timestamp_token_id", "classify_num", "timestamp_segment_time"):
        v = top.get(k, cfg.get(k))
        if v is not None:
            kw[k] = v
    archs = cfg.get("architectures") or []
    aligner = cfg.get("model_type") == "qwen3_forced_aligner" or any(
        "TokenClassification" in str(a) or "ForcedAligner" in str(a) for a in archs
    )
    if aligner:
        n = top.get("classify_num", cfg.get("num_labels"))
        if n is None and isinstance(cfg.get("id2label"), dict):
            n = len(cfg["id2label"])
        if not n:
            raise ModelFileError(f"{source}: a forced aligner config without classify_num")
        kw["classify_num"] = n
    else:  # an ASR model: the aligner's fields keep their defaults (both layouts alike)
        kw["classify_num"] = 0
        kw.pop("timestamp_token_id", None)
        kw.pop("timestamp_segment_time", None)
    try:
        out = Qwen3ASRConfig(**{f.name: type(f.default)(kw[f.name]) if f.name in kw else f.default
                                for f in fields(Qwen3ASRConfig)})  # fmt: skip
    except (TypeError, ValueError) as e:
        raise ModelFileError(f"{source}: bad value in the Qwen3-ASR config: {e}") from None
    out.check()
    return out


def _rope_theta(text: dict[str, Any], source: str) -> float:
    """rope_theta from `rope_parameters` (transformers 5), `rope_scaling` or the plain key.
    mRoPE sections are accepted: the three position rows are equal for audio-only prompts, so
    the rotation is 1-D RoPE (REFERENCE.md §3.4); any other scaling is refused."""
    params = text.get("rope_parameters") or {}
    scaling = text.get("rope_scaling") or {}
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind not in ("default", "mrope"):
        raise ModelFileError(f"{source}: RoPE type {kind!r} is not supported")
    theta = params.get("rope_theta", text.get("rope_theta"))
    if theta is None:
        raise ModelFileError(f"{source}: text_config has no rope_theta")
    return float(theta)
