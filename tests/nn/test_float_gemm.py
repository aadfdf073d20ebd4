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


def _attn_data(g: int, t: int, dh: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal((g, t, dh)).astype(np.float32) for _ in range(3))


# groups, query rows, keys stored, keys attended, head width, mask, layout of k and v:
# rows across task and tile edges (2 * ATTENTION_ROWS + 5), keys across panel edges, a head width
# that is not a whole panel (80: padded value panels), one query and one key, attention over the
# first keys of a longer cache whose tail is NaN, Whisper base's encoder shape
ATTN_SHAPES = [
    (3, 2 * float_gemm.ATTENTION_ROWS + 5, 2 * NR + 3, 64, None, None, "rows"),
    (2, MR + 1, 37, 80, None, "causal", "transposed"),
    (1, 1, 1, 32, None, None, "rows"),
    (4, 30, 90, 64, 41, "causal", "transposed"),
    (8, 1500, 1500, 64, None, None, "rows"),
]


@needs_avx512
@pytest.mark.parametrize("case", ATTN_SHAPES, ids=lambda c: "x".join(map(str, c[:5])))
def test_attention_matches_reference(case: tuple, n_threads: int) -> None:
    """Fused attention against `ref.attention` in float64, 2e-6 absolute on outputs that are
    convex combinations of N(0, 1) values (the tolerance and its reasons: tests/nn/
    test_kernels.py; measured at most 8e-7): masks, key counts below the stored length, strided
    keys and values, any head width."""
    g, n_q, t, dh, n_k, mask_kind, layout = case
    q, k, v = _attn_data(g, t, dh, 7)
    q = q[:, :1].repeat(n_q, axis=1) + _attn_data(g, n_q, dh, 8)[0]
    n_k = t if n_k is None else n_k
    k[:, n_k:], v[:, n_k:] = np.nan, np.nan  # never read
    if layout == "transposed":  # (G, T, Dh) views of (G, Dh, T) arrays, as Whisper's caches
        k, v = (np.swapaxes(np.ascontiguousarray(np.swapaxes(a, 1, 2)), 1, 2) for a in (k, v))
    mask = None
    if mask_kind == "causal":
        mask = np.triu(np.full((n_q, n_k), -np.inf, np.float32), k=n_k - n_q + 1)
    got = float_gemm.attention(q, k, v, mask, n_k)
    want = ref.attention(*(a.astype(np.float64) for a in (q, k[:, :n_k], v[:, :n_k])), mask)
    assert got.shape == (g, n_q, dh) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


@needs_avx512
def test_attention_masked_keys_and_nan() -> None:
    """Masked keys weigh exactly zero (their huge values never reach the output); a NaN key
    poisons its own group only."""
    q, k, v = _attn_data(2, 20, 64, 9)
    mask = np.zeros((20, 20), np.float32)
    mask[:, 5:9] = -np.inf
    v2 = v.copy()
    v2[:, 5:9] = 1e30
    want = ref.attention(q.astype(np.float64), k, v, mask)
    np.testing.assert_allclose(float_gemm.attention(q, k, v2, mask), want, rtol=0, atol=2e-6)
    k[1, 3, 0] = np.nan
    got = float_gemm.attention(q, k, v)
    assert np.isnan(got[1]).all() and np.isfinite(got[0]).all()


@needs_avx512
def test_attention_rejects_mismatched_inputs() -> None:
    """Shapes the kernel would read past are refused with ValueError, never run."""
    q, k, v = _attn_data(2, 5, 64, 1)
    bad = [
        (q, k[:1], v[:1], None, None),  # other group count
        (q, k[..., :32], v[..., :32], None, None),  # other head width
        (q, k, v[:, :4], None, None),  # keys and values differ
        (q, k, v, None, 6),  # more keys than stored
        (q, k, v, None, 0),
        (q, k, v, np.zeros((5, 4), np.float32), 5),  # mask narrower than the keys
    ]
    for a in bad:
        with pytest.raises(ValueError, match="attention"):
            float_gemm.attention(*a)


@needs_avx512
def test_ops_attention_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    """ops.attention sends encoder-sized float32 attention with one key set per query group and
    a (Tq, Tk) mask or none to the fused kernel; broadcast keys (beams over one window), other
    mask shapes, small products and float64 keep the BLAS path; every answer is the
    reference's."""
    calls: list[tuple] = []
    real = float_gemm.attention
    monkeypatch.setattr(float_gemm, "attention", lambda *a: calls.append(a) or real(*a))
    rng = np.random.default_rng(10)

    def rand(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    causal = np.triu(np.full((200, 200), -np.inf, np.float32), k=1)
    pad = np.zeros((1, 200), np.float32)
    pad[0, 150:] = -np.inf
    cases = [  # q, k, mask, fused
        (rand(1, 4, 200, 64), rand(1, 4, 200, 64), None, True),
        (rand(4, 200, 64), rand(4, 200, 64), causal, True),
        (rand(2, 4, 200, 64), rand(4, 200, 64), None, False),
        (rand(4, 200, 64), rand(4, 200, 64), pad, False),
        (rand(2, 12, 16), rand(2, 12, 16), None, False),
        (rand(4, 200, 64).astype(np.float64), rand(4, 200, 64), None, False),
    ]
    for q, k, mask, fused in cases:
        calls.clear()
        got = ops.attention(q, k, k, mask)
        np.testing.assert_allclose(got, ref.attention(q, k, k, mask), rtol=0, atol=2e-6)
        assert bool(calls) == fused and got.shape == q.shape


# beams (leading query axes), heads, query rows per beam, keys, head width
PACKED_CASES = [
    ((5,), 8, 1, 1500, 64),  # Whisper base: beam 5 over one window's cross-attention
    ((), 6, 1, 1500, 64),  # greedy, no beam axis
    ((1,), 6, 3, 1500, 64),  # a prompt's rows over the window
    ((2, 3), 2, 2, 37, 80),  # two beam axes; keys and head width not whole panels
]


@pytest.mark.parametrize("case", PACKED_CASES, ids=lambda c: f"E{c[0]}H{c[1]}q{c[2]}k{c[3]}")
def test_packed_keys_attention(case: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """ops.pack_keys once, then ops.attention_keys per query pass: the reference attention over
    the keys whatever the form they were packed in (float_gemm panels on AVX-512, transposed
    arrays elsewhere or with NPASR_BACKEND=numpy), 2e-6 as above."""
    beams, n_h, n_q, n_k, dh = case
    rng = np.random.default_rng(11)
    q = rng.standard_normal((*beams, n_h, n_q, dh)).astype(np.float32)
    # (H, T, Dh) strided views of (T, H * Dh) projections, as the model passes them
    kh, vh = (
        rng.standard_normal((n_k, n_h * dh)).astype(np.float32).reshape(n_k, n_h, dh).swapaxes(0, 1)
        for _ in range(2)
    )
    want = ref.attention(*(a.astype(np.float64) for a in (q, kh, vh)))
    forms = []
    for backend in ("numba", "numpy"):
        monkeypatch.setenv("NPASR_BACKEND", backend)
        kv = ops.pack_keys(kh, vh)
        forms.append(type(kv).__name__)
        got = ops.attention_keys(q, kv)
        assert got.shape == q.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    assert forms == (["KeyPanels", "tuple"] if float_gemm.available() else ["tuple", "tuple"])
    # float16 panels: the same attention over the keys and values rounded to half
    monkeypatch.setenv("NPASR_BACKEND", "numba")
    kv = ops.pack_keys(kh, vh, half=True)
    if float_gemm.available():
        assert kv.kp.dtype == kv.vp.dtype == np.float16
        rounded = (a.astype(np.float16).astype(np.float64) for a in (kh, vh))
        want = ref.attention(q.astype(np.float64), *rounded)
    np.testing.assert_allclose(ops.attention_keys(q, kv), want, rtol=0, atol=2e-6)


@needs_avx512
def test_half_panels_round_as_numpy() -> None:
    """Panels packed straight to float16 hold NumPy's astype(np.float16) of the float32 panels,
    bit for bit: ties to even, subnormals, overflow to infinity, signed zeros."""
    rng = np.random.default_rng(7)
    k, v = (rng.standard_normal((3, 45, 40)).astype(np.float32) * 3 for _ in range(2))
    h = np.float32(2.0**-11)  # half the spacing of float16 at 1: 1 + h is a tie
    edge = [1 + h, 1 + 3 * h, -(1 + h), 65504.0, 65520.0, 1e6, -1e6, 2.0**-25, 3e-8, -0.0, 0.0]
    k.reshape(-1)[: len(edge)] = edge
    v.reshape(-1)[-len(edge) :] = edge
    with np.errstate(over="ignore"):  # 1e6 becomes inf, as it must
        want = [a.astype(np.float16) for a in float_gemm.attention_pack(k, v, 45)]
    got = float_gemm.attention_pack(k, v, 45, half=True)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.float16
        np.testing.assert_array_equal(g.view(np.uint16), w.view(np.uint16))


@needs_avx512
def test_packed_keys_reject_mismatched_inputs() -> None:
    _, k, v = _attn_data(4, 10, 64, 13)
    kv = ops.pack_keys(k, v)
    assert isinstance(kv, float_gemm.KeyPanels) and (kv.n_k, kv.dh) == (10, 64)
    q = np.zeros((2, 4, 1, 64), np.float32)
    for bad_q in (q[:, :3], q[..., :32], q[0, 0]):
        with pytest.raises(ValueError, match="attention"):
            ops.attention_keys(bad_q, kv)
    for bad in ((k, v[:, :5]), (k[:, :0], v[:, :0]), (k[0], v[0])):
        with pytest.raises(ValueError, match="pack_keys"):
            ops.pack_keys(*bad)
    for bad_q in (np.zeros((3, 1, 64)), np.zeros((4, 1, 32)), np.zeros((4, 64))):  # G, Dh, ndim
        with pytest.raises(ValueError, match="attention"):
            float_gemm.attention_packed(bad_q.astype(np.float32), kv)
    with pytest.raises(ValueError, match="mask"):
        float_gemm.attention_packed(np.zeros((4, 2, 64), np.float32), kv, np.zeros((2, 9)))


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
