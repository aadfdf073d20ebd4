"""`WhisperModel`: a Whisper GGUF file turned into a `transcribe()` call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from npasr.audio.io import load_audio
from npasr.io.gguf import GGUFFile, read_gguf
from npasr.models.whisper import transcribe as _transcribe
from npasr.models.whisper.config import WhisperConfig
from npasr.models.whisper.languages import language_code
from npasr.models.whisper.model import Whisper
from npasr.models.whisper.tokenizer import WhisperTokenizer
from npasr.types import ModelFileError, Segment, TranscriptionResult


class WhisperModel:
    def __init__(self, model: Whisper, tokenizer: WhisperTokenizer, name: str = "whisper") -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name

    @property
    def config(self) -> WhisperConfig:
        return self.model.config

    @property
    def is_multilingual(self) -> bool:
        return self.model.config.is_multilingual

    @classmethod
    def from_gguf(cls, gguf: GGUFFile | str | Path, device: str = "cpu") -> WhisperModel:
        """device "cuda": the encoder's blocks run on a CUDA GPU (`models.whisper.gpu`:
        experimental, checked in Numba's CUDA simulator only); everything else on the CPU."""
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', not {device!r}")
        f = gguf if isinstance(gguf, GGUFFile) else read_gguf(gguf)
        if f.architecture != "whisper":
            raise ModelFileError(f"{f.path}: architecture is {f.architecture!r}, not 'whisper'")
        try:
            cfg = WhisperConfig.from_gguf(f.metadata)
        except KeyError as e:
            raise ModelFileError(f"{f.path}: missing hyper-parameter {e.args[0]}") from e
        tokens = f.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, list) or len(tokens) != cfg.n_vocab:
            n = len(tokens) if isinstance(tokens, list) else 0
            raise ModelFileError(
                f"{f.path}: tokenizer has {n} tokens but the model has n_vocab={cfg.n_vocab}"
            )
        tok = WhisperTokenizer(
            tokens, multilingual=cfg.is_multilingual, num_languages=cfg.num_languages
        )
        model = Whisper.load(f.tensors, cfg, origin=str(f.path))
        f.release_pages()  # the quantized weights were repacked: their file pages are spent
        if device == "cuda":
            from npasr.models.whisper.gpu import GpuAudioEncoder  # noqa: PLC0415

            model.encoder = GpuAudioEncoder.from_encoder(model.encoder)  # type: ignore[assignment]
        heads = f.get("whisper.alignment_heads")
        if heads:
            model.alignment_heads = np.asarray(heads, np.int32).reshape(-1, 2)
        return cls(model, tok, name=str(f.get("general.name", Path(f.path).stem)))

    def detect_language(self, audio: Any) -> dict[str, float]:
        """Language probabilities from the first 30 s (multilingual models)."""
        from npasr.audio.features import log_mel_whisper
        from npasr.audio.io import pad_or_trim
        from npasr.models.whisper.decode import detect_language

        if not self.is_multilingual:
            return {"en": 1.0}
        mel = pad_or_trim(
            log_mel_whisper(self._audio(audio), self.config.n_mels), _transcribe.N_FRAMES
        )
        return detect_language(
            self.model, self.tokenizer, self.model.decoder.cross_kv(self.model.encoder(mel))
        )

    @staticmethod
    def _audio(audio: Any) -> np.ndarray:
        return (
            audio
            if isinstance(audio, np.ndarray) and audio.dtype == np.float32 and audio.ndim == 1
            else load_audio(audio)
        )

    def transcribe(
        self,
        audio: Any,
        *,
        language: str | None = None,
        task: str = "transcribe",
        temperature: float | Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
        beam_size: int | None = None,
        best_of: int | None = None,
        patience: float | None = None,
        length_penalty: float | None = None,
        initial_prompt: str | None = None,
        condition_on_previous_text: bool = True,
        compression_ratio_threshold: float | None = 2.4,
        logprob_threshold: float | None = -1.0,
        no_speech_threshold: float | None = 0.6,
        suppress_tokens: str | list[int] | None = "-1",
        suppress_blank: bool = True,
        without_timestamps: bool = False,
        max_initial_timestamp: float | None = 1.0,
        progress_callback: Callable[[float, float], None] | None = None,
        segment_callback: Callable[[Segment], None] | None = None,
    ) -> TranscriptionResult:
        """Transcribe a path, bytes, '-' (stdin) or a 16 kHz float32 array.

        Option names and defaults are openai-whisper's `transcribe()`.
        """
        if beam_size is not None and beam_size < 1:
            raise ValueError("beam_size must be >= 1")
        lang = language_code(language) if language else None
        return _transcribe.transcribe(
            self.model,
            self.tokenizer,
            self._audio(audio),
            language=lang,
            task=task,
            temperature=temperature,
            compression_ratio_threshold=compression_ratio_threshold,
            logprob_threshold=logprob_threshold,
            no_speech_threshold=no_speech_threshold,
            condition_on_previous_text=condition_on_previous_text,
            initial_prompt=initial_prompt,
            beam_size=beam_size,
            best_of=best_of,
            patience=patience,
            length_penalty=length_penalty,
            suppress_tokens=suppress_tokens,
            suppress_blank=suppress_blank,
            without_timestamps=without_timestamps,
            max_initial_timestamp=max_initial_timestamp,
            progress_callback=progress_callback,
            segment_callback=segment_callback,
        )
