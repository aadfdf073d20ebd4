"""int8 VNNI GEMM (npasr.nn.int8_gemm.gemm) against the current encoder path and NumPy f32.

For each encoder shape (M = 1500 frames, K = Din, N = Dout) and thread count, prints the time of
`x @ w.T` with f32 weights (BLAS), of `ops._gemm` (dequantize weight tiles + BLAS, what
`ops.linear` runs for M > 8 today) and of `int8_gemm.gemm`, with each one's ratio to NumPy f32
(lower is better) and the speed-up of int8 over `_gemm` (target >= 1.8x). Times are the minimum
over `--repeat` runs, the three interleaved so that load from other processes hits all of them;
the load average is printed before and after.

    python bench/int8_gemm.py                   # ~1 min on 2 cores
    python bench/int8_gemm.py --types Q8_0 --threads 2
"""

from __future__ import annotations

import _blas_env  # noqa: F401  (first: before NumPy loads OpenBLAS)

# isort: split

import argparse
import os
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from npasr import threads  # noqa: E402
from npasr.io.gguf import GGML_BLOCK, GGMLType  # noqa: E402
from npasr.nn import int8_gemm, ops, quant  # noqa: E402

M = 1500  # Whisper encoder frames (30 s)
SHAPES = [(384, 1536), (512, 2048), (768, 3072), (1024, 4096)]  # (K, N): tiny..medium MLP up
TARGET = 1.8  # int8 must be at least this much faster than ops._gemm


def _best(fns: list, repeat: int) -> list[float]:
    for f in fns:
        f()  # compile / repack / warm caches
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--types", nargs="+", default=["Q8_0", "Q4_0", "Q4_K"])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    if not int8_gemm.available():
        sys.exit("int8_gemm.available() is False here (needs AVX-512 VNNI and the JIT)")
    print(f"load average at start: {os.getloadavg()}")
    print(
        f"{'thr':>3} {'type':5} {'K':>5} {'N':>5} {'f32 ms':>8} {'_gemm ms':>9} {'int8 ms':>8}"
        f" {'_gemm/f32':>9} {'int8/f32':>8} {'speed-up':>8} {'int8 GOPS':>9}"
    )
    rng = np.random.default_rng(0)
    for n_threads in args.threads:
        threads.set_num_threads(n_threads)
        for k, n in SHAPES:
            x = rng.standard_normal((M, k), dtype=np.float32)
            w32 = rng.standard_normal((n, k), dtype=np.float32) * np.float32(0.05)
            for name in args.types:
                if k % GGML_BLOCK[GGMLType[name]][0]:
                    continue  # e.g. Q4_K needs K % 256 == 0
                w = quant.quantize(w32, GGMLType[name])
                wd, p = w.dequantize(), w.repack()
                fns = [partial(np.matmul, x, wd.T), partial(ops._gemm, x, w, p)]
                t_np, t_old, t_new = _best([*fns, partial(int8_gemm.gemm, x, w)], args.repeat)
                speedup = t_old / t_new
                verdict = "PASS" if speedup >= TARGET else "FAIL"
                print(
                    f"{n_threads:3d} {name:5} {k:5d} {n:5d} {t_np * 1e3:8.2f} {t_old * 1e3:9.2f}"
                    f" {t_new * 1e3:8.2f} {t_old / t_np:9.2f} {t_new / t_np:8.2f}"
                    f" {speedup:7.2f}x {2 * M * k * n / t_new / 1e9:9.0f}  {verdict}",
                    flush=True,
                )
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
