"""Row and element-wise kernels (npasr.nn.kernels, via npasr.nn.ops) against npasr.nn.ref.

Tolerances, measured max errors in brackets (float32 inputs from default_rng(0)):
* softmax: 1e-6 absolute on probabilities [5e-7]: polynomial exp (< 2 ulp), row sums reassociated,
  and e * (1 / s) instead of e / s.
* gelu: atol 1e-6 + rtol 1e-6 [4.8e-7 at |x| ~ 10]: the polynomial erf is within 1.2e-7 of
  erf, and 0.5 x (1 + erf) scales that by at most |x| / 2, so the relative part covers large x.
* layer_norm: atol 1e-5 + rtol 1e-5 on outputs of size ~ |g| [2e-6]: mean and variance are
  summed in another order than NumPy's pairwise sum; an output near 0 (g z ~ -b) has no
  relative accuracy in either implementation.
* rms_norm: rtol 2e-6 [measured below 5e-7]: the sum of squares in another order than NumPy's
  pairwise mean, and x * (1 / rms) * g rounded in another order.
* silu, glu: against the float64 function, 6 * 2^-24 relative [3.9]: the polynomial
  exp(-|v|) (at most 1.64 * 2^-24 relative, measured on a dense grid of [-87, 0]) and four
  roundings (1 + e, the division, e * s, the product with x). Against `ref` (the tanh form,
  which cancels in the far negative tail) 1e-6 absolute + relative.
* depthwise conv (time-major): the proven bound of a K-term float32 sum, gamma_K sum |w x|.
* attention (few query rows): 2e-6 absolute on outputs that are convex combinations of N(0, 1)
  values [6e-7]: the softmax above, plus Dh- and Tk-long dot products summed in another order
  and the 1/sqrt(Dh) scale applied to the scores instead of to q.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from npasr.nn import kernels, ops, ref
from npasr.nn import quant_kernels as qk

from . import assert_runs_without_jit

SHAPES = [(1, 1), (1, 64), (3, 1, 7), (2, 33, 100), (5, 1500), (8, 31, 1500)]


def _rand(shape: tuple[int, ...], scale: float = 3.0, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _direct(kernel, x: np.ndarray, *args: object) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Call a kernel on any shape, bypassing the size threshold in ops."""
    out = np.empty_like(x)
    kernel(out.reshape(-1, x.shape[-1]), np.ascontiguousarray(x).reshape(-1, x.shape[-1]), *args)
    return out


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_softmax(shape: tuple[int, ...], n_threads: int) -> None:
    x = _rand(shape, scale=10.0)
    want = ref.softmax(x)
    np.testing.assert_allclose(_direct(kernels.softmax_kernel, x), want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ops.softmax(x), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_softmax_inplace(shape: tuple[int, ...]) -> None:
    """The in-place variant the attention scores use: the same numbers as `softmax_kernel`."""
    x = _rand(shape)
    want = _direct(kernels.softmax_kernel, x)
    y = np.ascontiguousarray(x).reshape(-1, x.shape[-1]).copy()
    kernels.softmax_inplace_kernel(y)
    np.testing.assert_array_equal(y.reshape(x.shape), want)


def test_softmax_masks_and_extremes() -> None:
    """Causal -inf masks (decoder), a 100-wide spread (exp clamp) and an all -inf row (NaN)."""
    x = _rand((6, 40, 40), scale=30.0)
    x += np.triu(np.full((40, 40), -np.inf, np.float32), k=1)
    y = _direct(kernels.softmax_kernel, x)
    np.testing.assert_allclose(y, ref.softmax(x), rtol=0, atol=1e-6)
    assert (y[:, np.triu_indices(40, 1)[0], np.triu_indices(40, 1)[1]] == 0).all()
    x[0, 0] = -np.inf
    with np.errstate(invalid="ignore"):  # -inf - -inf, in both implementations
        y = _direct(kernels.softmax_kernel, x)
        assert np.isnan(y[0, 0]).all() and np.isnan(ref.softmax(x)[0, 0]).all()
        np.testing.assert_array_equal(ops.softmax(x, axis=0), ref.softmax(x, axis=0))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gelu(shape: tuple[int, ...], n_threads: int) -> None:
    x = _rand(shape)
    want = ref.gelu(x)
    np.testing.assert_allclose(_direct(kernels.gelu_kernel, x), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ops.gelu(x), want, rtol=1e-6, atol=1e-6)


def test_gelu_grid_and_extremes() -> None:
    """Every branch of the erf approximation on a dense grid, plus +-inf and huge values."""
    x = np.linspace(-12, 12, 480_000, dtype=np.float32).reshape(48, -1)
    np.testing.assert_allclose(ops.gelu(x), ref.gelu(x), rtol=1e-6, atol=1e-6)
    big = np.array([[-np.inf, -1e30, -9.0, 0.0, 9.0, 1e30, np.inf] * 10], np.float32)
    with np.errstate(invalid="ignore"):  # gelu(-inf) = -inf * 0 = NaN in both
        np.testing.assert_array_equal(_direct(kernels.gelu_kernel, big), ref.gelu(big))


def _sigmoid64(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_silu_and_glu(shape: tuple[int, ...], n_threads: int) -> None:
    x = _rand(shape)
    silu, glu = np.empty_like(x), np.empty_like(x)
    kernels.silu_kernel(silu.reshape(-1, x.shape[-1]), x.reshape(-1, x.shape[-1]))
    xg = np.concatenate([x, _rand(shape, seed=1)], axis=-1)  # value | gate
    kernels.glu_kernel(glu.reshape(-1, x.shape[-1]), xg.reshape(-1, xg.shape[-1]))
    rel = 6 * 2.0**-24
    want_silu = x * _sigmoid64(x)
    want_glu = x * _sigmoid64(xg[..., x.shape[-1] :])
    for got, want in ((silu, want_silu), (glu, want_glu)):
        assert (np.abs(got - want) <= rel * np.abs(want)).all()
    np.testing.assert_allclose(ops.silu(x), ref.silu(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ops.glu(xg), ref.glu(xg, axis=-1), rtol=1e-6, atol=1e-6)


def test_silu_grid_and_extremes() -> None:
    """A dense grid through both tails (where exp(|v|) would overflow), and inf / NaN / huge.
    Below v = -87.3 exp(v) is under the float32 normal range and flushed to 0 (kernels module
    docstring), so there the error may also reach |v| * FLT_MIN."""
    x = np.linspace(-120, 120, 480_000, dtype=np.float32).reshape(48, -1)
    want = x * _sigmoid64(x)
    got = ops.silu(x)
    tiny = np.abs(x) * np.finfo(np.float32).tiny
    assert (np.abs(got - want) <= 6 * 2.0**-24 * np.abs(want) + tiny).all()
    big = np.array([[-np.inf, -1e30, -90.0, 0.0, 90.0, 1e30, np.inf, np.nan] * 10], np.float32)
    with np.errstate(invalid="ignore", over="ignore"):  # silu(-inf) = -inf * 0 = NaN in both
        np.testing.assert_array_equal(_direct(kernels.silu_kernel, big), ref.silu(big))
    with pytest.raises(ValueError):  # odd width: the reference, which cannot split it
        ops.glu(np.ones((3, 5), np.float32))


@pytest.mark.parametrize("t,c,k", [(1, 8, 5), (7, 33, 5), (500, 768, 5), (40, 1024, 9), (3, 8, 31)])
def test_depthwise_conv_time_major(t: int, c: int, k: int, n_threads: int) -> None:
    """ops.depthwise_conv1d_tc(x (T, C)) == ref.depthwise_conv1d(x.T).T, "same" padding, with
    and without bias; the kernel directly too (ops keeps small inputs on the reference)."""
    x, w, b = _rand((t, c)), _rand((c, 1, k), 0.3, seed=1), _rand((c,), 1.0, seed=2)
    pad = (k - 1) // 2
    bound_terms = ref.depthwise_conv1d(np.abs(x).T, np.abs(w), np.abs(b), pad).T
    for bias in (b, None):
        want = ref.depthwise_conv1d(x.T.astype(np.float64), w.astype(np.float64), bias, pad).T
        out = np.empty_like(want, dtype=np.float32)
        empty = np.empty(0, np.float32)
        kernels.depthwise_conv_tc_kernel(out, x, np.ascontiguousarray(w[:, 0].T),
                                         empty if bias is None else bias, pad)  # fmt: skip
        gamma = (k + 1) * 2.0**-24 / (1 - (k + 1) * 2.0**-24)
        assert (np.abs(out - want) <= gamma * bound_terms + 1e-30).all()
        got = ops.depthwise_conv1d_tc(x, w, bias, pad)
        assert got.shape == want.shape and got.flags.c_contiguous
        assert (np.abs(got - want) <= 2 * gamma * bound_terms + 1e-30).all()


@pytest.mark.parametrize("shape", [(1, 1), (1, 512), (7, 33), (3, 4, 100), (1500, 512)], ids=str)
def test_layer_norm(shape: tuple[int, ...], n_threads: int) -> None:
    x = _rand(shape, seed=1) + np.float32(5.0)  # a mean far from 0, as residual streams have
    g, b = _rand(shape[-1:], 1.0, seed=2), _rand(shape[-1:], 1.0, seed=3)
    want = ref.layer_norm(x, g, b, 1e-5)
    got = _direct(kernels.layer_norm_kernel, x, g, b, 1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ops.layer_norm(x, g, b, 1e-5), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 1), (1, 1024), (3, 16, 128), (7, 33), (600, 1024)],
                         ids=str)  # fmt: skip
def test_rms_norm(shape: tuple[int, ...], n_threads: int) -> None:
    x = _rand(shape, seed=1) + np.float32(2.0)
    g = _rand(shape[-1:], 1.0, seed=2)
    want = ref.rms_norm(x, g, 1e-6)
    for kernel in (kernels.rms_norm_kernel, kernels.rms_norm_serial_kernel):
        np.testing.assert_allclose(_direct(kernel, x, g, 1e-6), want, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(ops.rms_norm(x, g, 1e-6), want, rtol=2e-6, atol=1e-7)
    x64 = x.astype(np.float64)  # and the reference against float64 arithmetic
    exact = x64 / np.sqrt(np.mean(x64 * x64, -1, keepdims=True) + 1e-6) * g
    np.testing.assert_allclose(want, exact, rtol=2e-6, atol=1e-7)


def test_layer_norm_broadcast_falls_back() -> None:
    x = _rand((4, 64))
    g = np.ones((1, 64), np.float32)  # not (D,): only the reference broadcasts it
    np.testing.assert_array_equal(ops.layer_norm(x, g, g[0]), ref.layer_norm(x, g, g[0]))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_serial_kernels(shape: tuple[int, ...]) -> None:
    """The serial variants used for small (decoder) inputs: the same contracts."""
    x = _rand(shape)
    g, b = _rand(shape[-1:], 1.0, 1), _rand(shape[-1:], 1.0, 2)
    np.testing.assert_allclose(
        _direct(kernels.gelu_serial_kernel, x), ref.gelu(x), rtol=1e-6, atol=1e-6
    )
    got = _direct(kernels.layer_norm_serial_kernel, x, g, b, 1e-5)
    np.testing.assert_allclose(got, ref.layer_norm(x, g, b), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ops.gelu(x), ref.gelu(x), rtol=1e-6, atol=1e-6)  # either path


def _transposed(a: np.ndarray) -> np.ndarray:
    """Same values, stored (..., Dh, T) as the Whisper caches keep them."""
    return np.swapaxes(np.ascontiguousarray(np.swapaxes(a, -1, -2)), -1, -2)


ATTN_CASES = [  # q shape, k/v shape, mask (Tq, Tk) or None
    ((1, 6, 1, 64), (1, 6, 1500, 64), None),  # cross attention, one row
    ((5, 6, 1, 64), (6, 1500, 64), None),  # five beams over one shared window
    ((2, 3, 4, 1, 16), (4, 10, 16), None),  # two broadcast axes
    ((1, 6, 3, 64), (1, 6, 7, 64), "causal"),  # prompt rows over a cache
    ((2, 8, 64), (2, 1, 64), None),  # one key
    ((1, 4, 12, 32), (1, 4, 12, 32), "causal"),  # above GEMV_MAX_ROWS: matmul path
    ((2, 200, 32), (2, 200, 32), "causal"),  # scores >= KERNEL_MIN_SIZE: in-place softmax
]


@pytest.mark.parametrize("case", ATTN_CASES, ids=lambda c: f"{c[0]}x{c[1]}")
@pytest.mark.parametrize("layout", ["rows", "transposed"])
def test_attention(case: tuple, layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    q_shape, k_shape, mask_kind = case
    q, k, v = _rand(q_shape, 1.0, 1), _rand(k_shape, 1.0, 2), _rand(k_shape, 1.0, 3)
    if layout == "transposed":
        k, v = _transposed(k), _transposed(v)
    mask = None
    if mask_kind == "causal":
        n_q, n_k = q_shape[-2], k_shape[-2]
        mask = np.triu(np.full((n_q, n_k), -np.inf, np.float32), k=n_k - n_q + 1)
    calls: list[str] = []
    for name in ("attention_kernel", "attention_parallel_kernel"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    got = ops.attention(q, k, v, mask)
    want = ref.attention(q, k, v, mask)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    rows = q_shape[-2] * int(np.prod(q_shape[: len(q_shape) - len(k_shape)]))
    groups = int(np.prod(k_shape[:-2]))
    many = groups > 1 and groups * k_shape[-2] * k_shape[-1] >= ops.ATTENTION_PARALLEL_MIN
    fused = "attention_parallel_kernel" if many else "attention_kernel"
    assert calls == ([fused] if rows <= ops.GEMV_MAX_ROWS else [])
    if calls:  # the other fused kernel (LLVM may vectorize the shared body differently in each,
        # so the same tolerance, not the same bits)
        monkeypatch.setattr(ops, "ATTENTION_PARALLEL_MIN", 1 << 40 if many else 0)
        np.testing.assert_allclose(ops.attention(q, k, v, mask), want, rtol=0, atol=2e-6)
        assert calls[-1] != fused or groups == 1


@pytest.mark.parametrize("n_q", [1, 3, 12])
def test_attention_length_over_a_preallocated_cache(n_q: int) -> None:
    """`length` attends over the first keys of a larger (transposed) cache, as the decoder
    passes its whole KV cache; the rest of the cache (garbage here) is never read."""
    cache_k, cache_v = _rand((2, 4, 32, 50), 1.0, 1), _rand((2, 4, 32, 50), 1.0, 2)
    cache_k[..., 20:] = np.nan
    cache_v[..., 20:] = np.nan
    k, v = np.swapaxes(cache_k, -1, -2), np.swapaxes(cache_v, -1, -2)  # (2, 4, 50, 32) views
    q = _rand((2, 4, n_q, 32), 1.0, 3)
    mask = np.triu(np.full((n_q, 20), -np.inf, np.float32), k=20 - n_q + 1)
    got = ops.attention(q, k, v, mask, length=20)
    want = ref.attention(q, k[..., :20, :], v[..., :20, :], mask)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match="length"):
        ops.attention(q, k, v, None, length=51)


def test_attention_kernel_masked_rows_and_nan() -> None:
    """-inf masks give exact zeros to the masked keys; a NaN score poisons its row only."""
    q, k, v = _rand((1, 2, 1, 8), 1.0, 1), _rand((1, 2, 5, 8), 1.0, 2), _rand((1, 2, 5, 8), 1.0, 3)
    mask = np.array([[0, 0, -np.inf, 0, -np.inf]], np.float32)
    v2 = v.copy()
    v2[:, :, [2, 4]] = 1e30  # masked values must not reach the output
    np.testing.assert_allclose(
        ops.attention(q, k, v2, mask), ref.attention(q, k, v, mask), atol=2e-6
    )
    k[0, 1, 3, 0] = np.nan
    got = ops.attention(q, k, v)
    assert np.isnan(got[0, 1]).all() and np.isfinite(got[0, 0]).all()


SPLIT_CASES = [  # E sequences, H heads, U rows each, Dh, shared keys n_a, own keys n_b, mask
    (5, 8, 1, 64, 204, 7, False),  # beam 5 after a 204-token prompt (Whisper base)
    (5, 6, 1, 64, 600, 40, False),  # long shared part: several ATTEND_CHUNK chunks
    (3, 2, 2, 6, 9, 3, True),  # two rows per sequence with a causal mask; Dh not a multiple of 4
    (2, 3, 1, 16, 0, 5, False),  # nothing shared
    (4, 2, 1, 8, 11, 0, False),  # nothing of their own yet (the first step after the prompt)
    (1, 4, 1, 32, 3, 2, False),  # one sequence
]


def _split_inputs(case: tuple) -> tuple:
    """q, the shared and own keys/values as (..., T, Dh) views of transposed storage that is
    longer than used (NaN beyond: must never be read), and the mask."""
    n_e, n_h, n_u, dh, n_a, n_b, masked = case
    q = _rand((n_e, n_h, n_u, dh), 1.0, 1)
    k_a, v_a = (_rand((n_h, dh, n_a + 3), 1.0, s) for s in (2, 3))
    k_b, v_b = (_rand((n_e, n_h, dh, n_b + 2), 1.0, s) for s in (4, 5))
    for a in (k_a, v_a):
        a[..., n_a:] = np.nan
    for a in (k_b, v_b):
        a[..., n_b:] = np.nan
    mask = None
    if masked:  # row u sees the shared keys and its own first n_b - n_u + 1 + u
        mask = np.triu(np.full((n_u, n_a + n_b), -np.inf, np.float32), k=n_a + n_b - n_u + 1)
    views = (np.swapaxes(a, -1, -2) for a in (k_a, v_a, k_b, v_b))
    return (q, *views, mask)


def _split_want(q, k_a, v_a, n_a, k_b, v_b, n_b, mask):  # type: ignore[no-untyped-def]
    """ref.attention in float64 on each sequence's keys [shared; own]."""
    n_e = q.shape[0]
    keys, values = (
        np.concatenate([np.broadcast_to(a[:, :n_a], (n_e, *a[:, :n_a].shape)), b[..., :n_b, :]], 2)
        for a, b in ((k_a, k_b), (v_a, v_b))
    )
    f64 = [x.astype(np.float64) for x in (q, keys, values)]
    return ref.attention(*f64, None if mask is None else mask.astype(np.float64))


@pytest.mark.parametrize("case", SPLIT_CASES, ids=lambda c: f"E{c[0]}H{c[1]}U{c[2]}a{c[4]}b{c[5]}")
def test_attention_split(case: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beams over a shared prompt: the attention over [shared; own] keys of each sequence, by
    both kernels (serial, parallel) and by the NumPy backend; the unused cache is never read."""
    q, k_a, v_a, k_b, v_b, mask = _split_inputs(case)
    n_a, n_b = case[4], case[5]
    want = _split_want(q, k_a, v_a, n_a, k_b, v_b, n_b, mask)
    calls: list[str] = []
    for name in ("attention_split_kernel", "attention_split_parallel_kernel"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _r=real, _n=name: calls.append(_n) or _r(*a))
    for threshold in (0, 1 << 40):  # parallel (when there are two heads or more), serial
        monkeypatch.setattr(ops, "ATTENTION_SPLIT_PARALLEL_MIN", threshold)
        got = ops.attention_split(q, k_a, v_a, n_a, k_b, v_b, n_b, mask)
        assert got.shape == q.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    assert calls == ["attention_split_parallel_kernel", "attention_split_kernel"]
    monkeypatch.setenv("NPASR_BACKEND", "numpy")
    got = ops.attention_split(q, k_a, v_a, n_a, k_b, v_b, n_b, mask)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    assert len(calls) == 2


def test_attention_split_rejects_mismatched_inputs() -> None:
    q, k_a, v_a, k_b, v_b, _ = _split_inputs((3, 2, 1, 8, 4, 2, False))
    ok = ops.attention_split(q, k_a, v_a, 4, k_b, v_b, 2)
    assert np.isfinite(ok).all()
    bad = [
        (q, k_a, v_a, 8, k_b, v_b, 2, None),  # more shared keys than stored
        (q, k_a, v_a, 4, k_b, v_b, 5, None),  # more own keys than stored
        (q, k_a, v_a, 0, k_b, v_b, 0, None),  # no keys at all
        (q[:2], k_a, v_a, 4, k_b, v_b, 2, None),  # 2 sequences, 3 own key sets
        (q[:, :1], k_a, v_a, 4, k_b, v_b, 2, None),  # 1 head, keys for 2
        (q[..., :4], k_a, v_a, 4, k_b, v_b, 2, None),  # head width
        (q, k_a, v_a, 4, k_b, v_b, 2, np.zeros((1, 5), np.float32)),  # mask width
    ]
    for args in bad:
        with pytest.raises(ValueError, match="attention_split"):
            ops.attention_split(*args)


def test_backend_numpy_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """NPASR_BACKEND=numpy gives exactly the reference and never enters a kernel."""
    x = _rand((4, 150, 70))
    assert x.size >= ops.KERNEL_MIN_SIZE  # the default path below is the kernel
    g, b = _rand((70,), 1.0, 1), _rand((70,), 1.0, 2)
    fast = (ops.softmax(x), ops.gelu(x), ops.layer_norm(x, g, b))
    x2 = x.reshape(-1, 70)
    w = _rand((70, 1, 5), 0.3, seed=4)
    fast2 = (ops.silu(x), ops.glu(x), ops.depthwise_conv1d_tc(x2, w, g, 2))

    def boom(*_: object) -> None:
        raise AssertionError("kernel called with NPASR_BACKEND=numpy")

    monkeypatch.setenv("NPASR_BACKEND", "numpy")
    names = ("softmax_kernel", "softmax_inplace_kernel", "gelu_kernel", "layer_norm_kernel")
    for name in (*names, "gelu_serial_kernel", "layer_norm_serial_kernel", "attention_kernel",
                 "silu_kernel", "glu_kernel", "depthwise_conv_tc_kernel"):  # fmt: skip
        monkeypatch.setattr(kernels, name, boom)
    slow = (ops.softmax(x), ops.gelu(x), ops.layer_norm(x, g, b))
    slow2 = (ops.silu(x), ops.glu(x), ops.depthwise_conv1d_tc(x2, w, g, 2))
    np.testing.assert_array_equal(slow2[0], ref.silu(x))
    np.testing.assert_array_equal(slow2[1], ref.glu(x, axis=-1))
    np.testing.assert_array_equal(slow2[2], ref.depthwise_conv1d(x2.T, w, g, 2).T)
    for a, s in zip(fast2, slow2, strict=True):
        np.testing.assert_allclose(a, s, rtol=1e-5, atol=1e-5)
    small = x[0, :2]
    np.testing.assert_array_equal(ops.gelu(small), ref.gelu(small))
    np.testing.assert_array_equal(ops.layer_norm(small, g, b), ref.layer_norm(small, g, b))
    q = x[:1, :1, :64].reshape(1, 1, 64)
    np.testing.assert_array_equal(ops.attention(q, q, q), ref.attention(q, q, q))
    np.testing.assert_array_equal(slow[0], ref.softmax(x))
    np.testing.assert_array_equal(slow[1], ref.gelu(x))
    np.testing.assert_array_equal(slow[2], ref.layer_norm(x, g, b))
    for a, s, tol in zip(fast, slow, (1e-6, 1e-6, 1e-5), strict=True):
        np.testing.assert_allclose(a, s, rtol=tol, atol=tol)


_NO_JIT_SCRIPT = """
import numpy as np
from npasr.nn import kernels, ref
rng = np.random.default_rng(0)
x = (rng.standard_normal((3, 70)) * 4).astype(np.float32)
g, b = rng.standard_normal((2, 70)).astype(np.float32)
for k, want, args, tol in [
    (kernels.softmax_kernel, ref.softmax(x), (), 1e-6),
    (kernels.gelu_kernel, ref.gelu(x), (), 1e-6),
    (kernels.layer_norm_kernel, ref.layer_norm(x, g, b), (g, b, 1e-5), 1e-5),
    (kernels.gelu_serial_kernel, ref.gelu(x), (), 1e-6),
    (kernels.layer_norm_serial_kernel, ref.layer_norm(x, g, b), (g, b, 1e-5), 1e-5),
    (kernels.silu_kernel, ref.silu(x), (), 1e-6),
]:
    out = np.empty_like(x)
    k(out, x, *args)
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol)
q = x.reshape(1, 3, 70)[:, :2]
kt = np.swapaxes(x.reshape(1, 3, 70), 1, 2).copy()
out = np.empty_like(q)
kernels.attention_kernel(out, q, kt, kt, np.empty((0, 0), np.float32), 3)
want = ref.attention(q, x.reshape(1, 3, 70), x.reshape(1, 3, 70))
np.testing.assert_allclose(out, want, atol=2e-6)
own = kt[None]  # (E=1, H=1, Dh, T): two shared keys, then one of its own
for split in (kernels.attention_split_kernel, kernels.attention_split_parallel_kernel):
    split(out, q, kt, kt, 2, own[..., 2:], own[..., 2:], 1, np.empty((0, 0), np.float32))
    np.testing.assert_allclose(out, want, atol=2e-6)
out = np.empty((3, 35), np.float32)
kernels.glu_kernel(out, x)
np.testing.assert_allclose(out, ref.glu(x, axis=-1), rtol=1e-6, atol=1e-6)
w = x[:, :5].reshape(3, 1, 5).copy()
out = np.empty((70, 3), np.float32)
kernels.depthwise_conv_tc_kernel(out, x.T.copy(), w[:, 0].T.copy(), g[:3].copy(), 2)
np.testing.assert_allclose(out, ref.depthwise_conv1d(x, w, g[:3], 2).T, rtol=1e-5, atol=1e-5)
print("ok")
"""


def test_python_path_with_jit_disabled() -> None:
    """NUMBA_DISABLE_JIT=1 runs the kernels as Python (prange = range): same contract."""
    assert_runs_without_jit(_NO_JIT_SCRIPT)


def test_attention_scores_buffer_reuse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoder-sized attention computes its scores in a per-thread buffer reused across calls:
    results equal the reference, stay valid after later calls (no aliasing), with masks,
    broadcast heads, above the size cap, and from two threads at once."""
    import threading

    q1, k1 = _rand((4, 200, 64), 0.5, seed=1), _rand((4, 300, 64), 0.5, seed=2)
    q2, k2 = _rand((2, 3, 250, 32), 0.5, seed=3), _rand((3, 250, 32), 0.5, seed=4)
    mask = np.triu(np.full((250, 250), -np.inf, np.float32), k=1)
    cases = [(q1, k1, k1, None), (q2, k2, k2, mask), (q1, k1, k1, None)]
    assert all(
        np.prod(np.broadcast_shapes(q.shape[:-2], k.shape[:-2])) * q.shape[-2] * k.shape[-2]
        >= ops.KERNEL_MIN_SIZE
        for q, k, _, _ in cases
    )
    outs = [ops.attention(q, k, v, m) for q, k, v, m in cases]
    for (q, k, v, m), out in zip(cases, outs, strict=True):
        np.testing.assert_allclose(out, ref.attention(q, k, v, m), rtol=0, atol=2e-6)
    monkeypatch.setattr(ops, "SCORES_BUFFER_MAX_BYTES", 1024)  # every call: a fresh array
    np.testing.assert_allclose(ops.attention(q1, k1, k1), outs[0], rtol=0, atol=1e-7)
    monkeypatch.undo()
    got: dict[int, np.ndarray] = {}

    def run(i: int) -> None:
        for _ in range(5):
            q, k, v, m = cases[i]
            got[i] = ops.attention(q, k, v, m)

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in (0, 1):
        np.testing.assert_allclose(got[i], outs[i], rtol=0, atol=1e-7)


@pytest.mark.parametrize("shape", [(1500, 512), (33, 70), (7, 5000), (2, 3, 200, 96)])
def test_transpose(shape: tuple[int, ...]) -> None:
    """ops.transpose: the exact values of NumPy's transposed copy, contiguous, for tile-edge
    remainders (33 x 70), thin and batched arrays, and the small-input NumPy path."""
    x = _rand(shape, 1.0, 7)
    got = ops.transpose(x)
    assert got.flags.c_contiguous and got.shape == (*shape[:-2], shape[-1], shape[-2])
    np.testing.assert_array_equal(got, np.swapaxes(x, -1, -2))
    small = x[..., :3, :4]
    np.testing.assert_array_equal(ops.transpose(small), np.swapaxes(small, -1, -2))
    direct = np.empty((shape[-1], shape[-2]), np.float32)
    kernels.transpose_kernel(direct, np.ascontiguousarray(x.reshape(-1, *shape[-2:])[0]))
    np.testing.assert_array_equal(direct, x.reshape(-1, *shape[-2:])[0].T)


@pytest.mark.parametrize("k", [0, 1, 2, 6, 40, 100])
def test_top_k(k: int) -> None:
    """ops.top_k equals ref.top_k (a stable argsort) exactly: the indices, largest first, with
    ties in index order (small integers give many), -inf entries, k above the size, float64."""
    rng = np.random.default_rng(11)
    cases = [
        rng.standard_normal(51865).astype(np.float32),
        rng.integers(-3, 4, 40).astype(np.float32),
        np.array([-np.inf, 2, -np.inf, 2, 7, -np.inf], np.float32),
        rng.integers(-2, 3, 500).astype(np.float64),
        np.full(9, -np.inf, np.float32),
    ]
    for x in cases:
        got = ops.top_k(x, k)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, ref.top_k(x, k))
    assert ref.top_k(cases[1], 100).size == 40


@pytest.mark.parametrize("block_bytes", [1, 6 * 4 * 250 * 7, 1 << 40])
def test_attention_in_query_blocks(block_bytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoder-sized scores are computed SCORES_BLOCK_BYTES at a time (1 row, 7 rows with a
    short last block, all rows): the same result as the reference, with a per-row mask, a
    broadcast mask row, and broadcast heads; the scores buffer never outgrows one block."""
    monkeypatch.setattr(ops, "SCORES_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(ops, "_scratch", threading.local())
    q, k, v = (
        _rand((2, 3, 250, 32), 0.5, 3),
        _rand((3, 250, 32), 0.5, 4),
        _rand((3, 250, 32), 0.5, 5),
    )
    causal = np.triu(np.full((250, 250), -np.inf, np.float32), k=1)
    pad = np.zeros((1, 250), np.float32)
    pad[0, 200:] = -np.inf
    for mask in (None, causal, pad):
        got = ops.attention(q, k, v, mask)
        np.testing.assert_allclose(got, ref.attention(q, k, v, mask), rtol=0, atol=2e-6)
    rows = min(250, max(1, block_bytes // (4 * 2 * 3 * 250)))
    assert ops._scratch.scores.size == 2 * 3 * rows * 250


def test_warmup_compiles_every_kernel() -> None:
    """`npasr warmup` (ops.warmup) leaves no parallel kernel to compile on first use."""
    from npasr.nn import float_gemm, int8_gemm

    ops.warmup()
    names = ("softmax_kernel", "softmax_inplace_kernel", "gelu_kernel", "layer_norm_kernel",
             "silu_kernel", "glu_kernel", "depthwise_conv_tc_kernel", "attention_kernel",
             "gelu_serial_kernel", "layer_norm_serial_kernel",
             "attention_parallel_kernel", "transpose_kernel", "top_k_kernel",
             "attention_split_kernel", "attention_split_parallel_kernel")  # fmt: skip
    for name in names:
        assert getattr(kernels, name).signatures, name
    for gemv in (qk.gemv_kernel, qk.gemv_serial_kernel):  # one signature: qs as bytes
        assert gemv.signatures, gemv
    if float_gemm.available():
        assert len(float_gemm.gemm_kernel.signatures) == 2  # f16 and f32 panels
        assert float_gemm.attention_kernel.signatures
        assert float_gemm.attention_pack_kernel.signatures
    if int8_gemm.available():
        assert int8_gemm.gemm_kernel.signatures
    from npasr.audio.resample import resample_kernel

    assert resample_kernel.signatures


def test_every_kernel_sets_its_own_fastmath() -> None:
    """Numba compiles a function that leaves fastmath unset with the flags of its first jitted
    caller and serves that version to every later caller (npasr.nn.jit): every jitted function
    of the kernel modules must name its flags."""
    import numba as nb

    from npasr.audio import resample
    from npasr.nn import float_gemm, int8_gemm

    seen = 0
    for mod in (kernels, qk, float_gemm, int8_gemm, resample):
        for name, obj in vars(mod).items():
            if isinstance(obj, nb.core.registry.CPUDispatcher):
                seen += 1
                assert "fastmath" in obj.targetoptions, f"{mod.__name__}.{name}"
    assert seen > 30


_FLAGS_SCRIPT = """
import re
import numpy as np
from npasr.nn import kernels
q = np.ones((2, 1, 8), np.float32)
kt = np.ones((2, 8, 4), np.float32)
kernels.attention_kernel(np.empty_like(q), q, kt, kt, np.empty((0, 0), np.float32), 4)
def flags(f):
    return set(re.findall(r"= f(?:add|mul|sub) ([a-z ]*?)float", f.inspect_llvm(f.signatures[0])))
assert flags(kernels._exp) == {""}, flags(kernels._exp)  # compiled for a REDUCE caller, strict
assert flags(kernels._row_sum) == {"reassoc nsz "}, flags(kernels._row_sum)
print("ok")
"""


def _fresh_process(script: str, cache: str, **env_vars: str):  # type: ignore[no-untyped-def]
    """Run `script` in a new Python with this checkout's npasr, an empty compile cache and
    `env_vars` added to the environment."""
    from . import run_fresh

    return run_fresh(script, NUMBA_CACHE_DIR=cache, **env_vars)


def test_helper_flags_do_not_follow_the_first_caller(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """In a fresh process with an empty compile cache, the exp helper first compiled for an
    attention kernel (reassociating reductions) keeps its own strict arithmetic."""
    run = _fresh_process(_FLAGS_SCRIPT, str(tmp_path))
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-2000:]


_WORKER_SCRIPT = """
from npasr.audio.resample import resample_kernel
from npasr.nn import ops
ops.compile_in_processes([ops.WARM_TASKS.index(ops._warm_audio)], 1)  # compiles in a child
assert not resample_kernel.signatures  # nothing compiled in this process yet
ops._warm_audio()
stats = resample_kernel.stats
print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
"""


def test_compile_in_processes_fills_the_cache(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`warmup(workers > 1)`'s compiling processes leave their kernels in the on-disk cache:
    after a worker ran the resampler's part, this process loads that kernel without compiling
    it (one cache hit, no miss), from a cache that was empty."""
    run = _fresh_process(_WORKER_SCRIPT, str(tmp_path))
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["1", "0"]


def test_a_failing_compile_task_is_raised() -> None:
    """An error in a compiling process reaches the caller (here: a task index that does not
    exist in the worker)."""
    with pytest.raises(IndexError):
        ops.compile_in_processes([len(ops.WARM_TASKS)], 1)


_OTHER_CPU_SCRIPT = """
import numpy as np
import npasr
from npasr.nn import float_gemm, int8_gemm, ops, ref
from tests.nn.test_kernels import _rand
from tests.nn.test_quant_kernels import FUSED, _check, _weight
assert not float_gemm.available() and not int8_gemm.available()  # the fallbacks run
rng = np.random.default_rng(1)
for qtype in FUSED:  # fused GEMV (1 and 5 rows), dequantized tiles + BLAS (9 rows)
    w = _weight(qtype, 40, 256)
    for m in (1, 5, 9):
        _check(rng.standard_normal((m, 256)).astype(np.float32), w, None)
w16 = rng.standard_normal((40, 256)).astype(np.float16)
x = rng.standard_normal((2, 256)).astype(np.float32)
np.testing.assert_allclose(ops.linear(x, w16), x @ w16.astype(np.float32).T, rtol=1e-5, atol=1e-5)
q, k, v = (_rand((3, 250, 32), 0.5, seed) for seed in (3, 4, 5))  # as the attention tests
causal = np.triu(np.full((250, 250), -np.inf, np.float32), k=1)
for mask in (None, causal):
    got = ops.attention(q, k, v, mask)
    np.testing.assert_allclose(got, ref.attention(q, k, v, mask), rtol=0, atol=2e-6)
print("ok")
"""


@pytest.mark.parametrize("cpu", ["haswell", "x86-64"])
def test_kernels_on_cpus_without_avx512(tmp_path, cpu: str) -> None:  # type: ignore[no-untyped-def]
    """Compiled for an AVX2 CPU (haswell) or the x86-64 baseline (SSE2), as on most machines
    that are not this one: the AVX-512 kernels stand aside (float GEMM, int8 GEMM), the explicit-
    vector GEMV IR lowers to the narrower vectors, and every product keeps its parity bound."""
    run = _fresh_process(_OTHER_CPU_SCRIPT, str(tmp_path), NUMBA_CPU_NAME=cpu)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-2000:]


def test_warmup_falls_back_to_this_process(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Worker processes that cannot start or die (a locked-down machine, the OOM killer) do not
    stop the warmup: it warns and compiles everything in this process."""
    from concurrent.futures.process import BrokenProcessPool

    def broken(tasks, workers):  # type: ignore[no-untyped-def]
        raise BrokenProcessPool("a worker died")

    monkeypatch.setattr(ops, "compile_in_processes", broken)
    ran = []
    monkeypatch.setattr(ops, "WARM_TASKS", (lambda: ran.append(1),) * 3)
    with pytest.warns(UserWarning, match="compiling the kernels in this process instead"):
        ops.warmup(workers=2)
    assert ran == [1, 1, 1]
