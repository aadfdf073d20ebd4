"""int8 x int8 -> int32 GEMM with AVX-512 VNNI for encoder-sized `linear` on quantized weights.

Contract (`gemm_ref` is the NumPy spec, tests/nn/test_int8_gemm.py the parity tests). Shapes: M
activation rows, N outputs (weight rows), K inputs, NB = K // 32 blocks.

* Activations are quantized per row per 32-block, as ggml's Q8_0 activations but with an f32
  scale: sx = max|x| / 127, q = rint(x / sx) (round half to even, computed as x * (1 / sx)),
  int8 in [-127, 127]; an all-zero block has sx = 0, q = 0.
* The weight is `QTensor.repack()`'s `Packed`: w[n, 32 b + j] = s[n, b] * v - o[n, b].
* y[m, n] = sum_b s[n, b] sx[m, b] dot_b(v, q) - sum_b o[n, b] xs[m, b], with dot_b the exact
  integer dot of block b and xs[m, b] = sx[m, b] sum_j q_j the block sums of the *quantized* x.
  So y = w_dq @ x_hat exactly (up to f32 rounding), x_hat = sx q. The sums of the float x would
  cost the same, but they leave the rounding error multiplied by s v instead of s v - o: for
  Q4_0 (o = 8 s) that doubled the error (measured 1.1e-2 vs 5.6e-3 of the output max).

The only difference from `ref.linear(x, dequantize(w))` is then the activation rounding, at most
sx / 2 per element (derived and tested in the test module).

How it runs. `vpdpbusd` multiplies unsigned bytes (its first source) by signed bytes (its
second) in groups of 4 and adds the 4 products to an int32 lane. The weight is repacked once
(`gemm_pack`, cached per QTensor) into panels of NR = 16 * NG output columns; per panel and
32-block, each group of 16 columns is one 64-byte vector per 4 k values, byte 4 r + i = column r,
k = 4 t + i. So one zmm load of weights and one 4-byte broadcast of an activation row feed one
`vpdpbusd` (16 columns x 4 k). The weights are always the u8 operand (a register reused by MR
rows), the activations q the s8 one (a broadcast). Three weight forms, by the values' sign:
* "n4" (Q4_0, Q4_1, Q4_K; values 0..15): the Packed nibble bytes are already paired as needed
  (byte 16 b + j = value j | value j + 16 << 4), so a vector holds k-quads t (low nibbles) and
  t + 4 (high nibbles): half the memory, two ALU ops to split.
* "u8" (Q5_1, Q5_K; values 0..31): one byte per value.
* "s8" (Q8_0, Q5_0; signed values): stored as v + 128 (= v ^ 0x80, in 0..255), and
  sum_j (v_j + 128) q_j - 128 sum_j q_j = sum_j v_j q_j exactly: the int32 accumulator starts
  at qc[m, b] = -128 sum_j q_j (written by the activation quantizer) instead of 0. Partial sums
  stay below 32 * 255 * 127 + 128 * 32 * 127 < 2^21, so the int32 and its f32 value are exact.
The micro-kernel (`_tile_*`, LLVM IR through a Numba @intrinsic as in quant_kernels.py) holds
MR x NG int32 accumulators (reset per block) and MR x NG float accumulators (updated per block
by fmuladd(float(acc), s_w * sx, f) and, with an offset, fmuladd(-o, xs, f)). MR = 4, NG = 2
(16 accumulators, 8 vpdpbusd per weight-vector pair and k-quad) measured best on Zen 5
(~720-800 GOPS on one core, 1500 x 1024 x 4096): with MR = 6 (24 accumulators) LLVM's scheduler
hoisted the activation broadcasts and spilled them (~500 GOPS for "s8"); MR = 8 and NG = 4 were
no faster, and float accumulators kept in the output tile instead of registers were slower.
`prange` runs over column panels; each walks all row tiles, so its weight panel (K * 32 bytes)
stays in L2 while the quantized activations stream from L3.

The kernels exist only where the CPU (as Numba targets it) has AVX-512 VNNI and BW; `available()`
says so and is False with NUMBA_DISABLE_JIT=1 or NPASR_INT8_GEMM=0. Nothing here is compiled
before the first `gemm` call, so other CPUs never see the intrinsic.
"""

from __future__ import annotations

import weakref
from typing import NamedTuple

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from npasr.nn import irutil, jit
from npasr.nn.quant import Packed, QTensor, _unpack_nibbles
from npasr.types import F32

QB = 32  # k values per block (every Packed layout)
VL = 16  # int32 / float32 lanes per zmm
NG = 2  # 16-column groups per panel
NR = VL * NG  # output columns per panel
MR = 4  # activation rows per micro-tile (module docstring: why 4)
_N_VEC = {"n4": 4, "u8": 8, "s8": 8}  # 64-byte weight vectors per group per block
_VARIANT = {"n4": 0, "u8": 1, "s8": 2}

_JIT = jit.JIT


# --- availability -------------------------------------------------------------------------------


def available() -> bool:
    """Whether `gemm` runs here: JIT on, NPASR_INT8_GEMM != "0", and a VNNI CPU."""
    return irutil.kernel_enabled("NPASR_INT8_GEMM", "avx512vnni", "avx512bw")


# --- weight layout --------------------------------------------------------------------------------


class GemmPacked(NamedTuple):
    """A weight in the panel layout (module docstring); P = ceil(N / NR) panels.

    wq: (P, NB, NG, n_vec, 16, 4) uint8 (v + 128 for "s8"); scale, noffset (-offset):
    (P, NB, NG, 16) f32, noffset empty for "s8".
    """

    form: str
    n: int
    k: int
    wq: np.ndarray
    scale: F32
    noffset: F32


def _values(p: Packed, n: int, k: int) -> np.ndarray:
    """(N, K) int16 weight values v of a Packed layout."""
    if p.kind == "i8":
        return p.qs.astype(np.int16)
    return _unpack_nibbles(p.qs.reshape(-1, QB // 2)).reshape(n, k).astype(np.int16)


def _panels(a: np.ndarray, n_pad: int) -> np.ndarray:
    """(N, NB, ...) -> (P, NB, NG, 16, ...) with zero rows padding N to n_pad."""
    pad = np.zeros((n_pad - a.shape[0], *a.shape[1:]), a.dtype)
    a = np.concatenate([a, pad]).reshape(n_pad // NR, NG, VL, *a.shape[1:])
    order = (0, 3, 1, 2, *range(4, a.ndim))
    return np.ascontiguousarray(a.transpose(order))


def _pack(p: Packed, n: int, k: int) -> GemmPacked | None:
    nbk = k // QB
    n_pad = -(-n // NR) * NR
    if p.kind == "u4":
        form = "n4"
    elif p.qs.size and int(p.qs.min()) >= 0:
        form = "u8"  # Q5_1, Q5_K: values 0..31 are valid unsigned bytes
    elif p.offset is None:
        form = "s8"
    else:
        return None  # signed values with an offset: no such Packed type exists today
    # (N, NB, n_vec, 4): "n4" byte 16 b + 4 t + i holds k = 4 t + i and 16 + 4 t + i
    q = p.qs.reshape(n, nbk, _N_VEC[form], 4)
    q = q.view(np.uint8) ^ np.uint8(128) if form == "s8" else q.view(np.uint8)
    wq = _panels(q, n_pad)  # (P, NB, NG, 16, n_vec, 4)
    wq = np.ascontiguousarray(wq.transpose(0, 1, 2, 4, 3, 5))  # (P, NB, NG, n_vec, 16, 4)
    scale = _panels(p.scale.reshape(n, nbk), n_pad)
    empty = np.empty(0, np.float32)
    noffset = empty if p.offset is None else _panels(-p.offset.reshape(n, nbk), n_pad)
    return GemmPacked(form, n, k, wq, scale, noffset)


# id(QTensor) -> [layout]; QTensor is an unhashable dataclass, so a finalizer drops the entry
_PACKS: dict[int, list[GemmPacked | None]] = {}


def gemm_pack(w: QTensor) -> GemmPacked | None:
    """The panel layout of a 2-D QTensor, built once and cached while `w` lives; None if its
    type has no Packed layout (Q6_K)."""
    got = _PACKS.get(id(w))
    if got is None:
        p = w.repack(keep=False)  # the GEMV layout is kept only where decoding built it
        n, k = w.shape
        got = [None if p is None else _pack(p, n, k)]
        _PACKS[id(w)] = got
        weakref.finalize(w, _PACKS.pop, id(w), None)
    return got[0]


# --- NumPy reference --------------------------------------------------------------------------


def quantize_rows_ref(x: F32) -> tuple[np.ndarray, F32, F32]:
    """x (M, K) f32 -> q (M, K) int8, sx (M, NB) f32, xs (M, NB) f32 block sums of x."""
    m, k = x.shape
    xb = x.reshape(m, k // QB, QB)
    sx = np.abs(xb).max(axis=-1) / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(sx == 0, np.float32(0), np.float32(1) / sx).astype(np.float32)
    q = np.rint(xb * inv[..., None])  # |x * inv| <= 127 (1 + 3u): no clipping needed
    xs = q.sum(axis=-1) * sx  # exact integer sum, one f32 rounding
    return q.astype(np.int8).reshape(m, k), sx, xs


def gemm_ref(x: F32, w: QTensor) -> F32:
    """The contract of `gemm` in NumPy (float64 sums of exact integer block dots)."""
    p = w.repack(keep=False)
    if p is None:
        raise NotImplementedError(f"int8 gemm for {w.qtype.name} is not implemented")
    (n, k), m = w.shape, x.shape[0]
    q, sx, xs = quantize_rows_ref(np.ascontiguousarray(x, dtype=np.float32))
    v = _values(p, n, k).astype(np.float64)
    q64 = q.astype(np.float64)
    y = np.zeros((m, n))
    for b in range(k // QB):
        blk = slice(b * QB, (b + 1) * QB)
        dot = q64[:, blk] @ v[:, blk].T  # (M, N) exact integers
        y += sx[:, b, None].astype(np.float64) * p.scale[None, :, b] * dot
    if p.offset is not None:
        y -= xs.astype(np.float64) @ p.offset.T.astype(np.float64)
    return y.astype(np.float32)


# --- LLVM IR helpers ------------------------------------------------------------------------------

_i8, _i32, _i64, _f32 = ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()
_vf = ir.VectorType(_f32, VL)
_vi = ir.VectorType(_i32, VL)
_vb = ir.VectorType(_i8, 4 * VL)


_splat, _vload, _fn = irutil.splat, irutil.vload, irutil.fn


def _tile_ir(builder, ptrs, m0, p, k, ldo, rows: int, form: str) -> None:  # type: ignore[no-untyped-def]
    """IR for out[m0 + m, NR p + c] (m < rows, c < NR) = the whole K sum of one micro-tile."""
    out_p, xq_p, sx_p, xs_p, qc_p, wq_p, sc_p, off_p = ptrs
    dp = _fn(builder, "llvm.x86.avx512.vpdpbusd.512", _vi, [_vi, _vi, _vi])
    fma = _fn(builder, f"llvm.fmuladd.v{VL}f32", _vf, [_vf, _vf, _vf])
    n_vec = _N_VEC[form]
    nbk = builder.sdiv(k, _i64(QB))
    row = [builder.mul(builder.add(m0, _i64(m)), k) for m in range(rows)]  # byte offsets in xq
    zero_f, zero_i = ir.Constant(_vf, [0.0] * VL), ir.Constant(_vi, [0] * VL)
    # float accumulators live in the output tile (L1): held in registers as well, LLVM's
    # scheduler hoisted the activation broadcasts and spilled them (measured 500 vs 720+ GOPS)
    facc = [[cgutils.alloca_once_value(builder, zero_f) for _ in range(NG)] for _ in range(rows)]
    low = ir.Constant(_vb, [15] * (4 * VL))
    four = ir.Constant(_vb, [4] * (4 * VL))
    with cgutils.for_range(builder, nbk) as loop:
        b = loop.index
        pb = builder.add(builder.mul(p, nbk), b)  # (panel, block) index
        gv = [
            builder.mul(builder.add(builder.mul(pb, _i64(NG)), _i64(g)), _i64(VL))
            for g in range(NG)
        ]
        mb = [builder.add(builder.mul(builder.add(m0, _i64(m)), nbk), b) for m in range(rows)]
        if form == "s8":  # accumulators start at -128 sum_j q_j (module docstring)
            acc = [
                [_splat(builder, builder.load(builder.gep(qc_p, [mb[m]])))] * NG
                for m in range(rows)
            ]
        else:
            acc = [[zero_i] * NG for _ in range(rows)]
        xb = builder.mul(b, _i64(QB))
        for t in range(8):
            w = []
            for g in range(NG):
                vec = t % n_vec
                off = builder.mul(gv[g], _i64(4 * n_vec))  # (pb, g) * n_vec * 64 bytes
                wv = _vload(builder, wq_p, builder.add(off, _i64(64 * vec)), _vb)
                if form == "n4":
                    wv = builder.and_(wv, low) if t < 4 else builder.lshr(wv, four)
                w.append(builder.bitcast(wv, _vi))
            for m in range(rows):
                xp = builder.gep(xq_p, [builder.add(row[m], builder.add(xb, _i64(4 * t)))])
                x4 = _splat(builder, builder.load(builder.bitcast(xp, _i32.as_pointer()), align=1))
                for g in range(NG):
                    acc[m][g] = builder.call(dp, [acc[m][g], w[g], x4])
        sw = [_vload(builder, sc_p, gv[g], _vf) for g in range(NG)]
        no = [_vload(builder, off_p, gv[g], _vf) for g in range(NG)] if form != "s8" else []
        for m in range(rows):
            sxm = _splat(builder, builder.load(builder.gep(sx_p, [mb[m]])))
            xsm = _splat(builder, builder.load(builder.gep(xs_p, [mb[m]]))) if no else None
            for g in range(NG):
                f = builder.load(facc[m][g], align=4)
                f = builder.call(fma, [builder.sitofp(acc[m][g], _vf), builder.fmul(sw[g], sxm), f])
                if no:
                    f = builder.call(fma, [no[g], xsm, f])
                builder.store(f, facc[m][g], align=4)
    irutil.store_tile(builder, out_p, facc, m0, p, ldo)


def _make_tile(form: str):  # type: ignore[no-untyped-def]
    """`tile(out, xq, sx, xs, qc, wq, scale, noffset, m0, rows, p, k)`: one micro-tile of
    rows <= MR activation rows from m0 and panel p, written to out (M, P * NR)."""

    def tile(typingctx, out, xq, sx, xs, qc, wq, sc, off, m0, rows, p, k):  # type: ignore[no-untyped-def]
        sig = types.void(out, xq, sx, xs, qc, wq, sc, off, m0, rows, p, k)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            arrs, (m0_v, rows_v, p_v, k_v) = irutil.intrinsic_args(
                context, builder, signature, args, 8
            )
            ptrs = [a.data for a in arrs]
            ldo = builder.sdiv(builder.extract_value(arrs[0].strides, 0), _i64(4))  # out row
            irutil.row_switch(
                builder, rows_v, MR, lambda n: _tile_ir(builder, ptrs, m0_v, p_v, k_v, ldo, n, form)
            )
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(tile)


_tile_n4, _tile_u8, _tile_s8 = (_make_tile(f) for f in ("n4", "u8", "s8"))


# --- activation quantization (IR: exact f32 ops, vectorized) ----------------------------------


def _range(start: int, n: int) -> ir.Constant:
    return ir.Constant(ir.VectorType(_i32, n), list(range(start, start + n)))


def _quant_block_ir(builder, ptrs, m, b, k) -> None:  # type: ignore[no-untyped-def]
    """One 32-block: same f32 operations as quantize_rows_ref (no fast-math flags)."""
    q_p, sx_p, xs_p, qc_p, x_p = ptrs
    vf32 = ir.VectorType(_f32, QB)
    o = builder.add(builder.mul(m, k), builder.mul(b, _i64(QB)))
    x = _vload(builder, x_p, o, vf32)
    fabs = _fn(builder, f"llvm.fabs.v{QB}f32", vf32, [vf32])
    rint = _fn(builder, f"llvm.rint.v{QB}f32", vf32, [vf32])
    a = builder.call(fabs, [x])
    for n in (16, 8, 4, 2, 1):  # max tree
        a0, a1 = (builder.shuffle_vector(a, a, _range(c, n)) for c in (0, n))
        a = builder.select(builder.fcmp_ordered(">", a1, a0), a1, a0)
    d = builder.fdiv(builder.extract_element(a, _i32(0)), ir.Constant(_f32, 127.0))
    inv = builder.fdiv(ir.Constant(_f32, 1.0), d)
    inv = builder.select(builder.fcmp_ordered("==", d, ir.Constant(_f32, 0.0)), d, inv)
    r = builder.call(rint, [builder.fmul(x, _splat(builder, inv, QB))])
    s = r
    for n in (16, 8, 4, 2, 1):  # sum of q: integers below 2^12, exact in any order
        s = builder.fadd(*(builder.shuffle_vector(s, s, _range(c, n)) for c in (0, n)))
    qsum = builder.extract_element(s, _i32(0))
    qv = builder.trunc(builder.fptosi(r, ir.VectorType(_i32, QB)), ir.VectorType(_i8, QB))
    qp = builder.bitcast(builder.gep(q_p, [o]), ir.VectorType(_i8, QB).as_pointer())
    builder.store(qv, qp, align=1)
    bi = builder.add(builder.mul(m, builder.sdiv(k, _i64(QB))), b)
    builder.store(d, builder.gep(sx_p, [bi]))
    builder.store(builder.fmul(qsum, d), builder.gep(xs_p, [bi]))
    qc = builder.mul(builder.fptosi(qsum, _i32), _i32(-128))
    builder.store(qc, builder.gep(qc_p, [bi]))


@intrinsic
def _quant_row(typingctx, q, sx, xs, qc, x, m, k):  # type: ignore[no-untyped-def]
    """Quantize row m of x (M, K) into q (M, K) int8, sx, xs (M, NB) f32, qc (M, NB) int32."""
    sig = types.void(q, sx, xs, qc, x, m, k)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        arrs, (m_v, k_v) = irutil.intrinsic_args(context, builder, signature, args, 5)
        ptrs = [a.data for a in arrs]
        with cgutils.for_range(builder, builder.sdiv(k_v, _i64(QB))) as loop:
            _quant_block_ir(builder, ptrs, m_v, loop.index, k_v)
        return context.get_dummy_value()

    return sig, codegen


# --- kernels and entry point ------------------------------------------------------------------


@nb.njit(parallel=True, **_JIT)
def quantize_rows_kernel(q, sx, xs, qc, x):  # type: ignore[no-untyped-def]
    """x (M, K) f32 -> q (M, K) int8, sx (M, NB) scales, xs = sx * sum q, qc = -128 * sum q."""
    m, k = x.shape
    for i in nb.prange(m):
        _quant_row(q, sx, xs, qc, x, i, k)


@nb.njit(parallel=True, **_JIT)
def gemm_kernel(out, xq, sx, xs, qc, wq, scale, noffset, variant):  # type: ignore[no-untyped-def]
    """out (M, P * NR) = x @ w.T from the quantized x (xq, sx, xs, qc: quantize_rows_kernel)
    and a GemmPacked's flat wq, scale, noffset; variant = _VARIANT[form]. prange over panels."""
    m = xq.shape[0]
    k = xq.shape[1]
    for p in nb.prange(out.shape[1] // NR):
        for m0 in range(0, m, MR):
            rows = min(MR, m - m0)
            if variant == 0:
                _tile_n4(out, xq, sx, xs, qc, wq, scale, noffset, m0, rows, p, k)
            elif variant == 1:
                _tile_u8(out, xq, sx, xs, qc, wq, scale, noffset, m0, rows, p, k)
            else:
                _tile_s8(out, xq, sx, xs, qc, wq, scale, noffset, m0, rows, p, k)


def quantize_rows(x: F32) -> tuple[np.ndarray, F32, F32, np.ndarray]:
    """`quantize_rows_kernel` on a contiguous x (M, K) f32 -> q, sx, xs, qc (its outputs)."""
    m, k = x.shape
    q = np.empty((m, k), np.int8)
    sx, xs = np.empty((m, k // QB), np.float32), np.empty((m, k // QB), np.float32)
    qc = np.empty((m, k // QB), np.int32)
    quantize_rows_kernel(q, sx, xs, qc, x)
    return q, sx, xs, qc


def gemm(x: F32, w: QTensor) -> F32 | None:
    """x (M, K) f32 @ w (N, K)^T -> (M, N) f32 with int8 activations (module docstring);
    None where it cannot run (no VNNI, JIT off, NPASR_INT8_GEMM=0, or no layout for the type)."""
    if not available() or len(w.shape) != 2:
        return None
    gp = gemm_pack(w)
    if gp is None:
        return None
    x = np.ascontiguousarray(x, dtype=np.float32)
    m, k = x.shape
    if k != gp.k:
        raise ValueError(f"int8 gemm: x {x.shape} does not match weight {w.shape}")
    xq, sx, xs, qc = quantize_rows(x)
    n_pad = gp.wq.shape[0] * NR
    out = np.empty((m, n_pad), np.float32)
    flat = [a.reshape(-1) for a in (gp.wq, gp.scale, gp.noffset)]
    gemm_kernel(out, xq, sx, xs, qc, *flat, _VARIANT[gp.form])
    return out if n_pad == gp.n else np.ascontiguousarray(out[:, : gp.n])


def quantize_q8_0(w: np.ndarray, chunk_rows: int = 4096) -> Packed:
    """A float matrix (N, K) (K a multiple of 32) quantized as GGML Q8_0 would store it, fast,
    straight into the GEMV layout (`Packed` kind "i8"; no block bytes kept): the activation
    quantizer above on `chunk_rows` rows at a time, d = max|w| / 127 per 32-block, q = rint(w /
    d) with ties to even, d rounded to float16 as Q8_0 stores it. It differs from
    `quant.quantize`'s gguf-exact Q8_0 only on exact .5 ties (there: away from zero). For
    matrices quantized at load time (~0.06 s for a 51865 x 512 table; `quant.quantize` takes
    1 s), not for files.
    """
    n, k = w.shape
    nbk = k // QB
    if k % QB:
        raise ValueError(f"quantize_q8_0: width {k} is not a multiple of {QB}")
    qs = np.empty((n, k), np.int8)
    scale = np.empty((n, nbk), np.float32)
    for r0 in range(0, n, chunk_rows):
        r1 = min(n, r0 + chunk_rows)
        x = np.ascontiguousarray(w[r0:r1], dtype=np.float32)
        q, sx = (quantize_rows_ref if nb.config.DISABLE_JIT else quantize_rows)(x)[:2]
        qs[r0:r1] = q
        scale[r0:r1] = sx.astype(np.float16)
    return Packed("i8", qs, scale, None)
