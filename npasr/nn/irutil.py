"""Small LLVM IR helpers shared by the explicit-vector kernels (quant_kernels, int8_gemm,
float_gemm), which build their inner loops as IR through Numba @intrinsic functions."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache

import numba as nb
from llvmlite import ir
from numba import types
from numba.core import cgutils

_i32 = ir.IntType(32)


def splat(builder: ir.IRBuilder, value: ir.Value, n: int = 16) -> ir.Value:
    """<n x T> with every lane = value (T = value.type)."""
    vt = ir.VectorType(value.type, n)
    v = builder.insert_element(ir.Constant(vt, ir.Undefined), value, _i32(0))
    return builder.shuffle_vector(
        v, ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(_i32, n), [0] * n)
    )


def vload(builder: ir.IRBuilder, base: ir.Value, index: ir.Value, vt: ir.VectorType) -> ir.Value:
    """Unaligned load of a vector vt from element `index` of the pointer `base`."""
    return builder.load(builder.bitcast(builder.gep(base, [index]), vt.as_pointer()), align=1)


def fn(builder: ir.IRBuilder, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    """Declaration of the function (an LLVM intrinsic) `name` in the builder's module."""
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)


# How far ahead of its reads a kernel streaming a weight once asks for the bytes (one 4096-wide
# Q8_0 row): with the hardware prefetcher alone a 2-thread Q8_0 GEMV streamed from memory at
# 27-30 GB/s on Zen 4, with this 31-35 (bench/RESULTS.md).
PREFETCH_BYTES = 4096


def prefetch(builder: ir.IRBuilder, ptr: ir.Value, ahead: int = PREFETCH_BYTES) -> None:
    """Hint that the byte `ahead` bytes after `ptr` (any pointer) will be read soon, into every
    cache level. Only a hint: no fault even where that is past the end of the array."""
    i8p = ir.IntType(8).as_pointer()
    f = fn(builder, "llvm.prefetch.p0i8", ir.VoidType(), [i8p, _i32, _i32, _i32])
    at = builder.gep(builder.bitcast(ptr, i8p), [ir.IntType(64)(ahead)])
    builder.call(f, [at, _i32(0), _i32(3), _i32(1)])  # read, keep in every level, data


def intrinsic_args(context, builder, signature, args, n_arrays: int):  # type: ignore[no-untyped-def]
    """The arguments of a Numba @intrinsic codegen: the first n_arrays as array structs (`.data`
    is the pointer, `.shape` / `.strides` the extents), the rest cast to int64."""
    arrays = [
        context.make_array(t)(context, builder, v)
        for t, v in zip(signature.args[:n_arrays], args[:n_arrays], strict=True)
    ]
    ints = [
        context.cast(builder, v, t, types.int64)
        for v, t in zip(args[n_arrays:], signature.args[n_arrays:], strict=True)
    ]
    return arrays, ints


def store_tile(builder: ir.IRBuilder, out_p, accs, m0, p, ldo) -> None:  # type: ignore[no-untyped-def]
    """Write a GEMM micro-tile: accs[m][g] (pointers to <16 x float>) to out[m0 + m, 16 (G p +
    g) ...] of a float32 output with row stride ldo (elements; m0, p, ldo i64 values)."""
    i64, vf = ir.IntType(64), ir.VectorType(ir.FloatType(), 16)
    n_groups = len(accs[0])
    for m, row in enumerate(accs):
        o = builder.add(
            builder.mul(builder.add(m0, i64(m)), ldo), builder.mul(p, i64(16 * n_groups))
        )
        for g, acc in enumerate(row):
            dst = builder.gep(out_p, [builder.add(o, i64(16 * g))])
            builder.store(builder.load(acc), builder.bitcast(dst, vf.as_pointer()), align=4)


def row_switch(
    builder: ir.IRBuilder, rows: ir.Value, max_rows: int, body: Callable[[int], None]
) -> None:
    """Branch on the run-time row count `rows` (i64) to one code path per count 1..max_rows,
    each emitted by body(count), so every path keeps its accumulators in registers; any other
    count does nothing. The builder continues after the paths join."""
    end = builder.append_basic_block("rows.end")
    switch = builder.switch(rows, end)
    for n in range(1, max_rows + 1):
        case = builder.append_basic_block(f"rows.{n}")
        switch.add_case(ir.IntType(64)(n), case)
        builder.position_at_end(case)
        body(n)
        builder.branch(end)
    builder.position_at_end(end)


def kernel_enabled(env: str, *features: str) -> bool:
    """Whether an explicit-vector kernel may run: JIT on (not NUMBA_DISABLE_JIT), the switch
    `env` not "0", and `cpu_has(*features)`."""
    if nb.config.DISABLE_JIT or os.environ.get(env, "1") == "0":
        return False
    return cpu_has(*features)


@cache
def cpu_has(*features: str) -> bool:
    """True when the CPU Numba compiles for has every LLVM feature named (e.g. "avx512vnni"):
    the host's, or the NUMBA_CPU_NAME / NUMBA_CPU_FEATURES target when those are set."""
    import llvmlite.binding as llb

    name = nb.config.CPU_NAME
    if name in (None, "", "host"):
        feats = llb.get_host_cpu_features()
        return all(bool(feats.get(f)) for f in features)
    enabled = set((nb.config.CPU_FEATURES or "").split(","))  # NUMBA_CPU_FEATURES="+avx2,..."
    return {f"+{f}" for f in features} <= enabled
