"""Torch checkpoint reader: exact values vs torch, and refusal of hostile pickles (torch-free)."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from npasr.io.torch_zip import load_torch_checkpoint
from npasr.types import ModelFileError, UnsafeCheckpointError

# --------------------------------------------------------------------- hand-made checkpoints


def _zip_checkpoint(path, data_pkl: bytes, storages: dict[str, bytes], archive="archive"):
    """A zip laid out like torch.save's (stored, not deflated), built without torch."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{archive}/data.pkl", data_pkl)
        z.writestr(f"{archive}/byteorder", "little")
        for key, raw in storages.items():
            z.writestr(f"{archive}/data/{key}", raw)
        z.writestr(f"{archive}/version", "3\n")
    return path


def _tensor_pickle(size: tuple[int, int], stride: tuple[int, int], numel: int) -> bytes:
    """{"w": _rebuild_tensor_v2(<storage "0": FloatStorage>, 0, size, stride, False,
    OrderedDict())} in pickle protocol 2 opcodes (what torch.save emits), without torch."""

    def uni(s: str) -> bytes:
        return b"X" + len(s).to_bytes(4, "little") + s.encode()

    def tup2(a: int, b: int) -> bytes:
        return b"K" + bytes([a]) + b"K" + bytes([b]) + b"\x86"

    return b"".join([
        b"\x80\x02}", uni("w"),
        b"ctorch._utils\n_rebuild_tensor_v2\n(",
        b"(", uni("storage"), b"ctorch\nFloatStorage\n", uni("0"), uni("cpu"),
        b"K" + bytes([numel]), b"tQ",
        b"K\x00", tup2(*size), tup2(*stride), b"\x89",
        b"ccollections\nOrderedDict\n)R", b"tRs.",
    ])  # fmt: skip


def test_hand_made_checkpoint(tmp_path):
    a = np.arange(6, dtype=np.float32)
    p = _zip_checkpoint(tmp_path / "m.pt", _tensor_pickle((2, 3), (3, 1), 6), {"0": a.tobytes()},
                        archive="my_model")  # fmt: skip
    got = load_torch_checkpoint(p)["w"]
    np.testing.assert_array_equal(got, a.reshape(2, 3))
    assert isinstance(got, np.memmap)  # zero-copy view of the file
    transposed = _tensor_pickle((3, 2), (1, 3), 6)
    p2 = _zip_checkpoint(tmp_path / "t.pt", transposed, {"0": a.tobytes()})
    np.testing.assert_array_equal(load_torch_checkpoint(p2)["w"], a.reshape(2, 3).T)


def test_tensor_past_its_storage_is_refused(tmp_path):
    p = _zip_checkpoint(tmp_path / "m.pt", _tensor_pickle((3, 3), (3, 1), 6),
                        {"0": np.zeros(6, np.float32).tobytes()})  # fmt: skip
    with pytest.raises(ModelFileError, match="storage holding 6"):
        load_torch_checkpoint(p)


def test_truncated_zip(tmp_path):
    a = np.arange(6, dtype=np.float32)
    data = _zip_checkpoint(tmp_path / "m.pt", _tensor_pickle((2, 3), (3, 1), 6),
                           {"0": a.tobytes()}).read_bytes()  # fmt: skip
    bad = tmp_path / "cut.pt"
    for cut in range(0, len(data), 7):
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelFileError):
            load_torch_checkpoint(bad)


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):  # only recorded by pickle.dumps, never run here
        return (os.system, (f"echo pwned > {self.target}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').system('true')",))


@pytest.mark.parametrize("evil", ["system", "eval", "nested"])
def test_hostile_pickle_is_refused_without_torch(tmp_path, evil):
    marker = tmp_path / "PWNED"
    obj = {"system": _Evil(marker), "eval": _EvalEvil(), "nested": {"a": [1, _Evil(marker)]}}
    payload = pickle.dumps(obj[evil], protocol=2)
    p = _zip_checkpoint(tmp_path / "evil.pt", payload, {})
    with pytest.raises(UnsafeCheckpointError, match=r"system|eval") as e:
        load_torch_checkpoint(p)
    assert str(p) in str(e.value)
    assert not marker.exists()


class Cfg:  # stands in for e.g. omegaconf.DictConfig, which a family maps to a plain dict
    def __init__(self):
        self.sample_rate = 16000


class _PlainDict(dict):
    def __setstate__(self, state):  # pickle BUILD hands over the original __dict__
        self.update(state)


def test_extra_allowed_hook(tmp_path):
    payload = pickle.dumps({"cfg": Cfg()}, protocol=2)
    p = _zip_checkpoint(tmp_path / "c.pt", payload, {})
    with pytest.raises(UnsafeCheckpointError, match="Cfg"):
        load_torch_checkpoint(p)
    got = load_torch_checkpoint(p, extra_allowed={(Cfg.__module__, "Cfg"): _PlainDict})
    assert got["cfg"] == {"sample_rate": 16000}


def test_legacy_and_non_checkpoints(tmp_path):
    legacy = tmp_path / "old.pt"
    legacy.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + b"rest")
    with pytest.raises(ModelFileError, match="legacy torch format"):
        load_torch_checkpoint(legacy)
    (tmp_path / "x.pt").write_bytes(b"hello")
    with pytest.raises(ModelFileError, match="not a torch checkpoint"):
        load_torch_checkpoint(tmp_path / "x.pt")
    with pytest.raises(ModelFileError, match="no such"):
        load_torch_checkpoint(tmp_path / "missing.pt")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", "no pickle here")
    (tmp_path / "z.pt").write_bytes(buf.getvalue())
    with pytest.raises(ModelFileError, match="data.pkl"):
        load_torch_checkpoint(tmp_path / "z.pt")


# ------------------------------------------------------------------------- against torch


@pytest.mark.reference
def test_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[1, 2] = mask[3, 0] = True
    obj = {
        "dims": {"n_mels": 80, "name": "x", "f": 0.5},
        "sd": {
            "f32": base,
            "f16": base.half(),
            "bf16": base.bfloat16(),
            "i64": torch.arange(-3, 9),
            "bool": torch.tensor([True, False, True]),
            "transposed": base.t(),
            "strided": base[1:3, ::2],
            "shared_view": base[2],  # shares base's storage, offset 12
            "param": torch.nn.Parameter(torch.ones(3)),
            "scalar": torch.tensor(3.5),
            "empty": torch.zeros(0, 3),
        },
        "nested": [{"t": base[0]}, (1, 2)],
        "alignment_heads": mask.to_sparse(),
    }
    torch.save(obj, tmp_path / "c.pt")
    got = load_torch_checkpoint(tmp_path / "c.pt")
    for k, tensor in obj["sd"].items():
        t = tensor.detach()
        want = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
        assert got["sd"][k].dtype == want.dtype, k
        np.testing.assert_array_equal(got["sd"][k], want, err_msg=k)
    assert got["dims"] == obj["dims"]
    np.testing.assert_array_equal(got["nested"][0]["t"], base[0].numpy())
    assert got["nested"][1] == (1, 2)
    np.testing.assert_array_equal(got["alignment_heads"], mask.numpy())
    assert isinstance(got["sd"]["f32"], np.memmap)  # contiguous tensors are zero-copy


@pytest.mark.reference
def test_torch_legacy_format_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(2)}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(ModelFileError, match="legacy torch format"):
        load_torch_checkpoint(tmp_path / "old.pt")


@pytest.mark.reference
def test_torch_truncated(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.randn(64, 64)}, tmp_path / "c.pt")
    data = (tmp_path / "c.pt").read_bytes()
    for cut in (10, 100, len(data) // 2, len(data) - 30, len(data) - 1):
        (tmp_path / "cut.pt").write_bytes(data[:cut])
        with pytest.raises(ModelFileError):
            load_torch_checkpoint(tmp_path / "cut.pt")
