"""Quantized GigaAM files: the same model code, matrices stored as Q8_0 / Q4_0 / Q4_K.

The tiny random models (d=32) are tie-prone: the median gap between the best and second-best
CTC log-prob of a frame is 0.05-0.075 nats, and a third of the frames have a gap below 0.04. A
Q8_0 weight moves by up to 1/254 of its block's largest weight, which moves the tiny models'
log-probs by ~0.02 (measured: CTC 0.0186 v3, 0.0188 v2; RNN-T joint 0.024), enough to flip
those near-ties. So the tiny-model checks are (a) log-probs within LP_TOL of the f32 model,
and (b) the same argmax on every frame (or transducer step) whose f32 margin exceeds 2 * LP_TOL:
nothing may flip that is not a near-tie. The real-size Q8_0 greedy tokens are checked against
the official run in test_gigaam_real.py.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from npasr.convert import convert
from npasr.io.gguf import GGMLType, RawTensor, read_gguf
from npasr.models.gigaam.asr import GigaAMModel
from npasr.nn.quant import QTensor

from .test_gigaam import TINY, _tokenizer

LP_TOL = 0.05  # Q8_0 vs f32 log-probs of the tiny models (measured max 0.024, see above)
# the matrices a quantized GigaAM file quantizes (when the width fits the block)
QUANTIZED = re.compile(
    r"(feed_forward[12]\.linear[12]|self_attn\.linear_(q|k|v|out|pos)|conv\.pointwise_conv[12]"
    r"|pre_encode\.out|joint\.(enc|pred))\.weight$"
)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    out = tmp_path_factory.mktemp("gigaam_q")
    return {(n, t): convert(TINY / f"{n}.ckpt", out / f"{n}_{t}.gguf", wtype=t,
                            tokenizer=_tokenizer(n))
            for n in ("tiny_v3_ctc", "tiny_v3_rnnt", "tiny_v2rel_ctc")
            for t in ("f32", "q8_0", "q4_0", "q4_k")}  # fmt: skip


@pytest.mark.parametrize("wtype", ["q8_0", "q4_0", "q4_k"])
@pytest.mark.parametrize("name", ["tiny_v3_ctc", "tiny_v3_rnnt", "tiny_v2rel_ctc"])
def test_quantized_file_layout(files: dict, name: str, wtype: str) -> None:
    f, ref = read_gguf(files[(name, wtype)]), read_gguf(files[(name, "f32")])
    quantized = {k: t for k, t in f.tensors.items() if isinstance(t, RawTensor)}
    expected = {k for k, t in ref.tensors.items() if QUANTIZED.search(k) and t.shape[1] % 32 == 0}
    assert set(quantized) == expected
    assert len(expected) >= 20  # every attention / feed-forward / pointwise matrix of 2 layers
    # kept float: mel buffers (f32), subsampling convs, depthwise convs, norms, biases, the
    # prediction net and the output layers (CTC decoder_layers, joint_net)
    for k, t in f.tensors.items():
        if k.startswith("preprocessor."):
            assert t.dtype == np.float32
    for k, t in quantized.items():  # Q4_K super-blocks span 256: narrower rows use Q5_0
        k_fits = t.shape[1] % 256 == 0
        want = {"q8_0": GGMLType.Q8_0, "q4_0": GGMLType.Q4_0,
                "q4_k": GGMLType.Q4_K if k_fits else GGMLType.Q5_0}[wtype]  # fmt: skip
        assert t.ggml_type == want, k
    # a pointwise conv (D2, D, 1) is stored as its (D2, D) matrix, decoding to the f32 weight
    name_pw = "encoder.layers.0.conv.pointwise_conv1.weight"
    w = ref.tensors[name_pw][:, :, 0]
    assert quantized[name_pw].shape == w.shape
    err = np.abs(QTensor.from_raw(quantized[name_pw]).dequantize() - w).max() / np.abs(w).max()
    assert err < (0.005 if wtype == "q8_0" else 0.1)
    assert f.metadata["general.file_type"] == {"q8_0": 7, "q4_0": 2, "q4_k": 15}[wtype]


def _assert_close_and_no_clear_flip(lp_q: np.ndarray, lp_f: np.ndarray) -> None:
    assert np.abs(lp_q - lp_f).max() < LP_TOL
    top2 = np.sort(lp_f, axis=-1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * LP_TOL  # not a near-tie in the f32 model
    assert clear.sum() > 10
    np.testing.assert_array_equal(lp_q.argmax(-1)[clear], lp_f.argmax(-1)[clear])


@pytest.mark.parametrize("name", ["tiny_v3_ctc", "tiny_v2rel_ctc"])
def test_q8_0_ctc_log_probs_match_f32(files: dict, name: str, audio: np.ndarray) -> None:
    mf, mq = (GigaAMModel.from_gguf(files[(name, t)]) for t in ("f32", "q8_0"))
    assert any(isinstance(lin.weight, QTensor) for lin in _linears(mq))
    mel = mf.model.features(audio)
    lp_f = mf.model.log_probs(mf.model.encode(mel))
    lp_q = mq.model.log_probs(mq.model.encode(mel))
    _assert_close_and_no_clear_flip(lp_q, lp_f)


def _linears(m: GigaAMModel) -> list:
    layer = m.model.layers.layers[0]
    return [layer.feed_forward1.linear1, layer.self_attn.linear_q, layer.conv.pointwise_conv1]


def _joint_log_probs_along(m: GigaAMModel, enc: np.ndarray, tokens: list[int],
                           frames: list[int], max_symbols: int = 10) -> np.ndarray:  # fmt: skip
    """Joint log-probs of every greedy step on a given (tokens, frames) path (teacher forced):
    at frame t, one query per token emitted there, then one that must be blank (unless the
    max_symbols cap moved on)."""
    proj = m.model.joint_enc(enc)
    g, state = m.model.predict(None, None)
    out = []
    for t in range(enc.shape[0]):
        here = [tok for tok, fr in zip(tokens, frames, strict=True) if fr == t]
        for tok in here:
            out.append(m.model.joint(proj[t], g))
            g, state = m.model.predict(tok, state)
        if len(here) < max_symbols:
            out.append(m.model.joint(proj[t], g))
    logits = np.stack(out)
    return logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
        - logits.max(-1, keepdims=True)  # fmt: skip


def test_q8_0_rnnt_joint_matches_f32_on_the_f32_path(files: dict, audio: np.ndarray) -> None:
    mf, mq = (GigaAMModel.from_gguf(files[("tiny_v3_rnnt", t)]) for t in ("f32", "q8_0"))
    mel = mf.model.features(audio)
    enc_f, enc_q = mf.model.encode(mel), mq.model.encode(mel)
    tokens, frames = mf.decode(enc_f)
    lp_f = _joint_log_probs_along(mf, enc_f, tokens, frames)
    lp_q = _joint_log_probs_along(mq, enc_q, tokens, frames)
    assert lp_f.shape[0] == len(tokens) + sum(
        np.bincount(frames, minlength=enc_f.shape[0]) < 10
    )  # fmt: skip
    _assert_close_and_no_clear_flip(lp_q, lp_f)


@pytest.mark.parametrize("wtype", ["q4_0", "q4_k"])
def test_4bit_stays_near_f32(files: dict, wtype: str, audio: np.ndarray) -> None:
    mf, mq = (GigaAMModel.from_gguf(files[("tiny_v3_ctc", t)]) for t in ("f32", wtype))
    mel = mf.model.features(audio)
    enc_f, enc_q = mf.model.encode(mel), mq.model.encode(mel)
    rel = np.linalg.norm(enc_q - enc_f) / np.linalg.norm(enc_f)
    assert rel < 0.15  # measured 0.091 (4-bit: 16 levels per block of 32; one block per row)
    assert mq.transcribe(audio).text  # the whole path runs on 4-bit matrices


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc")
@pytest.mark.parametrize("wtype", ["q8_0", "q4_k"])
@pytest.mark.parametrize("name", ["tiny_v3_rnnt", "tiny_v2rel_ctc"])
def test_quantized_model_reads_nothing_from_its_file_after_load(
    files: dict, name: str, wtype: str, audio: np.ndarray
) -> None:
    """Every kernel layout (the v2 subsampling's `out`, the transducer joint's too) is built at
    load and the float tensors are arrays of their own, so after `release_pages` a
    transcription faults none of the file's pages back (the joint's, built on first use, did)."""
    from ..io.test_gguf import _resident_kib

    path = files[(name, wtype)]
    m = GigaAMModel.from_gguf(path)
    assert _resident_kib(path) == 0
    m.transcribe(audio)
    assert _resident_kib(path) == 0
