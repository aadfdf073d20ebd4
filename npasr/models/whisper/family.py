"""Whisper's hooks for `npasr.models.registry`: which sources it converts, and the GGUF it loads.

Kept light on purpose (registry imports it to detect a source): the weights code and the
Numba model are imported inside convert/load.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from npasr.models.registry import torch_pickle

ARCHITECTURE = "whisper"
SOURCES = (
    "Whisper checkpoints (CTranslate2 directory with model.bin, Hugging Face directory with "
    "config.json + model.safetensors, openai .pt)"
)


def detect(path: Path) -> bool:
    if path.is_dir():
        if any(path.glob("model.bin*")):  # CTranslate2 (model.bin, or .partN of a split one);
            return True  # its spec is checked while loading: only WhisperSpec converts
        return _hf_model_type(path / "config.json") == "whisper"
    # openai-whisper's torch.save({"dims": ..., "model_state_dict": ...}), by the key names
    pkl = torch_pickle(path)
    return pkl is not None and b"dims" in pkl and b"model_state_dict" in pkl


def _hf_model_type(cfg: Path) -> object:
    try:
        return json.loads(cfg.read_text("utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):  # missing, not JSON, or not a JSON object
        return None


def convert(paths: list[Path], out: str | os.PathLike[str], wtype: str,
            tokenizer: str | os.PathLike[str] | None) -> Path:  # fmt: skip
    from npasr.models.whisper import weights

    source = weights.load_source(paths if len(paths) > 1 else paths[0], tokenizer=tokenizer)
    return weights.save_gguf(source, out, wtype)


def load(f: Any, device: str) -> Any:  # f: GGUFFile
    from npasr.models.whisper.asr import WhisperModel

    return WhisperModel.from_gguf(f, device=device)  # device "cuda": the encoder on a GPU
