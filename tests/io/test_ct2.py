"""CTranslate2 model.bin reader: hand-built files, split parts, truncation, the real tiny.en."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from npasr.io.ct2 import read_ct2
from npasr.types import ModelFileError


def _string(s: str) -> bytes:
    b = s.encode() + b"\0"
    return struct.pack("<H", len(b)) + b


def _ct2_bytes(variables: dict[str, np.ndarray], aliases: dict[str, str]) -> bytes:
    """Same layout as ctranslate2 ModelSpec._serialize (binary version 6)."""
    ids = {np.dtype("f4"): 0, np.dtype("i1"): 1, np.dtype("i2"): 2, np.dtype("i4"): 3,
           np.dtype("f2"): 4}  # fmt: skip
    out = [struct.pack("<I", 6), _string("WhisperSpec"), struct.pack("<II", 3, len(variables))]
    for name, a in variables.items():
        out += [_string(name), struct.pack("<B", a.ndim), struct.pack(f"<{a.ndim}I", *a.shape),
                struct.pack("<BI", ids[a.dtype], a.nbytes), a.tobytes()]  # fmt: skip
    out.append(struct.pack("<I", len(aliases)))
    for k, v in aliases.items():
        out += [_string(k), _string(v)]
    return b"".join(out)


VARS = {
    "a/weight": np.arange(12, dtype=np.float16).reshape(3, 4),
    "a/bias": np.arange(3, dtype=np.float32),
    "n": np.array(7, np.int16),
}


def test_read_and_aliases(tmp_path):
    (tmp_path / "model.bin").write_bytes(_ct2_bytes(VARS, {"b/weight": "a/weight"}))
    spec, v, aliases = read_ct2(tmp_path)
    assert spec == "WhisperSpec" and aliases == {"b/weight": "a/weight"}
    for k, a in VARS.items():
        np.testing.assert_array_equal(v[k], a)
        assert v[k].dtype == a.dtype


def test_split_parts_without_joining(tmp_path):
    data = _ct2_bytes(VARS, {})
    cut = data.index(VARS["a/weight"].tobytes()) + 5  # the split falls inside a tensor
    (tmp_path / "p1").mkdir()
    (tmp_path / "p2").mkdir()
    (tmp_path / "p1" / "model.bin.part1").write_bytes(data[:cut])
    (tmp_path / "p2" / "model.bin.part2").write_bytes(data[cut:])
    _, v, _ = read_ct2(tmp_path / "p1", extra_parts=[tmp_path / "p2" / "model.bin.part2"])
    for k, a in VARS.items():
        np.testing.assert_array_equal(v[k], a)
    assert not (tmp_path / "p1" / "model.bin").exists()


def test_missing_part_is_named(tmp_path):
    """A split model read without its last part fails as truncated, naming the missing part."""
    data = _ct2_bytes(VARS, {})
    (tmp_path / "model.bin.part1").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"truncated.*is model\.bin\.part2 missing"):
        read_ct2(tmp_path)


def test_truncated_everywhere(tmp_path):
    data = _ct2_bytes(VARS, {"b/weight": "a/weight"})
    for cut in range(len(data)):
        (tmp_path / "model.bin").write_bytes(data[:cut])
        with pytest.raises(ModelFileError):
            read_ct2(tmp_path)
    (tmp_path / "model.bin").write_bytes(data + b"junk")
    with pytest.raises(ModelFileError, match="unexpected bytes"):
        read_ct2(tmp_path)


def test_bad_version_and_missing(tmp_path):
    (tmp_path / "model.bin").write_bytes(struct.pack("<I", 2) + _ct2_bytes(VARS, {})[4:])
    with pytest.raises(ModelFileError, match="version 2"):
        read_ct2(tmp_path)
    with pytest.raises(ModelFileError, match="no CTranslate2"):
        read_ct2(tmp_path / "nowhere")


@pytest.mark.weights
def test_real_tiny_en(tiny_en_dir):
    spec, v, aliases = read_ct2(tiny_en_dir)
    assert spec == "WhisperSpec" and len(v) == 148
    assert v["decoder/embeddings/weight"].shape == (51864, 384)
    assert aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}


@pytest.fixture
def tiny_en_dir():
    from npasr import hub  # noqa: PLC0415
    from npasr.types import ModelNotFoundError  # noqa: PLC0415

    try:
        return hub.source_dirs("whisper-tiny.en")[0]
    except ModelNotFoundError as e:
        pytest.skip(str(e))
