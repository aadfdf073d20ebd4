"""GPU check of npasr.nn.cuda_kernels: parity with the NumPy references at real sizes, and timings.

One short run on a CUDA machine (about a minute, most of it quantizing the 4096 x 4096 weights on
the CPU and compiling the kernels): prints the device, then one line per check, and writes all of
it to --json. Needs only numpy, numba (with numba-cuda) and npasr's quant/gguf/ref modules (no
scipy: gelu's reference falls back to math.erf in float64 where scipy is absent).

    python bench/gpu_check.py --json bench/out/gpu_check.json
    python bench/gpu_check.py --sim          # the same code on tiny shapes in Numba's simulator

Last, the Whisper encoder (`models.whisper.gpu`) at tiny.en and base sizes with random float32
and Q8_0 weights: GPU against the CPU encoder's exact float path (the bound of
tests/models/test_whisper_gpu.py), and its time (host convolutions and copies included) against
the CPU encoder's default path (`x_cpu`).

Shapes: Whisper base (D 512, MLP 2048) and Parakeet/FastConformer (D 1024, FF 4096) linears and
a 4096 x 4096 weight, for the quantized GEMV (M = 1 and 4 activation rows) and dequantize in
Q8_0, Q4_0 and Q4_K; the encoder GEMM at 1500 frames; layer_norm, softmax and gelu at encoder
sizes. Each check reports `ratio` = max |gpu - reference| / bound (<= 1 passes; the bounds are
derived in tests/nn/test_cuda_kernels.py) or, for dequantize, the number of differing values.
Times are the median over --reps of cuda-event intervals around --inner back-to-back calls of
the host wrapper, divided by --inner; they include Python launch overhead, reported separately
as `launch_us` (an empty kernel timed the same way). GB/s counts the bytes a kernel must move
(weights + activations in and out), GFLOP/s 2 M N K. Where PyTorch with CUDA is importable, each
GEMV and GEMM is also timed as PyTorch's float32 product of the same shape on the same GPU
(cuBLAS, TF32 off) and printed as `x_torch_f32`, our time over its (a quantized GEMV reads ~1.1
or ~0.6 bytes a weight against float32's 4). Exit status 1 if any check fails.
"""

from __future__ import annotations

import os
import sys

if "--sim" in sys.argv:  # before numba is imported
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # npasr here

import npasr  # noqa: E402, F401  (before numpy; after the simulator switch, as it imports numba)

# isort: split
import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from functools import partial  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import cuda  # noqa: E402

from npasr.io.gguf import GGMLType  # noqa: E402
from npasr.nn import cuda_kernels as ck  # noqa: E402
from npasr.nn import ops, quant, ref  # noqa: E402
from tests.models.whisper_ref import random_encoder  # noqa: E402
from tests.nn import cuda_bounds as bound  # noqa: E402
from tests.nn.cuda_bounds import ratio  # noqa: E402

QTYPES = (GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_K)
# (name, N outputs, K inputs) of quantized linears; all are sliced from one 4096 x 4096 weight
LINEARS = [
    ("whisper-base attn 512x512", 512, 512),
    ("whisper-base fc1 2048x512", 2048, 512),
    ("whisper-base fc2 512x2048", 512, 2048),
    ("parakeet ff1 4096x1024", 4096, 1024),
    ("parakeet ff2 1024x4096", 1024, 4096),
    ("square 4096x4096", 4096, 4096),
]
GEMMS = [(1500, 512, 2048), (1500, 2048, 512), (1500, 1024, 4096)]  # M, K, N
ROWS = [(1500, 512), (1500, 1024)]  # layer_norm
SOFTMAX = [(8 * 1500, 1500), (8, 1500)]  # encoder attention scores, decoder step
GELU = [(1500, 2048), (1500, 4096)]
GEMV_M = (1, 4)
# Whisper encoders at real size with random weights: (name, mels, D, heads, layers), 1500 frames
ENCODERS = [("tiny.en", 80, 384, 6, 4), ("base", 80, 512, 8, 6)]
SIM = {  # tiny shapes for --sim
    "encoders": [("tiny random", 8, 32, 2, 2)],
    "encoder_t": 8,
    "source": (16, 256),
    "linears": [("tiny 10x256", 10, 256)],
    "gemms": [(37, 45, 29)],
    "rows": [(3, 70)],
    "softmax": [(3, 70)],
    "gelu": [(4, 51)],
}


def gelu_ref(x: np.ndarray) -> np.ndarray:
    try:
        return ref.gelu(x)
    except ImportError:  # no scipy: erf in float64, rounded once
        erf = np.frompyfunc(math.erf, 1, 1)
        xd = x.astype(np.float64)
        return (0.5 * xd * (1.0 + erf(xd / math.sqrt(2)).astype(np.float64))).astype(np.float32)


class Bench:
    def __init__(self, reps: int, inner: int) -> None:
        self.reps, self.inner = reps, inner
        self.records: list[dict] = []

    def time_ms(self, fn) -> float:  # type: ignore[no-untyped-def]
        """Median ms per call of fn() (after one warm-up call, which also compiles)."""
        fn()
        cuda.synchronize()
        times = []
        for _ in range(self.reps):
            e0, e1 = cuda.event(), cuda.event()
            e0.record()
            for _ in range(self.inner):
                fn()
            e1.record()
            e1.synchronize()
            times.append(e0.elapsed_time(e1) / self.inner)
        return float(np.median(times))

    def record(self, op: str, shape: str, ok: bool, fn, nbytes=0, flops=0, **info) -> None:  # type: ignore[no-untyped-def]
        ms = self.time_ms(fn)
        rec = {"op": op, "shape": shape, "ok": bool(ok), "ms": ms, **info}
        if info.get("torch_f32_ms"):
            rec["x_torch_f32"] = round(ms / info["torch_f32_ms"], 3)
        if info.get("cpu_ms"):
            rec["x_cpu"] = round(ms / info["cpu_ms"], 4)
        if ms > 0:
            rec["GB/s"] = round(nbytes / ms / 1e6, 1) if nbytes else None
            rec["GFLOP/s"] = round(flops / ms / 1e6, 1) if flops else None
        self.records.append(rec)
        rate = rec.get("GFLOP/s") or rec.get("GB/s")
        unit = "GFLOP/s" if rec.get("GFLOP/s") else "GB/s"
        check = {
            k: v for k, v in rec.items() if k in ("ratio", "mismatches", "x_torch_f32", "x_cpu")
        }
        print(
            f"{'ok  ' if ok else 'FAIL'} {op:<11} {shape:<34} {check}  {ms * 1e3:9.1f} us"
            + (f"  {rate:9.1f} {unit}" if rate else ""),
            flush=True,
        )


def device_name() -> str:
    try:
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        return f"{name} (cc {dev.compute_capability[0]}.{dev.compute_capability[1]})"
    except AttributeError:
        return "numba CUDA simulator"


class TorchPeer:
    """The same products in PyTorch on the same GPU (cuBLAS, float32, TF32 off), timed the same
    way, where torch with CUDA is importable (the device image has it); else every call is
    skipped. A failure here is reported in the record, never fails a check."""

    def __init__(self, bench: Bench, sim: bool) -> None:
        self.bench, self.torch = bench, None
        if sim:
            return
        try:
            import torch  # noqa: PLC0415 (a bench extra, not a dependency)

            if torch.cuda.is_available():
                torch.backends.cuda.matmul.allow_tf32 = False
                self.torch = torch
        except Exception as e:  # noqa: BLE001
            print(f"no torch peer: {e}", flush=True)

    def matmul_ms(self, m: int, n: int, k: int) -> dict:
        """ms of x (m, k) @ w (n, k).T in float32 on the GPU, as {"torch_ms": ...}."""
        if self.torch is None:
            return {}
        try:
            t = self.torch
            x = t.randn(m, k, device="cuda")
            w = t.randn(n, k, device="cuda")
            y = t.empty(m, n, device="cuda")

            def run() -> None:
                t.matmul(x, w.T, out=y)

            run()
            t.cuda.synchronize()
            times = []
            for _ in range(self.bench.reps):
                e0, e1 = t.cuda.Event(enable_timing=True), t.cuda.Event(enable_timing=True)
                e0.record()
                for _ in range(self.bench.inner):
                    run()
                e1.record()
                e1.synchronize()
                times.append(e0.elapsed_time(e1) / self.bench.inner)
            return {"torch_f32_ms": float(np.median(times))}
        except Exception as e:  # noqa: BLE001
            return {"torch_error": repr(e)[:200]}


def quantized_sources(shape: tuple[int, int]) -> dict[GGMLType, quant.QTensor]:
    rng = np.random.default_rng(0)
    w = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    return {qt: quant.quantize(w, qt) for qt in QTYPES}


def sliced(src: quant.QTensor, n: int, k: int) -> quant.QTensor:
    """The first n * k weights of src as an (n, k) QTensor (its blocks are row-independent)."""
    row_bytes = src.blocks.shape[1] * k // src.shape[1]
    return quant.QTensor(src.qtype, (n, k), src.blocks.reshape(-1)[: n * row_bytes])


def run(args: argparse.Namespace) -> dict:
    t0 = time.perf_counter()
    sim = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
    cfg = SIM if sim else {}
    source = cfg.get("source", (4096, 4096))
    bench = Bench(args.reps, args.inner)
    rng = np.random.default_rng(1)
    print(f"device: {device_name()}   numba {numba.__version__}   simulator: {sim}", flush=True)

    @cuda.jit
    def nop() -> None:
        pass

    launch_ms = bench.time_ms(nop[1, 32])
    peer = TorchPeer(bench, sim)
    print(f"launch overhead (empty kernel): {launch_ms * 1e3:.1f} us", flush=True)

    t = time.perf_counter()
    sources = quantized_sources(source)
    print(f"quantized {source} weights on the CPU in {time.perf_counter() - t:.1f} s", flush=True)
    for qt in QTYPES:
        for name, n, k in cfg.get("linears", LINEARS):
            q = sliced(sources[qt], n, k)
            w = q.dequantize()
            dw = ck.DeviceWeight.upload(q)
            for m in GEMV_M:
                x = rng.standard_normal((m, k)).astype(np.float32)
                xd, y = cuda.to_device(x), cuda.device_array((m, n), np.float32)
                got = ck.gemv(xd, dw, out=y).copy_to_host()
                r = ratio(got, x @ w.T, bound.gemv(x, w, q.repack().offset))
                bench.record(
                    "gemv", f"{qt.name} {name} M={m}", r <= 1, partial(ck.gemv, xd, dw, out=y),
                    nbytes=dw.nbytes + 4 * m * (k + n), flops=0, ratio=round(r, 5),
                    **peer.matmul_ms(m, n, k),
                )  # fmt: skip
            out = cuda.device_array((n, k), np.float32)
            bad = int((ck.dequantize(dw, out=out).copy_to_host() != w).sum())
            bench.record(
                "dequantize", f"{qt.name} {name}", bad == 0, partial(ck.dequantize, dw, out=out),
                nbytes=dw.nbytes + 4 * n * k, mismatches=bad,
            )  # fmt: skip

    for m, k, n in cfg.get("gemms", GEMMS):
        x, w = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((n, k))
        w = w.astype(np.float32)
        xd, wd, y = cuda.to_device(x), cuda.to_device(w), cuda.device_array((m, n), np.float32)
        r = ratio(ck.gemm(xd, wd, out=y).copy_to_host(), x @ w.T, bound.gemm(x, w))
        bench.record(
            "gemm", f"{m}x{k} @ ({n}x{k}).T", r <= 1, partial(ck.gemm, xd, wd, out=y),
            flops=2 * m * n * k, ratio=round(r, 5), **peer.matmul_ms(m, n, k),
        )  # fmt: skip

    for rows, d in cfg.get("rows", ROWS):
        x = (rng.standard_normal((rows, d)) * 3 + 1.5).astype(np.float32)
        g, b = rng.standard_normal(d).astype(np.float32), rng.standard_normal(d).astype(np.float32)
        xd, gd, bd, y = (cuda.to_device(a) for a in (x, g, b, np.empty_like(x)))
        got = ck.layer_norm(xd, gd, bd, out=y).copy_to_host()
        r = ratio(got, ref.layer_norm(x, g, b), bound.layer_norm(x, g, b, 128))
        bench.record(
            "layer_norm", f"{rows}x{d}", r <= 1, partial(ck.layer_norm, xd, gd, bd, out=y),
            nbytes=8 * rows * d, ratio=round(r, 5),
        )  # fmt: skip

    for rows, d in cfg.get("softmax", SOFTMAX):
        x = (rng.standard_normal((rows, d)) * 10).astype(np.float32)
        xd, y = cuda.to_device(x), cuda.device_array((rows, d), np.float32)
        want = ref.softmax(x)
        r = ratio(ck.softmax(xd, out=y).copy_to_host(), want, bound.softmax(want, 128))
        bench.record(
            "softmax", f"{rows}x{d}", r <= 1, partial(ck.softmax, xd, out=y),
            nbytes=8 * rows * d, ratio=round(r, 5),
        )  # fmt: skip

    for shape in cfg.get("gelu", GELU):
        x = (rng.standard_normal(shape) * 4).astype(np.float32)
        xd, y = cuda.to_device(x), cuda.device_array(shape, np.float32)
        r = ratio(ck.gelu(xd, out=y).copy_to_host(), gelu_ref(x), bound.gelu(x))
        bench.record(
            "gelu", "x".join(map(str, shape)), r <= 1, partial(ck.gelu, xd, out=y),
            nbytes=8 * x.size, ratio=round(r, 5),
        )  # fmt: skip

    from npasr.models.whisper.gpu import GpuAudioEncoder, Launch  # noqa: PLC0415

    launch = Launch(threads=2, micro=8, bk=32, row_threads=4) if sim else Launch()
    t = cfg.get("encoder_t", 1500)
    for name, n_mels, d, n_head, n_layer in cfg.get("encoders", ENCODERS):
        for qtype in (None, GGMLType.Q8_0):
            enc, mel = random_encoder(rng, n_mels, d, n_head, n_layer, t, qtype)
            gpu = GpuAudioEncoder.from_encoder(enc, launch)
            got = gpu(mel)
            os.environ["NPASR_INT8_GEMM"] = "0"  # the CPU's exact float path, to compare
            rows, ops.GEMV_MAX_ROWS = ops.GEMV_MAX_ROWS, 0  # (--sim's 8 positions: not the GEMV)
            want = enc(mel)
            ops.GEMV_MAX_ROWS = rows
            del os.environ["NPASR_INT8_GEMM"]
            r = ratio(got, want, bound.encoder(want, n_layer, d))
            enc(mel)  # the CPU encoder as it runs by default (int8 GEMM on VNNI CPUs), timed
            cpu = []
            for _ in range(3 if not sim else 1):
                c0 = time.perf_counter()
                enc(mel)
                cpu.append(time.perf_counter() - c0)
            cpu_ms = float(np.median(cpu) * 1e3)
            kind = "f32" if qtype is None else qtype.name
            bench.record(
                "encoder", f"{name} {kind} T={t}", r <= 1, partial(gpu, mel),
                ratio=round(r, 5), cpu_ms=round(cpu_ms, 2),
            )  # fmt: skip

    ok = all(rec["ok"] for rec in bench.records)
    wall = time.perf_counter() - t0
    print(f"{'ALL OK' if ok else 'SOME FAILED'}: {len(bench.records)} checks in {wall:.1f} s")
    return {
        "device": device_name(), "numba": numba.__version__, "simulator": sim,
        "launch_us": launch_ms * 1e3, "reps": args.reps, "inner": args.inner,
        "all_ok": ok, "wall_s": wall, "records": bench.records,
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--sim", action="store_true", help="Numba's CUDA simulator, tiny shapes")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions (median)")
    ap.add_argument("--inner", type=int, default=None, help="calls per timed repetition")
    args = ap.parse_args()
    if args.sim:
        warnings.filterwarnings("ignore", "Simulator timings are bogus")
    args.reps = args.reps or (2 if args.sim else 20)
    args.inner = args.inner or (1 if args.sim else 10)
    if not ck.available():
        print("no CUDA device (numba.cuda.is_available() is False)", file=sys.stderr)
        return 2
    result = run(args)
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if result["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
