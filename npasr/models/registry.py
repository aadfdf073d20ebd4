"""The model families npasr converts and loads: one table, so that convert, hub, load_model and
the CLI never branch on a family's name.

A family is a directory under npasr/models/ whose `family.py` has these hooks:

    ARCHITECTURE: str   the GGUF general.architecture it writes and loads
    SOURCES: str        the checkpoints it converts, one line for error messages
    detect(path) -> bool
        cheap and side-effect free: looks at names, config.json, or the pickle bytes inside a
        torch zip (`torch_pickle`); never unpickles, never imports torch
    convert(paths, out, wtype, tokenizer) -> Path     checkpoint(s) -> GGUF at `out`
    load(f: GGUFFile, device) -> model with .transcribe()

Adding a family is its directory plus one line in FAMILIES. The hooks module is imported on first
use, and imports its own heavy parts (numba kernels, weights code) inside convert/load, so that
detection and `import npasr` stay light. Detection does not depend on the table's order: a source
that two families claim is refused rather than given to the first.
"""

from __future__ import annotations

import importlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from npasr.types import ModelFileError


@dataclass(frozen=True)
class Family:
    name: str
    module: str  # dotted path of the hooks module, e.g. "npasr.models.whisper.family"

    @property
    def hooks(self) -> ModuleType:
        return importlib.import_module(self.module)  # cached by sys.modules after the first

    @property
    def architecture(self) -> str:
        return str(self.hooks.ARCHITECTURE)

    @property
    def sources(self) -> str:
        return str(self.hooks.SOURCES)

    def detect(self, path: Path) -> bool:
        return bool(self.hooks.detect(path))

    def convert(self, paths: list[Path], out: str | os.PathLike[str], wtype: str,
                tokenizer: str | os.PathLike[str] | None) -> Path:  # fmt: skip
        return Path(self.hooks.convert(paths, out, wtype, tokenizer))

    def load(self, f: Any, device: str = "cpu") -> Any:  # f: npasr.io.gguf.GGUFFile
        return self.hooks.load(f, device)


FAMILIES: tuple[Family, ...] = (
    Family("gigaam", "npasr.models.gigaam.family"),
    Family("parakeet", "npasr.models.parakeet.family"),
    Family("qwen3_asr", "npasr.models.qwen3_asr.family"),
    Family("whisper", "npasr.models.whisper.family"),
)


def families() -> tuple[Family, ...]:
    return FAMILIES  # read at call time, so a patched table (tests) is seen everywhere


def detect(path: str | os.PathLike[str]) -> Family:
    """The one family whose detect() claims `path`; ModelFileError naming every supported source
    layout when none does, or naming the claimants when several do."""
    path = Path(path)
    claims = [f for f in families() if f.detect(path)]
    if len(claims) == 1:
        return claims[0]
    if claims:
        names = " and ".join(f.name for f in claims)
        raise ModelFileError(f"{path}: looks like a {names} checkpoint at once; npasr cannot "
                             "tell which model this is")  # fmt: skip
    raise ModelFileError(
        f"{path}: cannot tell which model this is; npasr converts "
        + "; ".join(f.sources for f in families())
    )


def for_architecture(arch: str, origin: str | os.PathLike[str] | None = None) -> Family:
    """The family that loads GGUF files of general.architecture `arch`; `origin` (the file)
    only prefixes the error message."""
    for f in families():
        if f.architecture == arch:
            return f
    where = f"{origin}: " if origin is not None else ""
    supported = ", ".join(f.architecture for f in families())
    raise ModelFileError(f"{where}architecture {arch!r} is not supported (npasr loads {supported})")


def torch_pickle(path: Path) -> bytes | None:
    """The pickle bytes of a torch.save zip (`<archive>/data.pkl`), not unpickled: detect()
    hooks search them for the names a family's checkpoint carries. None if not such a zip."""
    try:
        if not path.is_file():
            return None
        with zipfile.ZipFile(path) as zf:
            pkl = [n for n in zf.namelist() if n.endswith("/data.pkl")]
            return zf.read(pkl[0]) if len(pkl) == 1 else None
    except (zipfile.BadZipFile, OSError):
        return None
