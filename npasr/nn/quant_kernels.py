"""Fused kernels over the repacked quantized layouts of `npasr.nn.quant.Packed`.

Every kernel computes `ref.linear` on `quant.dequantize(w)` (tests/nn/test_quant_kernels.py):

    w[r, 32 b + j] = scale[r, b] * v[r, 32 b + j] - offset[r, b]

with v int8 ("i8": Q8_0, Q5_0, Q5_1, Q5_K) or a nibble ("u4": Q4_0, Q4_1, Q4_K; byte 16 b + j holds
v[32 b + j] in its low and v[32 b + j + 16] in its high nibble). Shapes: M activation rows,
N weight rows (outputs), K inputs, NB = K // 32 blocks per row.

How the loops are written, and why (measured on Zen 4 with Numba 0.68 / LLVM):
* Arrays are passed flat and indexed with unsigned integers. A signed index makes Numba emit the
  negative-index wrap-around select, and LLVM then leaves the 32-wide inner loops scalar.
* The per-block scale stops a plain dot product from vectorizing across blocks, so each output keeps
  32 partial sums (`acc`, one per position in the block) and reduces them once per row; the inner
  `for j in range(32)` is then element-wise and compiles to 16-lane AVX-512 (8-lane AVX2) FMAs.
* Activations stay float32: the int8 values are widened exactly, so the only error against the
  reference is float32 summation order (fastmath reassociates; it is enabled only for that).
* The offset term is folded out of the inner loop: sum_j (s v - o) x = s sum_j v x - o sum_j x,
  with the per-block activation sums `xsum` (M, NB) computed once per call.
* `prange` runs over chunks of rows so each thread allocates its scratch once.
"""

from __future__ import annotations

import numba as nb
import numpy as np

QB = 32  # weights per scale block in every Packed layout
ROW_CHUNK = 16  # output rows per parallel work item (scratch is allocated per item)

_JIT = dict(nogil=True, cache=True)
# fastmath only where a reduction must be reassociated to vectorize (see module docstring)
_FAST = dict(nogil=True, cache=True, fastmath=True)

_u = np.uint64


@nb.njit(**_FAST)
def _offset_dot(offset: np.ndarray, xsum: np.ndarray, row: int, m: int, nbk: int) -> np.float32:
    """sum_b offset[row, b] * xsum[m, b] over flat arrays."""
    s = np.float32(0.0)
    ro = _u(row * nbk)
    xo = _u(m * nbk)
    for b in range(nbk):
        s += offset[ro + _u(b)] * xsum[xo + _u(b)]
    return s


@nb.njit(**_FAST)
def block_sums_kernel(xsum: np.ndarray, x: np.ndarray, n_rows: int, k: int) -> None:
    """xsum[m, b] = sum_j x[m, 32 b + j]; x (M*K,), xsum (M*NB,) flat."""
    nbk = k // QB
    for m in range(n_rows):
        for b in range(nbk):
            s = np.float32(0.0)
            o = _u(m * k + b * QB)
            for j in range(QB):
                s += x[o + _u(j)]
            xsum[_u(m * nbk + b)] = s


@nb.njit(parallel=True, **_FAST)
def gemv_i8_kernel(
    out: np.ndarray,
    x: np.ndarray,
    xsum: np.ndarray,
    qs: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    n_rows: int,
    k: int,
) -> None:
    """out (M, N) = x (M, K) @ w.T for an "i8" weight. Flat: x (M*K,), qs (N*K,) int8,
    scale/offset (N*NB,) (offset may be empty: no offset), xsum (M*NB,). M is small (1..8)."""
    n_out = out.shape[1]
    nbk = k // QB
    has_offset = offset.shape[0] > 0
    for c in nb.prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        acc = np.empty(n_rows * QB, np.float32)  # (M, 32) partial sums
        wb = np.empty(QB, np.float32)  # one dequantized block
        for i in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            acc[:] = 0.0
            for b in range(nbk):
                s = scale[_u(i * nbk + b)]
                o = _u(i * k + b * QB)
                if n_rows == 1:
                    for j in range(QB):
                        acc[_u(j)] += np.float32(qs[o + _u(j)]) * s * x[_u(b * QB + j)]
                    continue
                for j in range(QB):
                    wb[_u(j)] = np.float32(qs[o + _u(j)]) * s
                for m in range(n_rows):
                    xo = _u(m * k + b * QB)
                    ao = _u(m * QB)
                    for j in range(QB):
                        acc[ao + _u(j)] += wb[_u(j)] * x[xo + _u(j)]
            for m in range(n_rows):
                t = np.float32(0.0)
                for j in range(QB):
                    t += acc[_u(m * QB + j)]
                if has_offset:
                    t -= _offset_dot(offset, xsum, i, m, nbk)
                out[m, i] = t


@nb.njit(parallel=True, **_FAST)
def gemv_u4_kernel(
    out: np.ndarray,
    x: np.ndarray,
    xsum: np.ndarray,
    qs: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    n_rows: int,
    k: int,
) -> None:
    """As `gemv_i8_kernel` for a "u4" weight: qs (N*K/2,) uint8 nibble pairs."""
    n_out = out.shape[1]
    nbk = k // QB
    half = QB // 2
    for c in nb.prange((n_out + ROW_CHUNK - 1) // ROW_CHUNK):
        acc = np.empty(n_rows * QB, np.float32)
        wb = np.empty(QB, np.float32)
        for i in range(c * ROW_CHUNK, min(n_out, (c + 1) * ROW_CHUNK)):
            acc[:] = 0.0
            for b in range(nbk):
                s = scale[_u(i * nbk + b)]
                o = _u((i * k + b * QB) // 2)
                if n_rows == 1:
                    xo = _u(b * QB)
                    for j in range(half):
                        byte = qs[o + _u(j)]
                        acc[_u(j)] += np.float32(byte & np.uint8(15)) * s * x[xo + _u(j)]
                    for j in range(half):
                        byte = qs[o + _u(j)]
                        acc[_u(j + half)] += (
                            np.float32(byte >> np.uint8(4)) * s * x[xo + _u(j + half)]
                        )
                    continue
                for j in range(half):
                    byte = qs[o + _u(j)]
                    wb[_u(j)] = np.float32(byte & np.uint8(15)) * s
                for j in range(half):
                    byte = qs[o + _u(j)]
                    wb[_u(j + half)] = np.float32(byte >> np.uint8(4)) * s
                for m in range(n_rows):
                    xo = _u(m * k + b * QB)
                    ao = _u(m * QB)
                    for j in range(QB):
                        acc[ao + _u(j)] += wb[_u(j)] * x[xo + _u(j)]
            for m in range(n_rows):
                t = np.float32(0.0)
                for j in range(QB):
                    t += acc[_u(m * QB + j)]
                out[m, i] = t - _offset_dot(offset, xsum, i, m, nbk)


@nb.njit(parallel=True, **_JIT)
def dequant_i8_kernel(
    out: np.ndarray, qs: np.ndarray, scale: np.ndarray, offset: np.ndarray, r0: int, k: int
) -> None:
    """out (R*K,) f32 = rows r0 : r0 + R of an "i8" weight (flat qs, scale, offset as above)."""
    nbk = k // QB
    has_offset = offset.shape[0] > 0
    for r in nb.prange(out.shape[0] // k):
        i = r0 + r
        for b in range(nbk):
            s = scale[_u(i * nbk + b)]
            off = offset[_u(i * nbk + b)] if has_offset else np.float32(0.0)
            o = _u(i * k + b * QB)
            for j in range(QB):
                out[_u(r * k + b * QB + j)] = np.float32(qs[o + _u(j)]) * s - off


@nb.njit(parallel=True, **_JIT)
def dequant_u4_kernel(
    out: np.ndarray, qs: np.ndarray, scale: np.ndarray, offset: np.ndarray, r0: int, k: int
) -> None:
    """out (R*K,) f32 = rows r0 : r0 + R of a "u4" weight."""
    nbk = k // QB
    half = QB // 2
    for r in nb.prange(out.shape[0] // k):
        i = r0 + r
        for b in range(nbk):
            s = scale[_u(i * nbk + b)]
            off = offset[_u(i * nbk + b)]
            o = _u((i * k + b * QB) // 2)
            for j in range(half):
                byte = qs[o + _u(j)]
                oo = _u(r * k + b * QB + j)
                out[oo] = np.float32(byte & np.uint8(15)) * s - off
                out[oo + _u(half)] = np.float32(byte >> np.uint8(4)) * s - off
