"""GGUF reader/writer: round trip, zero-copy, gguf-py interop, hostile input."""

from __future__ import annotations

import contextlib
import os
import struct

import numpy as np
import pytest

from npasr.io.gguf import GGMLType, RawTensor, read_gguf, write_gguf
from npasr.types import ModelFileError

METADATA = {
    "general.name": "tiny",
    "t.u32": 7,
    "t.i64": -3,
    "t.f32": 1.5,
    "t.bool": True,
    "t.u8": np.uint8(200),
    "t.i16": np.int16(-12),
    "t.u64": np.uint64(2**40),
    "t.f64": np.float64(0.1),
    "t.str": "héllo <|en|>",
    "t.empty_str": "",
    "t.strs": ["Ġthe", "", "<|endoftext|>"],
    "t.i32s": np.array([1, -2, 3], np.int32),
    "t.f32s": np.array([0.5, -1.0], np.float32),
    "t.empty": [],
}


def _tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "encoder.conv1.weight": rng.standard_normal((5, 3, 3)).astype(np.float32),
        "encoder.conv1.bias": rng.standard_normal(5).astype(np.float32),
        "decoder.token_embedding.weight": rng.standard_normal((7, 4)).astype(np.float16),
        "odd": rng.standard_normal(13).astype(np.float16),  # forces padding
        "last": rng.standard_normal((8, 4)).astype(np.float32),  # 128 B: no padding at the end
    }


@pytest.fixture
def small(tmp_path):
    rng = np.random.default_rng(0)
    t = _tensors(rng)
    path = write_gguf(tmp_path / "m.gguf", "whisper", METADATA, t, tokens=["a", "Ġb", "<|x|>"],
                      token_types=[1, 1, 3])  # fmt: skip
    return path, t


def test_round_trip(small):
    path, t = small
    g = read_gguf(path)
    assert g.architecture == "whisper" and g.version == 3
    assert g.file_size == path.stat().st_size
    for k, v in METADATA.items():
        want = v.tolist() if isinstance(v, np.ndarray | np.generic) else v
        got = g.get(k)
        if isinstance(want, float):
            assert got == pytest.approx(want, rel=1e-6)
        elif k == "t.f32s":
            assert got == pytest.approx(want)
        else:
            assert got == want, k
    assert g.get("tokenizer.ggml.tokens") == ["a", "Ġb", "<|x|>"]
    assert g.get("tokenizer.ggml.token_type") == [1, 1, 3]
    assert g.get("missing", 42) == 42
    assert list(g.tensors) == list(t)
    for k, v in t.items():
        assert g.tensors[k].dtype == v.dtype and g.tensors[k].shape == v.shape
        np.testing.assert_array_equal(g.tensors[k], v)
    assert g.tensor_types["odd"] == GGMLType.F16


def _root(a):
    while getattr(a, "base", None) is not None:
        a = a.base
    return a


def test_zero_copy(small):
    path, _ = small
    g = read_gguf(path)
    roots = {id(_root(a)) for a in g.tensors.values()}
    assert len(roots) == 1  # every tensor is a view of the same file mapping
    for a in g.tensors.values():
        assert isinstance(a, np.memmap) and not a.flags.writeable


def _resident_kib(path) -> int:
    """Resident KiB of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        lines = f.readlines()
    for line in lines:
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5:  # a mapping's header line
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(head[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc")
def test_release_pages_drops_residency_not_values(tmp_path):
    """After `release_pages` the file's pages no longer count in this process's RSS, and every
    tensor still reads the same values (its pages come back from the page cache)."""
    big = np.random.default_rng(1).standard_normal((1024, 1024)).astype(np.float32)  # 4 MiB
    path = write_gguf(tmp_path / "big.gguf", "whisper", {}, {"w": big})
    g = read_gguf(path)
    assert float(np.asarray(g.tensors["w"]).sum()) == float(big.sum())  # every page touched
    assert _resident_kib(path) >= 4096
    g.release_pages()
    assert _resident_kib(path) < 512
    np.testing.assert_array_equal(g.tensors["w"], big)


def test_raw_tensor_round_trip(tmp_path):
    blocks = np.arange(2 * 34, dtype=np.uint8)  # two Q8_0 blocks = one row of 64 values
    raw = RawTensor(GGMLType.Q8_0, (1, 64), blocks)
    write_gguf(tmp_path / "q.gguf", "whisper", {}, {"w": raw})
    g = read_gguf(tmp_path / "q.gguf")
    got = g.tensors["w"]
    assert isinstance(got, RawTensor) and got.ggml_type == GGMLType.Q8_0 and got.shape == (1, 64)
    np.testing.assert_array_equal(got.data, blocks)


def test_gguf_py_reads_our_files(small):
    gguf = pytest.importorskip("gguf")
    path, t = small
    r = gguf.GGUFReader(path)
    assert r.fields["general.architecture"].contents() == "whisper"
    assert r.fields["t.strs"].contents() == ["Ġthe", "", "<|endoftext|>"]
    assert r.fields["t.i32s"].contents() == [1, -2, 3]
    by_name = {x.name: x for x in r.tensors}
    for k, v in t.items():
        np.testing.assert_array_equal(np.asarray(by_name[k].data).reshape(v.shape), v)


def test_we_read_gguf_py_files(tmp_path):
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(tmp_path / "g.gguf", "whisper")
    w.add_uint32("whisper.n_mels", 80)
    w.add_array("a", ["x", "y"])
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    w.add_tensor("t", a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    g = read_gguf(tmp_path / "g.gguf")
    assert g.get("whisper.n_mels") == 80 and g.get("a") == ["x", "y"]
    np.testing.assert_array_equal(g.tensors["t"], a)


def test_names_over_63_bytes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="63"):
        write_gguf(tmp_path / "x.gguf", "whisper", {}, {"n" * 64: np.zeros(1, np.float32)})


def test_write_is_atomic(tmp_path, small):
    path, _ = small
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_gguf(path, "whisper", {"bad": object()}, {})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"]  # no temp file left behind


# ----------------------------------------------------------------------------- hostile input


def test_truncated_everywhere(small, tmp_path):
    path, _ = small
    data = path.read_bytes()
    bad = tmp_path / "cut.gguf"
    for cut in range(len(data)):  # header, metadata, tensor infos, padding, every tensor's data
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelFileError):
            read_gguf(bad)


def _patched(tmp_path, data: bytes, at: int, fmt: str, value) -> object:
    b = bytearray(data)
    struct.pack_into(fmt, b, at, value)
    p = tmp_path / "bad.gguf"
    p.write_bytes(bytes(b))
    return p


# header layout: magic 0..4, version 4..8, n_tensors 8..16, n_kv 16..24, then the first key
# ("general.architecture", 20 bytes): length 24..32, bytes 32..52, type 52..56, value length 56..64
@pytest.mark.parametrize(
    ("at", "fmt", "value", "match"),
    [
        (0, "<4s", b"GGUG", "magic"),
        (4, "<I", 1, "version"),
        (4, "<I", 0x03000000, "version"),  # a big-endian file
        (8, "<Q", 2**62, "counts"),
        (16, "<Q", 2**40, "counts"),
        (24, "<Q", 2**63, "truncated"),
        (52, "<I", 99, "unknown value type"),
        (56, "<Q", 2**60, "truncated"),
    ],
)
def test_corrupt_header(small, tmp_path, at, fmt, value, match):
    path, _ = small
    with pytest.raises(ModelFileError, match=match):
        read_gguf(_patched(tmp_path, path.read_bytes(), at, fmt, value))


def _tensor_info_at(data: bytes, name: str) -> int:
    """Offset of the n_dims field that follows tensor `name` in the tensor-info table."""
    needle = struct.pack("<Q", len(name)) + name.encode()
    return data.index(needle) + len(needle)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("n_dims", 9, "dims"),
        ("type", 77, "unknown ggml type"),
        ("offset", 4, "aligned"),
        ("offset", 2**40, "truncated"),
    ],
)
def test_corrupt_tensor_info(small, tmp_path, field, value, match):
    path, _ = small
    data = path.read_bytes()
    at = _tensor_info_at(data, "encoder.conv1.bias")  # 1 dim: n_dims u32, ne u64, type, offset
    where = {"n_dims": (at, "<I"), "type": (at + 12, "<I"), "offset": (at + 16, "<Q")}[field]
    with pytest.raises(ModelFileError, match=match):
        read_gguf(_patched(tmp_path, data, where[0], where[1], value))


def test_duplicate_tensor_name(tmp_path):
    z = np.zeros(2, np.float32)
    write_gguf(tmp_path / "d.gguf", "whisper", {}, {"aa": z, "ab": z})
    data = (tmp_path / "d.gguf").read_bytes()
    at = data.index(b"ab", 40)
    (tmp_path / "d.gguf").write_bytes(data[:at] + b"aa" + data[at + 2 :])
    with pytest.raises(ModelFileError, match="duplicate tensor"):
        read_gguf(tmp_path / "d.gguf")


def test_bad_alignment(tmp_path):
    write_gguf(tmp_path / "a.gguf", "whisper", {"general.alignment": 24}, {})
    with pytest.raises(ModelFileError, match="alignment"):
        read_gguf(tmp_path / "a.gguf")


def test_random_corruption_only_raises_model_file_error(small, tmp_path):
    path, _ = small
    data = path.read_bytes()
    rng = np.random.default_rng(1)
    header_end = data.index(b"odd") + 40
    bad = tmp_path / "fuzz.gguf"
    for _ in range(300):
        b = bytearray(data)
        for at in rng.integers(0, header_end, size=rng.integers(1, 4)):
            b[at] = int(rng.integers(0, 256))
        bad.write_bytes(bytes(b))
        with contextlib.suppress(ModelFileError):  # anything else escaping fails the test
            read_gguf(bad)


def test_not_a_file_and_empty(tmp_path):
    with pytest.raises(ModelFileError, match="no such"):
        read_gguf(tmp_path / "missing.gguf")
    with pytest.raises(ModelFileError, match="no such"):
        read_gguf(tmp_path)
    (tmp_path / "empty.gguf").write_bytes(b"")
    with pytest.raises(ModelFileError, match="shorter"):
        read_gguf(tmp_path / "empty.gguf")
    (tmp_path / "text.gguf").write_text("this is not a gguf file at all, clearly")
    with pytest.raises(ModelFileError, match="magic"):
        read_gguf(tmp_path / "text.gguf")


def test_corrupt_string_array_items(small, tmp_path):
    """A token in the vocabulary array with an impossible length or bytes that are not UTF-8 is
    refused, and the error names the item."""
    path, _ = small
    data = path.read_bytes()
    at = data.index(struct.pack("<Q", 3) + "Ġb".encode())  # length field of token #1 ("Ġb")
    with pytest.raises(ModelFileError, match=r"tokens'\[1\].*truncated|truncated.*\[1\]"):
        read_gguf(_patched(tmp_path, data, at, "<Q", 2**40))
    with pytest.raises(ModelFileError, match=r"\[1\] is not valid UTF-8"):
        read_gguf(_patched(tmp_path, data, at + 8, "<3s", b"\xff\xfe\xfd"))
