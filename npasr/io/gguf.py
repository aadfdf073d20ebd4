"""GGUF reader (hostile-input safe, zero-copy) and writer.

Layout (ggml docs/gguf.md, GGUF v3; v2 has the same layout with 64-bit counts):

    u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
    n_kv      x (string key, u32 value_type, value)
    n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset)
    padding to `general.alignment` (default 32), then the tensor data; every offset is relative
    to the start of the data and a multiple of the alignment.

A string is a u64 byte length + UTF-8 bytes; an array is u32 item type + u64 count + items.
`ne[0]` is the fastest-varying dimension, so the NumPy shape is `ne` reversed.

Every length and count read from the file is checked against the bytes that remain before
anything is allocated, and every violation raises `ModelFileError` naming the file.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from npasr.types import ModelFileError

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3  # what we write; we read 2 and 3
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME_BYTES = 63  # GGML_MAX_NAME (64) minus the terminating NUL


class GGMLType(IntEnum):
    """ggml tensor types (ggml.h `enum ggml_type`); only the ones npasr can meet."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    BF16 = 30


QK_K = 256  # super-block size of the k-quants
# (elements per block, bytes per block), the gguf-py GGML_QUANT_SIZES form
GGML_BLOCK: dict[GGMLType, tuple[int, int]] = {
    GGMLType.F32: (1, 4),
    GGMLType.F16: (1, 2),
    GGMLType.Q4_0: (32, 2 + 16),
    GGMLType.Q4_1: (32, 2 + 2 + 16),
    GGMLType.Q5_0: (32, 2 + 4 + 16),
    GGMLType.Q5_1: (32, 2 + 2 + 4 + 16),
    GGMLType.Q8_0: (32, 2 + 32),
    GGMLType.Q8_1: (32, 4 + 4 + 32),
    GGMLType.Q2_K: (QK_K, 2 + 2 + QK_K // 16 + QK_K // 4),
    GGMLType.Q3_K: (QK_K, 2 + QK_K // 4 + QK_K // 8 + 12),
    GGMLType.Q4_K: (QK_K, 2 + 2 + QK_K // 2 + 12),
    GGMLType.Q5_K: (QK_K, 2 + 2 + QK_K // 2 + QK_K // 8 + 12),
    GGMLType.Q6_K: (QK_K, 2 + QK_K // 2 + QK_K // 4 + QK_K // 16),
    GGMLType.Q8_K: (QK_K, 4 + QK_K + QK_K // 8),
    GGMLType.I8: (1, 1),
    GGMLType.I16: (1, 2),
    GGMLType.I32: (1, 4),
    GGMLType.I64: (1, 8),
    GGMLType.F64: (1, 8),
    GGMLType.BF16: (1, 2),
}
# types that are plain NumPy arrays; everything else comes back as a RawTensor
_NUMPY_TYPES = {
    GGMLType.F32: np.dtype("<f4"),
    GGMLType.F16: np.dtype("<f2"),
    GGMLType.I8: np.dtype("i1"),
    GGMLType.I16: np.dtype("<i2"),
    GGMLType.I32: np.dtype("<i4"),
    GGMLType.I64: np.dtype("<i8"),
    GGMLType.F64: np.dtype("<f8"),
}


class ValueType(IntEnum):
    """GGUF metadata value types (gguf.md `gguf_metadata_value_type`)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_SCALAR_DTYPE = {
    ValueType.UINT8: np.dtype("u1"),
    ValueType.INT8: np.dtype("i1"),
    ValueType.UINT16: np.dtype("<u2"),
    ValueType.INT16: np.dtype("<i2"),
    ValueType.UINT32: np.dtype("<u4"),
    ValueType.INT32: np.dtype("<i4"),
    ValueType.FLOAT32: np.dtype("<f4"),
    ValueType.BOOL: np.dtype("u1"),
    ValueType.UINT64: np.dtype("<u8"),
    ValueType.INT64: np.dtype("<i8"),
    ValueType.FLOAT64: np.dtype("<f8"),
}
_MIN_ITEM_BYTES = {ValueType.STRING: 8, ValueType.ARRAY: 12}  # empty string / empty array


@dataclass(frozen=True)
class RawTensor:
    """A tensor whose ggml type has no NumPy dtype (quantized, bf16): raw blocks, zero-copy."""

    ggml_type: GGMLType
    shape: tuple[int, ...]  # NumPy order (ne reversed)
    data: np.ndarray  # uint8 view into the file, n_blocks * bytes_per_block


@dataclass
class GGUFFile:
    path: Path
    version: int
    file_size: int
    metadata: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, np.ndarray | RawTensor] = field(default_factory=dict)
    tensor_types: dict[str, GGMLType] = field(default_factory=dict)
    mapping: np.memmap | None = field(default=None, repr=False)  # the file, read-only

    def release_pages(self) -> None:
        """Drop the mapped file's pages from this process's resident memory (madvise
        MADV_DONTNEED on the read-only mapping; where the OS has no madvise, nothing).

        For after a model's load: quantized weights are repacked into the kernels' layouts, so
        their bytes in the file are not read again, yet every page the repacking touched stays
        counted in the process's RSS (Whisper base q8_0: ~55 MB). A page still read later (a
        float weight used in place, a token-table row) comes back from the OS page cache on
        its next access, with the same bytes: only residency changes, never a value."""
        mm = getattr(self.mapping, "_mmap", None)
        if mm is not None and hasattr(mmap, "MADV_DONTNEED"):
            mm.madvise(mmap.MADV_DONTNEED)

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)


class _Cursor:
    """Bounds-checked little-endian reads over the mapped file."""

    def __init__(self, mm: np.ndarray, path: Path) -> None:
        # a memoryview slices ~10x faster than the memmap itself (51k token strings)
        self.buf, self.path, self.pos, self.size = memoryview(mm), path, 0, int(mm.shape[0])

    def fail(self, what: str) -> ModelFileError:
        return ModelFileError(f"{self.path}: bad GGUF file: {what}")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(
                f"truncated: {what} needs bytes [{self.pos},{self.pos + n}) "
                f"but file has {self.size}"
            )

    def unpack(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v

    def string(self, what: str) -> str:
        return self.strings(1, what, single=True)[0]

    def strings(self, count: int, what: str, single: bool = False) -> list[str]:
        """`count` length-prefixed UTF-8 strings in a row (a tokenizer's vocabulary), each
        bounds-checked; an error names item i as what[i] (or `what` itself if `single`), built
        only then (51864 names cost more than the parse)."""
        buf, pos, size, out = self.buf, self.pos, self.size, []

        def name(i: int) -> str:
            return what if single else f"{what}[{i}]"

        for i in range(count):
            if pos + 8 > size:
                self.pos = pos
                self.need(8, f"length of {name(i)}")
            (n,) = struct.unpack_from("<Q", buf, pos)
            pos += 8
            if n > size - pos:
                self.pos = pos
                self.need(n, f"{name(i)} ({n} bytes)")
            try:
                out.append(str(buf[pos : pos + n], "utf-8"))
            except UnicodeDecodeError as e:
                raise self.fail(f"{name(i)} is not valid UTF-8 ({e.reason})") from None
            pos += n
        self.pos = pos
        return out

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype == ValueType.STRING:
            return self.string(what)
        if vtype == ValueType.ARRAY:
            if depth > 0:
                raise self.fail(f"{what}: nested arrays are not supported")
            sub = self.unpack("<I", f"item type of {what}")
            count = self.unpack("<Q", f"length of {what}")
            if sub not in ValueType.__members__.values():
                raise self.fail(f"{what}: unknown array item type {sub}")
            sub = ValueType(sub)
            if sub in _SCALAR_DTYPE:
                dt = _SCALAR_DTYPE[sub]
                self.need(count * dt.itemsize, f"{what} ({count} items)")
                arr = np.frombuffer(self.buf, dt, count, self.pos)
                self.pos += count * dt.itemsize
                return arr.astype(bool).tolist() if sub == ValueType.BOOL else arr.tolist()
            # check the count against the smallest possible item before building a list
            self.need(count * _MIN_ITEM_BYTES[sub], f"{what} ({count} items)")
            if sub == ValueType.STRING:
                return self.strings(count, what)
            return [self.value(sub, f"{what}[{i}]", depth + 1) for i in range(count)]
        if vtype not in _SCALAR_DTYPE:
            raise self.fail(f"{what}: unknown value type {vtype}")
        dt = _SCALAR_DTYPE[ValueType(vtype)]
        self.need(dt.itemsize, what)
        v = np.frombuffer(self.buf, dt, 1, self.pos)[0].item()
        self.pos += dt.itemsize
        return bool(v) if vtype == ValueType.BOOL else v


def read_gguf(path: str | os.PathLike[str]) -> GGUFFile:
    """Map a GGUF file; tensors are views into one read-only `np.memmap` of it."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such GGUF file")
    size = path.stat().st_size
    if size < 24:
        raise ModelFileError(f"{path}: bad GGUF file: {size} bytes is shorter than the header")
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    cur = _Cursor(mm, path)
    if bytes(mm[:4]) != GGUF_MAGIC:
        raise cur.fail(f"magic is {bytes(mm[:4])!r}, expected {GGUF_MAGIC!r}")
    cur.pos = 4
    version = cur.unpack("<I", "version")
    if version not in (2, 3):
        raise cur.fail(f"unsupported version {version} (npasr reads 2 and 3, little-endian)")
    n_tensors = cur.unpack("<Q", "tensor count")
    n_kv = cur.unpack("<Q", "metadata count")
    # smallest kv: empty key (8) + type (4) + 1-byte value; smallest tensor info: 8+4+4+8
    if n_kv * 13 > size - cur.pos or n_tensors * 24 > size - cur.pos:
        raise cur.fail(f"counts (n_kv={n_kv}, n_tensors={n_tensors}) exceed the file size {size}")

    g = GGUFFile(path=path, version=version, file_size=size, mapping=mm)
    for i in range(n_kv):
        key = cur.string(f"metadata key #{i}")
        if key in g.metadata:
            raise cur.fail(f"duplicate metadata key {key!r}")
        vtype = cur.unpack("<I", f"type of {key!r}")
        g.metadata[key] = cur.value(vtype, f"metadata {key!r}")

    alignment = g.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if type(alignment) is not int or alignment <= 0 or alignment & (alignment - 1):
        raise cur.fail(f"general.alignment={alignment!r} is not a positive power of two")

    infos = []
    for i in range(n_tensors):
        name = cur.string(f"tensor name #{i}")
        n_dims = cur.unpack("<I", f"n_dims of {name!r}")
        if n_dims > MAX_DIMS:
            raise cur.fail(f"tensor {name!r} has {n_dims} dims (max {MAX_DIMS})")
        ne = [cur.unpack("<Q", f"dims of {name!r}") for _ in range(n_dims)]
        ttype = cur.unpack("<I", f"type of {name!r}")
        offset = cur.unpack("<Q", f"offset of {name!r}")
        infos.append((name, ne, ttype, offset))

    data_start = -(-cur.pos // alignment) * alignment
    for name, ne, ttype, offset in infos:
        if name in g.tensors:
            raise cur.fail(f"duplicate tensor name {name!r}")
        g.tensors[name], g.tensor_types[name] = _tensor(
            cur, mm, (name, ne, ttype, data_start + offset), alignment
        )
    return g


def _tensor(
    cur: _Cursor, mm: np.ndarray, info: tuple[str, list[int], int, int], align: int
) -> tuple[np.ndarray | RawTensor, GGMLType]:
    name, ne, ttype, start = info  # start: absolute byte offset in the file
    if ttype not in GGML_BLOCK:
        raise cur.fail(f"tensor {name!r} has unknown ggml type {ttype}")
    gtype = GGMLType(ttype)
    block, block_bytes = GGML_BLOCK[gtype]
    n_el = int(np.prod(ne, dtype=object)) if ne else 1
    if ne and ne[0] % block:
        raise cur.fail(f"tensor {name!r}: ne[0]={ne[0]} is not a multiple of {gtype.name} block")
    if start % align:
        raise cur.fail(f"tensor {name!r}: data offset {start} is not {align}-byte aligned")
    nbytes = n_el // block * block_bytes
    if start + nbytes > cur.size:
        raise cur.fail(
            f"truncated: tensor {name!r} needs bytes [{start},{start + nbytes}) "
            f"but file has {cur.size}"
        )
    shape = tuple(reversed(ne))
    raw = mm[start : start + nbytes]
    if gtype in _NUMPY_TYPES:
        return raw.view(_NUMPY_TYPES[gtype]).reshape(shape), gtype
    return RawTensor(gtype, shape, raw), gtype


# ---------------------------------------------------------------------------------------------
# writer


def _pack_value(v: Any) -> tuple[ValueType, bytes]:  # noqa: PLR0911 (a return per value kind)
    """Type a Python/NumPy value: int -> u32 (i64 if it does not fit), float -> f32,
    NumPy scalars and 1-D arrays keep their dtype, lists take the type of their items."""
    if isinstance(v, bool | np.bool_):
        return ValueType.BOOL, struct.pack("<?", bool(v))
    if isinstance(v, str):
        b = v.encode("utf-8")
        return ValueType.STRING, struct.pack("<Q", len(b)) + b
    if isinstance(v, np.generic):
        v = np.asarray(v)
    if isinstance(v, np.ndarray):
        if v.ndim == 0:
            vt = _value_type_of(v.dtype)
            return vt, v.astype(_SCALAR_DTYPE[vt]).tobytes()
        if v.ndim != 1:
            raise ValueError("GGUF metadata arrays must be 1-D")
        vt = _value_type_of(v.dtype)
        head = struct.pack("<IQ", vt, v.shape[0])
        return ValueType.ARRAY, head + v.astype(_SCALAR_DTYPE[vt]).tobytes()
    if isinstance(v, int):
        if 0 <= v < 2**32:
            return ValueType.UINT32, struct.pack("<I", v)
        return ValueType.INT64, struct.pack("<q", v)
    if isinstance(v, float):
        return ValueType.FLOAT32, struct.pack("<f", v)
    if isinstance(v, list | tuple):
        items = [_pack_value(x) for x in v]
        types = {t for t, _ in items}
        if len(types) > 1 or (types and ValueType.ARRAY in types):
            raise ValueError(f"GGUF arrays hold one non-array item type, got {sorted(types)}")
        vt = types.pop() if types else ValueType.UINT32
        return ValueType.ARRAY, struct.pack("<IQ", vt, len(v)) + b"".join(b for _, b in items)
    raise TypeError(f"cannot store {type(v).__name__} in GGUF metadata")


def _value_type_of(dtype: np.dtype) -> ValueType:
    for vt, dt in _SCALAR_DTYPE.items():
        if dt == dtype.newbyteorder("<") and vt != ValueType.BOOL:
            return vt
    if dtype == np.bool_:
        return ValueType.BOOL
    raise TypeError(f"no GGUF metadata type for dtype {dtype}")


def _ggml_type_of(a: np.ndarray) -> GGMLType:
    for gt, dt in _NUMPY_TYPES.items():
        if a.dtype == dt:
            return gt
    raise TypeError(f"no ggml type for dtype {a.dtype}; quantized tensors arrive as RawTensor")


def _string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def write_gguf(  # noqa: PLR0913
    path: str | os.PathLike[str],
    arch: str,
    metadata: dict[str, Any],
    tensors: dict[str, np.ndarray | RawTensor],
    *,
    tokens: list[str] | None = None,
    token_types: list[int] | None = None,
) -> Path:
    """Write a GGUF v3 file atomically (temp file in the same directory, then `os.replace`).

    `metadata` values are typed by `_pack_value`; `general.architecture`, and the token list
    (`tokenizer.ggml.tokens`, string array) and types (`tokenizer.ggml.token_type`, int32
    array) when given, are added here. Tensors are written C-contiguous, little-endian.
    """
    path = Path(path)
    kv: dict[str, Any] = {"general.architecture": arch, **metadata}
    if tokens is not None:
        kv["tokenizer.ggml.tokens"] = list(tokens)
    if token_types is not None:
        kv["tokenizer.ggml.token_type"] = np.asarray(token_types, dtype=np.int32)
    align = int(kv.get("general.alignment", DEFAULT_ALIGNMENT))

    head = [GGUF_MAGIC, struct.pack("<IQQ", GGUF_VERSION, len(tensors), len(kv))]
    for key, value in kv.items():
        vt, body = _pack_value(value)
        head += [_string(key), struct.pack("<I", vt), body]
    offset, blobs = 0, []
    for name, t in tensors.items():
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise ValueError(f"GGUF tensor name longer than {MAX_NAME_BYTES} bytes: {name!r}")
        if isinstance(t, RawTensor):
            gtype, shape, blob = t.ggml_type, t.shape, np.ascontiguousarray(t.data)
        else:
            gtype, shape = _ggml_type_of(t), t.shape
            blob = np.ascontiguousarray(t, dtype=t.dtype.newbyteorder("<"))
        ne = tuple(reversed(shape))
        head += [_string(name), struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, gtype, offset)]
        blobs.append((offset, blob))
        offset += -(-blob.nbytes // align) * align

    header = b"".join(head)
    data_start = -(-len(header) // align) * align
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header + b"\0" * (data_start - len(header)))
            for off, blob in blobs:
                f.seek(data_start + off)
                f.write(memoryview(blob.reshape(-1).view(np.uint8)))
            f.truncate(data_start + offset)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
