""".nemo archive reader: in-place checkpoint reads, and refusal of hostile or broken archives
(torch-free: the archives are built here with tarfile and a hand-made torch zip)."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest

from npasr.io.nemo import open_nemo
from npasr.types import ModelFileError, UnsafeCheckpointError

from .test_torch_zip import _tensor_pickle, _zip_checkpoint

CONFIG = b"sample_rate: 16000\nencoder:\n  d_model: 64\n  feat_in: ${preprocessor.features}\n" \
         b"preprocessor:\n  features: 80\n  rate: ${model.sample_rate}\n"  # fmt: skip


def _ckpt_bytes(tmp_path, values: np.ndarray) -> bytes:
    p = _zip_checkpoint(tmp_path / "w.ckpt", _tensor_pickle((2, 3), (3, 1), 6),
                        {"0": values.tobytes()})  # fmt: skip
    return p.read_bytes()


def _add(tf: tarfile.TarFile, name: str, data: bytes, kind: bytes = tarfile.REGTYPE,
         link: str = "") -> None:  # fmt: skip
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _archive(path, members: list[tuple], mode: str = "w"):
    with tarfile.open(path, mode) as tf:
        for m in members:
            _add(tf, *m)
    return path


@pytest.fixture
def weights(tmp_path) -> tuple[bytes, np.ndarray]:
    a = np.arange(6, dtype=np.float32) * 0.5
    return _ckpt_bytes(tmp_path, a), a.reshape(2, 3)


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_reads_config_tokenizer_and_weights(tmp_path, weights, mode: str) -> None:
    blob, want = weights
    p = _archive(tmp_path / "m.nemo", [("./model_config.yaml", CONFIG),
                                       ("./model_weights.ckpt", blob),
                                       ("./0123abcd_tokenizer.model", b"spm")], mode)  # fmt: skip
    arch = open_nemo(p)
    assert arch.compressed == (mode == "w:gz")
    # interpolations resolved, including NeMo's `${model.x}` spelling of the root
    assert arch.config["encoder"]["feat_in"] == 80
    assert arch.config["preprocessor"]["rate"] == 16000
    assert arch.find("_tokenizer.model") == ["0123abcd_tokenizer.model"]
    assert arch.read("0123abcd_tokenizer.model") == b"spm"
    sd = arch.state_dict()
    np.testing.assert_array_equal(sd["w"], want)
    if mode == "w":
        assert isinstance(sd["w"], np.memmap)  # read in place, nothing extracted


@pytest.mark.parametrize("name", ["/etc/model_config.yaml", "../model_config.yaml",
                                  "./a/../../x", "C:/x"])  # fmt: skip
def test_refuses_members_outside_the_archive(tmp_path, name: str) -> None:
    p = _archive(tmp_path / "m.nemo", [("./model_config.yaml", CONFIG), (name, b"x")])
    with pytest.raises(UnsafeCheckpointError, match="outside the archive"):
        open_nemo(p)


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
                                  tarfile.FIFOTYPE])  # fmt: skip
def test_refuses_links_and_devices(tmp_path, kind: bytes) -> None:
    link = ("./model_weights.ckpt", b"", kind, "/etc/passwd")
    p = _archive(tmp_path / "m.nemo", [("./model_config.yaml", CONFIG), link])
    with pytest.raises(UnsafeCheckpointError, match="link or device"):
        open_nemo(p)


def test_truncated_archive(tmp_path, weights) -> None:
    p = _archive(tmp_path / "m.nemo", [("./model_config.yaml", CONFIG),
                                       ("./model_weights.ckpt", weights[0])])  # fmt: skip
    with tarfile.open(p) as tf:
        ckpt = tf.getmember("./model_weights.ckpt")
    for end in (ckpt.offset_data + ckpt.size // 2, ckpt.offset - 100):  # in the data, the header
        cut = tmp_path / "cut.nemo"
        cut.write_bytes(p.read_bytes()[:end])
        with pytest.raises(ModelFileError, match="truncated|not a readable|no model_weights"):
            open_nemo(cut).state_dict()


def test_not_an_archive_and_missing_parts(tmp_path, weights) -> None:
    junk = tmp_path / "junk.nemo"
    junk.write_bytes(b"\0\1\2 not a tar" * 100)
    with pytest.raises(ModelFileError, match="not a readable"):
        open_nemo(junk)
    no_cfg = _archive(tmp_path / "a.nemo", [("./model_weights.ckpt", weights[0])])
    with pytest.raises(ModelFileError, match="no model_config.yaml"):
        open_nemo(no_cfg)
    no_w = _archive(tmp_path / "b.nemo", [("./model_config.yaml", CONFIG)])
    with pytest.raises(ModelFileError, match="no model_weights.ckpt"):
        open_nemo(no_w).state_dict()
    bad_yaml = _archive(tmp_path / "c.nemo", [("./model_config.yaml", b"a: [1, 2\n")])
    with pytest.raises(ModelFileError, match="not valid YAML"):
        open_nemo(bad_yaml)
    dangling = _archive(tmp_path / "d.nemo", [("./model_config.yaml", b"a: ${nowhere.x}\n")])
    with pytest.raises(ModelFileError, match="points nowhere"):
        open_nemo(dangling)


def test_yaml_is_parsed_safely(tmp_path) -> None:
    """A YAML tag that would construct a Python object is an error, not an object."""
    evil = b"a: !!python/object/apply:os.system ['echo pwned']\n"
    p = _archive(tmp_path / "m.nemo", [("./model_config.yaml", evil)])
    with pytest.raises(ModelFileError, match="not valid YAML"):
        open_nemo(p)


def test_hostile_pickle_in_the_checkpoint(tmp_path) -> None:
    evil = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R."
    ckpt = _zip_checkpoint(tmp_path / "e.ckpt", evil, {}).read_bytes()
    p = _archive(tmp_path / "m.nemo", [("./model_config.yaml", CONFIG),
                                       ("./model_weights.ckpt", ckpt)])  # fmt: skip
    with pytest.raises(UnsafeCheckpointError, match="os.system"):
        open_nemo(p).state_dict()
