"""NVIDIA NeMo `.nemo` archives read without NeMo, torch or extraction to disk.

A `.nemo` is a tar (uncompressed in current NeMo, `save_restore_connector.py`
`_make_nemo_file_from_folder`; gzip in old releases) holding

    ./model_config.yaml            the model's OmegaConf config (the `model:` subtree)
    ./model_weights.ckpt           torch.save(state_dict): a torch zip, read by `npasr.io.torch_zip`
    ./<32 hex>_tokenizer.model     SentencePiece model (and vocab.txt / tokenizer.vocab files)

Every member is checked before anything is read: a name that is absolute or climbs out with
`..`, a link, a device or any other non-regular file makes the whole archive refused
(`UnsafeCheckpointError`), since a tar is a classic way to write outside a folder. Nothing is
ever extracted: the small members are read into memory under a size cap, and the checkpoint of
an uncompressed archive is read in place (its bytes are one run of the tar file); only a
compressed archive's checkpoint is copied to a temporary file first.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from npasr.io.config import resolve_interpolations
from npasr.io.torch_zip import load_torch_checkpoint
from npasr.types import ModelFileError, UnsafeCheckpointError

CONFIG = "model_config.yaml"
WEIGHTS = "model_weights.ckpt"
MAX_SMALL_MEMBER = 64 << 20  # a config or tokenizer larger than this is not one


@dataclass
class NemoArchive:
    path: Path
    config: dict[str, Any]  # model_config.yaml, interpolations resolved
    members: dict[str, tarfile.TarInfo]  # regular files by normalised name ("a/b", no "./")
    compressed: bool

    def read(self, name: str) -> bytes:
        """A small member's bytes (config, tokenizer), at most MAX_SMALL_MEMBER."""
        info = self.members.get(name)
        if info is None:
            raise ModelFileError(f"{self.path}: the archive has no {name}")
        if info.size > MAX_SMALL_MEMBER:
            raise ModelFileError(f"{self.path}: {name} is {info.size} bytes, too large to be one")
        with tarfile.open(self.path, "r:*") as tf:
            f = tf.extractfile(info)
            data = f.read() if f is not None else b""
        if len(data) != info.size:
            raise ModelFileError(f"{self.path}: truncated archive: {name} is cut short")
        return data

    def find(self, suffix: str) -> list[str]:
        """Member names ending in `suffix` (e.g. "_tokenizer.model"), sorted."""
        return sorted(n for n in self.members if n.endswith(suffix))

    def state_dict(self) -> dict[str, np.ndarray]:
        """model_weights.ckpt through the restricted unpickler (no code runs)."""
        info = self.members.get(WEIGHTS)
        if info is None:
            raise ModelFileError(f"{self.path}: the archive has no {WEIGHTS}")
        if not self.compressed:
            sd = load_torch_checkpoint(self.path, region=(info.offset_data, info.size))
        else:
            with tempfile.TemporaryDirectory(prefix="npasr-nemo-") as tmp:
                out = Path(tmp) / WEIGHTS
                with tarfile.open(self.path, "r:*") as tf, out.open("wb") as dst:
                    src = tf.extractfile(info)
                    if src is None:
                        raise ModelFileError(f"{self.path}: {WEIGHTS} is not a regular file")
                    shutil.copyfileobj(src, dst, 1 << 22)
                # the arrays map the file; on Linux the mapping outlives the unlink
                sd = load_torch_checkpoint(out)
                sd = {k: np.array(v) for k, v in _as_dict(sd, self.path).items()}
        return _as_dict(sd, self.path)


def _as_dict(sd: Any, path: Path) -> dict[str, np.ndarray]:
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]  # a Lightning-style wrapper
    if not isinstance(sd, dict) or not all(isinstance(v, np.ndarray) for v in sd.values()):
        raise ModelFileError(f"{path}: {WEIGHTS} is not a state dict of tensors")
    return {str(k): v for k, v in sd.items()}


def _normalise(info: tarfile.TarInfo, path: Path) -> str | None:
    """The member's name with "./" dropped; None for directories. Refuses anything unsafe."""
    name = info.name
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise UnsafeCheckpointError(f"{path}: archive member {name!r} points outside the archive")
    if info.isdir():
        return None
    if not info.isfile():  # symlink, hard link, device, fifo, ...
        raise UnsafeCheckpointError(
            f"{path}: archive member {name!r} is a link or device, which a .nemo never holds"
        )
    return posixpath.join(*parts) if parts else None


def open_nemo(path: str | os.PathLike[str]) -> NemoArchive:
    """List and check the archive, and parse its config (the weights are read on demand)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such .nemo file")
    size = path.stat().st_size
    try:
        with tarfile.open(path, "r:*") as tf:
            infos = tf.getmembers()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ModelFileError(f"{path}: not a readable .nemo (tar) archive: {e}") from None
    compressed = _is_compressed(path)
    members: dict[str, tarfile.TarInfo] = {}
    for info in infos:
        name = _normalise(info, path)
        if name is None:
            continue
        if name in members:
            raise ModelFileError(f"{path}: archive member {name!r} appears twice")
        if not compressed and info.offset_data + info.size > size:
            raise ModelFileError(f"{path}: truncated archive: {name} runs past the end")
        members[name] = info
    if CONFIG not in members:
        raise ModelFileError(f"{path}: not a NeMo model archive (no {CONFIG} inside)")
    arch = NemoArchive(path, {}, members, compressed)
    import yaml  # noqa: PLC0415 (a dependency of gguf; only NeMo configs need it)

    try:
        cfg = yaml.safe_load(arch.read(CONFIG).decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path}: {CONFIG} is not valid YAML: {e}") from None
    if not isinstance(cfg, dict):
        raise ModelFileError(f"{path}: {CONFIG} is not a mapping")
    try:
        arch.config = resolve_interpolations(cfg, root_names=("model",))
    except KeyError as e:
        raise ModelFileError(f"{path}: {CONFIG}: {e.args[0]}") from None
    return arch


def _is_compressed(path: Path) -> bool:
    with path.open("rb") as f:
        magic = f.read(6)
    return magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic == b"\xfd7zXZ\x00"
