"""Checkpoint -> GGUF conversion: detect the model family of a source, then write npasr GGUF.

Whisper (CTranslate2 directory, openai .pt, Hugging Face directory) and GigaAM (official .ckpt);
the GGUF conventions are in weights/README.md. Weight types: f32, f16, q8_0, q4_0, q4_k, with the
per-tensor rule of `npasr.io.weights.storage_for`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from npasr.io.weights import check_wtype
from npasr.types import ModelFileError

Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


def convert(
    src: Source,
    out: str | os.PathLike[str],
    *,
    wtype: str = "f16",
    tokenizer: str | os.PathLike[str] | None = None,
) -> Path:
    """Convert `src` (a path, or the directories of a split CT2 model) to GGUF at `out`."""
    paths = [Path(p) for p in src] if isinstance(src, list | tuple) else [Path(src)]
    for p in paths:
        if not p.exists():
            raise ModelFileError(f"{p}: no such file or directory")
    check_wtype(wtype)  # before the load, so a bad --type fails fast
    if detect_family(paths[0]) == "gigaam":
        from npasr.models.gigaam import weights as gigaam  # noqa: PLC0415

        return gigaam.save_gguf(gigaam.load_source(paths[0], tokenizer), out, wtype)
    from npasr.models.whisper import weights as whisper  # noqa: PLC0415 (family modules on demand)

    if detect_family(paths[0]) != "whisper":
        raise ModelFileError(
            f"{paths[0]}: cannot tell which model this is; npasr converts Whisper checkpoints "
            "(CTranslate2 directory with model.bin, Hugging Face directory with config.json + "
            "model.safetensors, openai .pt)"
        )
    source = whisper.load_source(paths if len(paths) > 1 else paths[0], tokenizer=tokenizer)
    return whisper.save_gguf(source, out, wtype)


def detect_family(path: Path) -> str | None:
    """'whisper' or 'gigaam' when the source looks like one of their checkpoints, else None."""
    if path.is_dir():
        if any(path.glob("model.bin*")):  # CTranslate2: only WhisperSpec is convertible today
            return "whisper"
        cfg = path / "config.json"
        if cfg.is_file() and '"whisper"' in cfg.read_text("utf-8", errors="replace"):
            return "whisper"  # HF: "model_type": "whisper"
        return None
    if path.is_file() and path.suffix in (".pt", ".pth", ".ckpt"):
        from npasr.models.gigaam.weights import is_gigaam_checkpoint  # noqa: PLC0415

        if is_gigaam_checkpoint(path):  # the cfg pickle names gigaam.* hydra targets
            return "gigaam"
        return "whisper"  # the openai dims/model_state_dict layout is checked while loading
    return None
