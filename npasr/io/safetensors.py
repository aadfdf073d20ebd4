"""safetensors reader: JSON header + memory map, zero-copy, bounds-checked.

Layout (huggingface/safetensors README "Format"): u64 little-endian header size N, N bytes of
JSON `{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`, then the
byte buffer; offsets are relative to the start of that buffer.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from npasr.types import ModelFileError

_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "BF16": "<u2",  # bits; widened to f32 below
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}
_MAX_HEADER = 100_000_000  # the reference implementation's limit


def read_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors, `__metadata__`); tensors are views into one memory map (bf16 is widened)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such safetensors file")
    size = path.stat().st_size
    if size < 8:
        raise ModelFileError(f"{path}: truncated safetensors file ({size} bytes)")
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > min(_MAX_HEADER, size - 8):
            raise ModelFileError(f"{path}: header size {n} exceeds the file ({size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelFileError(f"{path}: header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: header is not a JSON object")
    meta = header.pop("__metadata__", {}) or {}
    mm = np.memmap(path, np.uint8, "r") if size > 8 + n else np.zeros(0, np.uint8)
    base = 8 + n
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        try:
            dtype = np.dtype(_DTYPES[info["dtype"]])
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelFileError(f"{path}: bad header entry for {name!r}: {info!r}") from None
        want = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if min(shape, default=0) < 0 or not 0 <= begin <= end or end - begin != want:
            raise ModelFileError(f"{path}: {name!r} has offsets {begin}..{end} for {shape}")
        if base + end > size:
            raise ModelFileError(
                f"{path}: truncated: tensor {name!r} needs bytes [{base + begin},{base + end}) "
                f"but file has {size}"
            )
        a = mm[base + begin : base + end].view(dtype).reshape(shape)
        if info["dtype"] == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = a
    return tensors, {str(k): str(v) for k, v in meta.items()}


def read_json(path: Path) -> dict:
    """A JSON object file (config.json, an index), with the file named in every error."""
    if not path.is_file():
        raise ModelFileError(f"{path}: missing")
    try:
        data = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path}: unreadable JSON: {e}") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: expected a JSON object")
    return data


def read_hf_weights(d: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every tensor of a Hugging Face model directory: `model.safetensors`, or the shards that
    `model.safetensors.index.json` names (each must exist and hold the tensors mapped to it)."""
    d = Path(d)
    index = d / "model.safetensors.index.json"
    if not index.is_file():
        return read_safetensors(d / "model.safetensors")[0]
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelFileError(f"{index}: no weight_map")
    tensors: dict[str, np.ndarray] = {}
    for shard in sorted(set(map(str, weight_map.values()))):
        if Path(shard).name != shard:
            raise ModelFileError(f"{index}: shard {shard!r} is not a file name in {d}")
        tensors.update(read_safetensors(d / shard)[0])
    missing = [k for k in weight_map if k not in tensors]
    if missing:
        raise ModelFileError(f"{index}: {len(missing)} tensors missing from the shards, "
                             f"e.g. {missing[0]!r}")  # fmt: skip
    return tensors
