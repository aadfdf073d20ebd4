"""Float32 error bounds for the CUDA kernels against their NumPy references, one place for the
simulator tests (tests/nn/test_cuda_kernels.py, tests/models/test_whisper_gpu.py) and the device
check (bench/gpu_check.py). The derivations are in those test modules' docstrings; u = 2^-24,
gamma(n) = n u / (1 - n u) bounds the relative error of a float32 n-term sum (Higham 3.1)."""

from __future__ import annotations

import math

import numpy as np

U = 2.0**-24


def gamma(n: float) -> float:
    return n * U / (1 - n * U)


def ratio(got: np.ndarray, want: np.ndarray, tol: np.ndarray | float) -> float:
    """max |got - want| / tol: <= 1 is within the bound."""
    return float((np.abs(got.astype(np.float64) - want) / (tol + 1e-30)).max())


def gemv(x: np.ndarray, w: np.ndarray, offset: np.ndarray | None) -> np.ndarray:
    """x (M, K) @ w (N, K).T of a packed weight with per-32-block offsets (N, K / 32) or None."""
    k = w.shape[1]
    ax, aw = np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64))
    o = 0.0 if offset is None else np.repeat(np.abs(offset.astype(np.float64)), 32, axis=1)
    return gamma(k + 2) * (ax @ (aw + 2 * o).T) + (gamma(k) + U) * (ax @ aw.T)


def gemm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x (..., M, K) @ w (..., N, K).swapaxes: two K-term sums in different orders."""
    ax, aw = np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64))
    return 2 * gamma(x.shape[-1]) * (ax @ aw.swapaxes(-1, -2))


def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, threads: int) -> np.ndarray:
    """First-order propagation of the two sums' errors (kernel depth ceil(D / threads) +
    log2(threads)) through (x - mu) / sqrt(var + eps) * g + b, eps = 1e-5."""
    d = x.shape[-1]
    e = gamma(math.ceil(d / threads) + math.log2(threads)) + gamma(d) + 4 * U
    xd = x.astype(np.float64)
    xc = xd - xd.mean(-1, keepdims=True)
    var = (xc * xc).mean(-1, keepdims=True)
    sd = np.sqrt(var + 1e-5)
    dmu = e * np.abs(xd).mean(-1, keepdims=True)
    dvar = (e + 4 * U) * var + 2 * dmu * np.abs(xc).mean(-1, keepdims=True)
    dz = (dmu + 2 * U * np.abs(xc)) / sd + np.abs(xc / sd) * (dvar / (2 * (var + 1e-5)) + 4 * U)
    return np.abs(g) * dz + 4 * U * (np.abs(g * xc / sd) + np.abs(b))


def softmax(want: np.ndarray, threads: int) -> np.ndarray:
    """(18 u + gamma(kernel depth) + gamma(D)) p for the reference probabilities p."""
    d = want.shape[-1]
    depth = math.ceil(d / threads) + math.log2(threads)
    return (18 * U + gamma(depth) + gamma(d)) * want.astype(np.float64)


def gelu(x: np.ndarray) -> np.ndarray:
    return 6 * U * np.abs(x.astype(np.float64))


def encoder(want: np.ndarray, n_layer: int, d: int) -> float:
    """The first-order encoder bound of tests/models/test_whisper_gpu.py: 4 L gamma(4 D) max|y|."""
    return 4 * n_layer * gamma(4 * d) * float(np.abs(want).max())
