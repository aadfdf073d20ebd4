"""Parameter layers (npasr.nn.layers) against plain NumPy on the same weights."""

from __future__ import annotations

import numpy as np
import pytest

from npasr.io.gguf import GGMLType
from npasr.nn import quant, ref
from npasr.nn.layers import Linear
from npasr.nn.quant import QTensor


def _lin(rng: np.random.Generator, n: int, k: int, qtype: object, bias: bool) -> Linear:
    w = rng.standard_normal((n, k)).astype(np.float32)
    if qtype == "f16":
        weight = w.astype(np.float16)
    else:
        weight = quant.quantize(w, qtype) if qtype is not None else w
    return Linear(weight, rng.standard_normal(n).astype(np.float32) if bias else None)


def _dense(lin: Linear) -> np.ndarray:
    w = lin.weight
    return w.dequantize() if isinstance(w, QTensor) else w.astype(np.float32)


@pytest.mark.parametrize(
    "qtypes",
    [
        (None, None, None),
        ("f16",) * 3,
        (GGMLType.Q8_0,) * 3,
        (GGMLType.Q4_K,) * 3,
        (GGMLType.Q8_0, None, GGMLType.Q4_0),
    ],
    ids=["float", "f16", "q8_0", "q4_k", "mixed"],
)
@pytest.mark.parametrize("rows", [1, 20])
def test_stack_equals_the_parts(qtypes: tuple, rows: int) -> None:
    """Linear.stack([a, b, c])(x) == concat(a(x), b(x), c(x)); a missing bias counts as zeros;
    same-type quantized parts stay quantized (one kernel pass), a mix is widened to float32."""
    rng = np.random.default_rng(0)
    parts = [
        _lin(rng, n, 256, t, bias)
        for n, t, bias in zip((64, 32, 64), qtypes, (True, False, True), strict=True)
    ]
    fused = Linear.stack(parts)
    x = rng.standard_normal((rows, 256)).astype(np.float32)
    want = np.concatenate([ref.linear(x, _dense(p), p.bias) for p in parts], axis=-1)
    same_type = len(set(qtypes)) == 1 and qtypes[0] not in (None, "f16")
    assert isinstance(fused.weight, QTensor) == same_type
    if qtypes[0] == "f16":  # stays half
        assert fused.weight.dtype == np.float16
    np.testing.assert_array_equal(_dense(fused), np.concatenate([_dense(p) for p in parts]))
    # the kernels' contracts: float32 summation order (GEMV) or int8 activations (GEMM rows)
    tol = 2e-2 * np.abs(want).max() if rows > 8 and same_type else 1e-4 * np.abs(want).max()
    np.testing.assert_allclose(fused(x), want, rtol=0, atol=tol)


def test_stack_rejects_different_widths() -> None:
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="widths"):
        Linear.stack([_lin(rng, 8, 64, None, True), _lin(rng, 8, 32, None, True)])
