"""float32 GEMM with AVX-512 for `linear` on float weights held as f32 or exact f16 (`Panels`),
and the fused attention built on its micro-kernel.

Why. NumPy's OpenBLAS picks its "Haswell" (AVX2, 8 lanes) kernels on AMD Zen 4/5, and torch's
MKL does the same, so neither uses the 16-lane FMA units these CPUs have. This kernel does, and
it reads float16 weights without widening them in memory first: an F16 model keeps half the
bytes and computes exactly what f32 weights `w.astype(np.float32)` would.

Contract: out (M, N) = x (M, K) f32 @ w (N, K).T with every product and sum in f32 (fused
multiply-adds in k order per output); `gemm_ref` is the NumPy statement of it (float64 sums of
the widened weight, then one rounding). The result differs from it only by f32 summation error.

Layout (`Panels`, built once by `pack`): the weight in panels of NR = 32 output columns, per
panel K rows of NR contiguous values (f16 or f32), zero columns padding N up to a whole panel.
The micro-kernel (`_tile_ir`, LLVM IR through a Numba @intrinsic, helpers in `irutil`) keeps an
MR x 32 tile of the output in 2 * MR zmm accumulators; per k it loads two 16-lane weight
vectors (`fpext` from half: one `vcvtph2ps` each) and multiplies them by MR broadcast x values.
MR = 6 (12 accumulators) measured best on Zen 5 at 1500 x 1024 x 4096: 260-268 GFLOPS on one
core, 2.0x OpenBLAS (MR = 4: 230; 8, 10, 14: 244-265; 12 ran f32 weights at only 138, an
accident of code generation). `prange` runs over column panels; each walks all row tiles, so its
weight panel (K * 64 bytes as f16) stays in L2 while the activations stream from L3. Short
inputs (a few rows) run the same tiles; decoders keep their f16 arrays for `ops`' GEMV.

Attention (`attention`, for `ops.attention` on encoder-sized inputs) runs on the same
micro-kernel: keys packed as panels make q k^T a GEMM, values packed as panels of head columns
make p v one. A task of ATTENTION_ROWS query rows of one head computes its (rows, Tk) scores
into a per-thread buffer, exponentiates them in place and multiplies them by the values while
they are still in L2: the scores never go to memory. NumPy's path (`ref.attention`, or ops' query
blocks of batched BLAS matmuls) writes and reads them three times, 288 MB per layer of Whisper
base, and OpenBLAS runs these K = 64 products at about half its large-GEMM rate. Contract:
`ref.attention` up to f32 summation order (scores summed over Dh, outputs over Tk, each row
divided by its sum of exponentials after the product rather than before).

The kernel exists only where the CPU (as Numba targets it) has AVX-512F; `available()` says so
and is False with NUMBA_DISABLE_JIT=1 or NPASR_FLOAT_GEMM=0 (then models keep plain f32 arrays
and BLAS). Nothing here is compiled before the first `gemm` call.
"""

from __future__ import annotations

from typing import NamedTuple

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from npasr.nn import irutil, jit, kernels
from npasr.types import F32

VL = 16  # f32 lanes per zmm
NG = 2  # 16-column groups per panel
NR = VL * NG  # output columns per panel
MR = 6  # activation rows per micro-tile (module docstring: why 6)

_JIT = jit.JIT


def available() -> bool:
    """Whether `gemm` runs here: JIT on, NPASR_FLOAT_GEMM != "0", and an AVX-512F CPU."""
    return irutil.kernel_enabled("NPASR_FLOAT_GEMM", "avx512f", "f16c")


class Panels(NamedTuple):
    """A float weight (N, K) in the panel layout: wp (ceil(N / NR), K, NR), float16 or float32.

    `ops.linear` accepts it wherever it accepts the (N, K) array it came from.
    """

    wp: np.ndarray
    n: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.n, self.wp.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return self.wp.dtype

    def unpack(self) -> np.ndarray:
        """The (N, K) weight back, in its stored dtype."""
        p, k, _ = self.wp.shape
        return self.wp.transpose(0, 2, 1).reshape(p * NR, k)[: self.n]


def pack(w: np.ndarray) -> Panels:
    """(N, K) float16 or float32 -> Panels of the same dtype (other floats become float32)."""
    if w.ndim != 2:
        raise ValueError(f"float gemm: weight must be 2-D, got shape {w.shape}")
    dt = w.dtype if w.dtype in (np.float16, np.float32) else np.dtype(np.float32)
    n, k = w.shape
    p = -(-n // NR)
    wp = np.zeros((p * NR, k), dt)
    wp[:n] = w
    return Panels(np.ascontiguousarray(wp.reshape(p, NR, k).transpose(0, 2, 1)), n)


def gemm_ref(x: F32, w: np.ndarray | Panels) -> F32:
    """The contract of `gemm` in NumPy: float64 sums of the exactly widened weight."""
    wf = (w.unpack() if isinstance(w, Panels) else w).astype(np.float64)
    return (np.asarray(x, np.float64) @ wf.T).astype(np.float32)


# --- the micro-kernel ---------------------------------------------------------------------------

_f16, _f32, _i64 = ir.HalfType(), ir.FloatType(), ir.IntType(64)
_vf = ir.VectorType(_f32, VL)


def _tile_ir(builder, out_p, x_p, w_p, m0, p, k, ldx, ldo, rows: int, half: bool) -> None:  # type: ignore[no-untyped-def]
    """IR for out[m0 + m, NR p + c] (m < rows, c < NR) = sum over k of x[m0 + m, k] w[.., k, c]."""
    fma = irutil.fn(builder, f"llvm.fmuladd.v{VL}f32", _vf, [_vf, _vf, _vf])
    vt = ir.VectorType(_f16 if half else _f32, VL)
    zero = ir.Constant(_vf, [0.0] * VL)
    acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(NG)] for _ in range(rows)]
    xrow = [builder.mul(builder.add(m0, _i64(m)), ldx) for m in range(rows)]
    wbase = builder.mul(builder.mul(p, k), _i64(NR))
    with cgutils.for_range(builder, k) as loop:
        kk = loop.index
        wo = builder.add(wbase, builder.mul(kk, _i64(NR)))
        w = []
        for g in range(NG):
            v = irutil.vload(builder, w_p, builder.add(wo, _i64(VL * g)), vt)
            w.append(builder.fpext(v, _vf) if half else v)
        for m in range(rows):
            xs = irutil.splat(builder, builder.load(builder.gep(x_p, [builder.add(xrow[m], kk)])))
            for g in range(NG):
                a = builder.load(acc[m][g])
                builder.store(builder.call(fma, [w[g], xs, a]), acc[m][g])
    irutil.store_tile(builder, out_p, acc, m0, p, ldo)


def _bits(a: np.ndarray) -> np.ndarray:
    """a float16 array as the uint16 view the kernels take (Numba has no float16 arrays on
    CPU); any other array as it is."""
    return a.view(np.uint16) if a.dtype == np.float16 else a


@intrinsic
def _tile(typingctx, out, x, wp, m0, rows, p):  # type: ignore[no-untyped-def]
    """`_tile(out, x, wp, m0, rows, p)`: rows <= MR rows of x from m0 times panel p of the flat
    Panels array wp, written to out (M, P * NR); x (M, K) and out are C-contiguous. wp holds
    float32 values, or float16 ones as their uint16 bits: the IR follows wp's dtype, so a
    kernel compiled for one dtype holds only that dtype's micro-kernel."""
    sig = types.void(out, x, wp, m0, rows, p)
    half = wp.dtype == types.uint16

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        (out_a, x_a, w_a), (m0_v, rows_v, p_v) = irutil.intrinsic_args(
            context, builder, signature, args, 3
        )
        ldo = builder.sdiv(builder.extract_value(out_a.strides, 0), _i64(4))
        ldx = builder.sdiv(builder.extract_value(x_a.strides, 0), _i64(4))
        k = builder.extract_value(x_a.shape, 1)
        irutil.row_switch(
            builder,
            rows_v,
            MR,
            lambda n: _tile_ir(
                builder, out_a.data, x_a.data, w_a.data, m0_v, p_v, k, ldx, ldo, n, half
            ),
        )
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(parallel=True, **_JIT)
def gemm_kernel(out, x, wp):  # type: ignore[no-untyped-def]
    """out (M, P * NR) = x (M, K) @ the flat Panels array wp (P * K * NR,), float32 or float16 as
    uint16; prange over panels."""
    m = x.shape[0]
    for p in nb.prange(out.shape[1] // NR):
        for m0 in range(0, m, MR):
            _tile(out, x, wp, m0, min(MR, m - m0), p)


def gemm(x: F32, w: Panels) -> F32:
    """x (M, K) f32 @ w.T -> (M, N) f32 (module docstring); needs `available()`."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    m, k = x.shape
    if k != w.wp.shape[1]:
        raise ValueError(f"float gemm: x {x.shape} does not match weight {w.shape}")
    n_pad = w.wp.shape[0] * NR
    out = np.empty((m, n_pad), np.float32)
    if m and k:
        gemm_kernel(out, x, _bits(w.wp.reshape(-1)))
    elif m:
        out[:] = 0
    return out if n_pad == w.n else np.ascontiguousarray(out[:, : w.n])


# --- fused attention on the micro-kernel --------------------------------------------------------

# query rows per attention task: its (48, Tk) scores stay in L2 beside one head's keys. Zen 4, 2
# threads, Whisper base encoder layer (8, 1500, 1500, 64) with 12 / 24 / 48 / 96 / 192 rows:
# 30.8 / 29.8 / 27.3 / 26.8 / 26.5 ms; GigaAM (16, 750, 750, 48): 12.4-12.9 ms for all.
ATTENTION_ROWS = 48


def attention_pack(k: F32, v: F32, n_k: int, half: bool = False) -> tuple[F32, F32]:
    """Keys and values (G, T >= n_k, Dh), any strides, as the two panel arrays of
    `attention_kernel`: kp (G, P * Dh * NR), the keys as P = ceil(n_k / NR) panels of NR keys
    (the "weight" of q k^T), and vp (G, ceil(Dh / NR) * P * NR * NR), the values as panels of NR
    head columns over the padded keys (the "weight" of p v); zeros pad both. half: float16
    panels (each value rounded to nearest even, as NumPy's astype), else float32."""
    g, _, dh = k.shape
    p = -(-n_k // NR)
    dtype = np.float16 if half else np.float32
    kp = np.empty((g, p, dh, NR), dtype)
    vp = np.empty((g, -(-dh // NR), p * NR, NR), dtype)
    attention_pack_kernel(_bits(kp), _bits(vp), k, v, n_k)
    return kp.reshape(g, -1), vp.reshape(g, -1)


@intrinsic
def _stored(typingctx, x, arr):  # type: ignore[no-untyped-def]
    """The float32 x as the array arr stores it: x itself for float32, for uint16 the bits of
    x rounded to float16 (LLVM's fptrunc: nearest even, as NumPy's astype(np.float16))."""
    half = arr.dtype == types.uint16
    sig = (types.uint16 if half else types.float32)(x, arr)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        if not half:
            return args[0]
        return builder.bitcast(builder.fptrunc(args[0], _f16), ir.IntType(16))

    return sig, codegen


@nb.njit(**_JIT)
def attention_pack_kernel(kp, vp, k, v, n_k):  # type: ignore[no-untyped-def]
    """`attention_pack` into preallocated kp (G, P, Dh, NR) and vp (G, Q, P * NR, NR), float32 or
    float16 as uint16 bits (`_stored`). Serial: a few MB of copying (0.5 ms for Whisper base's
    8 x 1500 x 64 keys and values), where a parallel kernel compiled 3 s longer for each key
    layout."""
    dh = k.shape[2]
    zero = np.float32(0.0)
    for g in range(k.shape[0]):
        for p in range(kp.shape[1]):
            for d in range(dh):
                for c in range(NR):
                    t = p * NR + c
                    kp[g, p, d, c] = _stored(k[g, t, d] if t < n_k else zero, kp)
        for p in range(vp.shape[1]):
            for t in range(vp.shape[2]):
                for c in range(NR):
                    d = p * NR + c
                    vp[g, p, t, c] = _stored(v[g, t, d] if t < n_k and d < dh else zero, vp)


@nb.njit(parallel=True, **_JIT)
def attention_kernel(out, q, kp, vp, mask, n_k, chunks):  # type: ignore[no-untyped-def]
    """out (G, Tq, ceil(Dh / NR) * NR) = softmax(q k^T + mask) v per group, over the first n_k
    keys; q (G, Tq, Dh) already scaled, kp / vp from `attention_pack` (float32, or float16 as
    uint16 bits: `_tile` follows the dtype), mask (Tq, >= n_k) or (0, 0) for none. Tasks of
    ATTENTION_ROWS query rows of one group, dealt round-robin to `chunks` chunks (one per
    thread, each with its own scores buffer). A task makes its scores with the micro-kernel
    (panel by panel, every row tile), exponentiates them in place, multiplies them by the value
    panels, and divides each output row by its sum of exponentials."""
    n_g, n_q, _ = q.shape
    n_kp = vp.shape[1] // out.shape[2]  # padded key count (out holds whole value panels)
    rows = ATTENTION_ROWS
    blocks = -(-n_q // rows)
    tasks = n_g * blocks
    has_mask = mask.shape[0] > 0
    for c in nb.prange(min(chunks, tasks)):
        s = np.empty((rows, n_kp), np.float32)
        inv = np.empty(rows, np.float32)
        for task in range(c, tasks, chunks):
            g, r0 = task // blocks, (task % blocks) * rows
            nr = min(rows, n_q - r0)
            qb, ob = q[g, r0 : r0 + nr], out[g, r0 : r0 + nr]
            for p in range(n_kp // NR):
                for m0 in range(0, nr, MR):
                    _tile(s, qb, kp[g], m0, min(MR, nr - m0), p)
            for i in range(nr):
                row = s[i, :n_k]
                if has_mask:
                    for t in range(n_k):
                        row[t] += mask[r0 + i, t]
                inv[i] = kernels._exp_row(row)
                for t in range(n_k, n_kp):
                    s[i, t] = 0.0
            for p in range(out.shape[2] // NR):
                for m0 in range(0, nr, MR):
                    _tile(ob, s[:nr], vp[g], m0, min(MR, nr - m0), p)
            for i in range(nr):
                for j in range(ob.shape[1]):
                    ob[i, j] *= inv[i]


class KeyPanels(NamedTuple):
    """Keys and values packed once (`pack_keys`) for many later queries: a decoder's
    cross-attention over one audio window, attended by every decoding step."""

    kp: np.ndarray  # (G, P * Dh * NR), as `attention_pack` makes them; float32 or float16
    vp: np.ndarray  # (G, ceil(Dh / NR) * P * NR * NR), the same dtype
    n_k: int
    dh: int


def pack_keys(k: F32, v: F32, half: bool = False) -> KeyPanels:
    """k, v (G, T, Dh), any strides -> KeyPanels over all T keys; half: stored as float16
    (rounded to nearest), which halves the bytes every later query pass reads. The attention is
    then exactly the f32 attention over the rounded keys and values."""
    if k.ndim != 3 or k.shape != v.shape:
        raise ValueError(f"pack_keys: k, v must be (G, T, Dh) alike, got {k.shape}, {v.shape}")
    kp, vp = attention_pack(k, v, k.shape[1], half)
    return KeyPanels(kp, vp, k.shape[1], k.shape[2])


def attention(q: F32, k: F32, v: F32, mask: F32 | None = None, n_k: int | None = None) -> F32:
    """softmax(q k^T / sqrt(Dh) + mask) v for q (G, Tq, Dh), k and v (G, T, Dh) (any strides)
    over the first n_k keys (all if None); mask (Tq, n_k) or None. `ref.attention`'s contract up
    to float32 summation order; needs `available()`."""
    n_g, n_q, dh = q.shape
    n_k = k.shape[1] if n_k is None else n_k
    if k.ndim != 3 or k.shape != v.shape or k.shape[0] != n_g or k.shape[2] != dh:
        raise ValueError(f"attention: q {q.shape} needs k, v (G, T, Dh): {k.shape}, {v.shape}")
    if not 0 < n_k <= k.shape[1]:
        raise ValueError(f"attention: {n_k} keys outside 1..{k.shape[1]}")
    return attention_packed(q, KeyPanels(*attention_pack(k, v, n_k), n_k, dh), mask)


def attention_packed(q: F32, kv: KeyPanels, mask: F32 | None = None) -> F32:
    """`attention` over keys and values packed beforehand: q (G, Tq, Dh) with the G and Dh of
    kv; mask (Tq, n_k) or None."""
    if q.ndim != 3 or q.shape[0] != kv.kp.shape[0] or q.shape[2] != kv.dh:
        raise ValueError(f"attention: q {q.shape} does not match {kv.kp.shape[0]} x {kv.dh} keys")
    n_g, n_q, dh = q.shape
    if mask is not None and mask.shape != (n_q, kv.n_k):
        raise ValueError(f"attention: mask {mask.shape} is not (Tq, n_k) = {(n_q, kv.n_k)}")
    qs = np.empty(q.shape, np.float32)  # C order whatever q's strides: one kernel signature
    np.multiply(q, np.float32(dh**-0.5), out=qs)  # scaled as ref.attention scales it
    out = np.empty((n_g, n_q, -(-dh // NR) * NR), np.float32)
    m = np.empty((0, 0), np.float32) if mask is None else np.ascontiguousarray(mask, np.float32)
    attention_kernel(out, qs, _bits(kv.kp), _bits(kv.vp), m, kv.n_k, nb.get_num_threads())
    return out if out.shape[2] == dh else out[..., :dh]
