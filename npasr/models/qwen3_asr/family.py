"""Qwen3-ASR's hooks for `npasr.models.registry`: which sources it converts, and the GGUF it loads.

Kept light on purpose (registry imports it to detect a source): the weights code and the
Numba model are imported inside convert/load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from npasr.types import DeviceError, ModelFileError

ARCHITECTURE = "qwen3_asr"
SOURCES = ("Qwen3-ASR and Qwen3-ForcedAligner checkpoints (a Hugging Face directory: "
           "config.json, safetensors, vocab.json + merges.txt; original or transformers layout)")


def detect(path: Path) -> bool:
    """A directory whose config.json names a Qwen3-ASR model (either layout)."""
    from npasr.models.qwen3_asr.config import is_qwen3_asr_config  # noqa: PLC0415 (light module)

    if not path.is_dir():
        return False
    try:
        cfg = json.loads((path / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and is_qwen3_asr_config(cfg)


def convert(paths: list[Path], out: str | os.PathLike[str], wtype: str,
            tokenizer: str | os.PathLike[str] | None) -> Path:  # fmt: skip
    from npasr.models.qwen3_asr import weights

    if len(paths) != 1:
        raise ModelFileError(f"{paths[0]}: a Qwen3-ASR checkpoint is one directory, "
                             f"not {len(paths)}")
    return weights.save_gguf(weights.load_source(paths[0], tokenizer), out, wtype)


def load(f: Any, device: str) -> Any:  # f: GGUFFile
    if device != "cpu":
        raise DeviceError(f"{f.path}: {ARCHITECTURE} models run on the CPU only (device='cpu')")
    if int(f.get("qwen3_asr.classify_num", 0)) > 0:
        from npasr.models.qwen3_asr.aligner import Qwen3ForcedAligner

        return Qwen3ForcedAligner.from_gguf(f)
    from npasr.models.qwen3_asr.asr import Qwen3ASRModel

    return Qwen3ASRModel.from_gguf(f)
