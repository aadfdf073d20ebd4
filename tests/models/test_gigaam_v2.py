"""GigaAM v2 (`v2_ctc`, `v2_rnnt`) vs the PyPI `gigaam==0.1.0` package (the v2 code).

tests/tiny/tiny_v2_{ctc,rnnt}.ckpt are random-weight checkpoints in the official v2 format, built
by the package's own classes and reloaded through `gigaam.load_model`; the goldens
tests/golden/gigaam_tiny_v2_*.npz are that run's outputs (scripts/make_goldens_gigaam_v2.py, which
documents the environment). No torch here, except in the `reference`-marked live test.

Tolerances (max abs diff; measured values on the 4.76 s clip in brackets):
    mel vs the official preprocessor run in float64     1e-4  [< 1e-6: npasr's STFT is float64]
    mel vs the official float32 run                     5e-4  [2.7e-4: float32 STFT rounding in
                                                               quiet bins, log domain]
    subsampling, layer 0 (from the reference mel)       1e-4  [4.8e-6, 1.5e-6]
    encoder output                                      1e-4  [7.8e-6] (the issue asks <= 1e-3)
    CTC log-probs, first RNN-T joint log-probs          1e-4  [2.9e-6, 1.4e-6] (issue: <= 1e-3)
    greedy CTC / RNN-T tokens and their frames          identical
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

import npasr
from npasr.cli import main as cli_main
from npasr.convert import convert, detect_family
from npasr.models.gigaam.asr import GigaAMModel
from npasr.models.gigaam.weights import load_source, resolve_interpolations

REPO = Path(__file__).resolve().parents[2]
TINY, GOLDEN = REPO / "tests" / "tiny", REPO / "tests" / "golden"
NAMES = ["tiny_v2_ctc", "tiny_v2_rnnt"]
OFFICIAL_NAME = {"tiny_v2_ctc": "v2_ctc", "tiny_v2_rnnt": "v2_rnnt"}
TOL = 1e-4
MEL_F32_TOL = 5e-4  # the reference's float32 STFT; see the module docstring


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, GigaAMModel]:
    out = tmp_path_factory.mktemp("gigaam_v2")
    return {n: GigaAMModel.from_gguf(convert(TINY / f"{n}.ckpt", out / f"{n}.gguf", wtype="f32"))
            for n in NAMES}  # fmt: skip


def _compare(m: GigaAMModel, g: dict[str, np.ndarray], audio: np.ndarray) -> None:
    """npasr stage by stage against one reference run `g` (goldens or live)."""
    mel = m.model.features(audio)
    np.testing.assert_allclose(mel, g["mel_f64"], rtol=0, atol=TOL)
    np.testing.assert_allclose(mel, g["mel"], rtol=0, atol=MEL_F32_TOL)
    # from the reference mel on, so each stage is compared on equal inputs
    pre = m.model.pre_encode(g["mel"])
    np.testing.assert_allclose(pre, g["pre_encode"], rtol=0, atol=TOL)
    layer0 = m.model.layers.layers[0](pre, m.model.layers.positions(pre.shape[0]))
    np.testing.assert_allclose(layer0, g["layer0"], rtol=0, atol=TOL)
    enc = m.model.encode(mel)
    assert enc.shape[0] == int(g["enc_len"])
    np.testing.assert_allclose(enc, g["enc"], rtol=0, atol=TOL)
    if m.config.head == "ctc":
        np.testing.assert_allclose(m.model.log_probs(enc), g["log_probs"], rtol=0, atol=TOL)
    else:
        g0, _ = m.model.predict(None, None)
        logits = m.model.joint(m.model.joint_enc(enc[:1])[0], g0)
        lp = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        np.testing.assert_allclose(lp, g["joint0"], rtol=0, atol=TOL)
    tokens, frames = m.decode(enc)
    assert tokens == np.asarray(g["tokens"]).tolist()  # greedy tokens: exact
    assert frames == np.asarray(g["frames"]).tolist()
    assert m.tokenizer.decode(tokens) == str(g["text"])


@pytest.mark.parametrize("name", NAMES)
def test_matches_pypi_gigaam_goldens(name: str, models: dict[str, GigaAMModel],
                                     audio: np.ndarray) -> None:  # fmt: skip
    g = dict(np.load(GOLDEN / f"gigaam_{name}.npz"))
    assert int(g["mel"].shape[1]) == len(audio) // 160 + 1  # centred STFT: N // 160 + 1 frames
    _compare(models[name], g, audio)


def test_rnnt_golden_exercises_the_symbol_cap() -> None:
    counts = np.bincount(np.load(GOLDEN / "gigaam_tiny_v2_rnnt.npz")["frames"])
    assert counts.max() == 10 and (counts == 0).any()  # max_symbols_per_step hit; silent frames


def test_v2_checkpoint_reads_as_v2(models: dict[str, GigaAMModel]) -> None:
    """The v2 cfg names none of the v3 switches; their v2 values come from the defaults of the
    v2 constructors (FeatureExtractor(sample_rate, features), ConformerEncoder)."""
    for name in NAMES:
        c = models[name].config
        assert (c.n_fft, c.win_length, c.hop_length, c.center) == (400, 400, 160, True)
        assert (c.subsampling, c.subs_kernel_size, c.subsampling_factor) == ("conv2d", 3, 4)
        assert (c.conv_kernel_size, c.conv_norm_type) == (31, "batch_norm")
        assert (c.self_attention_model, c.pos_emb_max_len) == ("rotary", 5000)
        assert c.num_classes == 34 and c.blank_id == 33
    rnnt = models["tiny_v2_rnnt"].config
    assert (rnnt.head, rnnt.pred_hidden, rnnt.joint_hidden) == ("rnnt", 16, 24)


def test_interpolated_v2_cfg_is_resolved() -> None:
    """tiny_v2_ctc's cfg keeps `vocabulary: ${labels}`, `feat_in: ${encoder.d_model}`, ..."""
    src = load_source(TINY / "tiny_v2_ctc.ckpt")
    assert src.vocabulary == [" ", *"абвгдежзийклмнопрстуфхцчшщъыьэюя"]
    assert src.config.feat_in == 64 and src.config.sample_rate == 16000
    cfg = {"a": {"b": 3}, "c": "${a.b}", "d": ["${c}", "x${a.b}", "${oc.env:HOME}"]}
    assert resolve_interpolations(cfg) == {"a": {"b": 3}, "c": 3,
                                           "d": [3, "x${a.b}", "${oc.env:HOME}"]}  # fmt: skip
    with pytest.raises(KeyError, match="points nowhere"):
        resolve_interpolations({"a": "${missing}"})
    with pytest.raises(KeyError, match="cycle"):
        resolve_interpolations({"a": "${b}", "b": "${a}"})


def test_cli_convert_and_transcribe(tmp_path: Path, audio: np.ndarray) -> None:
    for name in NAMES:
        # an official file name, as `gigaam.load_model` keeps it in its download root
        ckpt = tmp_path / f"{OFFICIAL_NAME[name]}.ckpt"
        shutil.copyfile(TINY / f"{name}.ckpt", ckpt)
        assert detect_family(ckpt) == "gigaam"
        out = tmp_path / f"{name}.gguf"
        assert cli_main(["convert", str(ckpt), "-o", str(out), "--type", "f32"]) == 0
        model = npasr.load_model(out)
        assert isinstance(model, GigaAMModel) and model.config.subsampling == "conv2d"
        res = model.transcribe(audio)
        assert res.language == "ru" and res.segments
        ref = str(np.load(GOLDEN / f"gigaam_{name}.npz")["text"])
        assert "".join(res.text.split()) == "".join(ref.split())  # segments may re-space words


def _reference_module():
    """scripts/make_goldens_gigaam_v2.py, imported, when torch + gigaam 0.1.0 are installed."""
    from importlib.metadata import PackageNotFoundError, version

    for mod in ("torch", "torchaudio", "hydra", "omegaconf", "gigaam"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} is not installed (PyPI gigaam 0.1.0 reference)")
    try:
        if version("gigaam") != "0.1.0":
            pytest.skip(f"gigaam {version('gigaam')} is not the PyPI v2 release 0.1.0")
    except PackageNotFoundError:
        pytest.skip("gigaam is not installed from PyPI")
    path = REPO / "scripts" / "make_goldens_gigaam_v2.py"
    spec = importlib.util.spec_from_file_location("make_goldens_gigaam_v2", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.reference
@pytest.mark.parametrize("name", NAMES)
def test_live_pypi_gigaam(name: str, models: dict[str, GigaAMModel], audio: np.ndarray,
                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Load the committed tiny checkpoint with the installed `gigaam` 0.1.0, run it on the clip
    as npasr loads it, and compare npasr with that live run at the golden tolerances."""
    ref = _reference_module()
    import torch  # noqa: PLC0415

    # gigaam 0.1.0 calls torch.load without weights_only; torch >= 2.6 would refuse the cfg
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    torch.set_num_threads(1)
    official = OFFICIAL_NAME[name]
    shutil.copyfile(TINY / f"{name}.ckpt", tmp_path / f"{official}.ckpt")
    model = ref.load_official(tmp_path, official)
    live = ref.run_reference(model, torch.from_numpy(np.ascontiguousarray(audio)))
    _compare(models[name], live, audio)
    golden = np.load(GOLDEN / f"gigaam_{name}.npz")  # and the committed goldens are current
    np.testing.assert_allclose(live["enc"], golden["enc"], rtol=0, atol=1e-5)
    assert live["tokens"].tolist() == golden["tokens"].tolist()
