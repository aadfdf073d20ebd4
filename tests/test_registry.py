"""The model-family registry: every family has the hooks, each source is claimed by exactly one
family, and a family added to the table is found by convert, hub and load_model unchanged."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

import npasr
from npasr import cli
from npasr.convert import convert, detect_family
from npasr.io.gguf import write_gguf
from npasr.models import registry
from npasr.models.registry import Family
from npasr.types import DeviceError, ModelFileError

TINY = Path(__file__).parent / "tiny"
HOOKS = ("ARCHITECTURE", "SOURCES", "detect", "convert", "load")


def _torch_zip(path: Path, obj: object) -> Path:
    """torch.save's zip layout around a plain pickle (no tensors: detection reads names only)."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(obj, protocol=2))
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
    return path


def _whisper_sources(tmp: Path) -> dict[str, Path]:
    """One tiny source per Whisper layout, as far as detection looks (names and keys)."""
    ct2, hf = tmp / "ct2", tmp / "hf"
    ct2.mkdir()
    (ct2 / "model.bin").write_bytes(b"")
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "whisper", "d_model": 8}))
    dims = {"n_mels": 8, "n_audio_ctx": 6, "n_audio_state": 8}
    pt = _torch_zip(tmp / "tiny.pt", {"dims": dims, "model_state_dict": {}})
    return {"ct2": ct2, "hf": hf, "openai": pt}


def test_every_family_has_the_hooks():
    names = [f.name for f in registry.families()]
    assert len(set(names)) == len(names) and {"whisper", "gigaam"} <= set(names)
    for f in registry.families():
        for hook in HOOKS:
            assert hasattr(f.hooks, hook), f"{f.module} lacks {hook}"
        assert isinstance(f.sources, str) and "\n" not in f.sources
        assert registry.for_architecture(f.architecture) == f


def test_import_npasr_does_not_import_a_family():
    code = "import sys, npasr, npasr.hub; print([m for m in sys.modules if 'npasr.models' in m])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("ckpt", sorted(TINY.glob("*.ckpt")), ids=lambda p: p.stem)
def test_gigaam_checkpoints_are_claimed_by_gigaam_only(ckpt):
    assert [f.name for f in registry.families() if f.detect(ckpt)] == ["gigaam"]
    assert detect_family(ckpt) == "gigaam"


def test_whisper_layouts_are_claimed_by_whisper_only(tmp_path):
    for layout, path in _whisper_sources(tmp_path).items():
        claims = [f.name for f in registry.families() if f.detect(path)]
        assert claims == ["whisper"], layout


def test_lookalikes_are_claimed_by_nobody(tmp_path):
    hf = tmp_path / "qwen"
    hf.mkdir()  # names "whisper" in a sub-config, as audio LLMs do; its own type is not whisper
    (hf / "config.json").write_text(
        json.dumps({"model_type": "qwen2_audio", "audio_config": {"model_type": "whisper"}})
    )
    state_dict = _torch_zip(tmp_path / "pytorch_model.bin", {"encoder.conv1.weight": 0})
    not_json = tmp_path / "bad"
    not_json.mkdir()
    (not_json / "config.json").write_text("[whisper")
    for path in (hf, state_dict, not_json):
        assert detect_family(path) is None, path
        with pytest.raises(ModelFileError, match="cannot tell"):
            registry.detect(path)


def test_qwen3_asr_config_is_claimed_by_qwen3_asr_alone(tmp_path):
    """Qwen3-ASR's config names a whisper-like audio_config too; only its own family claims it."""
    d = tmp_path / "q"
    d.mkdir()
    (d / "config.json").write_text(
        json.dumps({"model_type": "qwen3_asr", "audio_config": {"model_type": "whisper"}})
    )
    assert detect_family(d) == "qwen3_asr"


def test_unknown_source_names_every_family(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"\0" * 16)
    with pytest.raises(ModelFileError) as e:
        convert(tmp_path / "x.onnx", tmp_path / "o.gguf")
    for f in registry.families():
        assert f.sources in str(e.value)


def test_a_source_claimed_twice_is_refused(tmp_path, monkeypatch):
    pt = _whisper_sources(tmp_path)["openai"]
    twin = Family("twin", "npasr.models.whisper.family")
    monkeypatch.setattr(registry, "FAMILIES", (*registry.FAMILIES, twin))
    with pytest.raises(ModelFileError, match="whisper and twin"):
        registry.detect(pt)


def test_unknown_architecture(tmp_path):
    p = write_gguf(tmp_path / "m.gguf", "llama", {}, {"x": np.zeros(2, np.float32)})
    with pytest.raises(ModelFileError, match=r"m\.gguf: architecture 'llama' is not supported.*"
                                             r"whisper"):  # fmt: skip
        npasr.load_model(p)


def test_gigaam_is_cpu_only(tmp_path):
    gguf = convert(TINY / "tiny_v3_ctc.ckpt", tmp_path / "g.gguf", wtype="f32")
    with pytest.raises(DeviceError, match="gigaam models run on the CPU only"):
        npasr.load_model(gguf, device="cuda")


FAKE_FAMILY = '''
    """A family in one file: `.fake` text files, whose text is the transcript."""
    import numpy as np

    from npasr.io.gguf import write_gguf

    ARCHITECTURE = "fake"
    SOURCES = "Fake checkpoints (a .fake text file)"


    def detect(path):
        return path.suffix == ".fake"


    def convert(paths, out, wtype, tokenizer):
        meta = {"fake.text": paths[0].read_text(), "fake.wtype": wtype}
        return write_gguf(out, ARCHITECTURE, meta, {"w": np.zeros(2, np.float32)})


    class FakeModel:
        def __init__(self, text, device):
            self.text, self.device = text, device

        def transcribe(self, audio, **options):
            return self.text


    def load(f, device):
        return FakeModel(f.get("fake.text"), device)
'''


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """tmp_path/fakefam/family.py, importable as fakefam.family for this test only."""
    (tmp_path / "fakefam").mkdir()
    (tmp_path / "fakefam" / "family.py").write_text(textwrap.dedent(FAKE_FAMILY))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "fakefam.family"
    for name in ("fakefam.family", "fakefam"):
        sys.modules.pop(name, None)


def test_a_new_family_is_one_module_and_one_line(tmp_path, monkeypatch, fake_package):
    """The promise: a directory with family.py plus a line in FAMILIES, no other code change."""
    monkeypatch.setattr(registry, "FAMILIES", (*registry.FAMILIES, Family("fake", fake_package)))
    monkeypatch.setenv("NPASR_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "hello.fake"
    src.write_text("hello world")

    assert detect_family(src) == "fake"
    gguf = convert(src, tmp_path / "hello.gguf", wtype="q8_0")
    model = npasr.load_model(gguf)
    assert model.transcribe(np.zeros(16000, np.float32)) == "hello world"
    assert model.device == "cpu"
    assert npasr.load_model(src).text == "hello world"  # hub: converted into the cache
    assert list((tmp_path / "cache").glob("local-hello-*-f16.gguf"))
    assert cli.main(["convert", str(src), "-o", str(tmp_path / "cli.gguf")]) == 0
    assert (tmp_path / "cli.gguf").is_file()
    with pytest.raises(ModelFileError, match=r"Fake checkpoints \(a \.fake text file\)"):
        registry.detect(tmp_path / "cli.gguf")  # the error lists the new family's sources too
