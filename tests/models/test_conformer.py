"""The shared Conformer's long-input paths against plain NumPy: query-blocked rel-pos attention,
limited-context (local) attention with NeMo's band layout, the row-sliced layer, and the
chunked dw_striding subsampling. (Parity with NeMo itself: tests/models/test_parakeet.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from npasr.io.weights import Weights
from npasr.models import conformer
from npasr.models.conformer import ConformerConfig, ConformerStack, layer_shapes, rel_pos_table

CFG = ConformerConfig(d_model=16, n_layers=2, n_heads=2, conv_kernel_size=9,
                      self_attention_model="rel_pos", use_bias=False)  # fmt: skip


def _random_stack(cfg: ConformerConfig = CFG, seed: int = 0) -> ConformerStack:
    rng = np.random.default_rng(seed)
    tensors = {}
    for name, shape in layer_shapes(cfg, prefix="").items():
        if name.endswith("running_var"):
            a = rng.uniform(0.5, 1.5, shape)
        elif len(shape) == 1 and name.endswith("weight"):
            a = 1 + 0.1 * rng.standard_normal(shape)
        elif len(shape) == 1 or "pos_bias" in name:
            a = 0.1 * rng.standard_normal(shape)
        else:
            a = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        tensors[name] = a.astype(np.float32)
    return ConformerStack.load(Weights(tensors), cfg)


def _naive_attention(attn, x: np.ndarray, context: tuple[int, int] | None) -> np.ndarray:
    """Query by query, straight from the definitions: full context with NeMo's rel_shift done
    literally (pad a zero column, reshape, drop a row); limited context (L, R) with NeMo's band
    of 2w + 1 columns and its position rows (see RelPositionAttention)."""
    t, d = x.shape
    h = attn.n_heads
    dh = d // h

    def heads(y: np.ndarray) -> np.ndarray:
        return y.reshape(len(y), h, dh).transpose(1, 0, 2).astype(np.float64)

    q, k, v = (heads(lin(x)) for lin in (attn.linear_q, attn.linear_k, attn.linear_v))
    p = heads(attn.linear_pos(rel_pos_table(t, d, context)))
    u, vb = attn.pos_bias_u[:, None].astype(np.float64), attn.pos_bias_v[:, None]
    out = np.zeros((h, t, dh))
    if context is None:
        ac = (q + u) @ k.transpose(0, 2, 1)
        bd = (q + vb) @ p.transpose(0, 2, 1)  # (H, T, 2T - 1)
        padded = np.concatenate([np.zeros((h, t, 1)), bd], axis=-1)  # rel_shift
        bd = padded.reshape(h, 2 * t, t)[:, 1:].reshape(h, t, 2 * t - 1)[..., :t]
        s = (ac + bd) / np.sqrt(dh)
        a = np.exp(s - s.max(-1, keepdims=True))
        return attn.linear_out(((a / a.sum(-1, keepdims=True)) @ v).transpose(1, 0, 2)
                               .reshape(t, d).astype(np.float32))  # fmt: skip
    left, right = context
    w = max(left, right)
    for i in range(t):
        js = np.arange(max(0, i - left), min(t, i + right + 1))
        s = np.einsum("hd,hjd->hj", q[:, i] + u[:, 0], k[:, js])
        for n, j in enumerate(js):
            c = j - i + w
            row = c if c < left else (left + c - (2 * w - right) if c >= 2 * w - right else None)
            if row is not None:
                s[:, n] += np.einsum("hd,hd->h", q[:, i] + vb[:, 0], p[:, row])
        s /= np.sqrt(dh)
        a = np.exp(s - s.max(-1, keepdims=True))
        out[:, i] = np.einsum("hj,hjd->hd", a / a.sum(-1, keepdims=True), v[:, js])
    return attn.linear_out(out.transpose(1, 0, 2).reshape(t, d).astype(np.float32))


@pytest.mark.parametrize("context", [None, (6, 6), (7, 3), (2, 9)])
def test_blocked_attention_matches_the_definition(context, monkeypatch) -> None:
    """T = 53 frames in blocks of 8 queries: block edges and window edges both fall inside."""
    stack = _random_stack()
    attn = stack.layers[0].self_attn
    x = np.random.default_rng(1).standard_normal((53, CFG.d_model)).astype(np.float32)
    want = _naive_attention(attn, x, context)
    monkeypatch.setattr(conformer, "ATTENTION_BLOCK", 8)
    got = attn(x, stack.positions(53, context))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)  # float32 vs float64 scores


def test_local_attention_differs_from_full_only_beyond_the_window() -> None:
    """A sanity check that the window is applied: a context that covers the whole input gives
    full attention's result (NeMo's band then holds every key at its own position), a short one
    does not."""
    stack = _random_stack()
    x = np.random.default_rng(2).standard_normal((20, CFG.d_model)).astype(np.float32)
    full = stack(x)
    np.testing.assert_allclose(stack(x, (20, 20)), full, rtol=0, atol=1e-5)
    assert np.abs(stack(x, (3, 3)) - full).max() > 1e-2


@pytest.mark.parametrize("context", [None, (4, 4), (5, 2)])
def test_row_sliced_layer_equals_the_whole(context, monkeypatch) -> None:
    """ConformerLayer._long (slices of LAYER_ROWS frames, conv halo from the neighbours) equals
    the plain layer, at slice sizes that cut inside the convolution's halo."""
    stack = _random_stack()
    x = np.random.default_rng(3).standard_normal((41, CFG.d_model)).astype(np.float32)
    want = stack(x, context)
    for rows in (5, 8, 40):
        monkeypatch.setattr(conformer, "LAYER_ROWS", rows)
        np.testing.assert_allclose(stack(x, context), want, rtol=0, atol=2e-6)


def test_rotary_attention_refuses_a_context() -> None:
    cfg = ConformerConfig(d_model=16, n_layers=1, n_heads=2, self_attention_model="rotary")
    with pytest.raises(ValueError, match="rel_pos"):
        _random_stack(cfg).positions(10, (2, 2))
