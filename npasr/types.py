"""Shared result records and error classes.

Errors are raised, never returned, and each one says what to do next (STYLE R12).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F16 = npt.NDArray[np.float16]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]


class NpasrError(Exception):
    """Base class of every error npasr raises on purpose."""


class AudioError(NpasrError):
    """The audio could not be read or is not usable (empty, truncated, NaN, not audio)."""


class ModelFileError(NpasrError):
    """A model file (GGUF, checkpoint, CTranslate2 dir) is missing, truncated or malformed."""


class UnsafeCheckpointError(ModelFileError):
    """A pickled checkpoint asked for something the restricted unpickler does not allow."""


class ModelNotFoundError(NpasrError):
    """A model name is neither a known name nor an existing path."""


class DeviceError(NpasrError):
    """The asked-for device cannot run this model here (no CUDA device, or not that model)."""


@dataclass
class Word:
    """One word with its times (openai-whisper's word_timestamps fields)."""

    word: str
    start: float  # seconds
    end: float  # seconds
    probability: float | None = None  # None where the model gives no per-word probability


@dataclass
class Segment:
    """One decoded stretch of audio, with openai-whisper's fields."""

    id: int
    seek: int  # mel frame where the 30 s window started
    start: float  # seconds
    end: float  # seconds
    text: str
    tokens: list[int] = field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    words: list[Word] = field(default_factory=list)  # empty unless the model times words


@dataclass
class TranscriptionResult:
    text: str
    segments: list[Segment]
    language: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "language": self.language,
            "segments": [_segment_dict(s) for s in self.segments],
        }


def _segment_dict(s: Segment) -> dict[str, Any]:
    d = asdict(s)
    if not d["words"]:
        del d["words"]  # as openai-whisper's JSON: words only when they were timed
    return d
