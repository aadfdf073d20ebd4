"""Parakeet's hooks for `npasr.models.registry`: which sources it converts, and the GGUF it loads.

Kept light on purpose (registry imports it to detect a source): the weights code and the
Numba model are imported inside convert/load.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path
from typing import Any

from npasr.types import DeviceError, ModelFileError

ARCHITECTURE = "parakeet"
SOURCES = ("NVIDIA NeMo FastConformer models (.nemo archives: Parakeet TDT, RNN-T, CTC, "
           "hybrid; or a transformers ParakeetFor{TDT,RNNT,CTC} directory)")


HF_MODEL_TYPES = ("parakeet_tdt", "parakeet_rnnt", "parakeet_ctc")


def detect(path: Path) -> bool:
    """A tar archive holding a model_config.yaml (NeMo's .nemo; reads tar headers only), or a
    transformers directory whose config.json says model_type parakeet_{tdt,rnnt,ctc}. A `.nemo`
    file that is not such a tar is claimed too, so that its error names the problem."""
    if path.is_dir():
        try:
            cfg = json.loads((path / "config.json").read_text("utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(cfg, dict) and cfg.get("model_type") in HF_MODEL_TYPES
    if not path.is_file():
        return False
    if path.suffix == ".nemo":
        return True
    try:
        with tarfile.open(path, "r:*") as tf:
            return any(m.name.rsplit("/", 1)[-1] == "model_config.yaml" for m in tf)
    except (tarfile.TarError, EOFError, OSError):
        return False


def convert(paths: list[Path], out: str | os.PathLike[str], wtype: str,
            tokenizer: str | os.PathLike[str] | None) -> Path:  # fmt: skip
    from npasr.models.parakeet import weights

    if len(paths) != 1:
        raise ModelFileError(f"{paths[0]}: a NeMo model is one .nemo file, not {len(paths)}")
    return weights.save_gguf(weights.load_source(paths[0], tokenizer), out, wtype)


def load(f: Any, device: str) -> Any:  # f: GGUFFile
    if device != "cpu":
        raise DeviceError(f"{f.path}: {ARCHITECTURE} models run on the CPU only (device='cpu')")
    from npasr.models.parakeet.asr import ParakeetModel

    return ParakeetModel.from_gguf(f)
