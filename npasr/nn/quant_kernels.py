"""Fused kernels over the repacked quantized layouts of `npasr.nn.quant.Packed`.

Every kernel computes `ref.linear` on `quant.dequantize(w)` (tests/nn/test_quant_kernels.py):

    w[r, 32 b + j] = scale[r, b] * v[r, 32 b + j] - offset[r, b]

with v int8 ("i8": Q8_0, Q5_0, Q5_1, Q5_K) or a nibble ("u4": Q4_0, Q4_1, Q4_K; byte 16 b + j holds
v[32 b + j] in its low and v[32 b + j + 16] in its high nibble). The GEMV also reads a plain
float16 matrix (KIND_F16: v the half values, no scale or offset), widening each value exactly.
Shapes: M activation rows, N weight rows (outputs), K inputs, NB = K // 32 blocks per row.

The GEMV's activations. For the quantized layouts each 32-block of each activation row is
rounded to int16, `round_x16` (the NumPy spec): xs = max|x| / 32767, q = rint(x / xs),
x_hat = xs q, so |x - x_hat| <= xs / 2 ~ 2^-16 max|x| per element, and the result is
`ref.linear(x_hat, dequantize(w))` up to float32 rounding (the offset term uses the block sums
of x_hat, so that holds for offset layouts too). A block holding inf or nan gets xs = nan, so
every output it reaches is nan. The rounding is a few times the float32 summation error of a
4096-long dot and 256x finer than the int8 activations of `int8_gemm`; tiny.en and base give
the same jfk transcripts (greedy and beam 5, every weight type) with it as with float32
activations (bench/RESULTS.md). Float16 weights keep float32 activations (exact widening, so
only the summation order differs from the reference).

How the GEMV is written, and why (measured on Zen 4 with Numba 0.68):
* Numba types uint8/int8 arithmetic as int64, and LLVM leaves the 16- and 32-long per-block loops
  either scalar (once fully unrolled, the SLP vectorizer gives up because the float stores may
  alias the byte loads) or in a 64-wide vector body that a 16-long loop never enters. Plain Numba
  loops reached only ~9 GMAC/s on Q4 (about NumPy f32 speed).
* So the inner loop over one weight row is emitted as LLVM IR with explicit vectors (`_row_dot_*`,
  a Numba `@intrinsic`). All M <= 8 activation rows run in the same pass, with their
  accumulators in registers, so a weight block is read and widened once for the whole beam.
* Quantized layouts (`_row_dot_int_ir`): per 32-weight block, the values as two <16 x i16>, then
  per activation row two pair-products into one <8 x i32> (`_madd`: pmaddwd on AVX2 CPUs, which
  LLVM fuses with the add into vpdpwssd on VNNI ones), one int -> float conversion and one FMA by
  the product of the two scales. Every integer partial sum is exact: a lane sums 4 products
  |v q| <= 128 * 32767, so it stays below 2^24 and converts to float32 exactly.
* Why int16 and not float32 activations: the float form (widen the bytes to float32, scale, one
  FMA per 16 lanes; still the f16 path) is compute bound on Zen 4, where each 512-bit operation
  runs as two halves: one thread reached ~18 GB/s of Q8_0 weight with it in L3, and two threads
  streaming a 4096 x 4096 weight from memory missed the 0.5x-NumPy target in some runs. The int16
  form does about a third of the vector work per block, on 256-bit vectors; on 4096 x 4096 Q8_0
  (2 threads) it measured 0.39-0.55 ms in L3 against 0.52-0.69, and 8 rows 1.8 ms against 3.0.
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


# --- one weight row against up to MAX_ROWS activation rows, as explicit-vector LLVM IR ----------


def _hsum(builder: ir.IRBuilder, v: ir.Value, n: int = VL) -> ir.Value:
    """Pairwise sum of a <n x float> (halves added log2(n) times)."""
    while n > 1:
        n //= 2
        lo, hi = (
            ir.Constant(ir.VectorType(ir.IntType(32), n), list(range(a, a + n))) for a in (0, n)
        )
        v = builder.fadd(builder.shuffle_vector(v, v, lo), builder.shuffle_vector(v, v, hi))
    return builder.extract_element(v, ir.IntType(32)(0))


def _row_dot_f16_ir(builder, qs_p, x_p, res_p, i, k, n_act: int) -> None:  # type: ignore[no-untyped-def]
    """IR for res[m] = sum_j w[i, j] xb[b, m, j'] (j = 32 b + j'), m < n_act, for a float16
    weight read as bytes (64 per block of 32 values; one kernel signature for every layout),
    each half widened exactly to float32, one `fmuladd` per 16 lanes per activation row."""
    i64, f32 = ir.IntType(64), ir.FloatType()
    vf, vh = ir.VectorType(f32, VL), ir.VectorType(ir.HalfType(), VL)
    block_bytes = 2 * QB
    fmuladd = irutil.fn(builder, f"llvm.fmuladd.v{VL}f32", vf, [vf, vf, vf])
    nbk = builder.sdiv(k, i64(QB))
    q_row = builder.mul(builder.mul(i, nbk), i64(block_bytes))  # byte offset of row i
    zero = ir.Constant(vf, [0.0] * VL)
    accs = [cgutils.alloca_once_value(builder, zero) for _ in range(2 * n_act)]  # (M, lo|hi)
    with cgutils.for_range(builder, nbk) as loop:
        b = loop.index
        q = builder.gep(qs_p, [builder.add(q_row, builder.mul(b, i64(block_bytes)))])
        irutil.prefetch(builder, q)  # the weight bytes a few blocks ahead
        w = [builder.fpext(irutil.vload(builder, q, i64(2 * h * VL), vh), vf) for h in range(2)]
        for m in range(n_act):
            xo = builder.mul(builder.add(builder.mul(b, i64(n_act)), i64(m)), i64(QB))
            for h in range(2):
                xv = irutil.vload(builder, x_p, builder.add(xo, i64(h * VL)), vf)
                acc = accs[2 * m + h]
                builder.store(builder.call(fmuladd, [w[h], xv, builder.load(acc)]), acc)
    for m in range(n_act):
        t = _hsum(builder, builder.fadd(builder.load(accs[2 * m]), builder.load(accs[2 * m + 1])))
        builder.store(t, builder.gep(res_p, [i64(m)]))


def _madd(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> ir.Value:
    """<16 x i16> a, b -> <8 x i32>: lane t = a[2t] b[2t] + a[2t+1] b[2t+1] (exact): pmaddwd
    where the CPU has AVX2 (LLVM folds it with the add that follows into vpdpwssd where it can);
    elsewhere plain IR of the same value, which LLVM lowers to the target's multiply-adds. (On
    x86 the plain IR became pmaddwd for nibbles but vpmulld on 32-bit lanes for sign-extended
    bytes, so x86 names the instruction.)"""
    i32v = ir.VectorType(ir.IntType(32), 8)
    if irutil.cpu_has("avx2"):
        return builder.call(
            irutil.fn(builder, "llvm.x86.avx2.pmadd.wd", i32v, [a.type] * 2), [a, b]
        )
    prods = []
    for o in (0, 1):
        sel = ir.Constant(i32v, list(range(o, 16, 2)))
        ea = builder.sext(builder.shuffle_vector(a, a, sel), i32v)
        eb = builder.sext(builder.shuffle_vector(b, b, sel), i32v)
        prods.append(builder.mul(ea, eb, flags=["nsw"]))
    return builder.add(prods[0], prods[1], flags=["nsw"])


def _row_dot_int_ir(builder, qs_p, sc_p, xq_p, xs_p, res_p, i, k, n_act: int, kind: str) -> None:  # type: ignore[no-untyped-def]
    """IR for res[m] = sum_b scale[i, b] xs[b, m] sum_j v[i, 32 b + j] xq[b, m, j], m < n_act,
    with xq (NB, n_act, 32) int16 and xs (NB, n_act) f32 (`_quantize_x16`), for the layouts
    "i8" and "u4" read as bytes (one kernel signature for every layout).
    Per block: the 32 values as two <16 x i16>, then per activation row two `_madd` into one
    <8 x i32> (each lane 4 products: exact, and exact as float32), one conversion and one FMA
    by the product of the two scales."""
    i64, f32 = ir.IntType(64), ir.FloatType()
    h = QB // 2
    vw, vb = ir.VectorType(ir.IntType(16), h), ir.VectorType(ir.IntType(8), h)
    vf = ir.VectorType(f32, h // 2)
    fmuladd = irutil.fn(builder, f"llvm.fmuladd.v{h // 2}f32", vf, [vf, vf, vf])
    u4 = kind == "u4"
    block_bytes = QB // 2 if u4 else QB
    nbk = builder.sdiv(k, i64(QB))
    zero = ir.Constant(vf, [0.0] * (h // 2))
    # Q8_0: two accumulators per row, for even and odd blocks. One chain of dependent FMAs per
    # row was latency bound on an AVX2 Zen (151936 x 1024 GEMV, 2 threads, best of 2 noisy
    # runs: 12.6-17.9 -> 18.7-33.8 GB/s); the nibble layouts measured slower so (14.4 -> 9.0
    # GB/s for Q4_K) and keep one chain.
    chains = 1 if u4 else 2
    accs2 = [[cgutils.alloca_once_value(builder, zero) for _ in range(n_act)]
             for _ in range(chains)]  # fmt: skip

    def block(b: ir.Value, accs: list[ir.Value]) -> None:
        blk = builder.add(builder.mul(i, nbk), b)
        q = builder.gep(qs_p, [builder.mul(blk, i64(block_bytes))])
        irutil.prefetch(builder, q)
        if u4:  # byte j: value j (low nibble), value j + 16 (high nibble)
            z = builder.zext(irutil.vload(builder, q, i64(0), vb), vw)
            w = [
                builder.and_(z, ir.Constant(vw, [15] * h)),
                builder.lshr(z, ir.Constant(vw, [4] * h)),
            ]
        else:
            w = [builder.sext(irutil.vload(builder, q, i64(c * h), vb), vw) for c in range(2)]
        s_w = builder.load(builder.gep(sc_p, [blk]))
        for m in range(n_act):
            bm = builder.add(builder.mul(b, i64(n_act)), i64(m))
            xo = builder.mul(bm, i64(QB))
            p = builder.add(
                _madd(builder, w[0], irutil.vload(builder, xq_p, xo, vw)),
                _madd(builder, w[1], irutil.vload(builder, xq_p, builder.add(xo, i64(h)), vw)),
                flags=["nsw"],
            )
            sc = builder.fmul(s_w, builder.load(builder.gep(xs_p, [bm])))
            acc = accs[m]
            t = builder.call(
                fmuladd,
                [builder.sitofp(p, vf), irutil.splat(builder, sc, h // 2), builder.load(acc)],
            )
            builder.store(t, acc)

    if chains == 1:
        with cgutils.for_range(builder, nbk) as loop:
            block(loop.index, accs2[0])
    else:
        with cgutils.for_range(builder, builder.sdiv(nbk, i64(2))) as loop:
            b0 = builder.mul(loop.index, i64(2))
            block(b0, accs2[0])
            block(builder.add(b0, i64(1)), accs2[1])
        with builder.if_then(builder.icmp_signed("!=", builder.srem(nbk, i64(2)), i64(0))):
            block(builder.sub(nbk, i64(1)), accs2[0])
    for m in range(n_act):
        v = builder.load(accs2[0][m])
        if chains == 2:
            v = builder.fadd(v, builder.load(accs2[1][m]))
        builder.store(_hsum(builder, v, h // 2), builder.gep(res_p, [i64(m)]))


def _values(qs: np.ndarray, i: int, k: int, kind: str) -> np.ndarray:
    """(NB, 32) values v of weight row i, read from the bytes as the IR reads them."""
    nbk = k // QB
    if kind == "u4":
        q = qs[i * k // 2 : (i + 1) * k // 2].reshape(nbk, QB // 2)
        return np.concatenate([q & 15, q >> 4], axis=1)
    if kind == "i8":
        return qs[i * k : (i + 1) * k].view(np.int8).reshape(nbk, QB)
    return qs[2 * i * k : 2 * (i + 1) * k].view(np.float16).reshape(nbk, QB)


def _make_row_dot(kind: str) -> Callable[..., None]:
    """`row_dot(res, xb, xs, qs, scale, i, n_act, k)`: res[m] = (weight row i without its
    offset) . (activation row m), m < n_act <= MAX_ROWS, with the rows interleaved per block so
    one pointer walks every row's block in order: xb (NB, n_act, 32), int16 with xs (NB, n_act)
    their scales for "i8" and "u4", float32 for "f16" (xs and scale unused)."""
    if nb.config.DISABLE_JIT:

        def row_dot_py(res, xb, xs, qs, scale, i, n_act, k):  # type: ignore[no-untyped-def]
            nbk = k // QB
            v = _values(qs, i, k, kind).astype(np.float32)
            xm = xb[: n_act * k].reshape(nbk, n_act, QB).astype(np.float32)
            if kind == "f16":
                res[:n_act] = np.einsum("bmj,bj->m", xm, v)
                return
            p = np.einsum("bmj,bj->bm", xm, v)  # exact integers
            sc = scale[i * nbk : (i + 1) * nbk, None] * xs[: nbk * n_act].reshape(nbk, n_act)
            res[:n_act] = (p * sc).sum(axis=0)

        return row_dot_py

    def row_dot(typingctx, res, xb, xs, qs, scale, i, n_act, k):  # type: ignore[no-untyped-def]
        sig = types.void(res, xb, xs, qs, scale, i, n_act, k)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            arrs, (i_v, n_v, k_v) = irutil.intrinsic_args(context, builder, signature, args, 5)
            res_p, x_p, xs_p, qs_p, sc_p = (a.data for a in arrs)

            def body(rows: int) -> None:
                if kind == "f16":
                    _row_dot_f16_ir(builder, qs_p, x_p, res_p, i_v, k_v, rows)
                else:
                    _row_dot_int_ir(builder, qs_p, sc_p, x_p, xs_p, res_p, i_v, k_v, rows, kind)

            irutil.row_switch(builder, n_v, MAX_ROWS, body)
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(row_dot)


_row_dot_i8 = _make_row_dot("i8")
_row_dot_u4 = _make_row_dot("u4")
_row_dot_f16 = _make_row_dot("f16")

KIND_I8, KIND_U4, KIND_F16 = 0, 1, 2  # the `kind` argument of gemv_kernel
KIND_CODE = {"i8": KIND_I8, "u4": KIND_U4, "f16": KIND_F16}
X16_MAX = 32767  # the largest |q| of the int16 activations


def round_x16(x: np.ndarray) -> np.ndarray:
    """NumPy spec of the int16 activations: x (..., K) f32 -> x_hat = xs q (f32) per 32-block,
    xs = max|x| / 32767 (f32), q = rint(x / xs) (0 where xs = 0); nan in every block that holds
    inf or nan. x_hat is exact in float32 (|q| < 2^15, xs a float32)."""
    xb = np.asarray(x, np.float32).reshape(-1, QB)
    with np.errstate(invalid="ignore", divide="ignore"):
        amax = np.abs(xb).max(axis=1, keepdims=True)
        xs = amax / np.float32(X16_MAX)
        q = np.where(xs > 0, np.rint(xb / np.where(xs > 0, xs, 1)), 0).astype(np.float32)
        bad = ~np.isfinite(xb).all(axis=1, keepdims=True)
        return np.where(bad, np.float32(np.nan), xs * q).astype(np.float32).reshape(x.shape)


@nb.njit(**_JIT)
def _quantize_x16(
    xq: np.ndarray, xs: np.ndarray, xsum: np.ndarray, x: np.ndarray, n_rows: int, k: int
) -> None:
    """`round_x16` of x (M*K,) flat, as the x16 row dot reads it: per group of MAX_ROWS rows,
    xq (NB, rows, 32) int16 and xs (NB, rows) f32, flat; xsum (M*NB,) the block sums of x_hat."""
    nbk = k // QB
    for m0 in range(0, n_rows, MAX_ROWS):
        mm = min(MAX_ROWS, n_rows - m0)
        for b in range(nbk):
            for m in range(mm):
                src = _u((m0 + m) * k + b * QB)
                amax = np.float32(0.0)
                finite = True
                for j in range(QB):
                    v = x[src + _u(j)]
                    finite = finite and np.isfinite(v)
                    amax = max(amax, abs(v))
                s = amax / np.float32(X16_MAX)
                dst = _u(m0 * k + (b * mm + m) * QB)
                qsum = 0
                for j in range(QB):
                    q = 0
                    if finite and s > 0:
                        q = int(np.rint(x[src + _u(j)] / s))
                        q = min(max(q, -X16_MAX), X16_MAX)
                    xq[dst + _u(j)] = q
                    qsum += q
                if not finite:
                    s = np.float32(np.nan)
                xs[_u(m0 * nbk + b * mm + m)] = s
                xsum[_u((m0 + m) * nbk + b)] = s * np.float32(qsum)


@nb.njit(**_JIT)
def _interleave_blocks(xb: np.ndarray, x: np.ndarray, m0: int, n_act: int, k: int) -> None:
    """xb (NB, n_act, 32) flat <- rows m0 : m0 + n_act of x (M*K,) flat."""
    for b in range(k // QB):
        for m in range(n_act):
            src = _u((m0 + m) * k + b * QB)
            dst = _u((b * n_act + m) * QB)
            for j in range(QB):
                xb[dst + _u(j)] = x[src + _u(j)]


@nb.njit(**_JIT)
def _activations(x: np.ndarray, n_rows: int, k: int, kind: int):  # type: ignore[no-untyped-def]
    """The per-call activation buffers of the GEMV, (xf, xq, xs, xsum): for KIND_F16 the float
    rows interleaved (xf); for the quantized layouts the int16 activations (xq), their scales
    and block sums (`_quantize_x16`). The buffers a kind does not use are empty."""
    nbk = k // QB
    if kind == KIND_F16:
        xf = np.empty(n_rows * k, np.float32)
        for m0 in range(0, n_rows, MAX_ROWS):
            _interleave_blocks(xf[m0 * k :], x, m0, min(MAX_ROWS, n_rows - m0), k)
        empty = np.empty(0, np.float32)
        return xf, np.empty(0, np.int16), empty, empty
    xq = np.empty(n_rows * k, np.int16)
    xs = np.empty(n_rows * nbk, np.float32)
    xsum = np.empty(n_rows * nbk, np.float32)
    _quantize_x16(xq, xs, xsum, x, n_rows, k)
    return np.empty(0, np.float32), xq, xs, xsum


@nb.njit(parallel=True, **_FAST)
def gemv_kernel(
    out: np.ndarray,
    x: np.ndarray,
    qs: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    n_rows: int,
    k: int,
    kind: int,
) -> None:
    """out (M, N) = x (M, K) @ w.T for a Packed weight of kind KIND_U4 (qs: N*K/2 nibble-pair
    bytes), KIND_I8 (N*K int8 bytes) or KIND_F16 (2*N*K float16 bytes; no scale), qs always
    viewed as uint8 so that one compiled signature serves every kind; the quantized kinds round
    the activations to int16 first (module docstring).
    Flat: x (M*K,), scale/offset (N*NB,) (offset may be empty: no offset). Any M; each pass over
    the weight serves MAX_ROWS activation rows."""
    n_out = out.shape[1]
    xf, xq, xs, xsum = _activations(x, n_rows, k, kind)
    # At most MAX_ITEMS work items of >= ROW_CHUNK rows: each allocates its scratch once, and
    # thousands of small items (a 51864-row vocabulary) serialized the threads on the allocator.
    n_items = min((n_out + ROW_CHUNK - 1) // ROW_CHUNK, MAX_ITEMS)
    per_item = (n_out + n_items - 1) // n_items
    for c in nb.prange(n_items):
        lo = c * per_item
        hi = min(n_out, lo + per_item)
        _gemv_rows(out, xf, xq, xs, xsum, qs, scale, offset, n_rows, k, kind, lo, hi)


@nb.njit(**_FAST)
def gemv_serial_kernel(out, x, qs, scale, offset, n_rows, k, kind):  # type: ignore[no-untyped-def]
    """`gemv_kernel` (same arguments, same result bits) on the calling thread only: for small
    weights, where waking the worker threads costs more than the product (ops.py)."""
    xf, xq, xs, xsum = _activations(x, n_rows, k, kind)
    _gemv_rows(out, xf, xq, xs, xsum, qs, scale, offset, n_rows, k, kind, 0, out.shape[1])


@nb.njit(**_FAST)
def _gemv_rows(out, xf, xq, xs, xsum, qs, scale, offset, n_rows, k, kind, lo, hi):  # type: ignore[no-untyped-def]
    """Output columns lo .. hi - 1 of `gemv_kernel` (its arguments, with the activations as
    `_activations` leaves them)."""
    nbk = k // QB
    has_offset = offset.shape[0] > 0
    res = np.empty(MAX_ROWS, np.float32)
    for i in range(lo, hi):
        for m0 in range(0, n_rows, MAX_ROWS):
            mm = min(MAX_ROWS, n_rows - m0)
            if kind == KIND_F16:
                _row_dot_f16(res, xf[m0 * k :], xs, qs, scale, i, mm, k)
            elif kind == KIND_U4:
                _row_dot_u4(res, xq[m0 * k :], xs[m0 * nbk :], qs, scale, i, mm, k)
            else:
                _row_dot_i8(res, xq[m0 * k :], xs[m0 * nbk :], qs, scale, i, mm, k)
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
