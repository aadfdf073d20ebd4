"""Real-size GigaAM v2 (d=768, 16 layers, 16 heads, conv kernel 31) on random weights vs PyPI
`gigaam==0.1.0`.

The checkpoints (~930 MB each) are not committed; `scripts/make_goldens_gigaam_v2.py --real DIR`
rebuilds them from fixed seeds in the reference environment (torch + gigaam 0.1.0), and the
summary of the official run (encoder slices and norms, CTC log-probs, greedy tokens) is committed
as tests/golden/gigaam_real_v2_{ctc,rnnt}.npz. The front end has no random weights, so its output
is checked against the tiny goldens' mel.

Tolerances (measured in brackets): mel 1e-4 vs the official preprocessor in float64 [< 1e-6];
encoder 1e-3 [1.9e-6]; CTC log-probs 1e-3 [3.1e-6]; joint log-probs 1e-3 [9.5e-7]; layer 0 1e-4
[1.9e-6]; tokens and frames identical.

Run:  NPASR_GIGAAM_REAL_DIR=/work/gigaam_real pytest -m slow tests/models/test_gigaam_v2_real.py
  or  NPASR_GIGAAM_V2_REF_PYTHON=/work/venv_gigaam_v2/bin/python pytest -m slow ...  (rebuilds)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from npasr.convert import convert
from npasr.models.gigaam.asr import GigaAMModel

pytestmark = [pytest.mark.slow, pytest.mark.reference]
REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = os.environ.get("NPASR_GIGAAM_REAL_DIR")
    if d and (Path(d) / "v2_ctc.ckpt").is_file():
        return Path(d)
    py = os.environ.get("NPASR_GIGAAM_V2_REF_PYTHON")
    if not py:
        pytest.skip("set NPASR_GIGAAM_REAL_DIR (with v2_*.ckpt) or NPASR_GIGAAM_V2_REF_PYTHON")
    out = tmp_path_factory.mktemp("gigaam_v2_real")
    subprocess.run([py, str(REPO / "scripts" / "make_goldens_gigaam_v2.py"), "--real", str(out)],
                   check=True)  # fmt: skip
    return out


@pytest.mark.parametrize("name", ["v2_ctc", "v2_rnnt"])
def test_real_size_v2_matches_pypi_gigaam(name: str, ckpt_dir: Path, tmp_path: Path,
                                          audio: np.ndarray) -> None:  # fmt: skip
    g = np.load(GOLDEN / f"gigaam_real_{name}.npz")
    tiny = np.load(GOLDEN / "gigaam_tiny_v2_ctc.npz")
    m = GigaAMModel.from_gguf(convert(ckpt_dir / f"{name}.ckpt", tmp_path / "m.gguf", wtype="f32"))
    assert (m.config.d_model, m.config.n_layers, m.config.conv_kernel_size) == (768, 16, 31)
    mel = m.model.features(audio)
    np.testing.assert_allclose(mel, tiny["mel_f64"], rtol=0, atol=1e-4)
    enc = m.model.encode(mel)
    assert enc.shape[0] == int(g["enc_len"])
    np.testing.assert_allclose(enc[:, :16], g["enc_head"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(enc, axis=1), g["enc_norm"], rtol=1e-4)
    pre = m.model.pre_encode(tiny["mel"])  # the official float32 mel, as the reference saw it
    layer0 = m.model.layers.layers[0](pre, m.model.layers.positions(pre.shape[0]))
    np.testing.assert_allclose(layer0[:, :16], g["layer0_head"], rtol=0, atol=1e-4)
    if "log_probs" in g:
        np.testing.assert_allclose(m.model.log_probs(enc), g["log_probs"], rtol=0, atol=1e-3)
    else:
        g0, _ = m.model.predict(None, None)
        logits = m.model.joint(m.model.joint_enc(enc[:1])[0], g0)
        lp = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
        np.testing.assert_allclose(lp, g["joint0"], rtol=0, atol=1e-3)
    tokens, frames = m.decode(enc)
    assert tokens == g["tokens"].tolist()
    assert frames == g["frames"].tolist()
    assert m.tokenizer.decode(tokens) == str(g["text"])
