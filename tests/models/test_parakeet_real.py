"""Real-size Parakeet (parakeet-tdt-0.6b-v3's 24 x 1024, 8 heads; parakeet-ctc-0.6b's head) on
random weights vs NVIDIA NeMo 3.0.0.

The .nemo files (2.5 GB each) are too big to commit; `scripts/make_goldens_parakeet.py --real DIR`
rebuilds them from fixed seeds in the reference environment (torch + NeMo), and NeMo's run is
summarised in tests/golden/parakeet_real_{tdt,ctc}_{clip}.npz (mel, the first 16 encoder
channels and every frame's norm, layer 0's first 16 channels, the first joint step, greedy
tokens, frames and durations, CTC log-probs and tokens).

Run:  NPASR_PARAKEET_REAL_DIR=/tmp/parakeet_real pytest -m slow tests/models/test_parakeet_real.py
  or  NPASR_PARAKEET_REF_PYTHON=/tmp/venv_nemo/bin/python pytest -m slow ...   (rebuilds them)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import npasr
from npasr.audio.io import load_audio
from npasr.convert import convert

pytestmark = [pytest.mark.slow, pytest.mark.reference]
REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
CLIPS = {"austen0870": "en_psphinx-austen-0870.wav", "austen0890": "en_psphinx-austen-0890.wav",
         "ru1": "ru_sherpa-qwen3-ru1.wav"}  # fmt: skip


def _golden(model: str, clip: str) -> dict[str, np.ndarray]:
    return dict(np.load(REPO / "tests" / "golden" / f"parakeet_real_{model}_{clip}.npz"))


@pytest.fixture(scope="module")
def nemo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if d := os.environ.get("NPASR_PARAKEET_REAL_DIR"):
        return Path(d)
    py = os.environ.get("NPASR_PARAKEET_REF_PYTHON")
    if not py:
        pytest.skip("set NPASR_PARAKEET_REAL_DIR or NPASR_PARAKEET_REF_PYTHON (torch + NeMo)")
    out = tmp_path_factory.mktemp("parakeet_real")
    subprocess.run([py, str(REPO / "scripts" / "make_goldens_parakeet.py"), "--real", str(out)],
                   check=True)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def models(nemo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("parakeet_real_gguf")
    return {m: npasr.load_model(convert(nemo_dir / f"parakeet_real_{m}.nemo", out / f"{m}.gguf",
                                        wtype="f32")) for m in ("tdt", "ctc")}  # fmt: skip


@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize("model", ["tdt", "ctc"])
def test_real_size_matches_nemo(model: str, clip: str, models) -> None:
    """Bounds as the tiny test's, but for 24 layers of 1024: the encoder output (norms ~32) is
    compared to 1e-3 absolute and its per-frame norms to 1e-4 relative."""
    pm, g = models[model], _golden(model, clip)
    m = pm.model
    mel = m.features(load_audio(str(DATA / CLIPS[clip])))
    np.testing.assert_allclose(mel, g["mel"], rtol=0, atol=2e-4)
    n = int(g["enc_len"])
    enc = m.encode(g["mel"], int(g["mel_len"]))
    assert enc.shape[0] == n
    np.testing.assert_allclose(enc[:, :16], g["enc_head"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(enc, axis=1), g["enc_norm"], rtol=1e-4)
    pre, _ = m.pre_encode(g["mel"], int(g["mel_len"]))
    layer0 = m.layers.layers[0](pre, m.layers.positions(n))
    np.testing.assert_allclose(layer0[:, :16], g["layer0_head"], rtol=0, atol=1e-4)
    if model == "ctc":
        cols = g["log_probs_cols"]  # every frame's 8 best classes and every 64th
        np.testing.assert_allclose(m.log_probs(enc)[:, cols], g["log_probs_sel"], rtol=0,
                                   atol=1e-3)  # fmt: skip
        d = pm.decode(enc)
        assert d.tokens == g["ctc_tokens"].tolist()
        assert d.frames == g["ctc_frames"].tolist()
        return
    net = m.transducer
    g0, _ = net.predict(None, None)
    np.testing.assert_allclose(net(net.project(enc[:1])[0], g0), g["joint0_raw"], rtol=0,
                               atol=1e-3)  # fmt: skip
    d = pm.decode(enc)
    assert d.tokens == g["tokens"].tolist()
    assert d.frames == g["frames"].tolist()
    assert d.durations == g["durations"].tolist()
    assert pm.timestamps(d).text == str(g["text"])
