"""Whisper architecture record. Field names follow openai/whisper `ModelDimensions`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class WhisperConfig:
    n_mels: int  # 80 (tiny..large-v2) or 128 (large-v3, turbo)
    n_audio_ctx: int  # 1500 encoder positions = 30 s / 20 ms
    n_audio_state: int  # encoder width: 384 tiny, 512 base, ..., 1280 large
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int  # 51864 English-only, 51865 multilingual, 51866 large-v3
    n_text_ctx: int  # 448 decoder positions
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    @property
    def is_multilingual(self) -> bool:
        return self.n_vocab >= 51865

    @property
    def num_languages(self) -> int:
        # openai/whisper model.py: 99 languages, large-v3 adds Cantonese
        return self.n_vocab - 51765 - int(self.is_multilingual)

    @classmethod
    def from_openai(cls, dims: dict[str, Any]) -> WhisperConfig:
        return cls(**{f.name: int(dims[f.name]) for f in fields(cls)})

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> WhisperConfig:
        return cls(
            n_mels=int(cfg["num_mel_bins"]),
            n_audio_ctx=int(cfg["max_source_positions"]),
            n_audio_state=int(cfg["d_model"]),
            n_audio_head=int(cfg["encoder_attention_heads"]),
            n_audio_layer=int(cfg["encoder_layers"]),
            n_vocab=int(cfg["vocab_size"]),
            n_text_ctx=int(cfg["max_target_positions"]),
            n_text_state=int(cfg["d_model"]),
            n_text_head=int(cfg["decoder_attention_heads"]),
            n_text_layer=int(cfg["decoder_layers"]),
        )

    @classmethod
    def from_gguf(cls, meta: dict[str, Any]) -> WhisperConfig:
        return cls(**{f.name: int(meta[f"whisper.{f.name}"]) for f in fields(cls)})

    def to_gguf(self) -> dict[str, int]:
        return {f"whisper.{k}": v for k, v in asdict(self).items()}
