"""CTranslate2 `model.bin` reader (binary version 6), memory-mapped, split files supported.

Layout (ctranslate2/specs/model_spec.py `ModelSpec._serialize`, CURRENT_BINARY_VERSION = 6),
all integers little-endian, strings as u16 length (counting a trailing NUL) + bytes + NUL:

    u32 version | string spec_name | u32 revision | u32 n_variables
    n_variables x (string name, u8 rank, u32 dims[rank], u8 dtype, u32 n_bytes, bytes)
    u32 n_aliases
    n_aliases x (string alias, string target)

Variables are not aligned, so views may be unaligned (NumPy copes; converters copy anyway).
A model may ship as byte-wise parts (model.bin.part1 + model.bin.part2); they are read as one
virtual file without writing a joined copy: only a tensor straddling two parts is copied.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from npasr.types import ModelFileError

SUPPORTED_VERSION = 6
# order of ctranslate2 DataType (include/ctranslate2/types.h); bf16 is read as its uint16 bits
_DTYPES = ("<f4", "i1", "<i2", "<i4", "<f2", "<u2")
_BF16 = 5


class _Parts:
    """Byte ranges of several memory-mapped files as if they were concatenated."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self.maps = [np.memmap(p, np.uint8, "r") if p.stat().st_size else None for p in paths]
        sizes = [p.stat().st_size for p in paths]
        self.starts = np.cumsum([0, *sizes]).tolist()
        self.size = self.starts[-1]
        self.pos = 0
        self.name = "+".join(p.name for p in paths)

    def take(self, n: int, what: str) -> np.ndarray:
        a, b = self.pos, self.pos + n
        if n < 0 or b > self.size:
            last = self.paths[-1].name
            hint = ""
            if last.startswith("model.bin.part") and last[14:].isdigit():
                nxt = f"model.bin.part{int(last[14:]) + 1}"
                hint = f"; is {nxt} missing? put every part of a split model beside {last}"
            raise ModelFileError(
                f"{self.paths[0].parent / self.name}: truncated: {what} needs bytes "
                f"[{a},{b}) but the file has {self.size}{hint}"
            )
        self.pos = b
        pieces = []
        for m, s, e in zip(self.maps, self.starts, self.starts[1:], strict=False):
            if m is not None and a < e and b > s:
                pieces.append(m[max(a, s) - s : min(b, e) - s])
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces) if pieces else np.zeros(0, np.uint8)

    def unpack(self, fmt: str, what: str) -> int:
        return int(struct.unpack(fmt, bytes(self.take(struct.calcsize(fmt), what)))[0])

    def string(self, what: str) -> str:
        n = self.unpack("<H", f"length of {what}")
        raw = bytes(self.take(n, what))
        if n == 0 or raw[-1] != 0:
            raise ModelFileError(f"{self.name}: {what} is not NUL-terminated")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise ModelFileError(f"{self.name}: {what} is not UTF-8") from None


def ct2_files(model_dir_or_bin: str | os.PathLike[str]) -> list[Path]:
    """model.bin, or model.bin.part1, .part2, ... in order (all in one directory)."""
    p = Path(model_dir_or_bin)
    if p.is_file():
        return [p]
    if (p / "model.bin").is_file():
        return [p / "model.bin"]
    parts = []
    while (p / f"model.bin.part{len(parts) + 1}").is_file():
        parts.append(p / f"model.bin.part{len(parts) + 1}")
    if not parts:
        raise ModelFileError(f"{p}: no CTranslate2 model.bin (or model.bin.part1) found")
    return parts


def read_ct2(
    model_dir_or_bin: str | os.PathLike[str], extra_parts: Sequence[str | os.PathLike[str]] = ()
) -> tuple[str, dict[str, np.ndarray], dict[str, str]]:
    """Read a CTranslate2 model: (spec name, variables by name, aliases alias -> target).

    `extra_parts` are appended after the file(s) found at `model_dir_or_bin` (for a model split
    across packages, e.g. part2 in another directory). Scalars come back as 0-d arrays.
    """
    files = ct2_files(model_dir_or_bin) + [Path(x) for x in extra_parts]
    for f in files:
        if not f.is_file():
            raise ModelFileError(f"{f}: no such CTranslate2 model part")
    r = _Parts(files)
    version = r.unpack("<I", "version")
    if version != SUPPORTED_VERSION:
        raise ModelFileError(
            f"{r.name}: CTranslate2 binary version {version}, npasr reads {SUPPORTED_VERSION} "
            "(re-convert with ctranslate2>=3)"
        )
    spec = r.string("spec name")
    r.unpack("<I", "spec revision")
    n_vars = r.unpack("<I", "variable count")
    if n_vars * 8 > r.size:  # smallest variable record is 8+ bytes
        raise ModelFileError(f"{r.name}: variable count {n_vars} exceeds the file size")
    variables: dict[str, np.ndarray] = {}
    for i in range(n_vars):
        name = r.string(f"variable name #{i}")
        rank = r.unpack("<B", f"rank of {name!r}")
        shape = tuple(r.unpack("<I", f"shape of {name!r}") for _ in range(rank))
        dt_id = r.unpack("<B", f"dtype of {name!r}")
        if dt_id >= len(_DTYPES):
            raise ModelFileError(f"{r.name}: variable {name!r} has unknown dtype id {dt_id}")
        dtype = np.dtype(_DTYPES[dt_id])
        n_bytes = r.unpack("<I", f"size of {name!r}")
        if n_bytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise ModelFileError(f"{r.name}: {name!r} has {n_bytes} bytes for shape {shape}")
        if name in variables:
            raise ModelFileError(f"{r.name}: duplicate variable {name!r}")
        a = r.take(n_bytes, f"variable {name!r}").view(dtype).reshape(shape)
        if dt_id == _BF16:  # bfloat16 is the top half of an IEEE float32
            a = (a.astype(np.uint32) << 16).view(np.float32)
        variables[name] = a
    aliases = {}
    for i in range(r.unpack("<I", "alias count")):
        alias = r.string(f"alias #{i}")
        aliases[alias] = r.string(f"target of alias {alias!r}")
        if aliases[alias] not in variables:
            raise ModelFileError(f"{r.name}: alias {alias!r} points to missing {aliases[alias]!r}")
    if r.pos != r.size:
        raise ModelFileError(f"{r.name}: {r.size - r.pos} unexpected bytes after the aliases")
    return spec, variables, aliases
