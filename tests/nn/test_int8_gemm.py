"""int8 VNNI GEMM (npasr.nn.int8_gemm) against its NumPy contract `gemm_ref`, and that contract
against ref.linear(x, dequantize(w)).

Kernel vs gemm_ref. Both quantize the activations with the same f32 operations (checked bit-exact
below), and the integer block dots are exact on both sides, so they differ only in how the float
terms T_b = s_b sx_b dot_b and U_b = o_b xs_b are rounded and summed: the kernel rounds s_b sx_b,
fuses each term into its running f32 sum (NB fmuladds for T, NB for U), gemm_ref sums in float64
and rounds once. The forward-error bound of such a sum is

    |y - y_ref| <= gamma_n * sum_b (|T_b| + |U_b|) + u |y_ref|,  gamma_n = n u / (1 - n u),
    u = 2^-24, n = 2 NB + 2,

a proven bound, not a fitted one (measured errors sit ~10x below it).

gemm_ref vs ref.linear. gemm_ref is exactly w_dq @ x_hat with x_hat = sx q the dequantized
activations (the offset term uses sum q, not sum x, so it is part of that product). Rounding
gives |x_hat - x| <= sx / 2 (+ a few u), hence |y_ref - y_linear| <= sum_j |w_j| sx_b(j) / 2 plus
f32 summation error. For Gaussian x the rounding error is close to uniform on +-sx/2 with
E[sx^2] = E[max of 32 |N(0,1)|^2] / 127^2 ~ 6 / 127^2, so the relative RMS error is about
sqrt(6 / 12) / 127 = 5.6e-3: the test asserts 1e-3 < rel RMS < 1e-2.
"""

from __future__ import annotations

import numpy as np
import pytest

from npasr.io.gguf import GGMLType
from npasr.nn import int8_gemm, ops, quant, ref
from npasr.nn import quant_kernels as qk
from npasr.nn.quant import QTensor

from . import assert_runs_without_jit

U = 2.0**-24
TYPES = [
    GGMLType.Q8_0,
    GGMLType.Q4_0,
    GGMLType.Q4_1,
    GGMLType.Q4_K,
    GGMLType.Q5_0,
    GGMLType.Q5_1,
    GGMLType.Q5_K,
]
needs_vnni = pytest.mark.skipif(
    not int8_gemm.available(),
    reason="int8_gemm.available() is False (no AVX-512 VNNI, JIT disabled or NPASR_INT8_GEMM=0)",
)


def _weight(qtype: GGMLType, n: int, k: int, seed: int = 0) -> QTensor:
    w = np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)
    w[min(3, n - 1)] = 0.0  # an all-zero output row
    return quant.quantize(w, qtype)


def _x(m: int, k: int, seed: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((m, k)).astype(np.float32)
    x[m // 2, :32] = 0.0  # an all-zero block: sx = 0
    return x


def _term_sum(x: np.ndarray, w: QTensor) -> np.ndarray:
    """(M, N) sum_b |s_b sx_b dot_b| + |o_b xs_b| in float64 (the bound's right-hand side)."""
    p = w.repack()
    assert p is not None
    q, sx, xs = int8_gemm.quantize_rows_ref(x)
    v = int8_gemm._values(p, *w.shape).astype(np.float64)
    total = np.zeros((x.shape[0], w.shape[0]))
    for b in range(w.shape[1] // 32):
        blk = slice(32 * b, 32 * b + 32)
        dot = q[:, blk].astype(np.float64) @ v[:, blk].T
        total += np.abs(sx[:, b, None] * p.scale[None, :, b] * dot)
        if p.offset is not None:
            total += np.abs(xs[:, b, None] * p.offset[None, :, b])
    return total


def _check_kernel(x: np.ndarray, w: QTensor) -> None:
    y = int8_gemm.gemm(x, w)
    want = int8_gemm.gemm_ref(x, w)
    assert y is not None and y.shape == want.shape and y.dtype == np.float32
    n = 2 * (w.shape[1] // 32) + 2
    bound = n * U / (1 - n * U) * _term_sum(x, w) + U * np.abs(want)
    excess = np.abs(y.astype(np.float64) - want) - bound
    assert excess.max() <= 0, f"max error above the bound by {excess.max():.3g}"


@needs_vnni
def test_quantize_rows_bit_exact() -> None:
    x = _x(33, 384)
    x[5, 40] = 1e-30  # tiny scale: 1 / sx stays finite
    q = np.empty((33, 384), np.int8)
    sx, xs = np.empty((33, 12), np.float32), np.empty((33, 12), np.float32)
    qc = np.empty((33, 12), np.int32)
    int8_gemm.quantize_rows_kernel(q, sx, xs, qc, x)
    q_ref, sx_ref, xs_ref = int8_gemm.quantize_rows_ref(x)
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(sx, sx_ref)
    np.testing.assert_array_equal(xs, xs_ref)
    np.testing.assert_array_equal(qc, -128 * q_ref.reshape(33, 12, 32).sum(-1, dtype=np.int32))


@needs_vnni
@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_kernel_matches_ref(qtype: GGMLType, n_threads: int) -> None:
    """Odd M (1, 7, 9, 33: every row-tile tail), N not a multiple of the 32-column panel."""
    ks = (256, 512) if qtype in (GGMLType.Q4_K, GGMLType.Q5_K) else (32, 96, 384)
    for k in ks:
        for n in (40, 1000):
            w = _weight(qtype, n, k, seed=k + n)
            for m in (1, 7, 9, 33):
                _check_kernel(_x(m, k, seed=m), w)


@needs_vnni
@pytest.mark.parametrize("qtype", [GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_K, GGMLType.Q5_1])
def test_kernel_encoder_shape(qtype: GGMLType, n_threads: int) -> None:
    """1500 frames (375 full row tiles), one weight per form."""
    _check_kernel(_x(1500, 512), _weight(qtype, 200, 512))


@needs_vnni
def test_pack_is_cached_and_unsupported_types() -> None:
    w = _weight(GGMLType.Q4_0, 40, 64)
    assert int8_gemm.gemm_pack(w) is int8_gemm.gemm_pack(w)
    assert int8_gemm.gemm(_x(9, 256), _weight(GGMLType.Q6_K, 20, 256)) is None
    with pytest.raises(ValueError, match="does not match"):
        int8_gemm.gemm(_x(9, 96), w)


def test_disabled_by_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NPASR_INT8_GEMM", "0")
    assert not int8_gemm.available()
    assert int8_gemm.gemm(_x(9, 64), _weight(GGMLType.Q8_0, 40, 64)) is None


@needs_vnni
@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_few_rows_dispatch(qtype: GGMLType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoder-sized calls (M <= GEMV_MAX_ROWS): a 4-bit weight of at least
    INT8_GEMV_MIN_WEIGHTS runs this kernel (equal to gemm(), bit for bit); a smaller one, every
    other type, and any type with NPASR_INT8_GEMM=0 run the fused GEMV (int16 activations)."""
    k = 256 if qtype in (GGMLType.Q4_K, GGMLType.Q5_K) else 96
    w = _weight(qtype, 1000, k)
    x = _x(ops.GEMV_MAX_ROWS, k)
    p = w.repack()
    assert p is not None
    gemv = ops._gemv(x, p, 1000)
    monkeypatch.setattr(ops, "INT8_GEMV_MIN_WEIGHTS", 1000 * k)
    four_bit = qtype in (GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q4_K)
    assert (qtype in ops.INT8_GEMV_TYPES) == four_bit
    for m in (1, ops.GEMV_MAX_ROWS):
        got = ops.linear(x[:m], w)
        want = int8_gemm.gemm(x[:m], w) if four_bit else gemv[:m]
        np.testing.assert_array_equal(got, want)
    if four_bit:
        assert not np.array_equal(ops.linear(x, w), gemv)  # the activations were rounded
        monkeypatch.setenv("NPASR_INT8_GEMM", "0")
        np.testing.assert_array_equal(ops.linear(x, w), gemv)
        monkeypatch.delenv("NPASR_INT8_GEMM")
    monkeypatch.setattr(ops, "INT8_GEMV_MIN_WEIGHTS", 1000 * k + 1)
    np.testing.assert_array_equal(ops.linear(x, w), gemv)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_ref_is_dequantized_product(qtype: GGMLType) -> None:
    """gemm_ref = w_dq @ x_hat (f32 rounding), with |x_hat - x| <= sx / 2 (+ 4 u |x|)."""
    k = 512
    x, w = _x(64, k), _weight(qtype, 48, k)
    q, sx, _ = int8_gemm.quantize_rows_ref(x)
    x_hat = (q.reshape(64, k // 32, 32) * sx[..., None].astype(np.float64)).reshape(64, k)
    err = np.abs(x_hat - x).reshape(64, k // 32, 32)
    assert (err <= sx[..., None] * 0.5 + 4 * U * np.abs(x).reshape(err.shape)).all()
    wd = w.dequantize().astype(np.float64)
    y = int8_gemm.gemm_ref(x, w)
    n = k // 32 + 2
    bound = n * U / (1 - n * U) * (np.abs(x_hat) @ np.abs(wd).T) + U * np.abs(y)
    assert (np.abs(y - x_hat @ wd.T) <= bound).all()


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_ref_activation_error(qtype: GGMLType) -> None:
    """gemm_ref vs ref.linear(x, dequantize(w)): within sum_j |w_j| sx / 2 everywhere, and a
    relative RMS error of 1e-3 .. 1e-2 (5.6e-3 expected, module docstring)."""
    k = 512
    x, w = _x(64, k, seed=7), _weight(qtype, 96, k, seed=8)
    wd = w.dequantize()
    y, want = int8_gemm.gemm_ref(x, w), ref.linear(x, wd)
    _, sx, _ = int8_gemm.quantize_rows_ref(x)
    half_step = np.repeat(sx * np.float32(0.5), 32, axis=1).astype(np.float64)  # (M, K)
    rounding = (k + 4) * U * (np.abs(x).astype(np.float64) @ np.abs(wd.T))
    assert (np.abs(y - want) <= half_step @ np.abs(wd.T) + rounding).all()
    rel = np.sqrt(np.mean((y - want) ** 2.0) / np.mean(want**2.0))
    assert 1e-3 < rel < 1e-2, rel


_NO_JIT_SCRIPT = """
import numpy as np
from npasr.io.gguf import GGMLType
from npasr.nn import int8_gemm, quant
assert not int8_gemm.available()
w = quant.quantize(np.ones((40, 64), np.float32), GGMLType.Q4_0)
x = np.ones((9, 64), np.float32)
assert int8_gemm.gemm(x, w) is None
assert np.allclose(int8_gemm.gemm_ref(x, w), 64.0)
print("ok")
"""


def test_python_path_with_jit_disabled() -> None:
    """With NUMBA_DISABLE_JIT=1 the module imports, reports unavailable, and gemm_ref runs."""
    assert_runs_without_jit(_NO_JIT_SCRIPT)


def test_quantize_q8_0_matches_gguf_q8_0_but_ties() -> None:
    """The load-time Q8_0 quantizer: the values and scales `quant.quantize` (gguf-exact) stores,
    except on exact .5 ties, which round to even (one step apart there); f16 input as the
    Whisper table; chunking invisible; used through ops.linear_packed; a width that is not a
    multiple of 32 refused."""
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((300, 96)) * 0.05).astype(np.float16)
    w[5] = 0.0
    fast = int8_gemm.quantize_q8_0(w, chunk_rows=64)
    want = quant.quantize(w.astype(np.float32), GGMLType.Q8_0).repack()
    assert fast.kind == "i8" and fast.qs.shape == (300, 96) and fast.offset is None
    np.testing.assert_array_equal(fast.scale, want.scale)
    x = (
        w.astype(np.float32).reshape(300, 3, 32)
        / np.where(want.scale == 0, 1, want.scale)[..., None]
    )
    tie = (np.abs(np.abs(x - np.trunc(x)) - 0.5) < 1e-3).reshape(300, 96)
    assert (fast.qs == want.qs)[~tie].all()
    assert (np.abs(fast.qs.astype(int) - want.qs)[tie] <= 1).all()
    np.testing.assert_array_equal(fast.qs, int8_gemm.quantize_q8_0(w).qs)
    xa = rng.standard_normal((3, 96)).astype(np.float32)
    dq = (fast.qs.reshape(300, 3, 32) * fast.scale[..., None]).reshape(300, 96)
    want = qk.round_x16(xa) @ dq.T  # the GEMV's activations
    np.testing.assert_allclose(ops.linear_packed(xa, fast), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="multiple of 32"):
        int8_gemm.quantize_q8_0(np.zeros((2, 40), np.float32))
