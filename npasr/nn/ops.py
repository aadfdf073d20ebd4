"""Public op API: one call per op, whatever the weight's storage.

`linear(x, w, b)` takes `w` as a float array (BLAS; the f16 GEMV for few rows of a float16
one), as `float_gemm.Panels` (the AVX-512 float GEMM, exact f16 or f32 weights, any number of
rows) or as a `QTensor` (fused Numba kernels over the repacked layout). Model code calls only
this module, so quantization stays a property of the weight (STYLE R6): the same Whisper
forward runs f32, f16 or any GGML type.

Dispatch for a QTensor (M = number of activation rows):
* M <= GEMV_MAX_ROWS (decoding): `quant_kernels.gemv_kernel`, reading the quantized weight once,
  with the activations rounded per 32-block to int16 (`quant_kernels.round_x16`, 2^-16 of the
  block's largest value; the result is the reference on those activations up to float32
  rounding). Weights of at most GEMV_SERIAL_MAX_WEIGHTS take its single-thread twin
  `gemv_serial_kernel` (same bits). Float16 weights (`_linear_f16`) keep float32 activations.
* larger M (encoders), on CPUs with AVX-512 VNNI: `int8_gemm.gemm`, the activations quantized
  per 32-block to int8 (as ggml does) and multiplied in int8 -> int32; the only difference from
  the reference is that activation rounding (~5e-3 relative RMS). NPASR_INT8_GEMM=0 turns it off.
* the exception: a 4-bit weight (Q4_0, Q4_1, Q4_K) of at least INT8_GEMV_MIN_WEIGHTS takes
  `int8_gemm.gemm` for few rows too. That choice predates the GEMV's int16 form: the float GEMV
  widened every nibble to float32 and was compute bound on Zen 4 (double-pumped AVX-512), 4096 x
  4096 at 0.37-0.48x NumPy's f32 GEMV (target 0.35x) where the int8 path is 0.26-0.32x
  (bench/kernels.py, 2 threads). The int16 GEMV on those weights measured the same as the int8
  path (0.26-0.39x, 3 runs each), so the route stayed. The int8 rounding is far below the 4-bit
  weight error. Below the size the int8 path's fixed cost (~0.1 ms: quantizing x, waking the
  workers) loses.
* larger M elsewhere: dequantize TILE_BYTES of weight rows at a time into a reused f32 buffer
  and multiply with BLAS, which is compute bound there; the tile dequantize is the Numba kernel.
* a type with no kernel layout (Q6_K): the same tile loop with the NumPy dequantize, announced
  once per type with `warnings.warn`.

`softmax`, `gelu`, `silu`, `glu`, `layer_norm` and `depthwise_conv1d_tc` run
`npasr.nn.kernels` on float32 input of at least KERNEL_MIN_SIZE elements and `npasr.nn.ref`
otherwise. NPASR_BACKEND=numpy (read at every call) forces the reference for these ops;
quantized weights always need the Numba kernels.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable

import numpy as np

from npasr.io.gguf import GGMLType
from npasr.nn import float_gemm, int8_gemm, kernels, ref
from npasr.nn import quant_kernels as qk
from npasr.nn.quant import Packed, QTensor, quantize
from npasr.types import F32

GEMV_MAX_ROWS = 8  # decoder batch (beams); above this the tile + BLAS path wins
# 4-bit weights this large run the int8 GEMM for few rows too (module docstring). Zen 4, 2
# threads, 1 row, ms float GEMV (before its int16 form) / int8: Q4_0 1536x384 0.08 / 0.12,
# 2048x512 0.12 / 0.13, 4096x1024 0.17 / 0.12, 51865x512 0.98 / 0.32.
INT8_GEMV_MIN_WEIGHTS = 1 << 21
# A GEMV over at most this many weights (twice for two or more rows) runs on the calling thread:
# waking the sleeping workers (OMP_WAIT_POLICY=PASSIVE, see npasr/__init__.py) costs ~50 us on
# this VM, more than the whole product of a 512 x 512 matrix (Zen 4, Q8_0, 1 row: 20 us on one
# thread, 65 us on two).
GEMV_SERIAL_MAX_WEIGHTS = 1 << 20
# Decoder attention over at least this many key values (groups x keys x head width) spreads the
# heads over the threads: Whisper's cross-attention (6-8 heads x 1500 x 64) yes, its
# self-attention over a few hundred cached tokens no.
ATTENTION_PARALLEL_MIN = 1 << 18
# The same for `attention_split` (beams over a shared prompt), whose heads are few and each
# does more: base, beam 5, 204-token prompt, decoding-step self-attention of 6 layers 2.4 ms
# serial (Zen 4, 2 threads, the keys not in cache) vs 1.6 ms spread over the threads.
ATTENTION_SPLIT_PARALLEL_MIN = 1 << 15
INT8_GEMV_TYPES = frozenset({GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q4_K})
TILE_BYTES = 4 << 20  # f32 weight tile for the GEMM path: 4 MiB fits the 32 MiB L3 with room
# Below this many elements softmax/gelu/layer_norm use the NumPy reference. On one thread the
# kernels win from one 512-wide row up (layer_norm (1, 512): 1.3 us vs 11 us), but a parallel
# kernel wakes every Numba worker, and on a loaded 2-core machine that hand-off alone took
# 4-5 ms (layer_norm (1, 512), 2 threads, loadavg 2.5). Decoder-sized calls stay in NumPy.
KERNEL_MIN_SIZE = 1 << 15

_warned: set[str] = set()  # qtype names whose fallback was announced
_EMPTY = np.empty(0, np.float32)
_NO_WEIGHT = _EMPTY.view()  # an absent weight argument (no offset, no bias), read-only as all
_NO_WEIGHT.flags.writeable = False


def _const(a: np.ndarray) -> np.ndarray:
    """`a` contiguous and read-only (a view, or a copy where it was strided): the form in which
    every weight reaches a kernel. Weights mapped from a model file are read-only and those the
    loader built are not, and Numba compiles a kernel once for each; so each compiles once."""
    v = np.ascontiguousarray(a).view()
    v.flags.writeable = False
    return v


def _warn_fallback(w: QTensor) -> None:
    if w.qtype.name not in _warned:
        _warned.add(w.qtype.name)
        warnings.warn(
            f"no fused kernel for {w.qtype.name}; linear() falls back to dequantize + BLAS "
            "(correct, slower)",
            stacklevel=4,  # the caller of linear()
        )


def _flat(a: np.ndarray | None) -> np.ndarray:
    """A weight array, flat and read-only (`_const`); _NO_WEIGHT for none."""
    return _NO_WEIGHT if a is None else _const(a).reshape(-1)


def _gemv(x: F32, p: Packed, n_out: int, serial: bool | None = None) -> F32:
    """x (M, K) -> (M, N) with the fused kernel for the layout; on this thread alone if `serial`
    (None: by GEMV_SERIAL_MAX_WEIGHTS)."""
    m, k = x.shape
    out = np.empty((m, n_out), np.float32)
    if serial is None:
        serial = n_out * k * min(m, 2) <= GEMV_SERIAL_MAX_WEIGHTS
    kernel = qk.gemv_serial_kernel if serial else qk.gemv_kernel
    qs = _flat(p.qs).view(np.uint8)  # bytes for every kind: one compiled kernel signature
    kernel(out, x.reshape(-1), qs, _flat(p.scale), _flat(p.offset), m, k, qk.KIND_CODE[p.kind])
    return out


def linear_packed(x: F32, p: Packed) -> F32:
    """x (..., K) @ w.T for a weight held only in the GEMV layout (`Packed`, e.g. made at load
    by `int8_gemm.quantize_q8_0`): the fused GEMV for any number of rows (MAX_ROWS per pass)."""
    n_out, k = p.qs.shape[0], x.shape[-1]
    if p.scale.shape != (n_out, k // qk.QB):
        raise ValueError(f"linear_packed: x {x.shape} does not match weight rows of width {k}")
    x2 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, k)
    return _gemv(x2, p, n_out).reshape(*x.shape[:-1], n_out)


def _linear_f16(x: F32, w: np.ndarray) -> F32:
    """x (M, K) @ w.T for a float16 weight (N, K) kept in float16 (half the bytes of f32).

    Few rows: the fused GEMV over the half values (kind "f16", widened exactly, as
    `w.astype(np.float32)`); more rows: the tile loop of `_tiled`.
    """
    n_out, k = w.shape
    if x.shape[0] <= GEMV_MAX_ROWS and k % qk.QB == 0:
        return _gemv(x, _f16_packed(w), n_out)

    def fill(wt: F32, r0: int, r1: int) -> None:
        wt[:] = w[r0:r1].reshape(-1)

    return _tiled(x, n_out, fill)


def _f16_packed(w: np.ndarray) -> Packed:
    """A float16 (N, K) weight as the GEMV's "f16" layout (a view: no scale, no offset)."""
    return Packed("f16", np.ascontiguousarray(w).reshape(-1).view(np.uint16), _EMPTY, None)


def _gemm(x: F32, w: QTensor, p: Packed | None) -> F32:
    """x (M, K) -> (M, N) for a QTensor: the tile loop of `_tiled`, each tile dequantized by the
    Numba kernel of the layout (or by NumPy for a type without one)."""
    k = x.shape[1]
    if p is None:

        def fill(wt: F32, r0: int, r1: int) -> None:
            wt[:] = w.dequantize_rows(r0, r1).reshape(-1)

    else:
        qs, scale, offset = _flat(p.qs), _flat(p.scale), _flat(p.offset)
        kernel = qk.dequant_i8_kernel if p.kind == "i8" else qk.dequant_u4_kernel

        def fill(wt: F32, r0: int, r1: int) -> None:
            kernel(wt, qs, scale, offset, r0, k)

    return _tiled(x, w.blocks.shape[0], fill)


def _tiled(x: F32, n_out: int, fill: Callable[[F32, int, int], None]) -> F32:
    """x (M, K) -> (M, N): `fill(buf, r0, r1)` writes weight rows r0:r1 as float32 into a reused
    buffer of TILE_BYTES, which BLAS then multiplies (compute bound at encoder sizes)."""
    k = x.shape[1]
    tile = max(qk.ROW_CHUNK, min(n_out, TILE_BYTES // (4 * k)))
    out = np.empty((x.shape[0], n_out), np.float32)
    buf = np.empty(tile * k, np.float32)
    for r0 in range(0, n_out, tile):
        r1 = min(n_out, r0 + tile)
        wt = buf[: (r1 - r0) * k]
        fill(wt, r0, r1)
        np.matmul(x, wt.reshape(r1 - r0, k).T, out=out[:, r0:r1])
    return out


def linear(x: F32, w: F32 | QTensor | float_gemm.Panels, b: F32 | None = None) -> F32:
    """x (..., Din) @ w (Dout, Din)^T + b (Dout,) -> (..., Dout); torch.nn.Linear layout.

    `w` may be a float array, `float_gemm.Panels` or a 2-D `QTensor`; the result equals
    `ref.linear(x, w.dequantize(), b)` up to float32 summation order.
    """
    half = isinstance(w, np.ndarray) and w.dtype == np.float16
    if not (half or isinstance(w, (QTensor, float_gemm.Panels))):
        if x.ndim > 2 and x.flags.c_contiguous:
            # one 2-D product: NumPy runs (B, T, K) @ (K, N) as a BLAS call per leading index,
            # each handed between the threads (Qwen3-ASR's conv stem: 256 calls a batch)
            y = (x.reshape(-1, x.shape[-1]) @ w.T).reshape(*x.shape[:-1], w.shape[0])
        else:
            y = x @ w.T
    else:
        if len(w.shape) != 2 or x.shape[-1] != w.shape[1]:
            raise ValueError(f"linear: x {x.shape} does not match weight {w.shape} (Dout, Din)")
        x2 = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, w.shape[1])  # (M, K)
        if isinstance(w, float_gemm.Panels):
            y = float_gemm.gemm(x2, w)
        else:
            y = _linear_f16(x2, w) if half else _linear_q(x2, w)  # type: ignore[arg-type]
        y = y.reshape(*x.shape[:-1], w.shape[0])
    if b is not None:
        y += b
    return y


def prepare_gemm(w: QTensor) -> None:
    """Build now the layout `linear` multiplies many rows of w from (the int8 GEMM's panels,
    else the tile loop's `Packed`), which it would otherwise build on its first call."""
    if not (int8_gemm.available() and int8_gemm.gemm_pack(w) is not None):
        w.repack()


def _linear_q(x: F32, w: QTensor) -> F32:
    """x (M, K) @ w.T for a QTensor, by the dispatch in the module docstring."""
    # int8 GEMM first for many rows or a large 4-bit weight: it keeps its own layout (None: no
    # VNNI or no layout)
    int8 = x.shape[0] > GEMV_MAX_ROWS or (
        w.qtype in INT8_GEMV_TYPES and math.prod(w.shape) >= INT8_GEMV_MIN_WEIGHTS
    )
    y = int8_gemm.gemm(x, w) if int8 else None
    if y is not None:
        return y
    p = w.repack()
    if p is None:
        _warn_fallback(w)
    elif x.shape[0] <= GEMV_MAX_ROWS:
        return _gemv(x, p, w.shape[0])
    return _gemm(x, w, p)


# --- row and element-wise ops ----------------------------------------------------------------


def _numba_backend() -> bool:
    return os.environ.get("NPASR_BACKEND", "numba") != "numpy"


def _use_kernel(x: np.ndarray) -> bool:
    """Parallel kernel: float32 input of at least KERNEL_MIN_SIZE elements."""
    return x.dtype == np.float32 and x.ndim >= 1 and x.size >= KERNEL_MIN_SIZE and _numba_backend()


def _use_serial_kernel(x: np.ndarray) -> bool:
    """Serial kernel: smaller float32 input (decoder rows), no hand-off to the worker pool."""
    return x.dtype == np.float32 and x.ndim >= 1 and x.size > 0 and _numba_backend()


def _rows(x: F32) -> F32:
    """(..., C) -> contiguous (R, C) view or copy."""
    return np.ascontiguousarray(x).reshape(-1, x.shape[-1])


# (swapaxes rather than np.moveaxis / np.split: these run ~20 times per Whisper decoding step,
# where moveaxis's 2.3 us and split's 4 us per call were a measurable share of a 5 ms step)


def split_heads(x: F32, n_head: int) -> F32:
    """(..., T, D) -> (..., H, T, Dh), a view."""
    *lead, t, d = x.shape
    return x.reshape(*lead, t, n_head, d // n_head).swapaxes(-2, -3)


def merge_heads(x: F32) -> F32:
    """(..., H, T, Dh) -> (..., T, D), contiguous."""
    x = np.ascontiguousarray(x.swapaxes(-3, -2))
    return x.reshape(*x.shape[:-2], -1)


def transpose(x: F32) -> F32:
    """x (..., R, C) -> contiguous (..., C, R), as `np.ascontiguousarray(np.swapaxes(x, -1, -2))`
    (`kernels.transpose_kernel` on float32 input of at least KERNEL_MIN_SIZE elements)."""
    if not (_use_kernel(x) and x.ndim >= 2):
        return np.ascontiguousarray(np.swapaxes(x, -1, -2))
    r, c = x.shape[-2:]
    src = np.ascontiguousarray(x).reshape(-1, r, c)
    out = np.empty((src.shape[0], c, r), np.float32)
    for i in range(src.shape[0]):
        kernels.transpose_kernel(out[i], src[i])
    return out.reshape(*x.shape[:-2], c, r)


def top_k(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values of the 1-D x, largest first, ties in index order, as
    `ref.top_k` (`kernels.top_k_kernel` on float input; serial)."""
    if not (_numba_backend() and x.ndim == 1 and x.dtype in (np.float32, np.float64)):
        return ref.top_k(x, k)
    out = np.empty(max(0, min(k, x.shape[0])), np.int64)
    kernels.top_k_kernel(out, x)
    return out


def softmax(x: F32, axis: int = -1) -> F32:
    """Softmax over `axis`, as `ref.softmax`; the kernel handles the last axis."""
    if not _use_kernel(x) or axis not in (-1, x.ndim - 1):
        return ref.softmax(x, axis=axis)
    out = np.empty(x.shape, np.float32)
    kernels.softmax_kernel(out.reshape(-1, x.shape[-1]), _rows(x))
    return out


def gelu(x: F32) -> F32:
    """Exact (erf) GELU, as `ref.gelu`."""
    if _use_kernel(x):
        kernel = kernels.gelu_kernel
    elif _use_serial_kernel(x):
        kernel = kernels.gelu_serial_kernel
    else:
        return ref.gelu(x)
    out = np.empty(x.shape, np.float32)
    kernel(out.reshape(-1, x.shape[-1]), _rows(x))
    return out


def silu(x: F32) -> F32:
    """x * sigmoid(x), as `ref.silu`."""
    if not _use_kernel(x):
        return ref.silu(x)
    out = np.empty(x.shape, np.float32)
    kernels.silu_kernel(out.reshape(-1, x.shape[-1]), _rows(x))
    return out


def glu(x: F32) -> F32:
    """Gated linear unit over the last axis (first half * sigmoid(second half)), as
    `ref.glu(x, axis=-1)`."""
    if not _use_kernel(x) or x.shape[-1] % 2:
        return ref.glu(x, axis=-1)
    out = np.empty((*x.shape[:-1], x.shape[-1] // 2), np.float32)
    kernels.glu_kernel(out.reshape(-1, out.shape[-1]), _rows(x))
    return out


def depthwise_conv1d_tc(x: F32, w: F32, b: F32 | None, padding: int = 0) -> F32:
    """Depthwise Conv1d on time-major x (T, C) with w (C, 1, K) -> (Tout, C); equals
    `ref.depthwise_conv1d(x.T, w, b, padding).T` (which takes channels first)."""
    if not _use_kernel(x) or w.dtype != np.float32 or x.ndim != 2:
        return np.ascontiguousarray(ref.depthwise_conv1d(x.T, w, b, padding).T)
    n_out = x.shape[0] + 2 * padding - w.shape[-1] + 1
    if n_out <= 0:
        raise ValueError(f"depthwise conv: {x.shape[0]} frames are fewer than the kernel")
    out = np.empty((n_out, x.shape[1]), np.float32)
    wt = _const(w[:, 0, :].T)  # (K, C)
    kernels.depthwise_conv_tc_kernel(
        out, np.ascontiguousarray(x), wt, _flat(b), padding
    )
    return out


def rms_norm(x: F32, g: F32, eps: float = 1e-6) -> F32:
    """RMSNorm over the last axis with weight g (D,), as `ref.rms_norm` (any leading shape: a
    (T, heads, Dh) query is normalised per head)."""
    d = x.shape[-1] if x.ndim else 0
    if g.shape != (d,) or g.dtype != np.float32:
        return ref.rms_norm(x, g, eps)
    if _use_kernel(x):
        kernel = kernels.rms_norm_kernel
    elif _use_serial_kernel(x):
        kernel = kernels.rms_norm_serial_kernel
    else:
        return ref.rms_norm(x, g, eps)
    out = np.empty(x.shape, np.float32)
    kernel(out.reshape(-1, d), _rows(x), _const(g), eps)
    return out


def layer_norm(x: F32, g: F32, b: F32, eps: float = 1e-5) -> F32:
    """LayerNorm over the last axis with weight g and bias b (D,), as `ref.layer_norm`."""
    d = x.shape[-1] if x.ndim else 0
    if any(a.shape != (d,) or a.dtype != np.float32 for a in (g, b)):
        return ref.layer_norm(x, g, b, eps)  # (also broadcasting g, b, which the kernel does not)
    if _use_kernel(x):
        kernel = kernels.layer_norm_kernel
    elif _use_serial_kernel(x):
        kernel = kernels.layer_norm_serial_kernel
    else:
        return ref.layer_norm(x, g, b, eps)
    out = np.empty(x.shape, np.float32)
    kernel(
        out.reshape(-1, x.shape[-1]),
        _rows(x),
        _const(g),
        _const(b),
        eps,
    )
    return out


def attention(q: F32, k: F32, v: F32, mask: F32 | None = None, length: int | None = None) -> F32:
    """Scaled dot-product attention, as `ref.attention`, over the first `length` keys (all if
    None; a preallocated cache can so be passed whole).

    Up to GEMV_MAX_ROWS query rows (decoding) with a 2-D mask or none: the serial
    `kernels.attention_kernel`, which reads keys and values transposed: pass k and v as
    (..., T, Dh) views of contiguous (..., Dh, T) arrays to avoid a copy. More rows, at least
    KERNEL_MIN_SIZE scores, one key set per query group and a (Tq, Tk) mask or none, on an
    AVX-512 CPU: `float_gemm.attention`, fused (the scores never leave the cache; Whisper base's
    encoder layer 60 -> 31 ms on Zen 4). Otherwise BLAS matmuls around the softmax kernel.
    """
    *lead, n_q, dh = q.shape
    n_k = k.shape[-2] if length is None else length
    if not 0 < n_k <= k.shape[-2]:
        raise ValueError(f"attention: length {length} outside 1..{k.shape[-2]}")
    shared = len(lead) - (k.ndim - 2)  # leading query axes that k and v broadcast over (beams)
    if (
        _numba_backend()
        and shared >= 0
        and n_q * math.prod(lead[:shared]) <= GEMV_MAX_ROWS
        and all(a.dtype == np.float32 for a in (q, k, v))
        and k.shape == v.shape
        and tuple(k.shape[:-2]) == tuple(lead[shared:])
        and k.shape[-1] == dh
        and (mask is None or (shared == 0 and mask.shape == (n_q, n_k)))
    ):
        # (E..., L..., Tq, Dh) -> (L, E * Tq, Dh): every query row of a group meets the same keys
        n_e = math.prod(lead[:shared])
        moved = shared and n_e > 1  # a single beam (E of size 1) needs only a reshape
        qg = np.moveaxis(q, range(shared), range(-2 - shared, -2)) if moved else q
        qg = qg.reshape(-1, n_e * n_q, dh)
        out = np.empty(qg.shape, np.float32)
        t_all = k.shape[-2]
        parallel = qg.shape[0] > 1 and qg.shape[0] * n_k * dh >= ATTENTION_PARALLEL_MIN
        (kernels.attention_parallel_kernel if parallel else kernels.attention_kernel)(
            out,
            np.ascontiguousarray(qg),
            np.ascontiguousarray(np.swapaxes(k, -1, -2).reshape(-1, dh, t_all)),  # no-op if T-major
            np.ascontiguousarray(np.swapaxes(v, -1, -2).reshape(-1, dh, t_all)),
            _EMPTY.reshape(0, 0) if mask is None else np.asarray(mask, np.float32),
            n_k,
        )
        if not moved:
            return out.reshape(q.shape)
        out = out.reshape(*lead[shared:], *lead[:shared], n_q, dh)
        return np.moveaxis(out, range(-2 - shared, -2), range(shared))
    shape = (*np.broadcast_shapes(q.shape[:-2], k.shape[:-2]), n_q, n_k)  # of the scores
    big = math.prod(shape) >= KERNEL_MIN_SIZE
    if (
        big
        and _numba_backend()
        and float_gemm.available()
        and all(a.dtype == np.float32 for a in (q, k, v))
        and tuple(q.shape[:-2]) == tuple(k.shape[:-2])
        and k.shape == v.shape
        and k.shape[-1] == dh
        and (mask is None or mask.shape == (n_q, n_k))
    ):
        g = math.prod(lead)
        out = float_gemm.attention(
            q.reshape(g, n_q, dh), k.reshape(g, -1, dh), v.reshape(g, -1, dh), mask, n_k
        )
        return out.reshape(q.shape)
    if n_k < k.shape[-2]:
        k, v = k[..., :n_k, :], v[..., :n_k, :]
    scale = np.float32(q.shape[-1] ** -0.5)
    qs, kt = q * scale, np.swapaxes(k, -1, -2)
    if _numba_backend() and big and q.dtype == k.dtype == np.float32:
        # scores into a reused buffer, softmax in place: a fresh (H, Tq, Tk) array costs more in
        # page faults than the product itself (Whisper base encoder layer: 30 vs 13 ms)
        # in blocks of query rows, so the buffer stays near SCORES_BLOCK_BYTES (Whisper's encoder
        # would otherwise hold (H, 1500, 1500) scores: 54 MB for tiny, 72 MB for base)
        rows = max(1, SCORES_BLOCK_BYTES // (4 * math.prod(shape[:-2]) * n_k))
        if rows >= n_q:
            s = _scores_buffer(shape)
            np.matmul(qs, kt, out=s)
            if mask is not None:
                s += mask
            kernels.softmax_inplace_kernel(s.reshape(-1, n_k))
            return s @ v
        out = np.empty((*shape[:-1], v.shape[-1]), np.float32)
        row_mask = mask is not None and mask.ndim >= 2 and mask.shape[-2] == n_q
        for r0 in range(0, n_q, rows):
            r1 = min(n_q, r0 + rows)
            s = _scores_buffer((*shape[:-2], r1 - r0, n_k))
            np.matmul(qs[..., r0:r1, :], kt, out=s)
            if mask is not None:
                s += mask[..., r0:r1, :] if row_mask else mask
            kernels.softmax_inplace_kernel(s.reshape(-1, n_k))
            np.matmul(s, v, out=out[..., r0:r1, :])
        return out
    s = qs @ kt
    if mask is not None:
        s += mask
    return softmax(s) @ v


KeysValues = float_gemm.KeyPanels | tuple[F32, F32]  # what `pack_keys` returns


def pack_keys(k: F32, v: F32, half: bool = False) -> KeysValues:
    """Keys and values (H, T, Dh), any strides, that many later queries attend over (a
    decoder's cross-attention over one audio window), in the form `attention_keys` reads fastest.

    On AVX-512 CPUs (float32 input, numba backend): `float_gemm.KeyPanels`, packed once here, so
    that each query pass runs the fused micro-kernel, and with half=True stored as float16 (the
    result is then the f32 attention over the rounded keys and values). Whisper base's
    cross-attention of one layer, keys not in cache (bench/kernels.py --decoding-attention, Zen 4),
    ms against the transposed arrays below: 5 beams 0.56-0.58 -> 0.37-0.39 (f32), 0.27-0.29
    (f16); one row 0.30-0.35 -> 0.32, 0.20-0.23. Elsewhere the float32 pair
    itself, stored transposed ((H, T, Dh) views of contiguous (H, Dh, T) arrays), the layout
    `attention`'s decoding kernel reads without a copy."""
    if k.ndim != 3 or k.shape != v.shape or k.shape[1] == 0:
        raise ValueError(f"pack_keys: k {k.shape} and v {v.shape} must be (H, T > 0, Dh) alike")
    if _numba_backend() and float_gemm.available() and k.dtype == v.dtype == np.float32:
        return float_gemm.pack_keys(k, v, half)
    return tuple(np.swapaxes(transpose(a), -1, -2) for a in (k, v))  # type: ignore[return-value]


def attention_keys(q: F32, kv: KeysValues) -> F32:
    """`attention(q, k, v)` over the keys and values given to `pack_keys`: q (E..., H, Tq, Dh),
    any leading (beam) axes E sharing the keys. Packed keys run the fused kernel whatever
    NPASR_BACKEND says now (the choice was made when they were packed)."""
    if not isinstance(kv, float_gemm.KeyPanels):
        return attention(q, *kv)
    *lead, n_q, dh = q.shape
    n_h = kv.kp.shape[0]
    if not lead or lead[-1] != n_h:
        raise ValueError(f"attention_keys: q {q.shape} does not have the keys' {n_h} heads")
    n_e = math.prod(lead[:-1])
    if n_e == 1:  # greedy decoding: the heads are the groups already
        return float_gemm.attention_packed(q.reshape(n_h, n_q, dh), kv).reshape(q.shape)
    qh = np.moveaxis(q.reshape(n_e, n_h, n_q, dh), 1, 0).reshape(n_h, n_e * n_q, dh)
    out = float_gemm.attention_packed(qh, kv)  # (H, E * Tq, Dh)
    return np.moveaxis(out.reshape(n_h, n_e, n_q, dh), 0, 1).reshape(q.shape)


def attention_split(
    q: F32,
    k_a: F32,
    v_a: F32,
    n_a: int,
    k_b: F32,
    v_b: F32,
    n_b: int,
    mask: F32 | None = None,
) -> F32:
    """Attention of q (E, H, U, Dh) over keys held in two sets: the first n_a of k_a, v_a
    (H, T_a, Dh), which all E sequences share (a beam search's common prompt), then the first
    n_b of k_b, v_b (E, H, T_b, Dh), each sequence's own. mask (U, n_a + n_b) or None. Equals
    `ref.attention(q, [k_a; k_b], [v_a; v_b], mask)` on the keys concatenated per sequence.

    The kernel (`kernels.attention_split_kernel`) reads the shared keys once per head for every
    query row, as if all sequences were one; pass the keys as (..., T, Dh) views of contiguous
    (..., Dh, T) arrays (a KV cache) to avoid a copy. NPASR_BACKEND=numpy: the concatenation."""
    n_e, n_h, n_u, dh = q.shape
    if not (
        0 <= n_a <= k_a.shape[-2]
        and 0 <= n_b <= k_b.shape[-2]
        and n_a + n_b > 0
        and k_a.shape == v_a.shape == (n_h, k_a.shape[1], dh)
        and k_b.shape == v_b.shape == (n_e, n_h, k_b.shape[2], dh)
        and (mask is None or mask.shape == (n_u, n_a + n_b))
    ):
        raise ValueError(
            f"attention_split: q {q.shape}, shared keys {k_a.shape} (first {n_a}), own keys "
            f"{k_b.shape} (first {n_b}), mask {None if mask is None else mask.shape}"
        )
    if not (_numba_backend() and all(a.dtype == np.float32 for a in (q, k_a, v_a, k_b, v_b))):
        keys, values = (
            np.concatenate([np.broadcast_to(a[:, :n_a], (n_e, n_h, n_a, dh)), b[..., :n_b, :]], -2)
            for a, b in ((k_a, k_b), (v_a, v_b))
        )
        return ref.attention(q, keys, values, mask).astype(np.float32, copy=False)
    qh = np.ascontiguousarray(np.moveaxis(q, 1, 0).reshape(n_h, n_e * n_u, dh))
    out = np.empty_like(qh)
    parallel = n_h > 1 and n_h * (n_a + n_e * n_b) * dh >= ATTENTION_SPLIT_PARALLEL_MIN
    kernel = kernels.attention_split_parallel_kernel if parallel else kernels.attention_split_kernel
    kernel(
        out,
        qh,
        np.ascontiguousarray(np.swapaxes(k_a, -1, -2)),  # no-op if T-major
        np.ascontiguousarray(np.swapaxes(v_a, -1, -2)),
        n_a,
        np.ascontiguousarray(np.swapaxes(k_b, -1, -2)),
        np.ascontiguousarray(np.swapaxes(v_b, -1, -2)),
        n_b,
        _EMPTY.reshape(0, 0) if mask is None else np.asarray(mask, np.float32),
    )
    return np.moveaxis(out.reshape(n_h, n_e, n_u, dh), 0, 1)


SCORES_BUFFER_MAX_BYTES = 1 << 28  # larger score arrays are allocated per call
SCORES_BLOCK_BYTES = 1 << 23  # attention scores are computed in query blocks of about this size
_scratch = threading.local()


def _scores_buffer(shape: tuple[int, ...]) -> F32:
    """A float32 array of `shape` over this thread's scratch buffer, grown on demand and reused by
    later calls (so never returned to callers); beyond SCORES_BUFFER_MAX_BYTES a fresh array."""
    n = math.prod(shape)
    if 4 * n > SCORES_BUFFER_MAX_BYTES:
        return np.empty(shape, np.float32)
    buf = getattr(_scratch, "scores", None)
    if buf is None or buf.size < n:
        buf = _scratch.scores = np.empty(n, np.float32)
    return buf[:n].reshape(shape)


def _warm_quantized() -> None:
    """Quantized weights: encoder tiles (int8 GEMM or dequantize + BLAS) of every kernel type."""
    rng = np.random.default_rng(0)
    for qtype in (GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_K):
        w = quantize(rng.standard_normal((16, 256)).astype(np.float32), qtype)
        linear(rng.standard_normal((GEMV_MAX_ROWS + 1, 256)).astype(np.float32), w)


def _gemv_packs() -> list[Packed]:
    rng = np.random.default_rng(0)
    packs = [_f16_packed(rng.standard_normal((16, 256)).astype(np.float16))]
    for qtype in (GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_K):
        p = quantize(rng.standard_normal((16, 256)).astype(np.float32), qtype).repack()
        assert p is not None
        packs.append(p)
    return packs


def _warm_gemv(serial: bool) -> None:
    """The fused GEMV on every layout kind (one signature: the weight read as bytes)."""
    x1 = np.ones((1, 256), np.float32)
    for p in _gemv_packs():
        _gemv(x1, p, 16, serial)


def _warm_rows() -> None:
    """Row and element-wise kernels (softmax, GELU, layer norm, SiLU, GLU, Conformer conv,
    transpose, top-k) and the f16 weight paths."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    out = np.empty_like(x)
    kernels.softmax_kernel(out, x)
    kernels.gelu_kernel(out, x)
    g, b = _const(x[0]), _const(x[1])  # weights as `layer_norm` passes them
    kernels.layer_norm_kernel(out, x, g, b, 1e-5)
    kernels.gelu_serial_kernel(out, x)
    kernels.layer_norm_serial_kernel(out, x, g, b, 1e-5)
    kernels.softmax_inplace_kernel(x.copy())
    kernels.silu_kernel(out, x)
    kernels.glu_kernel(out[:, :32], x)
    kernels.depthwise_conv_tc_kernel(out, x, _const(x[:3]), g, 1)  # Conformer conv, as ops'
    kernels.transpose_kernel(np.empty((64, 4), np.float32), x)
    top_k(x[0], 2)  # beam search
    w16 = rng.standard_normal((16, 64)).astype(np.float16)
    linear(rng.standard_normal((GEMV_MAX_ROWS + 1, 64)).astype(np.float32), w16)


def _warm_attention() -> None:
    """The attention kernels over transposed keys (decoders; encoders without AVX-512)."""
    q3 = np.random.default_rng(0).standard_normal((2, 2, 64)).astype(np.float32)
    attention(q3, q3, q3)
    attention(q3, q3, q3, np.zeros((2, 2), np.float32))
    kernels.attention_parallel_kernel(
        np.empty_like(q3), q3, q3.transpose(0, 2, 1).copy(), q3.transpose(0, 2, 1).copy(),
        _EMPTY.reshape(0, 0), 2)  # fmt: skip


def _warm_attention_split() -> None:
    """Beam search over a prompt the beams share (H, T, Dh): both split-attention kernels."""
    q3 = np.random.default_rng(0).standard_normal((2, 2, 64)).astype(np.float32)
    own = q3[:, :, None]  # (E, H, 1, Dh)
    attention_split(own, q3, q3, 2, own, own, 1)
    kernels.attention_split_parallel_kernel(
        np.empty_like(q3), q3, *(q3.transpose(0, 2, 1).copy(),) * 2, 2,
        *(own.transpose(0, 1, 3, 2).copy(),) * 2, 1, _EMPTY.reshape(0, 0))  # fmt: skip


def _warm_float_gemm() -> None:
    """The AVX-512 float GEMM on f16 and f32 panels (f16 / f32 encoder matrices)."""
    if not float_gemm.available():
        return
    rng = np.random.default_rng(0)
    w16 = rng.standard_normal((16, 64)).astype(np.float16)
    for w in (w16, w16.astype(np.float32)):
        linear(rng.standard_normal((4, 64)).astype(np.float32), float_gemm.pack(w))


def _warm_float_attention() -> None:
    """The fused attention on the float GEMM's micro-kernel: encoders (contiguous and strided
    keys) and a quantized decoder's f16 cross-attention keys."""
    if not float_gemm.available():
        return
    q3 = np.random.default_rng(0).standard_normal((2, 2, 64)).astype(np.float32)
    kt = q3.transpose(0, 2, 1).copy().transpose(0, 2, 1)  # strided keys, as models pass
    float_gemm.attention(q3, q3, q3)
    float_gemm.attention(q3, kt, kt, np.zeros((2, 2), np.float32))
    attention_keys(q3, pack_keys(kt, kt, half=True))


def _warm_audio() -> None:
    from npasr.audio.resample import resample_poly  # noqa: PLC0415

    resample_poly(np.ones(64, np.float32), 44100, 16000)  # audio files at other rates


def _warm_gemv_parallel() -> None:
    _warm_gemv(serial=False)


def _warm_gemv_serial() -> None:
    _warm_gemv(serial=True)


# `warmup`'s compile work in independent parts, the longest first (seconds each from an empty
# cache on Zen 4, measured one part per process: 7.1, 6.8, 6.1, 4.8, 4.2, 2.4, 2.1, 1.7, 0.8), so
# that workers taking them in this order finish close together
WARM_TASKS: tuple[Callable[[], None], ...] = (
    _warm_float_attention,
    _warm_attention_split,
    _warm_rows,
    _warm_attention,
    _warm_gemv_parallel,
    _warm_gemv_serial,
    _warm_quantized,
    _warm_float_gemm,
    _warm_audio,
)


# More compiling processes than this gain little: four already finish the ~36 s of parts in ~9 s,
# close to the longest part (7 s), and each process peaks at ~250 MB (Numba, LLVM, NumPy).
WARM_MAX_WORKERS = 4


def _warm_task(i: int) -> None:
    """Run WARM_TASKS[i] (in a worker process of `warmup`: it fills the on-disk cache)."""
    WARM_TASKS[i]()


def compile_in_processes(tasks: list[int], workers: int) -> None:
    """Run WARM_TASKS[i] for each i in `tasks`, in that order, on `workers` fresh processes at
    once: Numba compiles on one thread, so this is how more CPUs shorten it. The kernels land
    in Numba's on-disk cache, for this and every later process to load; a task's error is
    raised here."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max(1, workers), mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(_warm_task, tasks))


def warmup(workers: int = 1) -> float:
    """Compile (or load from Numba's on-disk cache) every kernel, on tiny inputs; returns seconds.

    `npasr warmup` calls this once after installation so that the first transcription does not
    pay for compilation. workers > 1: the parts of WARM_TASKS are first compiled by that many
    fresh processes at once (`compile_in_processes`), then this process loads them all from the
    cache (~0.6 s). workers = 1, or where worker processes fail to start or die (a warning
    says so): everything is compiled here, one kernel after another. A compile error in a
    worker is raised.
    """
    import time
    from concurrent.futures.process import BrokenProcessPool

    t0 = time.perf_counter()
    if workers > 1:
        try:
            compile_in_processes(list(range(len(WARM_TASKS))), min(workers, WARM_MAX_WORKERS))
        except (BrokenProcessPool, OSError) as e:  # no processes here (killed, not allowed)
            warnings.warn(f"npasr: compiling in parallel processes failed ({e!r}); compiling "
                          "the kernels in this process instead", stacklevel=2)  # fmt: skip
    for task in WARM_TASKS:
        task()
    return time.perf_counter() - t0
