"""Fused kernels over the repacked quantized layouts of `npasr.nn.quant.Packed`.

Every kernel computes `ref.linear` on `quant.dequantize(w)` (tests/nn/test_quant_kernels.py):

    w[r, 32 b + j] = scale[r, b] * v[r, 32 b + j] - offset[r, b]

with v int8 ("i8": Q8_0, Q5_0, Q5_1, Q5_K) or a nibble ("u4": Q4_0, Q4_1, Q4_K; byte 16 b + j holds
v[32 b + j] in its low and v[32 b + j + 16] in its high nibble). The GEMV also reads a plain
float16 matrix (KIND_F16: v the half values, no scale or offset), widening each value exactly.
Shapes: M activation rows, N weight rows (outputs), K inputs, NB = K // 32 blocks per row.

How the GEMV is written, and why (measured on Zen 4 with Numba 0.68 / LLVM 15):
* Numba types uint8/int8 arithmetic as int64, and LLVM leaves the 16- and 32-long per-block loops
  either scalar (once fully unrolled, the SLP vectorizer gives up because the float stores may
  alias the byte loads) or in a 64-wide vector body that a 16-long loop never enters. Plain Numba
  loops reached only ~9 GMAC/s on Q4 (about NumPy f32 speed).
* So the inner loop over one weight row is emitted as LLVM IR with explicit `<16 x float>` vectors
  (`_row_dot_*`, a Numba `@intrinsic`): per 32-weight block, widen the bytes (or nibbles) to
  float32 exactly, multiply by the block scale once, then one `fmuladd` per 16 lanes per
  activation row. All M <= 8 activation rows run in the same pass, with their 2 M accumulators in
  registers, so a weight block is read and widened once for the whole beam. The IR is generic
  (no target intrinsics): LLVM lowers it to AVX-512, AVX2 (two ymm per vector) or SSE.
* Activations stay float32 and values are widened exactly, so the only error against the
  reference is float32 summation order (32 lanes summed per row, then a pairwise tree).
* The offset term is folded out of the inner loop: sum_j (s v - o) x = s sum_j v x - o sum_j x,
  with the per-block activation sums `xsum` (M, NB) computed once per call.
* `prange` runs over chunks of rows so each thread allocates its scratch once;
  `gemv_serial_kernel` runs the same rows on the calling thread (small weights, ops.py).
* With NUMBA_DISABLE_JIT=1 the intrinsics are replaced by NumPy versions of the same contract.
"""

from __future__ import annotations

from collections.abc import Callable

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from npasr.nn import irutil, jit

QB = 32  # weights per scale block in every Packed layout
ROW_CHUNK = 16  # fewest output rows per parallel work item (scratch is allocated per item)
MAX_ITEMS = 64  # most parallel work items per GEMV call
MAX_ROWS = 8  # activation rows per weight pass (2 * 8 accumulators + 4 temporaries: 20 zmm)
VL = 16  # float32 lanes per IR vector (one zmm; LLVM splits it on narrower targets)

_JIT = jit.JIT
_FAST = jit.FAST  # only where a reduction must be reassociated to vectorize (module docstring)

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


# --- one weight row against up to MAX_ROWS activation rows, as explicit-vector LLVM IR ----------


def _splat(builder: ir.IRBuilder, value: ir.Value) -> ir.Value:
    return irutil.splat(builder, value, VL)


def _hsum(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """Pairwise sum of a <VL x float> (halves added log2(VL) times)."""
    n = VL
    while n > 1:
        n //= 2
        lo, hi = (
            ir.Constant(ir.VectorType(ir.IntType(32), n), list(range(a, a + n))) for a in (0, n)
        )
        v = builder.fadd(builder.shuffle_vector(v, v, lo), builder.shuffle_vector(v, v, hi))
    return builder.extract_element(v, ir.IntType(32)(0))


def _row_dot_ir(builder, qs_p, sc_p, x_p, res_p, i, k, n_act: int, kind: str) -> None:  # type: ignore[no-untyped-def]
    """IR for res[m] = sum_b scale[i, b] * sum_j v[i, 32 b + j] * xb[b, m, j], m < n_act.

    qs_p points at bytes whatever the kind (one kernel signature for every layout): 16 nibble
    pairs, 32 int8 or 64 float16 bytes per block. kind "f16": float16 values, no scale."""
    i64, f32 = ir.IntType(64), ir.FloatType()
    vf, vb, vi = (ir.VectorType(t, VL) for t in (f32, ir.IntType(8), ir.IntType(32)))
    u4 = kind == "u4"
    block_bytes = {"u4": QB // 2, "i8": QB, "f16": 2 * QB}[kind]
    fmuladd = irutil.fn(builder, f"llvm.fmuladd.v{VL}f32", vf, [vf, vf, vf])
    nbk = builder.sdiv(k, i64(QB))
    q_row = builder.mul(builder.mul(i, nbk), i64(block_bytes))  # byte offset of row i
    zero = ir.Constant(vf, [0.0] * VL)
    accs = [cgutils.alloca_once_value(builder, zero) for _ in range(2 * n_act)]  # (M, lo|hi)
    with cgutils.for_range(builder, nbk) as loop:
        b = loop.index
        q = builder.gep(qs_p, [builder.add(q_row, builder.mul(b, i64(block_bytes)))])
        irutil.prefetch(builder, q)  # the weight bytes a few blocks ahead
        if u4:  # byte j: value j in the low nibble, value j + 16 in the high nibble
            z = builder.zext(builder.load(builder.bitcast(q, vb.as_pointer()), align=1), vi)
            halves = [
                builder.and_(z, ir.Constant(vi, [15] * VL)),
                builder.lshr(z, ir.Constant(vi, [4] * VL)),
            ]
        elif kind == "f16":
            vh = ir.VectorType(ir.HalfType(), VL)
            halves = [
                builder.load(
                    builder.bitcast(builder.gep(q, [i64(2 * h * VL)]), vh.as_pointer()), align=2
                )
                for h in range(2)
            ]
        else:
            halves = [
                builder.load(
                    builder.bitcast(builder.gep(q, [i64(h * VL)]), vb.as_pointer()), align=1
                )
                for h in range(2)
            ]
        if kind == "f16":  # exact widening, no scale
            w = [builder.fpext(v, vf) for v in halves]
        else:
            s = _splat(
                builder, builder.load(builder.gep(sc_p, [builder.add(builder.mul(i, nbk), b)]))
            )
            w = [builder.fmul(builder.sitofp(v, vf), s) for v in halves]  # exact, then * scale
        for m in range(n_act):
            xo = builder.mul(builder.add(builder.mul(b, i64(n_act)), i64(m)), i64(QB))
            for h in range(2):
                xp = builder.bitcast(
                    builder.gep(x_p, [builder.add(xo, i64(h * VL))]), vf.as_pointer()
                )
                acc = accs[2 * m + h]
                builder.store(
                    builder.call(fmuladd, [w[h], builder.load(xp, align=4), builder.load(acc)]), acc
                )
    for m in range(n_act):
        t = _hsum(builder, builder.fadd(builder.load(accs[2 * m]), builder.load(accs[2 * m + 1])))
        builder.store(t, builder.gep(res_p, [i64(m)]))


def _make_row_dot(kind: str) -> Callable[..., None]:
    """`row_dot(res, xb, qs, scale, i, n_act, k)`: res[m] = (weight row i without its offset) .
    (activation row m), m < n_act <= MAX_ROWS, with xb the rows interleaved per block:
    xb (NB, n_act, 32) flat, so one pointer walks every row's block in order."""
    if nb.config.DISABLE_JIT:

        def row_dot_py(res, xb, qs, scale, i, n_act, k):  # type: ignore[no-untyped-def]
            nbk = k // QB  # qs: bytes, as the IR reads them
            if kind == "u4":
                q = qs[i * k // 2 : (i + 1) * k // 2].reshape(nbk, QB // 2)
                v = np.concatenate([q & 15, q >> 4], axis=1)  # (NB, 32)
            elif kind == "i8":
                v = qs[i * k : (i + 1) * k].view(np.int8).reshape(nbk, QB)
            else:
                v = qs[2 * i * k : 2 * (i + 1) * k].view(np.float16).reshape(nbk, QB)
            if kind == "f16":
                w = v.astype(np.float32)
            else:
                w = v.astype(np.float32) * scale[i * nbk : (i + 1) * nbk, None]  # (NB, 32)
            res[:n_act] = np.einsum("bmj,bj->m", xb[: n_act * k].reshape(nbk, n_act, QB), w)

        return row_dot_py

    def row_dot(typingctx, res, xb, qs, scale, i, n_act, k):  # type: ignore[no-untyped-def]
        sig = types.void(res, xb, qs, scale, i, n_act, k)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            arrs, (i_v, n_v, k_v) = irutil.intrinsic_args(context, builder, signature, args, 4)
            res_p, x_p, qs_p, sc_p = (a.data for a in arrs)
            irutil.row_switch(
                builder,
                n_v,
                MAX_ROWS,
                lambda rows: _row_dot_ir(builder, qs_p, sc_p, x_p, res_p, i_v, k_v, rows, kind),
            )
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(row_dot)


_row_dot_i8 = _make_row_dot("i8")
_row_dot_u4 = _make_row_dot("u4")
_row_dot_f16 = _make_row_dot("f16")

KIND_I8, KIND_U4, KIND_F16 = 0, 1, 2  # the `kind` argument of gemv_kernel
KIND_CODE = {"i8": KIND_I8, "u4": KIND_U4, "f16": KIND_F16}


@nb.njit(**_JIT)
def _interleave_blocks(xb: np.ndarray, x: np.ndarray, m0: int, n_act: int, k: int) -> None:
    """xb (NB, n_act, 32) flat <- rows m0 : m0 + n_act of x (M*K,) flat."""
    for b in range(k // QB):
        for m in range(n_act):
            src = _u((m0 + m) * k + b * QB)
            dst = _u((b * n_act + m) * QB)
            for j in range(QB):
                xb[dst + _u(j)] = x[src + _u(j)]


@nb.njit(parallel=True, **_FAST)
def gemv_kernel(
    out: np.ndarray,
    x: np.ndarray,
    xsum: np.ndarray,
    qs: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    n_rows: int,
    k: int,
    kind: int,
) -> None:
    """out (M, N) = x (M, K) @ w.T for a Packed weight of kind KIND_U4 (qs: N*K/2 nibble-pair
    bytes), KIND_I8 (N*K int8 bytes) or KIND_F16 (2*N*K float16 bytes; no scale), qs always
    viewed as uint8 so that one compiled signature serves every kind.
    Flat: x (M*K,), scale/offset (N*NB,) (offset may be empty: no offset), xsum (M*NB,) block
    sums of x (read only with an offset). Any M; each pass over the weight serves MAX_ROWS
    activation rows."""
    n_out = out.shape[1]
    xb = _interleaved(x, n_rows, k)
    # At most MAX_ITEMS work items of >= ROW_CHUNK rows: each allocates its scratch once, and
    # thousands of small items (a 51864-row vocabulary) serialized the threads on the allocator.
    n_items = min((n_out + ROW_CHUNK - 1) // ROW_CHUNK, MAX_ITEMS)
    per_item = (n_out + n_items - 1) // n_items
    for c in nb.prange(n_items):
        lo = c * per_item
        _gemv_rows(out, xb, xsum, qs, scale, offset, n_rows, k, kind, lo, min(n_out, lo + per_item))


@nb.njit(**_FAST)
def gemv_serial_kernel(out, x, xsum, qs, scale, offset, n_rows, k, kind):  # type: ignore[no-untyped-def]
    """`gemv_kernel` (same arguments, same result bits) on the calling thread only: for small
    weights, where waking the worker threads costs more than the product (ops.py)."""
    xb = _interleaved(x, n_rows, k)
    _gemv_rows(out, xb, xsum, qs, scale, offset, n_rows, k, kind, 0, out.shape[1])


@nb.njit(**_JIT)
def _interleaved(x: np.ndarray, n_rows: int, k: int) -> np.ndarray:
    """x (M*K,) flat as groups of MAX_ROWS rows, each (NB, rows, 32), flat."""
    xb = np.empty(n_rows * k, np.float32)
    for m0 in range(0, n_rows, MAX_ROWS):
        _interleave_blocks(xb[m0 * k :], x, m0, min(MAX_ROWS, n_rows - m0), k)
    return xb


@nb.njit(**_FAST)
def _gemv_rows(out, xb, xsum, qs, scale, offset, n_rows, k, kind, lo, hi):  # type: ignore[no-untyped-def]
    """Output columns lo .. hi - 1 of `gemv_kernel` (its arguments, with x interleaved as xb)."""
    nbk = k // QB
    has_offset = offset.shape[0] > 0
    res = np.empty(MAX_ROWS, np.float32)
    for i in range(lo, hi):
        for m0 in range(0, n_rows, MAX_ROWS):
            mm = min(MAX_ROWS, n_rows - m0)
            if kind == KIND_U4:
                _row_dot_u4(res, xb[m0 * k :], qs, scale, i, mm, k)
            elif kind == KIND_F16:
                _row_dot_f16(res, xb[m0 * k :], qs, scale, i, mm, k)
            else:
                _row_dot_i8(res, xb[m0 * k :], qs, scale, i, mm, k)
            for m in range(mm):
                t = res[m]
                if has_offset:
                    t -= _offset_dot(offset, xsum, i, m0 + m, nbk)
                out[m0 + m, i] = t


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
