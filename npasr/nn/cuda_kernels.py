"""CUDA kernels (numba.cuda): quantized GEMV, dequantize, tiled GEMM, layer_norm, softmax, gelu,
and an encoder block's helpers (batched GEMM, bias/residual epilogue, head split and merge).

Each kernel has the contract of its NumPy reference (`npasr.nn.ref`, `npasr.nn.quant`); tests run
them in Numba's CUDA simulator (tests/nn/test_cuda_kernels.py) and bench/gpu_check.py on a GPU.
Only shared memory, `syncthreads` and plain arithmetic are used (no warp shuffles, which the
simulator lacks), so the same code runs in both.

Quantized weights keep the `quant.Packed` layout (see quant_kernels.py):

    w[r, 32 b + j] = scale[r, b] * v[r, 32 b + j] - offset[r, b]

`DeviceWeight.upload` copies its arrays once, with `qs` viewed as int32 words so one load reads 4
bytes: "i8" has 8 words per 32-weight block (byte i of word q is v[32 b + 4 q + i]); "u4" has 4
(byte i of word q holds v[32 b + 4 q + i] in its low and v[32 b + 16 + 4 q + i] in its high
nibble). Bytes are taken out of a word with shifts and masks, so the signed words behave like
unsigned ones.

Host wrappers take NumPy arrays (copied to the device as contiguous float32) or device arrays
and return device arrays; nothing is copied back. All float arithmetic is float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

try:  # numba.cuda needs no GPU to import; with NUMBA_ENABLE_CUDASIM=1 it is the simulator
    from numba import cuda, float32
except ImportError:  # pragma: no cover (numba without its cuda package)
    cuda = None

QB = 32  # weights per scale block
MAX_M = 8  # activation rows per GEMV launch (the wrapper loops over chunks of MAX_M rows)
WORDS = {"i8": 8, "u4": 4}  # int32 words of qs per 32-weight block

Array = Any  # a NumPy array or a numba device array


def available() -> bool:
    """True where numba.cuda imports and finds a device (or the simulator); never raises."""
    try:
        return cuda is not None and bool(cuda.is_available())
    except Exception:  # noqa: BLE001 (a broken driver install must read as "no GPU")
        return False


def to_device(a: Array) -> Array:
    """A device array as is; a NumPy array copied to the device as contiguous float32."""
    if hasattr(a, "copy_to_host"):
        return a
    return cuda.to_device(np.ascontiguousarray(a, dtype=np.float32))


def _out(out: Array | None, shape: tuple[int, ...]) -> Array:
    """`out` (checked to be float32 of `shape`) or a new device array."""
    if out is None:
        return cuda.device_array(shape, np.float32)
    assert tuple(out.shape) == tuple(shape) and out.dtype == np.float32, (out.shape, shape)
    return out


# --- quantized weights ------------------------------------------------------------------------


@dataclass
class DeviceWeight:
    """A `quant.Packed` weight on the device: qs as int32 words (N, K // 32 * WORDS[kind]),
    scale and offset (N, K // 32) float32 (offset None where it is zero), logical shape (N, K)."""

    kind: str
    qs: Array
    scale: Array
    offset: Array | None
    shape: tuple[int, int]

    @classmethod
    def upload(cls, w: Any) -> DeviceWeight:
        """From a `quant.Packed`, or a 2-D `quant.QTensor` (its `repack()`)."""
        packed = w.repack() if hasattr(w, "repack") else w
        if packed is None:
            raise NotImplementedError(f"{w.qtype.name} has no packed layout for the GPU kernels")
        if packed.kind not in WORDS:
            raise NotImplementedError(f"packed kind {packed.kind!r}")
        n, nb = packed.scale.shape
        qs = np.ascontiguousarray(packed.qs).view(np.int32)  # rows are 32- or 16-byte multiples
        assert qs.shape == (n, nb * WORDS[packed.kind])
        off = None if packed.offset is None else cuda.to_device(np.ascontiguousarray(packed.offset))
        return cls(
            packed.kind, cuda.to_device(qs), cuda.to_device(np.ascontiguousarray(packed.scale)),
            off, (n, nb * QB),
        )  # fmt: skip

    @property
    def nbytes(self) -> int:
        """Bytes a GEMV reads from the weight (values, scales, offsets)."""
        n, nb = self.scale.shape
        return n * nb * (4 * WORDS[self.kind] + 4 * (1 + (self.offset is not None)))


@cache
def _no_offset() -> Array:
    return cuda.to_device(np.zeros((1, 1), np.float32))


def _offset(w: DeviceWeight) -> tuple[Array, bool]:
    return (_no_offset(), False) if w.offset is None else (w.offset, True)


@cache
def _block_sums_kernel():  # type: ignore[no-untyped-def]
    @cuda.jit
    def block_sums(xsum, x):  # type: ignore[no-untyped-def]
        """xsum[m, b] = sum_j x[m, 32 b + j] in j order; one thread per (b, m), grid (NB, M)."""
        b, m = cuda.grid(2)
        if m < x.shape[0] and b < xsum.shape[1]:
            s = float32(0.0)
            for j in range(QB):
                s += x[m, b * QB + j]
            xsum[m, b] = s

    return block_sums


@cache
def _gemv_kernel(kind: str, rows: int, tx: int):  # type: ignore[no-untyped-def]
    """The GEMV for one kind, `rows` output rows per block and `tx` threads per row."""
    words, is_i8 = WORDS[kind], kind == "i8"
    assert tx >= MAX_M and tx & (tx - 1) == 0, "threads per row: a power of two >= MAX_M"

    @cuda.jit
    def gemv(y, x, xsum, qs, scale, offset, has_offset):  # type: ignore[no-untyped-def]
        """y[m, n] = sum_b scale[n, b] * (sum_j v[n, 32 b + j] x[m, 32 b + j])
        - offset[n, b] * xsum[m, b], for M = x.shape[0] <= MAX_M rows.

        Block (tx, rows): threadIdx.y picks the output row n = blockIdx.x * rows + threadIdx.y,
        and its tx threads stride over the row's int32 words, thread t taking words t, t + tx,
        ...: at each step the tx threads read tx consecutive words (one 128-byte line for 32
        threads) and the activations under them. Each word's products (4 values, 8 for "u4")
        are summed, scaled by their block's scale and added per activation row; the thread that
        reads a block's first word also takes its offset term. A shared-memory tree then sums
        the tx partial sums.
        """
        t = cuda.threadIdx.x
        r = cuda.threadIdx.y
        n = cuda.blockIdx.x * rows + r
        n_m = x.shape[0]
        acc = cuda.local.array(MAX_M, float32)
        v = cuda.local.array(8, float32)  # the word's values: 4 ("i8") or 8 ("u4")
        for m in range(MAX_M):
            acc[m] = float32(0.0)
        if n < y.shape[1]:
            for qg in range(t, qs.shape[1], tx):
                b = qg // words
                wd = qs[n, qg]
                s = scale[n, b]
                c = b * QB + 4 * (qg - b * words)  # x column of the word's first value
                for i in range(4):
                    if is_i8:
                        u = (wd >> (8 * i)) & 255
                        v[i] = float32(u - ((u & 128) << 1))  # the signed byte
                    else:
                        v[i] = float32((wd >> (8 * i)) & 15)
                        v[i + 4] = float32((wd >> (8 * i + 4)) & 15)  # value 16 + 4 q + i
                for m in range(n_m):
                    d = float32(0.0)
                    for i in range(4):
                        d += v[i] * x[m, c + i]
                        if not is_i8:
                            d += v[i + 4] * x[m, c + 16 + i]
                    acc[m] += s * d
                if has_offset and qg == b * words:
                    o = offset[n, b]
                    for m in range(n_m):
                        acc[m] -= o * xsum[m, b]
        part = cuda.shared.array((rows, MAX_M, tx), float32)
        for m in range(MAX_M):
            part[r, m, t] = acc[m]
        cuda.syncthreads()
        h = tx // 2
        while h > 0:
            if t < h:
                for m in range(n_m):
                    part[r, m, t] += part[r, m, t + h]
            cuda.syncthreads()
            h //= 2
        if t < n_m and n < y.shape[1]:
            y[t, n] = part[r, t, 0]

    return gemv


def gemv(
    x: Array, w: DeviceWeight, rows_per_block: int = 4, threads_per_row: int = 32,
    out: Array | None = None,
) -> Array:  # fmt: skip
    """x (M, K) @ dequantize(w).T -> (M, N) device float32, for few rows M (decoding); the
    activations stay float32. Rows are taken MAX_M at a time. `out`: an (M, N) float32 device
    array to write (as in every wrapper here; by default a new one)."""
    x = to_device(x)
    m_all, k = x.shape
    n = w.shape[0]
    assert k == w.shape[1], (x.shape, w.shape)
    y = _out(out, (m_all, n))
    kern = _gemv_kernel(w.kind, rows_per_block, threads_per_row)
    off, has_off = _offset(w)
    grid = (n + rows_per_block - 1) // rows_per_block
    for m0 in range(0, m_all, MAX_M):
        xc, yc = x[m0 : m0 + MAX_M], y[m0 : m0 + MAX_M]
        xsum = block_sums(xc) if has_off else _no_offset()
        kern[grid, (threads_per_row, rows_per_block)](yc, xc, xsum, w.qs, w.scale, off, has_off)
    return y


def block_sums(x: Array) -> Array:
    """x (M, K) -> (M, K // 32) sums of each 32-block, on the device."""
    x = to_device(x)
    m, k = x.shape
    xsum = cuda.device_array((m, k // QB), np.float32)
    _block_sums_kernel()[((k // QB + 31) // 32, m), (32, 1)](xsum, x)
    return xsum


@cache
def _dequantize_kernel(kind: str):  # type: ignore[no-untyped-def]
    words, is_i8 = WORDS[kind], kind == "i8"

    @cuda.jit
    def dequantize(out, qs, scale, offset, has_offset, r0):  # type: ignore[no-untyped-def]
        """out[r, c] = scale[r0 + r, c // 32] * v[r0 + r, c] - offset[r0 + r, c // 32]; one
        thread per int32 word of qs (4 values for "i8", 8 for "u4"), grid (words, rows).

        scale * v is exact (a float16 scale, or a float16 times a 6-bit code, times a value of
        at most 8 bits), so this rounds once like `QTensor.dequantize`, fused or not."""
        q, r = cuda.grid(2)
        if r < out.shape[0] and q < qs.shape[1]:
            b = q // words
            s = scale[r0 + r, b]
            o = offset[r0 + r, b] if has_offset else float32(0.0)
            wd = qs[r0 + r, q]
            for i in range(4):
                if is_i8:
                    u = (wd >> (8 * i)) & 255
                    out[r, 4 * q + i] = s * float32(u - ((u & 128) << 1)) - o
                else:
                    c = b * QB + 4 * (q % words) + i
                    out[r, c] = s * float32((wd >> (8 * i)) & 15) - o
                    out[r, c + 16] = s * float32((wd >> (8 * i + 4)) & 15) - o

    return dequantize


def dequantize(
    w: DeviceWeight, r0: int = 0, r1: int | None = None, out: Array | None = None
) -> Array:
    """Rows r0:r1 of the weight as float32 (r1 - r0, K) on the device, equal to
    `QTensor.dequantize()[r0:r1]`."""
    r1 = w.shape[0] if r1 is None else r1
    out = _out(out, (r1 - r0, w.shape[1]))
    off, has_off = _offset(w)
    n_words = w.qs.shape[1]
    grid = ((n_words + 63) // 64, r1 - r0)
    _dequantize_kernel(w.kind)[grid, (64, 1)](out, w.qs, w.scale, off, has_off, r0)
    return out


# --- float32 GEMM -----------------------------------------------------------------------------


def gemm(
    x: Array, w: Array, threads: int = 16, micro: int = 4, bk: int = 16, out: Array | None = None
) -> Array:
    """x (M, K) @ w (N, K).T -> (M, N) device float32 (`ref.linear` without bias): the tiled
    kernel of `batched_gemm` with one batch entry; tiles of threads * micro rows and columns."""
    x, w = to_device(x), to_device(w)
    (m, k), n = x.shape, w.shape[0]
    assert w.shape[1] == k, (x.shape, w.shape)
    y = _out(out, (m, n))
    batched_gemm(x.reshape(1, m, k), w.reshape(1, n, k), threads, micro, bk, y.reshape(1, m, n))
    return y


# --- row and element-wise ops -----------------------------------------------------------------


@cache
def _row_kernels(nt: int):  # type: ignore[no-untyped-def]
    """layer_norm and softmax with nt threads (a power of two) per row."""
    assert nt & (nt - 1) == 0, "threads per row: a power of two"

    @cuda.jit(device=True)
    def reduce(buf, t, is_max):  # type: ignore[no-untyped-def]
        """buf[0] = sum (or max) of buf[0:nt], a tree over the block; all threads call it."""
        cuda.syncthreads()
        h = nt // 2
        while h > 0:
            if t < h:
                if is_max:
                    buf[t] = max(buf[t], buf[t + h])
                else:
                    buf[t] += buf[t + h]
            cuda.syncthreads()
            h //= 2
        res = buf[0]
        cuda.syncthreads()  # buf is reused by the next reduction
        return res

    @cuda.jit
    def layer_norm(y, x, g, b, eps):  # type: ignore[no-untyped-def]
        """y[r] = (x[r] - mean) / sqrt(var + eps) * g + b, biased variance of x[r] - mean
        (`ref.layer_norm`); block r (nt threads) takes row r, threads striding over it,
        mean and variance each summed per thread then by a shared-memory tree."""
        r = cuda.blockIdx.x
        t = cuda.threadIdx.x
        d = x.shape[1]
        buf = cuda.shared.array(nt, float32)
        s = float32(0.0)
        for c in range(t, d, nt):
            s += x[r, c]
        buf[t] = s
        mu = reduce(buf, t, False) / float32(d)
        s = float32(0.0)
        for c in range(t, d, nt):
            xc = x[r, c] - mu
            s += xc * xc
        buf[t] = s
        sd = math.sqrt(reduce(buf, t, False) / float32(d) + float32(eps))
        for c in range(t, d, nt):
            y[r, c] = (x[r, c] - mu) / sd * g[c] + b[c]

    @cuda.jit
    def softmax(y, x):  # type: ignore[no-untyped-def]
        """y[r] = exp(x[r] - max x[r]) / sum exp(x[r] - max x[r]) (`ref.softmax`); block r
        (nt threads) takes row r, the max and the sum each by a shared-memory tree."""
        r = cuda.blockIdx.x
        t = cuda.threadIdx.x
        d = x.shape[1]
        buf = cuda.shared.array(nt, float32)
        mx = float32(-math.inf)
        for c in range(t, d, nt):
            mx = max(mx, x[r, c])
        buf[t] = mx
        mx = reduce(buf, t, True)
        s = float32(0.0)
        for c in range(t, d, nt):
            s += math.exp(x[r, c] - mx)
        buf[t] = s
        s = reduce(buf, t, False)
        for c in range(t, d, nt):
            y[r, c] = math.exp(x[r, c] - mx) / s

    return layer_norm, softmax


def _rows(x: Array, out: Array | None) -> tuple[Array, Array, tuple[int, ...]]:
    """x (..., D) on the device as (R, D), an output like it, and x's shape."""
    x = to_device(x)
    shape = tuple(x.shape)
    x2 = x.reshape(int(np.prod(shape[:-1], dtype=np.int64)), shape[-1])
    return x2, _out(out, shape).reshape(*x2.shape), shape


def layer_norm(
    x: Array, g: Array, b: Array, eps: float = 1e-5, threads: int = 128, out: Array | None = None
) -> Array:
    """LayerNorm over the last axis of x (..., D) with gain g and bias b (D,)."""
    x2, y, shape = _rows(x, out)
    if x2.shape[0]:
        gd, bd = to_device(g), to_device(b)
        _row_kernels(threads)[0][x2.shape[0], threads](y, x2, gd, bd, np.float32(eps))
    return y.reshape(*shape)


def softmax(x: Array, threads: int = 128, out: Array | None = None) -> Array:
    """Softmax over the last axis of x (..., D), stable (the row max is subtracted first)."""
    x2, y, shape = _rows(x, out)
    if x2.shape[0]:
        _row_kernels(threads)[1][x2.shape[0], threads](y, x2)
    return y.reshape(*shape)


@cache
def _gelu_kernel():  # type: ignore[no-untyped-def]
    @cuda.jit
    def gelu(y, x):  # type: ignore[no-untyped-def]
        """y = 0.5 x (1 + erf(x / sqrt 2)), exact-erf GELU (`ref.gelu`), elementwise over flat
        arrays; one thread per element (grid-stride)."""
        i0, step = cuda.grid(1), cuda.gridsize(1)
        for i in range(i0, x.shape[0], step):
            v = x[i]
            y[i] = float32(0.5) * v * (float32(1.0) + math.erf(v * float32(0.70710677)))

    return gelu


def gelu(x: Array, threads: int = 256, out: Array | None = None) -> Array:
    """Exact (erf) GELU of x (any shape), elementwise."""
    x = to_device(x)
    shape = tuple(x.shape)
    size = int(np.prod(shape, dtype=np.int64))
    xf = x.reshape(size)
    y = _out(out, shape).reshape(size)
    if size:
        blocks = min((size + threads - 1) // threads, 65536)
        _gelu_kernel()[blocks, threads](y, xf)
    return y.reshape(*shape)


# --- attention helpers: batched GEMM, bias/residual epilogue, head split and merge ------------


@cache
def _batched_gemm_kernel(t: int, tm: int, tn: int, bk: int):  # type: ignore[no-untyped-def]
    """The GEMM for (t, t) threads, each computing tm x tn outputs, and bk-long K tiles, over a
    leading batch axis (grid axis z picks the batch entry)."""
    bm, bn, nt = t * tm, t * tn, t * t
    bm1, bn1 = bm + 1, bn + 1

    @cuda.jit
    def batched_gemm(y, x, w):  # type: ignore[no-untyped-def]
        """y[i] = x[i] @ w[i].T for x (B, M, K), w (B, N, K), y (B, M, N), i = blockIdx.z:
        block (t, t) computes the tile y[i, bm * blockIdx.y :, bn * blockIdx.x :] of bm x bn
        outputs, thread (tx, ty) the ones at rows ty + t r and columns tx + t c, summing over K
        in order. K is walked in bk-long slices of x and w staged in shared memory (zeros past
        the edges; the tiles are padded by a column: fewer bank conflicts on the stores)."""
        bi = cuda.blockIdx.z
        m_all, k_all = x.shape[1], x.shape[2]
        n_all = w.shape[1]
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * t + tx
        m0 = cuda.blockIdx.y * bm
        n0 = cuda.blockIdx.x * bn
        xs = cuda.shared.array((bk, bm1), float32)
        ws = cuda.shared.array((bk, bn1), float32)
        acc = cuda.local.array((tm, tn), float32)
        a = cuda.local.array(tm, float32)
        bv = cuda.local.array(tn, float32)
        for i in range(tm):
            for j in range(tn):
                acc[i, j] = float32(0.0)
        for k0 in range(0, k_all, bk):
            for e in range(tid, bm * bk, nt):
                rr, kk = e // bk, e % bk
                ok = m0 + rr < m_all and k0 + kk < k_all
                xs[kk, rr] = x[bi, m0 + rr, k0 + kk] if ok else float32(0.0)
            for e in range(tid, bn * bk, nt):
                rr, kk = e // bk, e % bk
                ok = n0 + rr < n_all and k0 + kk < k_all
                ws[kk, rr] = w[bi, n0 + rr, k0 + kk] if ok else float32(0.0)
            cuda.syncthreads()
            for kk in range(bk):
                for i in range(tm):
                    a[i] = xs[kk, ty + t * i]
                for j in range(tn):
                    bv[j] = ws[kk, tx + t * j]
                for i in range(tm):
                    for j in range(tn):
                        acc[i, j] += a[i] * bv[j]
            cuda.syncthreads()
        for i in range(tm):
            m = m0 + ty + t * i
            for j in range(tn):
                n = n0 + tx + t * j
                if m < m_all and n < n_all:
                    y[bi, m, n] = acc[i, j]

    return batched_gemm


def batched_gemm(
    x: Array, w: Array, threads: int = 16, micro: int = 4, bk: int = 16, out: Array | None = None
) -> Array:
    """x (B, M, K) @ w (B, N, K).swapaxes(1, 2) -> (B, M, N) device float32: `gemm` per batch
    entry (e.g. per attention head), one launch."""
    x, w = to_device(x), to_device(w)
    (nb, m, k), n = x.shape, w.shape[1]
    assert w.shape[0] == nb and w.shape[2] == k, (x.shape, w.shape)
    y = _out(out, (nb, m, n))
    tile = threads * micro
    if nb and m and n:
        grid = ((n + tile - 1) // tile, (m + tile - 1) // tile, nb)
        _batched_gemm_kernel(threads, micro, micro, bk)[grid, (threads, threads)](y, x, w)
    return y


@cache
def _bias_residual_kernel():  # type: ignore[no-untyped-def]
    @cuda.jit
    def add_bias_residual(y, x, bias, has_bias, res, has_res):  # type: ignore[no-untyped-def]
        """y[m, n] = res[m, n] + (x[m, n] + bias[n]) (the terms absent where has_* is False),
        in this order: `residual + ref.linear(...)`; one thread per element (grid-stride).
        Each element is read and written by the same thread, so y may alias x or res."""
        i0, step = cuda.grid(1), cuda.gridsize(1)
        n_all = x.shape[1]
        for i in range(i0, x.shape[0] * n_all, step):
            m, n = i // n_all, i % n_all
            v = x[m, n]
            if has_bias:
                v = v + bias[n]
            if has_res:
                v = res[m, n] + v
            y[m, n] = v

    return add_bias_residual


def add_bias_residual(
    x: Array, bias: Array | None = None, residual: Array | None = None, threads: int = 256,
    out: Array | None = None,
) -> Array:  # fmt: skip
    """residual + (x + bias) for x (M, N), bias (N,) and residual (M, N), either optional: the
    epilogue of a linear layer (`gemm` + bias) and of a residual branch. `out` may be x or
    residual (in place)."""
    x = to_device(x)
    m, n = x.shape
    y = _out(out, (m, n))
    b = _no_offset().reshape(1) if bias is None else to_device(bias)
    r = _no_offset() if residual is None else to_device(residual)
    if bias is not None:
        assert tuple(b.shape) == (n,), (b.shape, x.shape)
    if residual is not None:
        assert tuple(r.shape) == (m, n), (r.shape, x.shape)
    if m * n:
        blocks = min((m * n + threads - 1) // threads, 65536)
        _bias_residual_kernel()[blocks, threads](y, x, b, bias is not None, r, residual is not None)
    return y


@cache
def _heads_kernels():  # type: ignore[no-untyped-def]
    @cuda.jit
    def split_qkv(q, k, vt, qkv, scale):  # type: ignore[no-untyped-def]
        """qkv (T, 3 D) = [query | key | value] -> q (H, T, Dh) = query * scale, k (H, T, Dh)
        and vt (H, Dh, T) (the value transposed, the `w` that makes `gemm` compute P @ V):
        head h takes columns h Dh .. (h + 1) Dh - 1 of each part; one thread per (t, c < D)."""
        i0, step = cuda.grid(1), cuda.gridsize(1)
        n_h, n_t, dh = q.shape[0], q.shape[1], q.shape[2]
        d = n_h * dh
        for i in range(i0, n_t * d, step):
            t, c = i // d, i % d
            h, j = c // dh, c % dh
            q[h, t, j] = qkv[t, c] * scale
            k[h, t, j] = qkv[t, d + c]
            vt[h, j, t] = qkv[t, 2 * d + c]

    @cuda.jit
    def merge_heads(y, x):  # type: ignore[no-untyped-def]
        """x (H, T, Dh) -> y (T, H Dh), y[t, h Dh + j] = x[h, t, j]; one thread per element."""
        i0, step = cuda.grid(1), cuda.gridsize(1)
        n_h, n_t, dh = x.shape[0], x.shape[1], x.shape[2]
        d = n_h * dh
        for i in range(i0, n_t * d, step):
            t, c = i // d, i % d
            y[t, c] = x[c // dh, t, c % dh]

    return split_qkv, merge_heads


def split_qkv(
    qkv: Array, n_head: int, scale: float = 1.0, threads: int = 256,
    out: tuple[Array, Array, Array] | None = None,
) -> tuple[Array, Array, Array]:  # fmt: skip
    """A stacked projection qkv (T, 3 D) -> q * scale (H, T, Dh), k (H, T, Dh), v transposed
    (H, Dh, T), float32 on the device. q * scale rounds once, as `ref.attention`'s q * scale
    (pass scale = Dh ** -0.5 for its scores)."""
    qkv = to_device(qkv)
    n_t, d3 = qkv.shape
    d = d3 // 3
    assert d3 == 3 * d and d % n_head == 0, (qkv.shape, n_head)
    dh = d // n_head
    o = out or (None, None, None)
    q = _out(o[0], (n_head, n_t, dh))
    k = _out(o[1], (n_head, n_t, dh))
    vt = _out(o[2], (n_head, dh, n_t))
    if n_t * d:
        blocks = min((n_t * d + threads - 1) // threads, 65536)
        _heads_kernels()[0][blocks, threads](q, k, vt, qkv, np.float32(scale))
    return q, k, vt


def merge_heads(x: Array, threads: int = 256, out: Array | None = None) -> Array:
    """Heads (H, T, Dh) -> (T, H Dh) on the device (the inverse of the split)."""
    x = to_device(x)
    n_h, n_t, dh = x.shape
    y = _out(out, (n_t, n_h * dh))
    if n_t * n_h * dh:
        blocks = min((n_t * n_h * dh + threads - 1) // threads, 65536)
        _heads_kernels()[1][blocks, threads](y, x)
    return y
