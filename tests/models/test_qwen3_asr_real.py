"""Qwen3-ASR at the real 0.6B size (18 x 896 audio encoder, 28 x 1024 Qwen3, 151936 tokens) on
random weights, against transformers 5.23: slow, and only where the real-size checkpoints exist.

    /tmp/venv_ref/bin/python scripts/make_goldens_qwen3_asr.py --real /tmp/qwen3_real
    NPASR_QWEN3_REAL_DIR=/tmp/qwen3_real python -m pytest -m slow \
        tests/models/test_qwen3_asr_real.py

The checkpoints (3.1 GB each, both layouts) are not committed; tests/golden/qwen3_asr_real_jfk.*
hold summaries of transformers' outputs on jfk: the first 16 columns and the row norms of every
encoder stage, for prompts a/b/c the prompt ids, the 64 largest first-step logits, every 37th
logit, and 72 greedy tokens with their top-1 margins (the smallest 2.9e-3).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import npasr
from npasr.convert import convert
from npasr.models.qwen3_asr.model import KVCache

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden"
REAL = os.environ.get("NPASR_QWEN3_REAL_DIR")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not REAL, reason="NPASR_QWEN3_REAL_DIR unset (see the module docstring)"),
]
# Bounds: every stage from our own previous stage (the goldens keep summaries only), so errors
# compound through 18 + 28 layers of float32 in another summation order; measured at the time
# of writing in brackets.
STAGE_ATOL = 2e-5  # encoder stage values, |x| up to 4.7 [1.2e-6 .. 2.9e-6]
NORM_RTOL = 2e-6  # row norms [1.2e-7 .. 2.4e-7]
LOGIT_ATOL = 2e-4  # first-step logits, |x| up to 7.6 [2.0e-5 .. 3.7e-5]


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("qwen3_real")
    model = npasr.load_model(convert(Path(REAL) / "qwen3_asr_real_hf", out / "hf.gguf",
                                     wtype="f32"))  # fmt: skip
    g = dict(np.load(GOLDEN / "qwen3_asr_real_jfk.npz"))
    j = json.loads((GOLDEN / "qwen3_asr_real_jfk.json").read_text("utf-8"))
    tiny = np.load(GOLDEN / "qwen3_asr_tiny_jfk.npz")  # the same clip: its audio and mel
    return model, g, j, tiny["audio"], tiny["mel"]


def _check_stage(got: np.ndarray, g: dict, name: str) -> None:
    np.testing.assert_allclose(got[:, :16], g[f"{name}_head"], rtol=0, atol=STAGE_ATOL)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), g[f"{name}_norm"], rtol=NORM_RTOL)


def test_real_size_encoder(real) -> None:
    model, g, j, audio, mel_ref = real
    m = model.model
    mel = model.features(audio)
    np.testing.assert_allclose(mel, mel_ref, rtol=0, atol=2e-4)
    assert m.config.audio_tokens(mel.shape[1]) == int(g["n_audio_tokens"]) == j["n_audio_tokens"]
    x = m.audio.stem(mel_ref)
    _check_stage(x, g, "audio_pre_layer0")
    _check_stage(m.audio.layers[0](x, m.config.window_tokens), g, "audio_layer0")
    post = m.audio.encode_layers(x)
    _check_stage(post, g, "audio_ln_post")
    _check_stage(m.audio.project(post), g, "audio_embeds")


@pytest.mark.parametrize("p", ["a", "b", "c"])
def test_real_size_logits_and_greedy_tokens(real, p: str) -> None:
    model, g, j, _, mel_ref = real
    spec = j["prompts"][p]
    emb = model.model.audio(mel_ref)
    ids = model.prompt_ids(len(emb), spec["context"], spec["language"])
    assert ids == g[f"prompt_ids_{p}"].tolist()
    text = model.model.text
    cache = KVCache.empty(model.config, len(ids))
    lg = text.logits(text.prefill(model.embed_prompt(ids, emb), cache))[0]
    np.testing.assert_allclose(lg[g[f"logits_first_{p}_top_ids"]], g[f"logits_first_{p}_top_vals"],
                               rtol=0, atol=LOGIT_ATOL)  # fmt: skip
    np.testing.assert_allclose(lg[::37], g[f"logits_first_{p}_strided"], rtol=0, atol=LOGIT_ATOL)
    gen = model.generate(ids, emb, len(g[f"tokens_{p}"]))
    assert gen.tokens == g[f"tokens_{p}"].tolist()


def test_real_size_original_layout_converts_to_the_same_model(real, tmp_path: Path) -> None:
    """The original layout (two shards, a stored lm_head) gives the same tensors as the
    transformers layout: the same GGUF tensor by tensor."""
    from npasr.io.gguf import read_gguf

    model = real[0]
    out = convert(Path(REAL) / "qwen3_asr_real_orig", tmp_path / "orig.gguf", wtype="f16")
    hf = convert(Path(REAL) / "qwen3_asr_real_hf", tmp_path / "hf.gguf", wtype="f16")
    a, b = read_gguf(out), read_gguf(hf)
    assert sorted(a.tensors) == sorted(b.tensors)
    for name in a.tensors:
        assert np.array_equal(np.asarray(a.tensors[name]), np.asarray(b.tensors[name])), name
    assert model.config.num_hidden_layers == 28 and model.config.vocab_size == 151936
