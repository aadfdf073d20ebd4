"""Fused quantized kernels (via ops.linear) against the reference ref.linear(x, dequantize(w), b).

Tolerance. Activations are not quantized: the kernels widen the int8/nibble values to float32
exactly and differ from the reference only in float32 rounding order (fastmath reassociation,
32 partial sums, and for offset layouts s*v*x summed and o*sum(x) subtracted instead of (s*v-o)*x).
The classic forward-error bound for a K-term float sum then holds per output:

    |y - y_ref| <= gamma_n * sum_j (|s v_j| + |o|) |x_j|,  gamma_n = n u / (1 - n u),
    u = 2^-24, n = K + 4 (K products and sums, plus the scale, offset and bias steps),

evaluated with the repacked scale s, value v and offset o. This is a proven bound, not a fitted
one; measured errors are ~100x below it (~1e-7 relative).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from npasr.io.gguf import GGMLType
from npasr.nn import int8_gemm, ops, quant, ref
from npasr.nn import quant_kernels as qk
from npasr.nn.quant import QTensor

from . import assert_runs_without_jit

FUSED = [
    GGMLType.Q8_0,
    GGMLType.Q4_0,
    GGMLType.Q4_K,
    GGMLType.Q4_1,
    GGMLType.Q5_0,
    GGMLType.Q5_1,
    GGMLType.Q5_K,
]
U = 2.0**-24


def _abs_weight_bound(w: QTensor) -> np.ndarray:
    """(N, K) |s v| + |o| from the repacked layout (|w| for a type without one)."""
    p = w.repack()
    if p is None:
        return np.abs(w.dequantize())
    n, k = w.shape
    if p.kind == "i8":
        v = p.qs.astype(np.float32)
    else:  # byte 16 b + j: low nibble value 32 b + j, high nibble 32 b + j + 16
        qs = p.qs.reshape(n, -1, 16)
        v = np.concatenate([qs & 15, qs >> 4], axis=-1).reshape(n, k).astype(np.float32)
    sv = np.abs(v.reshape(n, -1, 32) * p.scale[..., None])
    off = 0 if p.offset is None else np.abs(p.offset)[..., None]
    return (sv + off).reshape(n, k)


def _check(x: np.ndarray, w: QTensor, b: np.ndarray | None) -> None:
    y = ops.linear(x, w, b)
    want = ref.linear(x, w.dequantize(), b)
    n = w.shape[1] + 4
    bound = n * U / (1 - n * U) * (np.abs(x) @ _abs_weight_bound(w).T)
    if b is not None:
        bound += U * np.abs(want)
    assert y.shape == want.shape and y.dtype == np.float32
    excess = np.abs(y - want) - bound
    assert excess.max() <= 0, f"max error above the bound by {excess.max():.3g}"


def _spy(monkeypatch: pytest.MonkeyPatch, module: object, *names: str) -> list[str]:
    """Wrap module.<name> for each name so that calls append the name to the returned list."""
    calls: list[str] = []
    for name in names:
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    return calls


def _weight(qtype: GGMLType, n: int, k: int, seed: int = 0) -> QTensor:
    w = np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)
    w[3] = 0.0  # an all-zero output row
    return quant.quantize(w, qtype)


@pytest.mark.parametrize("qtype", FUSED, ids=lambda t: t.name)
@pytest.mark.parametrize("kernel", ["serial", "parallel"])
def test_gemv_rows_1_to_8(
    qtype: GGMLType, kernel: str, n_threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decoding path: every batch size 1..8; N = 75 is not a multiple of the row chunk. Both
    kernels (ops.GEMV_SERIAL_MAX_WEIGHTS picks one by size) give the same bits."""
    monkeypatch.setattr(ops, "INT8_GEMV_MIN_WEIGHTS", 1 << 40)  # the float GEMV for every type
    w = _weight(qtype, 75, 512)
    rng = np.random.default_rng(1)
    b = rng.standard_normal(75).astype(np.float32)
    for m in range(1, ops.GEMV_MAX_ROWS + 1):
        x = rng.standard_normal((m, 512)).astype(np.float32)
        monkeypatch.setattr(ops, "GEMV_SERIAL_MAX_WEIGHTS", 1 << 40 if kernel == "serial" else 0)
        _check(x, w, b if m % 2 else None)
        y = ops.linear(x, w)
        calls = _spy(monkeypatch, qk, "gemv_kernel", "gemv_serial_kernel")
        monkeypatch.setattr(ops, "GEMV_SERIAL_MAX_WEIGHTS", 0 if kernel == "serial" else 1 << 40)
        np.testing.assert_array_equal(ops.linear(x, w), y)  # the other kernel
        assert calls == ["gemv_kernel" if kernel == "serial" else "gemv_serial_kernel"]
        monkeypatch.undo()
        monkeypatch.setattr(ops, "INT8_GEMV_MIN_WEIGHTS", 1 << 40)


def test_gemv_serial_below_the_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """ops.GEMV_SERIAL_MAX_WEIGHTS counts weights for one row and twice them for more rows."""
    w = _weight(GGMLType.Q8_0, 64, 256)
    calls = _spy(monkeypatch, qk, "gemv_kernel", "gemv_serial_kernel")
    monkeypatch.setattr(ops, "GEMV_SERIAL_MAX_WEIGHTS", 64 * 256)
    x = np.ones((2, 256), np.float32)
    ops.linear(x[:1], w)
    ops.linear(x, w)
    monkeypatch.setattr(ops, "GEMV_SERIAL_MAX_WEIGHTS", 2 * 64 * 256)
    ops.linear(x, w)
    assert calls == ["gemv_serial_kernel", "gemv_kernel", "gemv_serial_kernel"]


@pytest.mark.parametrize("qtype", [GGMLType.Q8_0, GGMLType.Q4_K], ids=lambda t: t.name)
def test_gemv_more_rows_than_one_pass(qtype: GGMLType, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GEMV kernel takes any M, in passes of quant_kernels.MAX_ROWS rows (9 = 8 + 1, 19)."""
    monkeypatch.setattr(ops, "GEMV_MAX_ROWS", 32)
    w = _weight(qtype, 40, 512)
    rng = np.random.default_rng(6)
    for m in (9, 16, 19):
        _check(rng.standard_normal((m, 512)).astype(np.float32), w, None)


@pytest.mark.parametrize(
    "qtype", [GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_K, GGMLType.Q5_K], ids=lambda t: t.name
)
def test_gemm_1500_rows(qtype: GGMLType, n_threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoder path without VNNI: 1500 frames, several weight tiles (TILE_BYTES shrunk to force
    5 tiles). (The int8 path has its own tests in test_int8_gemm.py.)"""
    monkeypatch.setenv("NPASR_INT8_GEMM", "0")
    w = _weight(qtype, 200, 256)
    x = np.random.default_rng(2).standard_normal((1500, 256)).astype(np.float32)
    old = ops.TILE_BYTES
    ops.TILE_BYTES = 48 * 256 * 4
    try:
        _check(x, w, np.ones(200, np.float32))
    finally:
        ops.TILE_BYTES = old


@pytest.mark.skipif(not int8_gemm.available(), reason="CPU without AVX-512 VNNI")
def test_linear_routes_encoder_rows_to_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    """With VNNI, linear() on more than GEMV_MAX_ROWS rows is `int8_gemm.gemm` (its contract,
    bit for bit) and NPASR_INT8_GEMM=0 gives the float tile path back."""
    w = _weight(GGMLType.Q8_0, 64, 256)
    x = np.random.default_rng(3).standard_normal((40, 256)).astype(np.float32)
    b = np.ones(64, np.float32)
    np.testing.assert_array_equal(ops.linear(x, w, b), int8_gemm.gemm(x, w) + b)
    monkeypatch.setenv("NPASR_INT8_GEMM", "0")
    _check(x, w, b)


def test_leading_dims_and_shape_error() -> None:
    w = _weight(GGMLType.Q8_0, 40, 64)
    x = np.random.default_rng(3).standard_normal((2, 3, 64)).astype(np.float32)
    y = ops.linear(x, w)
    assert y.shape == (2, 3, 40)
    np.testing.assert_allclose(y.reshape(6, 40), ops.linear(x.reshape(6, 64), w), rtol=0, atol=0)
    with pytest.raises(ValueError, match="does not match"):
        ops.linear(np.zeros((1, 32), np.float32), w)


def test_fallback_warns_exactly_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "_warned", set())
    w = _weight(GGMLType.Q6_K, 20, 256)
    x = np.random.default_rng(4).standard_normal((2, 256)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for m in (1, 2, 20):
            _check(np.resize(x, (m, 256)), w, None)
    msgs = [str(c.message) for c in caught if "fused kernel" in str(c.message)]
    assert len(msgs) == 1 and "Q6_K" in msgs[0]


def test_float_weight_is_plain_blas() -> None:
    rng = np.random.default_rng(5)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((4, 48), (24, 48), (24,)))
    np.testing.assert_array_equal(ops.linear(x, w, b), ref.linear(x, w, b))


@pytest.mark.parametrize("m", [1, 5, 8, 9, 40])
def test_float16_weight(m: int, n_threads: int) -> None:
    """A float16 weight stays half in memory: the GEMV widens each value exactly (m <= 8) and
    the tile path widens rows for BLAS; both within the float32 summation bound of the f32
    reference on the widened weight."""
    rng = np.random.default_rng(m)
    w = rng.standard_normal((70, 96)).astype(np.float16)
    x, b = (
        rng.standard_normal((m, 96)).astype(np.float32),
        rng.standard_normal(70).astype(np.float32),
    )
    y = ops.linear(x, w, b)
    w32 = w.astype(np.float32)
    want = ref.linear(x, w32, b)
    n = w.shape[1] + 2
    bound = n * U / (1 - n * U) * (np.abs(x) @ np.abs(w32).T) + U * np.abs(want)
    assert y.shape == want.shape and y.dtype == np.float32
    assert (np.abs(y - want) <= bound).all()
    assert not np.array_equal(y, ref.linear(x, w32.astype(np.float16).astype(np.float32) + 1e-3, b))


def test_float16_weight_odd_width_uses_tiles() -> None:
    """K not a multiple of 32: no GEMV layout, the tile path gives the same contract."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((10, 40)).astype(np.float16)
    x = rng.standard_normal((1, 40)).astype(np.float32)
    np.testing.assert_allclose(ops.linear(x, w), x @ w.astype(np.float32).T, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="does not match"):
        ops.linear(x[:, :30], w)


_NO_JIT_SCRIPT = """
import numpy as np
from npasr.io.gguf import GGMLType
from npasr.nn import ops, quant, ref
rng = np.random.default_rng(0)
for t in (GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_K, GGMLType.Q5_1):
    w = quant.quantize(rng.standard_normal((18, 256)).astype(np.float32), t)
    for m in (1, 3, 10):
        x = rng.standard_normal((m, 256)).astype(np.float32)
        y, r = ops.linear(x, w), ref.linear(x, w.dequantize())
        assert np.abs(y - r).max() <= 1e-5 * np.abs(r).max(), (t, m)
w16 = rng.standard_normal((18, 64)).astype(np.float16)
x = rng.standard_normal((2, 64)).astype(np.float32)
assert np.abs(ops.linear(x, w16) - x @ w16.astype(np.float32).T).max() <= 1e-5
print("ok")
"""


def test_python_path_with_jit_disabled() -> None:
    """NUMBA_DISABLE_JIT=1 runs the kernels as Python (prange = range): same contract."""
    assert_runs_without_jit(_NO_JIT_SCRIPT)
