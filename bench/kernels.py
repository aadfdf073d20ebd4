"""Quantized linear kernels (npasr.nn.ops.linear on a QTensor) against NumPy f32 on the same shapes.

Prints, per (model shape, type, rows): time, ratio to `x @ w.T` with f32 weights (lower is
better), weight GB/s read, GFLOPS, and PASS/FAIL for the issue-3 targets. Then the float GEMM
of encoder matrices held as `float_gemm.Panels` (F16 and F32 models: the same f32 arithmetic as
NumPy's, from exact f16 or f32 weights) at M = 1500 rows. Then multi-row GEMV
(beam search: M rows against one weight, as a multiple of the 1-row time; target 5 rows <= 2x)
and the row/element-wise ops (`ops.softmax/gelu/layer_norm` against `ref.*`), and attention
(`ops.attention` against `ref.attention` and against its own BLAS path). Both sides run
with the same thread count (`--threads`, default 2) for Numba and BLAS; each time is the minimum
over `--repeat` runs, NumPy and kernel interleaved so that load from other processes hits both.

    python bench/kernels.py                 # full table, ~2 min on 2 cores
    python bench/kernels.py --quick --json bench/out/kernels.json
"""

from __future__ import annotations

import _blas_env  # noqa: F401  (first: before NumPy loads OpenBLAS)

# isort: split

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from npasr import threads  # noqa: E402
from npasr.io.gguf import GGMLType  # noqa: E402
from npasr.nn import float_gemm, ops, quant, ref  # noqa: E402

# (model, N = Dout, K = Din): attention, MLP up, MLP down (+ Whisper's tied vocab projection)
SHAPES = [
    ("whisper-base", 512, 512),
    ("whisper-base", 2048, 512),
    ("whisper-base", 512, 2048),
    ("whisper-base vocab", 51865, 512),
    ("gigaam", 768, 768),
    ("gigaam", 3072, 768),
    ("gigaam", 768, 3072),
    ("parakeet", 1024, 1024),
    ("parakeet", 4096, 1024),
    ("parakeet", 1024, 4096),
    ("target", 4096, 4096),
]
TYPES = [GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_K]
# (qtype, M, N, K) -> max ratio vs numpy f32
TARGETS = {
    (GGMLType.Q8_0, 1, 4096, 4096): 0.5,
    (GGMLType.Q4_0, 1, 4096, 4096): 0.35,
    (GGMLType.Q4_K, 1, 4096, 4096): 0.35,
    (GGMLType.Q8_0, 1500, 4096, 1024): 1.25,
}


# multi-row GEMV: Whisper tiny/base decoder MLP and the base vocabulary projection
MULTI_ROW_SHAPES = [(1536, 384), (2048, 512), (51865, 512)]
MULTI_ROWS = (1, 2, 5, 8)
MULTI_ROW_TARGET = (5, 2.0)  # 5 rows cost at most 2x one row
# (name, shape) for the row / element-wise ops at Whisper-base sizes
ELEMENTWISE = [
    ("softmax", (8, 1500, 1500)),
    ("gelu", (1500, 2048)),
    ("layer_norm", (1500, 512)),
    ("layer_norm", (1, 512)),
]


def _pair_min(f_ref, f_q, repeat: int) -> tuple[float, float]:
    f_ref(), f_q()  # warm caches and the lazy repack
    best_r = best_q = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        f_ref()
        t1 = time.perf_counter()
        f_q()
        t2 = time.perf_counter()
        best_r, best_q = min(best_r, t1 - t0), min(best_q, t2 - t1)
    return best_r, best_q


def _case(qtype: GGMLType, m: int, n: int, k: int, repeat: int, rng) -> dict:
    w32 = (rng.standard_normal((n, k), dtype=np.float32) * 0.05).astype(np.float32)
    x = rng.standard_normal((m, k), dtype=np.float32)
    w = quant.quantize(w32, qtype)
    wd = w.dequantize()  # numpy side multiplies the same values in f32
    t0 = time.perf_counter()
    w.repack()
    repack_s = time.perf_counter() - t0
    reps = repeat if m <= ops.GEMV_MAX_ROWS else max(3, repeat // 4)
    t_np, t_q = _pair_min(lambda: x @ wd.T, lambda: ops.linear(x, w), reps)
    target = TARGETS.get((qtype, m, n, k))
    ratio = t_q / t_np
    return {
        "type": qtype.name,
        "M": m,
        "N": n,
        "K": k,
        "numpy_ms": t_np * 1e3,
        "quant_ms": t_q * 1e3,
        "ratio": ratio,
        "quant_GBps": w.nbytes / t_q / 1e9,
        "numpy_GBps": wd.nbytes / t_np / 1e9,
        "quant_GFLOPS": 2 * m * n * k / t_q / 1e9,
        "numpy_GFLOPS": 2 * m * n * k / t_np / 1e9,
        "repack_ms": repack_s * 1e3,
        "target": target,
        "verdict": None if target is None else ("PASS" if ratio <= target else "FAIL"),
    }


def _float_case(dtype: type, m: int, n: int, k: int, repeat: int, rng) -> dict:
    w = (rng.standard_normal((n, k), dtype=np.float32) * 0.05).astype(dtype)
    x = rng.standard_normal((m, k), dtype=np.float32)
    w32, wp = w.astype(np.float32), float_gemm.pack(w)
    t_np, t_k = _pair_min(lambda: x @ w32.T, lambda: ops.linear(x, wp), max(3, repeat // 4))
    return {
        "type": "F16" if dtype == np.float16 else "F32",
        "M": m,
        "N": n,
        "K": k,
        "numpy_ms": t_np * 1e3,
        "kernel_ms": t_k * 1e3,
        "ratio": t_k / t_np,
        "kernel_GFLOPS": 2 * m * n * k / t_k / 1e9,
        "numpy_GFLOPS": 2 * m * n * k / t_np / 1e9,
    }


def float_gemm_rows(repeat: int, rng, quick: bool) -> list[dict]:
    if not float_gemm.available():
        print("float GEMM: not available on this CPU (no AVX-512F) or disabled")
        return []
    shapes = [(4096, 1024)] if quick else [(n, k) for _, n, k in SHAPES if n != 51865]
    rows = []
    print("\nfloat GEMM (Panels) vs numpy f32, M = 1500; ratio = kernel / numpy")
    for dtype in (np.float16, np.float32):
        for n, k in dict.fromkeys(shapes):
            r = _float_case(dtype, 1500, n, k, repeat, rng)
            rows.append(r)
            print(
                f"{r['type']:5} {r['M']:5d} {n:6d} {k:5d} np {r['numpy_ms']:8.3f} ms "
                f"kernel {r['kernel_ms']:8.3f} ms  {r['ratio']:5.2f}x  "
                f"{r['kernel_GFLOPS']:6.1f} GF (np {r['numpy_GFLOPS']:6.1f})",
                flush=True,
            )
    return rows


_COLD = """
import time, numpy as np
t0 = time.perf_counter()
from npasr.io.gguf import GGMLType
from npasr.nn import ops, quant
rng = np.random.default_rng(0)
for t in (GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_K):
    w = quant.quantize(rng.standard_normal((64, 256)).astype(np.float32), t)
    ops.linear(rng.standard_normal((1, 256)).astype(np.float32), w)
    ops.linear(rng.standard_normal((20, 256)).astype(np.float32), w)
x = rng.standard_normal((4, 256)).astype(np.float32)
ops.softmax(x), ops.gelu(x), ops.layer_norm(x, x[0], x[1])
print(time.perf_counter() - t0)
"""


def multi_row(repeat: int, rng) -> list[dict]:
    """Time of ops.linear with M activation rows, as a multiple of the 1-row time."""
    rows = []
    for n, k in MULTI_ROW_SHAPES:
        w32 = (rng.standard_normal((n, k), dtype=np.float32) * 0.05).astype(np.float32)
        for qtype in TYPES:
            if k % 256 and qtype == GGMLType.Q4_K:
                continue
            w = quant.quantize(w32, qtype)
            wd = w.dequantize()
            reps = repeat if n * k < 10**7 else max(5, repeat // 3)
            times = {}
            for m in MULTI_ROWS:
                x = rng.standard_normal((m, k), dtype=np.float32)
                t_np, t_q = _pair_min(partial(np.matmul, x, wd.T), partial(ops.linear, x, w), reps)
                times[m] = (t_q, t_np)
            m_t, lim = MULTI_ROW_TARGET
            ratio = times[m_t][0] / times[1][0]
            rows.append(
                {
                    "type": qtype.name,
                    "N": n,
                    "K": k,
                    "quant_ms": {m: t[0] * 1e3 for m, t in times.items()},
                    "numpy_ms": {m: t[1] * 1e3 for m, t in times.items()},
                    f"rows{m_t}_over_rows1": ratio,
                    "verdict": "PASS" if ratio <= lim else "FAIL",
                }
            )
    return rows


def elementwise(repeat: int, rng) -> list[dict]:
    """ops.softmax / gelu / layer_norm (Numba kernels) against the NumPy references."""
    rows = []
    for name, shape in ELEMENTWISE:
        x = rng.standard_normal(shape, dtype=np.float32)
        args = (x, *rng.standard_normal((2, shape[-1]), dtype=np.float32))  # x, g, b
        args = args if name == "layer_norm" else args[:1]
        pair = (partial(getattr(ref, name), *args), partial(getattr(ops, name), *args))
        reps = repeat if x.size < 10**6 else max(3, repeat // 3)
        t_np, t_k = _pair_min(*pair, reps)
        rows.append({"op": name, "shape": shape, "numpy_ms": t_np * 1e3, "kernel_ms": t_k * 1e3})
    return rows


# (name, groups, query rows, keys, head width): encoder self-attention over a 30 s window, and
# the cross-attention of Whisper's prompt pass (224 prompt tokens over the window)
ATTENTION = [
    ("whisper-tiny encoder", 6, 1500, 1500, 64),
    ("whisper-base encoder", 8, 1500, 1500, 64),
    ("whisper-base prompt x-attn", 8, 224, 1500, 64),
    ("gigaam-v3 encoder, 30 s", 16, 750, 750, 48),
]


def attention_rows(repeat: int, rng) -> list[dict]:
    """ops.attention (the fused float_gemm kernel where it runs) against `ref.attention` (NumPy
    f32) and against ops' BLAS path (NPASR_FLOAT_GEMM=0: query blocks of matmuls around the
    softmax kernel, what ran before the fused kernel)."""
    rows = []
    for name, g, n_q, n_k, dh in ATTENTION:
        q, k, v = (rng.standard_normal((g, t, dh), dtype=np.float32) for t in (n_q, n_k, n_k))

        def blas(q=q, k=k, v=v):  # type: ignore[no-untyped-def]
            os.environ["NPASR_FLOAT_GEMM"] = "0"
            try:
                return ops.attention(q, k, v)
            finally:
                del os.environ["NPASR_FLOAT_GEMM"]

        fused = partial(ops.attention, q, k, v)
        t_np, t_k = _pair_min(partial(ref.attention, q, k, v), fused, repeat)
        t_blas, _ = _pair_min(blas, fused, repeat)
        rows.append(
            {"case": name, "shape": (g, n_q, n_k, dh), "numpy_ms": t_np * 1e3,
             "blas_path_ms": t_blas * 1e3, "kernel_ms": t_k * 1e3,
             "fused": float_gemm.available()}
        )  # fmt: skip
    return rows


# decoding steps over one window's cross-attention (Whisper base: 8 heads x 1500 keys x 64):
# greedy (1 row) and beam 5; LAYERS windows' worth of keys cycled so they come from memory, as
# in a decoder whose six layers' keys (36 MB for base) exceed the cache
DECODING_ATTENTION = [("whisper-base x-attn, greedy", 1), ("whisper-base x-attn, beam 5", 5)]
LAYERS = 12


def decoding_attention_rows(repeat: int, rng) -> list[dict]:
    """Per-layer time of one decoding step's cross-attention: NumPy (`ref.attention`), the
    decoding kernel over transposed keys (`ops.attention`, what non-AVX-512 CPUs run), and the
    fused kernel over keys packed once (`ops.pack_keys`: float32, and float16 as quantized
    models keep them)."""
    g, n_k, dh = 8, 1500, 64
    stored = [rng.standard_normal((2, g, dh, n_k), dtype=np.float32) for _ in range(LAYERS)]
    views = [tuple(np.swapaxes(a, 1, 2) for a in kv) for kv in stored]  # (G, T, Dh) views
    forms = {
        "numpy_ms": lambda q, i: ref.attention(q, *views[i]),
        "transposed_ms": lambda q, i: ops.attention(q, *views[i]),
        "packed_f32_ms": lambda q, i: ops.attention_keys(q, packed[0][i]),
        "packed_f16_ms": lambda q, i: ops.attention_keys(q, packed[1][i]),
    }
    packed = [[ops.pack_keys(*v, half=h) for v in views] for h in (False, True)]
    rows = []
    for name, n_rows in DECODING_ATTENTION:
        q = rng.standard_normal((n_rows, g, 1, dh), dtype=np.float32)
        row = {"case": name, "shape": (n_rows, g, n_k, dh)}
        for key, f in forms.items():
            f(q, 0)
            best = float("inf")
            for _ in range(max(3, repeat // 4)):
                t0 = time.perf_counter()
                for i in range(LAYERS):
                    f(q, i)
                best = min(best, (time.perf_counter() - t0) / LAYERS)
            row[key] = best * 1e3
        rows.append(row)
    return rows


# the GEMV targets' shape with its weight streamed from memory: COPIES weights of each type
# (and of NumPy's f32) cycled, so no call finds its weight in a cache. In the target rows above
# NumPy's 64 MB pass leaves part of the quantized 9-17 MB in this VM's 32 MB L3, a share that
# changes from one process to the next.
STREAM_SHAPE = (4096, 4096)
COPIES = 6


def streamed_gemv_rows(repeat: int, rng) -> list[dict]:
    """1-row GEMV on STREAM_SHAPE for NumPy f32 and each TYPES entry, every call on a weight
    that is not in any cache (COPIES of it cycled): ms per call and weight GB/s."""
    n, k = STREAM_SHAPE
    w32 = (rng.standard_normal((n, k), dtype=np.float32) * 0.05).astype(np.float32)
    x = rng.standard_normal((1, k), dtype=np.float32)
    forms: dict[str, tuple[list, Callable]] = {
        "numpy f32": ([w32 + np.float32(i) for i in range(COPIES)], lambda w: x @ w.T)
    }
    for qtype in TYPES:
        q = quant.quantize(w32, qtype)
        copies = [quant.QTensor(qtype, q.shape, q.blocks.copy()) for _ in range(COPIES)]
        forms[qtype.name] = (copies, lambda w: ops.linear(x, w))
    rows = []
    for name, (weights, f) in forms.items():
        for w in weights:
            f(w)  # the lazy repack, and compiles
        best = float("inf")
        for _ in range(max(3, repeat // 3)):
            t0 = time.perf_counter()
            for w in weights:
                f(w)
            best = min(best, (time.perf_counter() - t0) / COPIES)
        nbytes = w32.nbytes if name == "numpy f32" else weights[0].nbytes
        rows.append({"type": name, "N": n, "K": k, "ms": best * 1e3, "GBps": nbytes / best / 1e9})
    base = rows[0]["ms"]
    for r in rows:
        r["ratio"] = r["ms"] / base
    return rows


def _print_streamed(rows: list[dict]) -> None:
    n, k = STREAM_SHAPE
    print(f"\n1-row GEMV {n}x{k}, weight streamed from memory ({COPIES} copies cycled)")
    for r in rows:
        print(f"{r['type']:10} {r['ms']:7.3f} ms  {r['GBps']:5.1f} GB/s  {r['ratio']:5.2f}x numpy")


def cold_start() -> dict:
    """Seconds to import + first call of every kernel: empty cache (compile) and warm cache."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(REPO))
        for label in ("compile_s", "cached_s"):
            run = subprocess.run(
                [sys.executable, "-c", _COLD], env=env, capture_output=True, text=True, check=True
            )
            out[label] = float(run.stdout.strip().splitlines()[-1])
    return out


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = Path("/proc/cpuinfo").read_text()
        simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512bw") if f" {f}" in flags]
    except OSError:
        simd = []
    import numba

    return {
        "cpu": cpu,
        "simd": simd,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _print_decoding_attention(rows: list[dict]) -> None:
    print("\ndecoding cross-attention per layer, keys from memory (ms; packed: ops.pack_keys)")
    for r in rows:
        print(
            f"{r['case']:29} numpy {r['numpy_ms']:6.3f}  transposed {r['transposed_ms']:6.3f}  "
            f"packed f32 {r['packed_f32_ms']:6.3f}  packed f16 {r['packed_f16_ms']:6.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="target shapes only (all sections)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--decoding-attention", action="store_true", help="only that section")
    ap.add_argument("--streamed-gemv", action="store_true", help="only that section")
    args = ap.parse_args()
    threads.set_num_threads(args.threads)
    facts = machine()
    facts["threads"] = args.threads
    print(" | ".join(f"{k}={v}" for k, v in facts.items()))
    if args.decoding_attention:
        return _print_decoding_attention(
            decoding_attention_rows(args.repeat, np.random.default_rng(0))
        )
    if args.streamed_gemv:
        return _print_streamed(streamed_gemv_rows(args.repeat, np.random.default_rng(0)))
    cold = cold_start()
    print(
        f"cold start (import + first call of all kernels): compile {cold['compile_s']:.1f} s, "
        f"from cache {cold['cached_s']:.1f} s"
    )
    rng = np.random.default_rng(0)
    cases = [(t, m, n, k) for (t, m, n, k) in TARGETS]
    if not args.quick:
        for _, n, k in SHAPES:
            cases += [(t, 1, n, k) for t in TYPES] + [(GGMLType.Q8_0, 4, n, k)]
        cases += [(GGMLType.Q8_0, 1500, n, k) for _, n, k in SHAPES if n != 51865]
        cases += [(t, 1500, 4096, 1024) for t in TYPES[1:]]
    cases = list(dict.fromkeys(cases))
    rows = []
    hdr = (
        f"{'type':5} {'M':>5} {'N':>6} {'K':>5} {'np ms':>8} {'q ms':>8} {'ratio':>6} "
        f"{'q GB/s':>7} {'np GB/s':>7} {'q GF':>6} {'np GF':>6}  target"
    )
    print(hdr)
    for qtype, m, n, k in cases:
        r = _case(qtype, m, n, k, args.repeat, rng)
        rows.append(r)
        tgt = "" if r["target"] is None else f"<= {r['target']:.2f}x {r['verdict']}"
        print(
            f"{r['type']:5} {m:5d} {n:6d} {k:5d} {r['numpy_ms']:8.3f} {r['quant_ms']:8.3f} "
            f"{r['ratio']:6.2f} {r['quant_GBps']:7.1f} {r['numpy_GBps']:7.1f} "
            f"{r['quant_GFLOPS']:6.1f} {r['numpy_GFLOPS']:6.1f}  {tgt}",
            flush=True,
        )
    streamed = streamed_gemv_rows(args.repeat, rng)
    _print_streamed(streamed)
    floats = float_gemm_rows(args.repeat, rng, args.quick)
    m_t, lim = MULTI_ROW_TARGET
    print(f"\nmulti-row GEMV: ms per call (x 1-row time); target {m_t} rows <= {lim:.1f}x")
    multi = multi_row(args.repeat, rng)
    for r in multi:
        cells = " ".join(
            f"M{m} {t:7.3f} ({t / r['quant_ms'][1]:4.2f}x)" for m, t in r["quant_ms"].items()
        )
        np_cells = " ".join(f"{t:.3f}" for t in r["numpy_ms"].values())
        print(f"{r['type']:5} {r['N']:6d} {r['K']:5d}  {cells}  {r['verdict']}  np f32: {np_cells}")
    print("\nrow / element-wise ops (Numba kernel vs NumPy reference)")
    elem = elementwise(args.repeat, rng)
    for r in elem:
        speedup = r["numpy_ms"] / r["kernel_ms"]
        print(
            f"{r['op']:10} {str(r['shape']):16} numpy {r['numpy_ms']:8.3f} ms  "
            f"kernel {r['kernel_ms']:8.3f} ms  ({speedup:.1f}x faster)"
        )
    print("\nattention (ops.attention vs ref.attention in NumPy, and vs ops' BLAS path)")
    attn = attention_rows(args.repeat, rng)
    for r in attn:
        print(
            f"{r['case']:27} {str(r['shape']):22} numpy {r['numpy_ms']:7.2f} ms  "
            f"blas path {r['blas_path_ms']:7.2f} ms  ops {r['kernel_ms']:7.2f} ms  "
            f"({r['kernel_ms'] / r['numpy_ms']:.2f}x numpy, "
            f"{r['kernel_ms'] / r['blas_path_ms']:.2f}x blas path"
            f"{'' if r['fused'] else '; no fused kernel here'})"
        )
    dec_attn = decoding_attention_rows(args.repeat, rng)
    _print_decoding_attention(dec_attn)
    facts["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"load average at end: {facts['loadavg_end']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        out = {
            "machine": facts,
            "cold": cold,
            "rows": rows,
            "streamed_gemv": streamed,
            "float_gemm": floats,
            "multi_row": multi,
            "elementwise": elem,
            "attention": attn,
            "decoding_attention": dec_attn,
        }
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
