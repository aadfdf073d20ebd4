"""GigaAM's hooks for `npasr.models.registry`: which sources it converts, and the GGUF it loads.

Kept light on purpose (registry imports it to detect a source): the weights code and the
Numba model are imported inside convert/load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from npasr.models.registry import torch_pickle
from npasr.types import DeviceError, ModelFileError

ARCHITECTURE = "gigaam"
SOURCES = "GigaAM checkpoints (official .ckpt of salute-developers/GigaAM v2/v3)"


def detect(path: Path) -> bool:
    """A torch zip whose pickle names gigaam's hydra targets (`_target_: gigaam.model...`)."""
    pkl = torch_pickle(path)
    return pkl is not None and b"gigaam." in pkl


def convert(paths: list[Path], out: str | os.PathLike[str], wtype: str,
            tokenizer: str | os.PathLike[str] | None) -> Path:  # fmt: skip
    from npasr.models.gigaam import weights

    if len(paths) != 1:
        raise ModelFileError(f"{paths[0]}: a GigaAM checkpoint is one .ckpt file, not {len(paths)}")
    return weights.save_gguf(weights.load_source(paths[0], tokenizer), out, wtype)


def load(f: Any, device: str) -> Any:  # f: GGUFFile
    if device != "cpu":
        raise DeviceError(f"{f.path}: {ARCHITECTURE} models run on the CPU only (device='cpu')")
    from npasr.models.gigaam.asr import GigaAMModel

    return GigaAMModel.from_gguf(f)
