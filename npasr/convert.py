"""Checkpoint -> GGUF conversion: find the model family of a source, let it write npasr GGUF.

The families and the sources each converts are in `npasr.models.registry`; the GGUF conventions
are in weights/README.md. Weight types: f32, f16, q8_0, q4_0, q4_k, with the per-tensor rule of
`npasr.io.weights.storage_for`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from npasr.io.weights import check_wtype
from npasr.models import registry
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
    return registry.detect(paths[0]).convert(paths, out, wtype, tokenizer)


def detect_family(path: str | os.PathLike[str]) -> str | None:
    """The name of the family whose checkpoint `path` is, else None (also when several claim it:
    `registry.detect` says which)."""
    try:
        return registry.detect(path).name
    except ModelFileError:
        return None
