"""PyTorch `.pt`/`.ckpt` reader without torch: a restricted unpickler over the zip archive.

Format (torch>=1.6, torch/serialization.py `_save`): a zip with

    <archive>/data.pkl        the pickled object tree; each tensor storage is a persistent id
                              ("storage", storage_type, key, location, numel)
    <archive>/data/<key>      raw little-endian storage bytes, stored uncompressed
    <archive>/byteorder       "little" (absent in old files, which are little-endian)

Tensors in the pickle are `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`.
Only the callables in `_ALLOWED` (plus the caller's `extra_allowed`) can be named by the pickle;
any other global raises `UnsafeCheckpointError`, so a checkpoint cannot run code (the attack that
torch's `weights_only=True` also closes). Tensors come back as NumPy arrays, zero-copy views into
a memory map of the file when the layout allows it.
"""

from __future__ import annotations

import collections
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from npasr.types import ModelFileError, UnsafeCheckpointError

# torch storage class name -> NumPy dtype of one element ("bf16" has none: kept as uint16 bits)
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),
    "DoubleStorage": np.dtype("<f8"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
    "UntypedStorage": np.dtype("u1"),
}
_LEGACY_HINT = "legacy torch format (before 1.6); re-save it with torch>=1.6 or use another source"


@dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: np.dtype


@dataclass(frozen=True)
class _Storage:
    data: np.ndarray  # 1-D, numel elements
    bf16: bool


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    # bfloat16 is the top half of an IEEE float32
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _rebuild_tensor_v2(  # noqa: PLR0913, PLR0917 (torch's signature)
    storage: _Storage,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> np.ndarray:
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or min((*size, *stride, offset), default=0) < 0:
        raise ModelFileError(f"bad tensor layout: size {size}, stride {stride}, offset {offset}")
    data = storage.data
    n = int(np.prod(size, dtype=np.int64))
    if n:
        last = offset + sum((d - 1) * s for d, s in zip(size, stride, strict=True))
        if last >= data.shape[0]:
            raise ModelFileError(
                f"tensor of size {size}, stride {stride}, offset {offset} reaches element "
                f"{last} of a storage holding {data.shape[0]}"
            )
    contiguous = [int(np.prod(size[i + 1 :], dtype=np.int64)) for i in range(len(size))]
    if n == 0:
        out = np.zeros(size, data.dtype)
    elif all(d == 1 or s == c for d, s, c in zip(size, stride, contiguous, strict=True)):
        out = data[offset : offset + n].reshape(size)  # zero-copy
    else:
        view = np.lib.stride_tricks.as_strided(
            data[offset:], size, tuple(s * data.itemsize for s in stride), writeable=False
        )
        out = np.ascontiguousarray(view)
    return _bf16_to_f32(out) if storage.bf16 else out


def _rebuild_parameter(data: np.ndarray, requires_grad: bool, backward_hooks: Any) -> np.ndarray:
    return data


def _rebuild_parameter_with_state(
    data: np.ndarray, requires_grad: bool, backward_hooks: Any, state: Any
) -> np.ndarray:
    return data


def _rebuild_sparse_tensor(layout: str, data: tuple[Any, ...]) -> np.ndarray:
    """Densify a COO tensor (openai-whisper stores `alignment_heads` as sparse bool)."""
    if layout != "sparse_coo":
        raise ModelFileError(f"sparse layout {layout!r} is not supported")
    indices, values, size = data[0], data[1], tuple(int(s) for s in data[2])
    dense = np.zeros(size, dtype=values.dtype)
    idx = indices.astype(np.int64)
    if idx.shape != (len(size), values.shape[0]) or any(
        idx.shape[1] and (idx[d].min() < 0 or idx[d].max() >= size[d]) for d in range(len(size))
    ):
        raise ModelFileError(f"sparse tensor indices {idx.shape} do not fit its size {size}")
    dense[tuple(idx)] = values
    return dense


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._utils", "_rebuild_sparse_tensor"): _rebuild_sparse_tensor,
    ("torch", "sparse_coo"): "sparse_coo",
    # torch>=2 pickles layouts by name: _get_layout("torch.sparse_coo")
    ("torch.serialization", "_get_layout"): lambda name: str(name).removeprefix("torch."),
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "Size"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    **{("torch", n): _StorageType(n, dt) for n, dt in _STORAGE_DTYPES.items()},
    ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", np.dtype("u1")),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(
        self,
        file: Any,
        load_storage: Callable[[_StorageType, str, int], _Storage],
        extra: dict[tuple[str, str], Any],
    ) -> None:
        super().__init__(file)
        self._load_storage = load_storage
        self._allowed = {**_ALLOWED, **extra}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafeCheckpointError(
                f"checkpoint pickle asks for {module}.{name}, which npasr does not allow "
                "(only tensor rebuild functions and plain containers are)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ModelFileError(f"unexpected persistent id {str(pid)[:80]!r}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType) or not isinstance(key, str):
            raise ModelFileError(f"bad storage reference {str(pid)[:80]!r}")
        return self._load_storage(stype, key, int(numel))


def _member_view(mm: np.ndarray, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """Bytes of one zip member: a slice of the memory map when stored, else read and inflated."""
    if info.compress_type != zipfile.ZIP_STORED:
        return np.frombuffer(zf.read(info), np.uint8)
    # local file header: 30 fixed bytes, then file name and extra field (APPNOTE 4.3.7)
    h = info.header_offset
    if h + 30 > mm.shape[0] or bytes(mm[h : h + 4]) != b"PK\x03\x04":
        raise ModelFileError(f"zip member {info.filename!r} has no local header")
    name_len, extra_len = struct.unpack("<HH", bytes(mm[h + 26 : h + 30]))
    start = h + 30 + name_len + extra_len
    if start + info.file_size > mm.shape[0]:
        raise ModelFileError(f"truncated: zip member {info.filename!r} runs past the end")
    return mm[start : start + info.file_size]


def load_torch_checkpoint(
    path: str | os.PathLike[str],
    extra_allowed: dict[tuple[str, str], Callable[..., Any]] | None = None,
    *,
    region: tuple[int, int] | None = None,
) -> Any:
    """Unpickle a zip-format torch checkpoint; tensors become NumPy arrays.

    `extra_allowed` maps (module, name) globals a model family needs to safe replacements,
    e.g. OmegaConf's `DictConfig` -> a `dict` subclass whose `__setstate__` takes the state
    (objects pickled by NEWOBJ + BUILD need a class there, plain REDUCE calls any callable).
    `region` (offset, size): the checkpoint is those bytes of `path`, e.g. a member of an
    uncompressed tar (NeMo's .nemo), read in place without extracting it.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such checkpoint file")
    try:
        return _load(path, extra_allowed or {}, region)
    except ModelFileError as e:
        if str(e).startswith(str(path)):
            raise
        raise type(e)(f"{path}: {e}") from None
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, OSError) as e:
        raise ModelFileError(f"{path}: unreadable torch checkpoint: {e}") from None
    except (TypeError, ValueError, IndexError, KeyError, AttributeError, struct.error) as e:
        raise ModelFileError(f"{path}: malformed torch checkpoint ({type(e).__name__}: {e})") from e


class _Window:
    """A read-only, seekable file object over bytes [offset, offset + size) of a file."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        self._f, self._base, self._size, self._pos = path.open("rb"), offset, size, 0

    def read(self, n: int = -1) -> bytes:
        n = self._size - self._pos if n is None or n < 0 else min(n, self._size - self._pos)
        self._f.seek(self._base + self._pos)
        data = self._f.read(max(n, 0))
        self._pos += len(data)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self._f.close()


def _load(path: Path, extra: dict[tuple[str, str], Any], region: tuple[int, int] | None) -> Any:
    offset, size = region if region is not None else (0, path.stat().st_size)
    if offset < 0 or size < 0 or offset + size > path.stat().st_size:
        raise ModelFileError("truncated: the checkpoint runs past the end of the file")
    src = _Window(path, offset, size)
    try:
        head = src.read(4)
        is_zip = zipfile.is_zipfile(src)  # type: ignore[arg-type]
        if head[:2] == b"\x80\x02" or (head[:1] == b"\x80" and not is_zip):
            raise ModelFileError(_LEGACY_HINT)
        if not is_zip:
            raise ModelFileError("not a torch checkpoint (not a zip archive)")
        mm = np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=(size,))
        return _unpickle(zipfile.ZipFile(src), mm, extra)  # type: ignore[arg-type]
    finally:
        src.close()


def _unpickle(zf: zipfile.ZipFile, mm: np.ndarray, extra: dict[tuple[str, str], Any]) -> Any:
    with zf:
        infos = {i.filename: i for i in zf.infolist()}
        pkl = [n for n in infos if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise ModelFileError(f"expected one <archive>/data.pkl in the zip, found {pkl}")
        prefix = pkl[0][: -len("data.pkl")]
        order = infos.get(prefix + "byteorder")
        if order is not None and zf.read(order).strip() != b"little":
            raise ModelFileError("big-endian torch checkpoints are not supported")
        storages: dict[str, _Storage] = {}

        def load_storage(stype: _StorageType, key: str, numel: int) -> _Storage:
            if key not in storages:
                info = infos.get(f"{prefix}data/{key}")
                if info is None:
                    raise ModelFileError(f"storage {key!r} is missing from the zip")
                raw = _member_view(mm, zf, info)
                if raw.shape[0] % stype.dtype.itemsize:
                    raise ModelFileError(f"storage {key!r}: {raw.shape[0]} bytes is not whole")
                storages[key] = _Storage(raw.view(stype.dtype), stype.name == "BFloat16Storage")
            elif storages[key].data.dtype != stype.dtype:
                raise ModelFileError(f"storage {key!r} is used with two dtypes")
            return storages[key]

        return _RestrictedUnpickler(zf.open(infos[pkl[0]]), load_storage, extra).load()
