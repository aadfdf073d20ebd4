"""safetensors reader vs the safetensors package, and malformed headers."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from npasr.io.safetensors import read_safetensors
from npasr.types import ModelFileError


def test_matches_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    t = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float16),
         "c": np.arange(3, dtype=np.int64)}  # fmt: skip
    st.save_file(t, tmp_path / "m.safetensors", metadata={"format": "np"})
    got, meta = read_safetensors(tmp_path / "m.safetensors")
    assert meta == {"format": "np"}
    for k, v in t.items():
        np.testing.assert_array_equal(got[k], v)
        assert got[k].dtype == v.dtype and isinstance(got[k], np.memmap)


def _file(tmp_path, header: dict, data: bytes = b"") -> object:
    h = json.dumps(header).encode()
    p = tmp_path / "x.safetensors"
    p.write_bytes(struct.pack("<Q", len(h)) + h + data)
    return p


@pytest.mark.parametrize(
    "header",
    [
        {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},  # past the end
        {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}},  # size mismatch
        {"a": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 4]}},  # unknown dtype
        {"a": "nonsense"},
    ],
)
def test_malformed(tmp_path, header):
    with pytest.raises(ModelFileError):
        read_safetensors(_file(tmp_path, header, b"\0" * 8))


def test_huge_header_length(tmp_path):
    (tmp_path / "h.safetensors").write_bytes(struct.pack("<Q", 2**60) + b"{}")
    with pytest.raises(ModelFileError, match="header size"):
        read_safetensors(tmp_path / "h.safetensors")
