"""Quantized Whisper files: same model code, weights stored as Q8_0 / Q4_0 / Q4_K.

Q8_0 must not change the greedy transcript of jfk; the 4-bit types must keep the words.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from npasr import hub
from npasr.io.gguf import GGMLType, RawTensor, read_gguf
from npasr.models.whisper.asr import WhisperModel
from npasr.nn.quant import QTensor

from ..conftest import JFK, JFK_TEXT
from .test_whisper_e2e import normalize


@pytest.fixture(scope="module")
def tiny_f16(tiny_en_gguf) -> WhisperModel:
    return WhisperModel.from_gguf(tiny_en_gguf)


@pytest.mark.weights
@pytest.mark.parametrize("wtype", ["q8_0", "q4_0", "q4_k"])
def test_quantized_file_layout(tiny_en_gguf, wtype) -> None:
    path = hub.resolve("whisper-tiny.en", wtype=wtype)
    f, ref = read_gguf(path), read_gguf(tiny_en_gguf)
    four_bit = {"q8_0": set(), "q4_0": {GGMLType.Q4_0}, "q4_k": {GGMLType.Q4_K, GGMLType.Q5_0}}
    quantized = {k: t for k, t in f.tensors.items() if isinstance(t, RawTensor)}
    # every attention/MLP matrix and the token embedding (Q8_0 in every type) are quantized;
    # positional embeddings, convs, norms, biases are not
    expected = {k for k, t in ref.tensors.items() if t.ndim == 2 and ("attn" in k or ".mlp." in k)}
    assert set(quantized) == expected | {"decoder.token_embedding.weight"}
    assert isinstance(f.tensors["encoder.conv1.weight"], np.ndarray)
    for k, t in quantized.items():  # 4-bit files: only the encoder MLPs are 4-bit
        enc_mlp = k.startswith("encoder.") and ".mlp." in k
        want = four_bit[wtype] if enc_mlp and wtype != "q8_0" else {GGMLType.Q8_0}
        assert t.ggml_type in want, k
    assert f.file_size < ref.file_size
    # and the stored blocks decode to the f16 weights within the type's quantization error
    name = "encoder.blocks.0.mlp.0.weight"
    w = np.asarray(ref.tensors[name], np.float32)
    err = np.abs(QTensor.from_raw(quantized[name]).dequantize() - w).max() / np.abs(w).max()
    assert err < (0.01 if wtype == "q8_0" else 0.15)


@pytest.mark.weights
def test_q8_0_greedy_transcript_equals_f16(tiny_f16) -> None:
    q8 = WhisperModel.from_gguf(hub.resolve("whisper-tiny.en", wtype="q8_0"))
    a = q8.transcribe(JFK, temperature=0.0)
    b = tiny_f16.transcribe(JFK, temperature=0.0)
    assert a.text == b.text
    # same text tokens; timestamp tokens may move by a step or few (quantized layers shift
    # near-tied timestamp logits): segment times within the 0.5 s used against openai
    assert [[t for t in s.tokens if t < 50257] for s in a.segments] == [
        [t for t in s.tokens if t < 50257] for s in b.segments
    ]
    for sa, sb in zip(a.segments, b.segments, strict=True):
        assert abs(sa.start - sb.start) <= 0.5 and abs(sa.end - sb.end) <= 0.5


@pytest.mark.weights
def test_cross_attention_keys_are_half_only_in_quantized_models(tiny_f16) -> None:
    """A quantized decoder keeps each window's cross-attention keys and values in float16 (its
    weights' error is far larger than that rounding); a float one keeps them float32."""
    from npasr.nn import float_gemm

    q8 = WhisperModel.from_gguf(hub.resolve("whisper-tiny.en", wtype="q8_0"))
    feats = np.random.default_rng(0).standard_normal((1500, 384)).astype(np.float32)
    for m, half in ((tiny_f16, False), (q8, True)):
        dec = m.model.decoder
        assert dec.half_cross is half
        if float_gemm.available():
            want = np.float16 if half else np.float32
            assert all(kv.kp.dtype == want for kv in dec.cross_kv(feats).layers)


@pytest.mark.weights
@pytest.mark.parametrize("wtype", ["q4_0", "q4_k"])
def test_4bit_keeps_the_words(wtype) -> None:
    m = WhisperModel.from_gguf(hub.resolve("whisper-tiny.en", wtype=wtype))
    assert normalize(m.transcribe(JFK, temperature=0.0).text) == normalize(JFK_TEXT)


@pytest.mark.weights
def test_quantized_token_embedding_equals_its_dequantized_table(tiny_f16) -> None:
    """A quantized embedding (npasr's quantized files store it Q8_0): the row lookup and the
    tied logits must equal those of the dequantized float table."""
    import copy

    from npasr.models.whisper.model import KVCache
    from npasr.nn.quant import quantize

    dec_q = copy.copy(tiny_f16.model.decoder)
    q = quantize(np.asarray(dec_q.token_embedding, np.float32), GGMLType.Q8_0)
    dec_q.token_embedding = q
    dec_f = copy.copy(tiny_f16.model.decoder)
    dec_f.token_embedding = q.dequantize()
    feats = np.random.default_rng(0).standard_normal((1500, 384)).astype(np.float32)
    cross = dec_f.cross_kv(feats)
    tokens = np.array([[50257, 50362, 843, 523]])
    cfg = tiny_f16.config
    hq = dec_q(tokens, cross, KVCache.empty(cfg, 1))
    hf = dec_f(tokens, cross, KVCache.empty(cfg, 1))
    np.testing.assert_allclose(hq, hf, rtol=0, atol=1e-5)
    lq, lf = dec_q.logits(hq[0]), dec_f.logits(hf[0])
    assert np.abs(lq - lf).max() <= 1e-3 * np.abs(lf).max()


@pytest.mark.weights
@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs Linux /proc")
def test_quantized_weights_are_not_held_twice() -> None:
    """A quantized model builds every matrix's kernel layout at load (encoder ones too), holds
    its float tensors in arrays of its own and looks token rows up in the output projection's
    layout, then releases the file's pages: a transcription reads none of them again, so none
    is resident after it. (Before: the float tensors read in place kept 6.3 of tiny.en q8_0's
    43 MB resident, and 12.6 MB on Linux 6.18, which maps a page-cache folio of up to 4 MiB
    whole on a fault, so a layer norm brought its layer's quantized weights back.)"""
    from ..io.test_gguf import _resident_kib

    path = hub.resolve("whisper-tiny.en", wtype="q8_0")
    m = WhisperModel.from_gguf(path)
    assert _resident_kib(path) == 0
    m.transcribe(JFK, temperature=0.0)
    assert _resident_kib(path) == 0


@pytest.mark.weights
def test_format_6_quantized_file_with_f16_embedding(tiny_en_gguf) -> None:
    """Quantized files of format 6 and older keep the token embedding in f16: such a model
    looks rows up in f16 and makes a Q8_0 copy of the table for the tied output projection."""
    from npasr.models.whisper.model import Whisper, _embedding_rows

    q8, f16 = read_gguf(hub.resolve("whisper-tiny.en", wtype="q8_0")), read_gguf(tiny_en_gguf)
    name = "decoder.token_embedding.weight"
    tensors = {**q8.tensors, name: f16.tensors[name]}
    dec = Whisper.load(tensors, WhisperModel.from_gguf(f16).config, origin="format 6").decoder
    table = np.asarray(f16.tensors[name], np.float32)
    assert dec.output is not None and dec.token_embedding.dtype == np.float16
    ids = np.array([[50257, 843, 523]])
    np.testing.assert_array_equal(_embedding_rows(dec.token_embedding, ids), table[ids])
    h = np.random.default_rng(1).standard_normal((2, table.shape[1])).astype(np.float32)
    want = h @ table.T
    # the GEMV rounds each weight and each activation (int8, blocks of 32) by at most half a
    # step, max|block| / 254; the product of the two roundings is below 1e-4 of either
    def step(a: np.ndarray) -> np.ndarray:
        return np.abs(a).reshape(len(a), -1, 32).max(-1).repeat(32, 1) / 254

    bound = np.abs(h) @ step(table).T + step(h) @ np.abs(table).T
    assert (np.abs(dec.logits(h) - want) <= bound * 1.0001 + 1e-4).all()


@pytest.mark.weights
def test_4bit_encoder_mlps_use_the_calibration() -> None:
    """The 4-bit files' encoder MLP blocks are quantized with error feedback over the bundled
    clips' input second moments (npasr.models.whisper.calibrate, quant._gptq), not with the
    plain rule: the statistics cover every encoder MLP matrix as a symmetric (K, K) matrix
    whose diagonal is the vector rule's (`shrink`: mean squares scaled to mean 1, plus 1)."""
    from npasr.models.whisper.calibrate import CALIBRATION_CLIPS, encoder_mlp_importance
    from npasr.models.whisper.weights import load_source
    from npasr.nn.quant import quantize

    assert all(p.is_file() for p in CALIBRATION_CLIPS)
    src = load_source(hub.source_dirs("whisper-tiny.en")[0])
    imp = encoder_mlp_importance(src, full=True)
    names = {f"encoder.blocks.{i}.mlp.{j}.weight" for i in range(4) for j in (0, 2)}
    assert set(imp) == names
    for n in names:
        k = src.tensors[n].shape[1]
        h = imp[n]
        assert h.shape == (k, k) and np.array_equal(h, h.T)
        assert (np.diag(h) >= 1).all() and abs(np.diag(h).mean() - 2) < 1e-6
        assert (np.diag(h) > 1).mean() > 0.9
    for wtype, qtype, name in [
        ("q4_0", GGMLType.Q4_0, "encoder.blocks.2.mlp.2.weight"),
        ("q4_k", GGMLType.Q4_K, "encoder.blocks.1.mlp.2.weight"),  # K = 1536: Q4_K
        ("q4_k", GGMLType.Q5_0, "encoder.blocks.0.mlp.0.weight"),  # K = 384: Q5_0
    ]:
        f = read_gguf(hub.resolve("whisper-tiny.en", wtype=wtype))
        assert f.tensors[name].ggml_type == qtype
        w = np.asarray(src.tensors[name], np.float32)
        stored = f.tensors[name].data.reshape(-1)
        np.testing.assert_array_equal(stored, quantize(w, qtype, imp[name]).blocks.reshape(-1))
        assert not np.array_equal(stored, quantize(w, qtype).blocks.reshape(-1))


@pytest.mark.weights
def test_warmup_leaves_nothing_to_compile(tiny_f16) -> None:
    """After `ops.warmup()` (what `npasr warmup` and the first CLI run do), transcribing with an
    f16 file (weights read-only, mapped from the file) and a q8_0 file (repacked weights),
    greedy and with beams, adds no kernel signature: every weight reaches a kernel in one form
    (`ops._const`), and warmup compiles that form."""
    import importlib
    import pkgutil

    from numba.core.registry import CPUDispatcher

    import npasr
    from npasr.nn import ops

    ops.warmup()
    found = pkgutil.walk_packages(npasr.__path__, "npasr.")
    mods = [importlib.import_module(m.name) for m in found]
    dispatchers = {
        f"{mod.__name__}.{name}": d
        for mod in mods
        for name, d in vars(mod).items()
        if isinstance(d, CPUDispatcher) and d.__module__ == mod.__name__
    }
    before = {name: len(d.signatures) for name, d in dispatchers.items()}
    q8 = WhisperModel.from_gguf(hub.resolve("whisper-tiny.en", wtype="q8_0"))
    for model in (tiny_f16, q8):
        for beam in (1, 5):
            model.transcribe(JFK, temperature=0.0, beam_size=beam)
    after = {name: len(d.signatures) for name, d in dispatchers.items()}
    assert {k: (before[k], v) for k, v in after.items() if v != before[k]} == {}
    assert len(dispatchers) > 30  # the kernel modules were found
