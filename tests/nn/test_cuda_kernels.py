"""CUDA kernels (npasr.nn.cuda_kernels) in Numba's CUDA simulator, against the NumPy references.

The simulator must be chosen before numba is imported, so all checks run in one fresh process
(`_SCRIPT`, NUMBA_ENABLE_CUDASIM=1) that prints one JSON record per check: `ratio`, the largest
|kernel - reference| / tolerance (<= 1 passes), or for the exact checks the number of values
that differ. Shapes are tiny (the simulator runs each GPU thread as a Python thread) but cover
partial tiles, partial row groups and more than MAX_M activation rows.

Tolerances, with u = 2^-24 and gamma(n) = n u / (1 - n u), the bound on the relative error of a
float32 sum of n terms in any order (Higham, Accuracy and Stability, 3.1):
* GEMV: gamma(K + 2) (|x| @ (|w| + 2 |o|).T) + (gamma(K) + u) (|x| @ |w|.T). The kernel sums the
  exact products v x and x (v is a small integer) per block, scales them by s and o and adds the
  blocks and threads up: a sum of at most K + 2 rounding steps over terms |s v x| + |o x| <=
  (|w| + 2 |o|) |x| (|s v| <= |w| + |o|). The reference multiplies by the rounded w = fl(s v - o)
  (u |w| from the exact s v - o) and sums K products in BLAS order (gamma(K)).
* dequantize: bit-exact (scale * v is exact, so one rounding in both).
* add_bias_residual, split_qkv, merge_heads: bit-exact against NumPy float32 (the same roundings
  in the same order: r + (x + b), q * scale; the rest are copies).
* GEMM: 2 gamma(K) (|x| @ |w|.T): two K-term sums in different orders; batched_gemm the same
  per batch entry.
* softmax: (18 u + gamma(dk) + gamma(D)) p_ref, dk = ceil(D / threads) + log2(threads) the
  kernel's summation depth: per exp 2 ulp (<= 4 u relative) on each side, the positive sums'
  gamma plus the exps' error, one rounding in the division.
* gelu: 6 u |x|: erf within 2 ulp (<= 2 u absolute, |erf| <= 1) in each, times 0.5 |x|; the
  roundings of 1 + erf (<= 2 u absolute) and of the final product (<= u |y| <= u |x|) in each.
* layer_norm: with e = gamma(dk) + gamma(D) + 4 u, dmu = e mean|x| (both means), dvar = (e + 4 u)
  var + 2 dmu mean|xc| and dz = (dmu + 2 u |xc|) / sd + |z| (dvar / (2 (var + eps)) + 4 u):
  |g| dz + 4 u (|g z| + |b|), the first-order propagation of the two sums' errors through
  (x - mu) / sqrt(var + eps) * g + b.
The negative check scales one block of a Q4_0 weight by 1.01 and expects the GEMV bound to fail.
"""

from __future__ import annotations

import json

import pytest

from . import run_fresh

_SCRIPT = r"""
import json
import npasr
import numpy as np
from npasr.io.gguf import GGMLType
from npasr.nn import cuda_kernels as ck, quant, ref
from tests.nn import cuda_bounds as bound
from tests.nn.cuda_bounds import ratio

assert ck.available()
rng = np.random.default_rng(0)
out = {}


def rand(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def gemv_ratio(x, q, dw, **kw):
    w = q.dequantize()
    got = ck.gemv(x, dw, **kw).copy_to_host()
    return ratio(got, x @ w.T, bound.gemv(x, w, q.repack().offset))


for qt, k in ((GGMLType.Q8_0, 96), (GGMLType.Q4_0, 96), (GGMLType.Q4_K, 256)):
    q = quant.quantize(rand(7, k), qt)  # 7 rows: 3 full pairs and a partial one
    dw = ck.DeviceWeight.upload(q)
    for m in (1, 3):
        x = rand(m, k, scale=2.0)
        out[f"gemv_{qt.name}_m{m}"] = gemv_ratio(x, q, dw, rows_per_block=2, threads_per_row=16)
    d = ck.dequantize(dw).copy_to_host()
    out[f"dequantize_{qt.name}"] = int((d != q.dequantize()).sum())
    d = ck.dequantize(dw, 2, 5).copy_to_host()
    out[f"dequantize_rows_{qt.name}"] = int((d != q.dequantize_rows(2, 5)).sum())

q = quant.quantize(rand(10, 64), GGMLType.Q4_0)  # default launch: 4 rows x 32 threads
out["gemv_Q4_0_m9_default"] = gemv_ratio(rand(9, 64), q, ck.DeviceWeight.upload(q))

p = q.repack()  # one block's scale off by 1%: the bound must catch it
bad = p._replace(scale=p.scale.copy())
bad.scale[3, 1] *= np.float32(1.01)
out["negative_gemv_bad_scale"] = gemv_ratio(rand(2, 64), q, ck.DeviceWeight.upload(bad))

x, w = rand(37, 45), rand(29, 45)  # no dimension a multiple of any tile
tol = bound.gemm(x, w)
got = ck.gemm(x, w, threads=4, micro=2, bk=8).copy_to_host()
out["gemm_small_tiles"] = ratio(got, x @ w.T, tol)
out["gemm_default_tiles"] = ratio(ck.gemm(x, w).copy_to_host(), x @ w.T, tol)

nt, d = 32, 70
x = rand(2, 3, d, scale=3.0) + np.float32(1.5)
g, b = rand(d), rand(d)
got = ck.layer_norm(x, g, b, threads=nt).copy_to_host()
out["layer_norm"] = ratio(got, ref.layer_norm(x, g, b), bound.layer_norm(x, g, b, nt))

x = rand(3, d, scale=10.0)
want = ref.softmax(x)
out["softmax"] = ratio(ck.softmax(x, threads=nt).copy_to_host(), want, bound.softmax(want, nt))

x = np.concatenate([rand(200, scale=4.0), np.float32([0.0, -10.0, 10.0, -30.0])]).reshape(4, 51)
want = ref.gelu(x)
out["gelu"] = ratio(ck.gelu(x, threads=64).copy_to_host(), want, bound.gelu(x))
x, w = rand(3, 11, 37), rand(3, 13, 37)  # batched: per entry the gemm bound
tol = bound.gemm(x, w)
got = ck.batched_gemm(x, w, threads=2, micro=4, bk=8).copy_to_host()
out["batched_gemm"] = ratio(got, x @ w.swapaxes(1, 2), tol)
got = ck.batched_gemm(x, w).copy_to_host()
out["batched_gemm_default_tiles"] = ratio(got, x @ w.swapaxes(1, 2), tol)

x, b, r = rand(5, 7), rand(7), rand(5, 7)  # same two roundings in the same order: exact
xd, rd = ck.to_device(x), ck.to_device(r)
got = ck.add_bias_residual(xd, b, rd, threads=8, out=rd).copy_to_host()  # in place
out["add_bias_residual"] = int((got != r + (x + b)).sum())
out["add_bias"] = int((ck.add_bias_residual(x, b, threads=8).copy_to_host() != x + b).sum())
got = ck.add_bias_residual(x, residual=r, threads=8).copy_to_host()
out["add_residual"] = int((got != r + x).sum())

nh, t, dh = 3, 5, 4
qkv, sc = rand(t, 3 * nh * dh), np.float32(dh**-0.5)
parts = [qkv[:, i * nh * dh : (i + 1) * nh * dh].reshape(t, nh, -1) for i in range(3)]
parts = [p.swapaxes(0, 1) for p in parts]  # (nh, t, dh)
q, k, vt = (a.copy_to_host() for a in ck.split_qkv(qkv, nh, sc, threads=16))
want = (parts[0] * sc, parts[1], parts[2].swapaxes(1, 2))
out["split_qkv"] = sum(int((g != w).sum()) for g, w in zip((q, k, vt), want))
got = ck.merge_heads(parts[0], threads=16).copy_to_host()
out["merge_heads"] = int((got != qkv[:, : nh * dh]).sum())
print(json.dumps(out))
"""


def _simulate(script: str) -> dict[str, float]:
    """Run `script` in a fresh Python on the CUDA simulator; it prints a JSON object last."""
    run = run_fresh(script, NUMBA_ENABLE_CUDASIM="1")
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def results() -> dict[str, float]:
    return _simulate(_SCRIPT)


CHECKS = [
    *(f"gemv_{t}_m{m}" for t in ("Q8_0", "Q4_0", "Q4_K") for m in (1, 3)),
    "gemv_Q4_0_m9_default",
    "gemm_small_tiles",
    "gemm_default_tiles",
    "layer_norm",
    "softmax",
    "gelu",
    "batched_gemm",
    "batched_gemm_default_tiles",
]
EXACT = [f"dequantize{r}_{t}" for t in ("Q8_0", "Q4_0", "Q4_K") for r in ("", "_rows")]
EXACT_ELEMENTWISE = ["add_bias_residual", "add_bias", "add_residual", "split_qkv", "merge_heads"]


@pytest.mark.parametrize("name", CHECKS)
def test_within_bound(results: dict[str, float], name: str) -> None:
    assert results[name] <= 1.0, f"{name}: error / bound = {results[name]:.3g}"


@pytest.mark.parametrize("name", EXACT)
def test_dequantize_is_exact(results: dict[str, float], name: str) -> None:
    assert results[name] == 0, f"{name}: {results[name]} values differ"


@pytest.mark.parametrize("name", EXACT_ELEMENTWISE)
def test_elementwise_is_exact(results: dict[str, float], name: str) -> None:
    assert results[name] == 0, f"{name}: {results[name]} values differ"


def test_the_bound_catches_a_wrong_scale(results: dict[str, float]) -> None:
    assert results["negative_gemv_bad_scale"] > 1.0


def test_every_check_ran(results: dict[str, float]) -> None:
    assert set(results) == {*CHECKS, *EXACT, *EXACT_ELEMENTWISE, "negative_gemv_bad_scale"}


def test_available_never_raises() -> None:
    """Without a GPU (and without the simulator) `available` answers False instead of raising."""
    from npasr.nn import cuda_kernels

    assert isinstance(cuda_kernels.available(), bool)
