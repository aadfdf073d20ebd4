"""Numba kernels for the row and element-wise ops where NumPy is the bottleneck.

Each kernel has a reference of the same contract in `npasr.nn.ref` and a parity test in
tests/nn/test_kernels.py; `npasr.nn.ops` picks kernel or reference per call.

Why these beat NumPy: the NumPy versions make several passes over the whole array with temporaries
(softmax: max, subtract, exp, sum, divide over an (H, T, T) array that does not fit in cache), and
SciPy's `erf` is a scalar loop. Here every row is finished while it sits in L1, and `exp`/`erf`
are written as float32 polynomials that LLVM vectorizes (a libm call in the loop would not).

Numerics (float32 throughout; fastmath stays off except where a reduction is reassociated):
* `_exp`: exp(v) = 2^n exp(r), n = round(v / ln 2), |r| <= ln(2)/2, a degree-7 Taylor
  polynomial (truncation error r^8/8! < 5e-9 relative) and 2^n built from the exponent bits.
  Arguments below -87.3 give 0 (NumPy gives denormals there, all < 1.2e-38), so -inf masks
  give exact zeros.
* `_erf`: |x| <= 1: x P(x^2); 1 < |x| < 4: 1 - exp(-x^2) Q(1/x) with Q ~ erfcx; |x| >= 4: +-1
  (erfc(4) = 1.5e-8 is below half an ulp of 1). Max abs error 1.2e-7 (about 2 ulp at 1).
* Reductions (row max and sums) use `reassoc` so they vectorize; the order differs from NumPy's
  pairwise sums by float32 rounding only. `ninf` is never set, so -inf masks stay exact.
* sigmoid (silu, glu): 1 / (1 + e) with e = exp(-|v|) <= 1 (and e / (1 + e) for v < 0), so
  the exponential never overflows and both tails keep their relative accuracy: `_exp`'s error
  (measured at most 1.64 * 2^-24 relative on [-87, 0]) plus one rounding per operation. The
  exponentials go to the output row first and the division runs in a second loop: in one loop
  body LLVM left the pair scalar (measured 10 ms vs 0.5 ms on (500, 3072)).
Shapes: R rows of length C (softmax: R = H * Tq, C = Tk; layer_norm: R = T, C = D).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from npasr.nn import jit

_JIT = jit.JIT
_REDUCE = jit.REDUCE  # reassociation only, for the row reductions (see module docstring)
_MAX = jit.JIT  # max is exact in any order; NaN: see softmax_kernel

_f = np.float32
LOG2E = _f(1.4426950408889634)
LN2_HI = _f(0.693359375)  # ln 2 split so that n * LN2_HI is exact for |n| < 2^11 (Cody-Waite)
LN2_LO = _f(-2.12194440e-4)
EXP_MIN = _f(-87.33654)  # ln(2^-126): smallest argument whose result is a normal float32
# erf(x) / x = P(x^2) on |x| <= 1; least squares on 2000 Chebyshev nodes in float64
# (numpy.polynomial.polynomial.polyfit), coefficients rounded to float32, lowest order first.
ERF_P = (1.1283791, -0.37612349, 0.11280365, -0.026716385, 0.0049232775, -0.0005654106)
# erfcx(x) = exp(x^2) erfc(x) = Q(1/x) on 1 <= x <= 4; same fit, 3000 nodes, degree 8.
ERF_Q = (
    0.00027494677,
    0.5589597,
    0.042608209,
    -0.47395203,
    0.50219697,
    -0.24920481,
    0.029908312,
    0.02566277,
    -0.00887057,
)
_P = tuple(_f(c) for c in ERF_P)
_Q = tuple(_f(c) for c in ERF_Q)
SQRT1_2 = _f(0.7071067811865476)


@nb.njit(**_JIT)
def _exp(v: np.float32) -> np.float32:
    """float32 exp for v <= 88 (see module docstring); NaN stays NaN, -inf gives 0."""
    tiny = v < EXP_MIN
    v = EXP_MIN if tiny else v
    n = np.floor(v * LOG2E + _f(0.5))
    r = (v - n * LN2_HI) - n * LN2_LO
    p = _f(1.0 / 5040) + r * _f(1.0 / 40320)
    p = _f(1.0 / 720) + r * p
    p = _f(1.0 / 120) + r * p
    p = _f(1.0 / 24) + r * p
    p = _f(1.0 / 6) + r * p
    p = _f(0.5) + r * p
    p = _f(1.0) + r * p
    p = _f(1.0) + r * p
    y = p * np.int32((np.int32(n) + 127) << 23).view(np.float32)  # * 2^n
    return _f(0.0) if tiny else y


@nb.njit(**_JIT)
def _erf(x: np.float32) -> np.float32:
    a = min(abs(x), _f(4.0))
    t = a * a
    p = _P[5]
    for c in (_P[4], _P[3], _P[2], _P[1], _P[0]):
        p = p * t + c
    u = _f(1.0) / max(a, _f(1.0))
    q = _Q[8]
    for c in (_Q[7], _Q[6], _Q[5], _Q[4], _Q[3], _Q[2], _Q[1], _Q[0]):
        q = q * u + c
    big = _f(1.0) - _exp(-t) * q
    y = a * p if a <= _f(1.0) else big
    return -y if x < 0 else y


@nb.njit(**_MAX)
def _row_max(x: np.ndarray) -> np.float32:
    # Eight explicit running maxima: LLVM does not vectorize a one-accumulator float max loop
    # here even with nnan/reassoc (measured 3x slower), but it overlaps eight independent chains.
    n = x.shape[0]
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = x[0]
    j = 0
    while j + 8 <= n:
        m0, m1, m2, m3 = max(m0, x[j]), max(m1, x[j + 1]), max(m2, x[j + 2]), max(m3, x[j + 3])
        m4, m5, m6, m7 = max(m4, x[j + 4]), max(m5, x[j + 5]), max(m6, x[j + 6]), max(m7, x[j + 7])
        j += 8
    m = max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))  # noqa: PLW3301
    for i in range(j, n):
        m = max(m, x[i])
    return m


@nb.njit(**_REDUCE)
def _row_sum(x: np.ndarray) -> np.float32:
    s = _f(0.0)
    for j in range(x.shape[0]):
        s += x[j]
    return s


@nb.njit(**_REDUCE)
def _row_sq_sum(x: np.ndarray) -> np.float32:
    s = _f(0.0)
    for j in range(x.shape[0]):
        s += x[j] * x[j]
    return s


@nb.njit(**_JIT)
def _exp_row(x: np.ndarray) -> np.float32:
    """x <- exp(x - max(x)) in place; returns 1 / sum of the result (the caller scales by it:
    e * (1/s) is within 1 ulp of e / s). The shared body of the in-place softmax and of both
    attention kernels' rows of scores."""
    m = _row_max(x)
    for j in range(x.shape[0]):
        x[j] = _exp(x[j] - m)
    return _f(1.0) / _row_sum(x)


@nb.njit(parallel=True, **_JIT)
def softmax_kernel(out: np.ndarray, x: np.ndarray) -> None:
    """out (R, C) = softmax of each row of x (R, C); `ref.softmax(x, axis=-1)`.

    A row holding NaN comes out all NaN, as in NumPy (exp and the row sum propagate it); a row
    that is all -inf gives NaN too (-inf - -inf)."""
    for r in nb.prange(x.shape[0]):
        xr, orow = x[r], out[r]
        m = _row_max(xr)
        for j in range(xr.shape[0]):
            orow[j] = _exp(xr[j] - m)
        inv = _f(1.0) / _row_sum(orow)  # one division per row; e * (1/s) is within 1 ulp of e / s
        for j in range(xr.shape[0]):
            orow[j] *= inv


@nb.njit(**_JIT)
def _gelu_row(orow: np.ndarray, xr: np.ndarray) -> None:
    for j in range(xr.shape[0]):
        v = xr[j]
        orow[j] = _f(0.5) * v * (_f(1.0) + _erf(v * SQRT1_2))


@nb.njit(parallel=True, **_JIT)
def softmax_inplace_kernel(x: np.ndarray) -> None:
    """x (R, C) <- softmax of each row, in place (same numerics as `softmax_kernel`).

    A separate kernel, not softmax_kernel(x, x): with its two arguments aliased, the loops run
    LLVM's scalar fallback (its runtime overlap check fails) and took 1.5x the time of the whole
    out-of-place call. In place saves the fresh (H, T, T) output, whose page faults cost as
    much as the softmax itself (encoder self-attention scores)."""
    for r in nb.prange(x.shape[0]):
        xr = x[r]
        inv = _exp_row(xr)
        for j in range(xr.shape[0]):
            xr[j] *= inv


@nb.njit(parallel=True, **_JIT)
def gelu_kernel(out: np.ndarray, x: np.ndarray) -> None:
    """out (R, C) = exact-erf GELU of x (R, C); `ref.gelu`."""
    for r in nb.prange(x.shape[0]):
        _gelu_row(out[r], x[r])


@nb.njit(**_JIT)
def gelu_serial_kernel(out: np.ndarray, x: np.ndarray) -> None:
    """`gelu_kernel` on the calling thread only (small decoder inputs: no worker hand-off)."""
    for r in range(x.shape[0]):
        _gelu_row(out[r], x[r])


@nb.njit(parallel=True, **_JIT)
def layer_norm_kernel(
    out: np.ndarray, x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float
) -> None:
    """out (R, C) = LayerNorm of each row of x (R, C) with g, b (C,); `ref.layer_norm`
    (biased variance of the centred row, as torch)."""
    for r in nb.prange(x.shape[0]):
        _layer_norm_row(out[r], x[r], g, b, eps)


@nb.njit(**_JIT)
def layer_norm_serial_kernel(
    out: np.ndarray, x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float
) -> None:
    """`layer_norm_kernel` on the calling thread only (small decoder inputs)."""
    for r in range(x.shape[0]):
        _layer_norm_row(out[r], x[r], g, b, eps)


@nb.njit(parallel=True, **_JIT)
def rms_norm_kernel(out: np.ndarray, x: np.ndarray, g: np.ndarray, eps: float) -> None:
    """out (R, C) = RMSNorm of each row of x (R, C) with g (C,); `ref.rms_norm`."""
    for r in nb.prange(x.shape[0]):
        _rms_norm_row(out[r], x[r], g, eps)


@nb.njit(**_JIT)
def rms_norm_serial_kernel(out: np.ndarray, x: np.ndarray, g: np.ndarray, eps: float) -> None:
    """`rms_norm_kernel` on the calling thread only (decoder rows, per-head q/k norms)."""
    for r in range(x.shape[0]):
        _rms_norm_row(out[r], x[r], g, eps)


@nb.njit(**_JIT)
def _rms_norm_row(orow: np.ndarray, xr: np.ndarray, g: np.ndarray, eps: float) -> None:
    n = xr.shape[0]
    inv = _f(1.0) / np.sqrt(_row_sq_sum(xr) / _f(n) + _f(eps))
    for j in range(n):
        orow[j] = xr[j] * inv * g[j]


@nb.njit(**_JIT)
def _layer_norm_row(
    orow: np.ndarray, xr: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float
) -> None:
    n = xr.shape[0]
    mu = _row_sum(xr) / _f(n)
    for j in range(n):
        orow[j] = xr[j] - mu
    sd = np.sqrt(_row_sq_sum(orow) / _f(n) + _f(eps))
    for j in range(n):
        orow[j] = orow[j] / sd * g[j] + b[j]


@nb.njit(**_REDUCE)
def attention_kernel(
    out: np.ndarray, q: np.ndarray, kt: np.ndarray, vt: np.ndarray, mask: np.ndarray, n_k: int
) -> None:
    """out (G, Tq, Dh) = softmax(q k^T / sqrt(Dh) + mask) v per group over keys [0, n_k);
    `ref.attention`.

    q (G, Tq, Dh); kt, vt (G, Dh, T >= n_k): keys and values transposed, so that both products
    run over contiguous positions: the scores of one query are Dh vector row updates (four rows
    per pass over the scores, no per-key horizontal sums) and each output is one long dot
    product (with v as (G, Tk, Dh), Tk short 64-long updates took 5x everything else). T > n_k
    lets a preallocated cache be passed whole. mask (Tq, >= n_k) added to the scores, or (0, 0)
    for none. Serial: meant for a few query rows per group (decoding). The scale multiplies the
    scores (the reference scales q first): float32 rounding, like the reassociated sums.
    """
    sc = np.empty((q.shape[1], n_k), np.float32)
    for gi in range(q.shape[0]):
        _attend_group(out, q, kt, vt, mask, n_k, gi, sc)


@nb.njit(parallel=True, **_REDUCE)
def attention_parallel_kernel(
    out: np.ndarray, q: np.ndarray, kt: np.ndarray, vt: np.ndarray, mask: np.ndarray, n_k: int
) -> None:
    """`attention_kernel` with the groups (heads) spread over the threads: for decoder queries
    over many keys (Whisper's cross-attention, 1500 per head), where one thread streaming every
    head's keys and values is the bottleneck (ops.ATTENTION_PARALLEL_MIN)."""
    for gi in nb.prange(q.shape[0]):
        _attend_group(out, q, kt, vt, mask, n_k, gi, np.empty((q.shape[1], n_k), np.float32))


ATTEND_CHUNK = 512  # keys per pass of `_score_rows`: 4 key rows of it (8 KB) stay in L1


@nb.njit(**_REDUCE)
def _attend_group(
    out: np.ndarray,
    q: np.ndarray,
    kt: np.ndarray,
    vt: np.ndarray,
    mask: np.ndarray,
    n_k: int,
    gi: int,
    sc: np.ndarray,
) -> None:
    """Every query row of group gi (`attention_kernel`); sc (Tq, >= n_k) scratch."""
    _score_rows(sc, 0, q[gi], kt[gi], n_k)
    scale = _f(1.0) / np.sqrt(_f(q.shape[2]))
    for i in range(q.shape[1]):
        o = out[gi, i]
        inv = _score_probs(sc[i, :n_k], scale, mask, i)
        o[:] = 0.0
        _add_values(o, sc[i], vt[gi], n_k)
        for jj in range(o.shape[0]):
            o[jj] *= inv


@nb.njit(**_REDUCE)
def _score_rows(sc: np.ndarray, c0: int, q: np.ndarray, kt: np.ndarray, n_k: int) -> None:
    """sc[i, c0 + t] = q[i] . (key t) for every row i of q (Tq, Dh) and t < n_k, kt (Dh, >= n_k)
    the keys transposed.

    The scores run over chunks of ATTEND_CHUNK keys, and within a chunk every query row meets
    the same four key rows in turn, so with several query rows (a beam over one cross-attention
    window, or over a prompt every beam shares) each key is read from memory once, not once per
    row. (The same chunking of the value products measured no faster: each row's output stays
    one long dot product.)"""
    n_q, dh = q.shape
    for t0 in range(0, n_k, ATTEND_CHUNK):
        t1 = min(n_k, t0 + ATTEND_CHUNK)
        # loops over views of the chunk from 0: a loop over range(t0, t1) indexes with a signed
        # t that Numba may wrap around, and LLVM left it scalar (6x slower)
        for i in range(n_q):
            s = sc[i, c0 + t0 : c0 + t1]
            for t in range(t1 - t0):
                s[t] = 0.0
        j = 0
        while j + 4 <= dh:
            k0, k1, k2, k3 = kt[j, t0:t1], kt[j + 1, t0:t1], kt[j + 2, t0:t1], kt[j + 3, t0:t1]
            for i in range(n_q):
                a0, a1, a2, a3 = q[i, j], q[i, j + 1], q[i, j + 2], q[i, j + 3]
                s = sc[i, c0 + t0 : c0 + t1]
                for t in range(t1 - t0):
                    s[t] += (a0 * k0[t] + a1 * k1[t]) + (a2 * k2[t] + a3 * k3[t])
            j += 4
        for jj in range(j, dh):
            k0 = kt[jj, t0:t1]
            for i in range(n_q):
                a0 = q[i, jj]
                s = sc[i, c0 + t0 : c0 + t1]
                for t in range(t1 - t0):
                    s[t] += a0 * k0[t]


@nb.njit(**_REDUCE)
def _score_probs(row: np.ndarray, scale: np.float32, mask: np.ndarray, i: int) -> np.float32:
    """One query's scores -> unnormalised probabilities in place: row * scale (+ mask[i] when the
    mask is not empty), exponentiated after its maximum; returns 1 / their sum."""
    for t in range(row.shape[0]):
        row[t] *= scale
    if mask.shape[0] > 0:
        m = mask[i]
        for t in range(row.shape[0]):
            row[t] += m[t]
    return _exp_row(row)


@nb.njit(**_REDUCE)
def _add_values(o: np.ndarray, p: np.ndarray, vt: np.ndarray, n: int) -> None:
    """o[j] += sum_{t < n} p[t] vt[j, t]: values transposed, each output one long dot product
    over contiguous positions."""
    for jj in range(o.shape[0]):
        acc = _f(0.0)
        row = vt[jj]
        for t in range(n):
            acc += p[t] * row[t]
        o[jj] += acc


@nb.njit(**_REDUCE)
def attention_split_kernel(out, q, kt_a, vt_a, n_a, kt_b, vt_b, n_b, mask):  # type: ignore[no-untyped-def]
    """Attention over keys in two sets: one every query row of a head shares, then one per
    sequence. `ref.attention` over the keys [set a; set b] of each row.

    q (H, E * U, Dh): head h's query rows, U consecutive rows per sequence e; kt_a, vt_a
    (H, Dh, >= n_a) the shared keys and values transposed (a beam search's common prompt);
    kt_b, vt_b (E, H, Dh, >= n_b) each sequence's own (the tokens its beam decoded). mask
    (U, n_a + n_b) added to the scores of row e * U + u, or (0, 0) for none. The shared keys
    are read once per head for all E * U rows (`_score_rows`), not once per sequence. Serial."""
    sc = np.empty((q.shape[1], n_a + n_b), np.float32)
    for h in range(q.shape[0]):
        _attend_split_head(out, q, kt_a, vt_a, n_a, kt_b, vt_b, n_b, mask, h, sc)


@nb.njit(parallel=True, **_REDUCE)
def attention_split_parallel_kernel(out, q, kt_a, vt_a, n_a, kt_b, vt_b, n_b, mask):  # type: ignore[no-untyped-def]
    """`attention_split_kernel` with the heads spread over the threads."""
    for h in nb.prange(q.shape[0]):
        sc = np.empty((q.shape[1], n_a + n_b), np.float32)
        _attend_split_head(out, q, kt_a, vt_a, n_a, kt_b, vt_b, n_b, mask, h, sc)


@nb.njit(**_REDUCE)
def _attend_split_head(out, q, kt_a, vt_a, n_a, kt_b, vt_b, n_b, mask, h, sc):  # type: ignore[no-untyped-def]
    """Every query row of head h (`attention_split_kernel`); sc (E * U, >= n_a + n_b) scratch."""
    n_rows = q.shape[1]
    n_seq = kt_b.shape[0]
    per = n_rows // n_seq  # U query rows per sequence
    qh = q[h]
    if n_a > 0:
        _score_rows(sc, 0, qh, kt_a[h], n_a)
    if n_b > 0:
        for e in range(n_seq):
            rows = slice(e * per, (e + 1) * per)
            _score_rows(sc[rows], n_a, qh[rows], kt_b[e, h], n_b)
    scale = _f(1.0) / np.sqrt(_f(q.shape[2]))
    for i in range(n_rows):
        e = i // per
        row = sc[i, : n_a + n_b]
        inv = _score_probs(row, scale, mask, i - e * per)
        o = out[h, i]
        o[:] = 0.0
        if n_a > 0:
            _add_values(o, row, vt_a[h], n_a)
        if n_b > 0:
            _add_values(o, row[n_a:], vt_b[e, h], n_b)
        for jj in range(o.shape[0]):
            o[jj] *= inv


@nb.njit(**_JIT)
def top_k_kernel(out: np.ndarray, x: np.ndarray) -> int:
    """out[:n] = indices of the n = min(out.size, x.size) largest values of x (1-D), largest
    first, equal values in index order; returns n. `ref.top_k`. One pass that keeps the best so
    far sorted (insertion): a value enters only if it beats the current n-th, so a row of
    logits costs about one comparison per element (NumPy's argpartition of a 51865-wide row
    took 0.7 ms, this 0.04)."""
    k = min(out.shape[0], x.shape[0])
    if k == 0:
        return 0
    best = np.empty(k, x.dtype)
    n = 0
    for i in range(x.shape[0]):
        v = x[i]
        if n == k and not v > best[k - 1]:
            continue
        j = n if n < k else k - 1
        while j > 0 and best[j - 1] < v:  # strict: an earlier equal value stays first
            best[j] = best[j - 1]
            out[j] = out[j - 1]
            j -= 1
        best[j] = v
        out[j] = i
        if n < k:
            n += 1
    return n


_TILE = 32  # transpose tile: 32 x 32 float32 = 4 KB read and written per step


@nb.njit(parallel=True, **_JIT)
def transpose_kernel(out: np.ndarray, x: np.ndarray) -> None:
    """out (C, R) = x (R, C).T, in 32 x 32 tiles (rows of tiles over the threads): both sides
    stay in cache lines already loaded, where NumPy's copy of a transposed view strides through
    one of them (Whisper's (1500, 512) cross-attention keys: 2.1 ms -> 0.65 ms)."""
    r, c = x.shape
    for bi in nb.prange((r + _TILE - 1) // _TILE):
        i0 = bi * _TILE
        i1 = min(r, i0 + _TILE)
        for j0 in range(0, c, _TILE):
            for j in range(j0, min(c, j0 + _TILE)):
                for i in range(i0, i1):
                    out[j, i] = x[i, j]


@nb.njit(parallel=True, **_JIT)
def silu_kernel(out: np.ndarray, x: np.ndarray) -> None:
    """out (R, C) = x * sigmoid(x); `ref.silu`."""
    for r in nb.prange(x.shape[0]):
        xr, orow = x[r], out[r]
        for j in range(xr.shape[0]):  # two loops: module docstring (sigmoid)
            orow[j] = _exp(-abs(xr[j]))
        for j in range(xr.shape[0]):
            v, e = xr[j], orow[j]
            s = _f(1.0) / (_f(1.0) + e)
            orow[j] = v * (s if v >= 0 else e * s)


@nb.njit(parallel=True, **_JIT)
def glu_kernel(out: np.ndarray, x: np.ndarray) -> None:
    """out (R, C) = x[:, :C] * sigmoid(x[:, C:]) for x (R, 2C); `ref.glu(x, axis=-1)`."""
    c = out.shape[1]
    for r in nb.prange(x.shape[0]):
        xr, orow = x[r], out[r]
        for j in range(c):  # two loops: module docstring (sigmoid)
            orow[j] = _exp(-abs(xr[c + j]))
        for j in range(c):
            g, e = xr[c + j], orow[j]
            s = _f(1.0) / (_f(1.0) + e)
            orow[j] = xr[j] * (s if g >= 0 else e * s)


@nb.njit(parallel=True, **_JIT)
def depthwise_conv_tc_kernel(
    out: np.ndarray, x: np.ndarray, wt: np.ndarray, b: np.ndarray, padding: int
) -> None:
    """out (Tout, C)[t, c] = b[c] + sum_k wt[k, c] x[t + k - padding, c] over the frames inside
    x (T, C) (zero padding), Tout = T + 2 padding - K + 1; b (C,) or empty. Time-major
    `ref.depthwise_conv1d` (which takes (C, T)): the inner loop runs over contiguous channels.
    The taps are summed in k order in float32."""
    n_t, c = x.shape
    k = wt.shape[0]
    for t in nb.prange(out.shape[0]):
        orow = out[t]
        if b.shape[0]:
            for j in range(c):
                orow[j] = b[j]
        else:
            for j in range(c):
                orow[j] = 0.0
        for i in range(k):
            src = t + i - padding
            if 0 <= src < n_t:
                xr, wr = x[src], wt[i]
                for j in range(c):
                    orow[j] += wr[j] * xr[j]
