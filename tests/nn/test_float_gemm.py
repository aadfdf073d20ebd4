"""AVX-512 float GEMM (npasr.nn.float_gemm) against its NumPy contract `gemm_ref`.

The kernel sums each output as K fused multiply-adds in f32 of the exactly widened weight;
gemm_ref sums in float64 and rounds once. The forward-error bound of such a sum is

    |y - y_ref| <= gamma_K * sum_k |x_k w_k| + u |y_ref|,  gamma_K = K u / (1 - K u), u = 2^-24,

a proven bound, not a fitted one. On small-integer data every product and partial sum is an
exact f32, so there the kernel must equal the reference bit for bit (this also pins the f16
widening: a wrong half conversion cannot hide in rounding).
"""

from __future__ import annotations

import numpy as np
import pytest

from npasr.io.weights import Weights
from npasr.nn import float_gemm, ops, ref
from npasr.nn.float_gemm import MR, NR, Panels
from npasr.nn.layers import Linear

from . import assert_runs_without_jit

U = 2.0**-24
needs_avx512 = pytest.mark.skipif(not float_gemm.available(), reason="no AVX-512F (or disabled)")
DTYPES = [np.float16, np.float32]
# rows: 1, a partial tile, a whole tile, tiles + rest; columns: under a panel, panels + rest
SHAPES = [(1, 64, 32), (MR - 1, 40, 33), (MR, 256, 64), (3 * MR + 5, 100, 2 * NR + 7), (9, 1, 5)]


def _data(m: int, k: int, n: int, dtype: type, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((m, k)).astype(np.float32),
        rng.standard_normal((n, k)).astype(dtype),
    )


def _bound(x: np.ndarray, w: np.ndarray, y_ref: np.ndarray) -> np.ndarray:
    k = x.shape[1]
    gamma = k * U / (1 - k * U)
    return gamma * (np.abs(x).astype(np.float64) @ np.abs(w.astype(np.float64)).T) + U * np.abs(
        y_ref
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_pack_round_trip(dtype: type) -> None:
    _, w = _data(1, 37, 70, dtype)
    p = float_gemm.pack(w)
    assert p.shape == (70, 37) and p.dtype == dtype and p.wp.shape == (3, 37, NR)
    np.testing.assert_array_equal(p.unpack(), w)
    assert not p.wp[2, :, 70 - 2 * NR :].any()  # padding columns are zero
    with pytest.raises(ValueError, match="2-D"):
        float_gemm.pack(w[None])


@needs_avx512
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_kernel_within_the_proven_bound(shape: tuple, dtype: type, n_threads: int) -> None:
    x, w = _data(*shape, dtype)
    y = float_gemm.gemm(x, float_gemm.pack(w))
    y_ref = float_gemm.gemm_ref(x, w).astype(np.float64)
    assert y.shape == (shape[0], shape[2]) and y.dtype == np.float32 and y.flags.c_contiguous
    err = np.abs(y - y_ref)
    assert (err <= _bound(x, w, y_ref)).all(), err.max()


@needs_avx512
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_exact_on_small_integers(dtype: type) -> None:
    """Integers |x| <= 8, |w| <= 64 (exact in f16), K = 300: every sum stays below 2^24."""
    rng = np.random.default_rng(3)
    x = rng.integers(-8, 9, (2 * MR + 1, 300)).astype(np.float32)
    w = rng.integers(-64, 65, (75, 300)).astype(dtype)
    y = float_gemm.gemm(x, float_gemm.pack(w))
    np.testing.assert_array_equal(y, x.astype(np.int64) @ w.astype(np.int64).T)


@needs_avx512
def test_encoder_shape_and_strided_input() -> None:
    """GigaAM-sized call on a non-contiguous x (a column slice) through ops.linear with bias."""
    rng = np.random.default_rng(4)
    big = rng.standard_normal((500, 800)).astype(np.float32)
    x = big[:, 16:784]  # (500, 768), row stride 800
    w = (rng.standard_normal((3072, 768)) * 0.05).astype(np.float16)
    b = rng.standard_normal(3072).astype(np.float32)
    y = ops.linear(x, float_gemm.pack(w), b)
    y_ref = ref.linear(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
    err = np.abs(y - y_ref)
    assert (err <= _bound(x, w, y_ref) + U * np.abs(y_ref) + U * np.abs(b)).all(), err.max()


@needs_avx512
def test_errors_and_empty() -> None:
    p = float_gemm.pack(np.ones((8, 16), np.float16))
    with pytest.raises(ValueError, match="does not match"):
        float_gemm.gemm(np.ones((3, 15), np.float32), p)
    with pytest.raises(ValueError, match="does not match"):
        ops.linear(np.ones((3, 15), np.float32), p)
    assert float_gemm.gemm(np.ones((0, 16), np.float32), p).shape == (0, 8)
    np.testing.assert_array_equal(
        float_gemm.gemm(np.ones((2, 0), np.float32), float_gemm.pack(np.ones((8, 0)))), 0
    )


class _W:
    """A minimal `Weights` stand-in: `Linear.load` reads "weight" and "bias" only."""

    def __init__(self, w: np.ndarray) -> None:
        self.w = w

    def __getitem__(self, name: str) -> np.ndarray:
        assert name == "weight"
        return self.w

    def f32(self, name: str) -> np.ndarray:
        assert name == "bias"
        return np.zeros(self.w.shape[0], np.float32)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_linear_load_forms(dtype: type, monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoder matrices (the default) become Panels of the stored dtype where the kernel runs
    (a kernel-1 conv too), float32 arrays with panels=False or NPASR_FLOAT_GEMM=0."""
    _, w = _data(1, 64, 40, dtype)
    src: Weights = _W(w[:, :, None])  # type: ignore[assignment]
    got = Linear.load(src).weight
    if float_gemm.available():
        assert isinstance(got, Panels) and got.dtype == dtype
        np.testing.assert_array_equal(got.unpack(), w)
    else:
        assert isinstance(got, np.ndarray) and got.dtype == np.float32
    few = Linear.load(src, panels=False).weight
    assert isinstance(few, np.ndarray) and few.dtype == np.float32 and few.shape == (40, 64)
    monkeypatch.setenv("NPASR_FLOAT_GEMM", "0")
    assert not float_gemm.available()
    off = Linear.load(src).weight
    assert isinstance(off, np.ndarray) and off.dtype == np.float32


@needs_avx512
@pytest.mark.parametrize("rows", [1, 20])
def test_stack_of_panels(rows: int) -> None:
    """Stacked Panels stay Panels (float16 parts stay float16) and equal the parts' outputs."""
    rng = np.random.default_rng(5)
    parts = [
        Linear(float_gemm.pack(rng.standard_normal((n, 96)).astype(np.float16)), b)
        for n, b in ((40, rng.standard_normal(40).astype(np.float32)), (24, None))
    ]
    fused = Linear.stack(parts)
    assert isinstance(fused.weight, Panels) and fused.weight.dtype == np.float16
    x = rng.standard_normal((rows, 96)).astype(np.float32)
    want = np.concatenate([p(x) for p in parts], axis=-1)
    np.testing.assert_allclose(fused(x), want, rtol=0, atol=1e-5 * np.abs(want).max())


_NO_JIT_SCRIPT = """
import numpy as np
from npasr.nn import float_gemm
from npasr.nn.layers import Linear
assert not float_gemm.available()
w = np.ones((4, 8), np.float16)
p = float_gemm.pack(w)
assert np.allclose(float_gemm.gemm_ref(np.ones((2, 8), np.float32), p), 8.0)
print("ok")
"""


def test_python_path_with_jit_disabled() -> None:
    """With NUMBA_DISABLE_JIT=1 the module imports, reports unavailable, and gemm_ref runs."""
    assert_runs_without_jit(_NO_JIT_SCRIPT)
