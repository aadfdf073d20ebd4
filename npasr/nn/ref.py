"""Plain NumPy reference ops: the specification every faster kernel is tested against.

All ops take and return float32 arrays; shapes use T (time), D (width), H (heads), Dh (head dim).
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

from npasr.types import F32


def linear(x: F32, w: F32, b: F32 | None = None) -> F32:
    """x (..., Din) @ w (Dout, Din)^T + b (Dout,) -> (..., Dout); torch.nn.Linear layout."""
    y = x @ w.T
    if b is not None:
        y += b
    return y


def layer_norm(x: F32, g: F32, b: F32, eps: float = 1e-5) -> F32:
    """LayerNorm over the last axis, biased variance (torch semantics)."""
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = np.mean(xc * xc, axis=-1, keepdims=True)
    return (xc / np.sqrt(var + eps)) * g + b


def gelu(x: F32) -> F32:
    """Exact (erf) GELU, as torch.nn.functional.gelu(approximate='none')."""
    return (0.5 * x * (1.0 + erf(x * np.float32(1 / np.sqrt(2))))).astype(np.float32, copy=False)


def softmax(x: F32, axis: int = -1) -> F32:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    s = x - m
    return s - np.log(np.exp(s).sum(axis=axis, keepdims=True))


def conv1d(x: F32, w: F32, b: F32 | None, stride: int = 1, padding: int = 0) -> F32:
    """1-D convolution, torch.nn.Conv1d layout: x (Cin, T), w (Cout, Cin, K) -> (Cout, Tout).

    Written as one GEMM over im2col columns: (Tout, Cin*K) @ (Cin*K, Cout).
    """
    c_in, _ = x.shape
    c_out, _, k = w.shape
    xp = np.pad(x, ((0, 0), (padding, padding))) if padding else x
    cols = np.lib.stride_tricks.sliding_window_view(xp, k, axis=1)[:, ::stride]  # (Cin, Tout, K)
    cols = cols.transpose(1, 0, 2).reshape(-1, c_in * k)  # (Tout, Cin*K)
    y = cols @ w.reshape(c_out, c_in * k).T  # (Tout, Cout)
    if b is not None:
        y += b
    return np.ascontiguousarray(y.T)


def attention(q: F32, k: F32, v: F32, mask: F32 | None = None) -> F32:
    """Scaled dot-product attention over the last two axes.

    q (..., Tq, Dh), k (..., Tk, Dh), v (..., Tk, Dh), mask broadcastable to (..., Tq, Tk) and
    added to the scores (0 or -inf). Returns (..., Tq, Dh).
    """
    scale = np.float32(q.shape[-1] ** -0.5)
    s = (q * scale) @ np.swapaxes(k, -1, -2)
    if mask is not None:
        s += mask
    return softmax(s) @ v


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> F32:
    """[sin | cos] positional table (length, channels) with geometric timescales."""
    assert channels % 2 == 0
    inc = np.log(max_timescale) / (channels // 2 - 1)
    inv = np.exp(-inc * np.arange(channels // 2))
    t = np.arange(length)[:, None] * inv[None, :]
    return np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32)
