"""npasr.nn.quant against gguf-py (gguf.quants, the oracle): bit-exact quantize and dequantize."""

from __future__ import annotations

import numpy as np
import pytest

from npasr.io.gguf import GGML_BLOCK, GGMLType, RawTensor
from npasr.nn import quant
from npasr.nn.quant import QTensor

gq = pytest.importorskip("gguf.quants")
from gguf.constants import GGMLQuantizationType  # noqa: E402

LEGACY = [GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.Q4_1, GGMLType.Q5_0, GGMLType.Q5_1]
K_QUANTS = [GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K]


def _oracle(qtype: GGMLType) -> GGMLQuantizationType:
    return GGMLQuantizationType(int(qtype))


def _edge_rows(k: int, seed: int = 0) -> np.ndarray:
    """(10, k) f32: gaussian rows, an all-zero row, huge and tiny magnitudes, one-hot, ties."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((10, k)).astype(np.float32)
    x[1] = 0.0
    x[2] *= np.float32(1e4)  # near the top of f16 (65504): scales still finite
    x[3] *= np.float32(1e-6)  # scales become f16 subnormals
    x[4] = 0.0
    x[4, 5] = -7.0  # one non-zero per row: the sign of the max matters (Q4_0/Q5_0)
    x[5] = np.round(x[5] * 4) / 4  # many exact halves for the round-half-away rule
    x[6] = np.abs(x[6])  # all positive: min > 0 (Q4_1/Q5_1, k-quant offsets clamp at 0)
    x[7] = -np.abs(x[7])
    x[8] = np.float32(1e-30)  # underflows f16 entirely
    x[9] = np.linspace(-1, 1, k, dtype=np.float32)
    return x


@pytest.mark.parametrize("qtype", LEGACY, ids=lambda t: t.name)
@pytest.mark.parametrize("k", [32, 256, 1024])
def test_quantize_bit_exact(qtype: GGMLType, k: int) -> None:
    x = _edge_rows(k)
    ours = quant.quantize(x, qtype)
    theirs = gq.quantize(x, _oracle(qtype))
    np.testing.assert_array_equal(ours.blocks, theirs.reshape(ours.blocks.shape))


@pytest.mark.parametrize("qtype", LEGACY + K_QUANTS, ids=lambda t: t.name)
def test_dequantize_bit_exact_on_quantized(qtype: GGMLType) -> None:
    w = quant.quantize(_edge_rows(512, seed=1), qtype)
    ours = w.dequantize()
    theirs = gq.dequantize(w.blocks, _oracle(qtype))
    assert ours.dtype == np.float32 and ours.shape == (10, 512)
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))


def _random_blocks(qtype: GGMLType, n_blocks: int, seed: int) -> np.ndarray:
    """(n_blocks * bytes,) uint8: any bit pattern in the value fields, the f16 fields drawn
    finite (NaN payloads aside)."""
    nbytes = GGML_BLOCK[qtype][1]
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (n_blocks, nbytes), dtype=np.uint8)
    f16_at = {GGMLType.Q6_K: [208]}.get(
        qtype,
        [0, 2] if qtype in (GGMLType.Q4_1, GGMLType.Q5_1, GGMLType.Q4_K, GGMLType.Q5_K) else [0],
    )
    for o in f16_at:
        raw[:, o : o + 2] = rng.uniform(-2, 2, (n_blocks, 1)).astype(np.float16).view(np.uint8)
    return raw.reshape(-1)


@pytest.mark.parametrize("qtype", LEGACY + K_QUANTS, ids=lambda t: t.name)
def test_dequantize_bit_exact_on_random_bytes(qtype: GGMLType) -> None:
    """Random block bytes (`_random_blocks`) dequantize as gguf-py does, bit for bit."""
    n_blocks = 64
    shape = (4, n_blocks * GGML_BLOCK[qtype][0] // 4)
    w = QTensor(qtype, shape, _random_blocks(qtype, n_blocks, 2))
    theirs = gq.dequantize(w.blocks, _oracle(qtype))
    np.testing.assert_array_equal(w.dequantize().view(np.uint32), theirs.view(np.uint32))


@pytest.mark.parametrize("qtype", LEGACY + K_QUANTS, ids=lambda t: t.name)
def test_rows_equal_the_dequantized_rows(qtype: GGMLType) -> None:
    """`QTensor.rows` (an embedding lookup) equals `dequantize()[ids]`: bit for bit from the
    blocks; once the kernel layout is built (`repack`), from it, the same values (== holds
    -0 and +0 equal: Q4_0's layout gives +0 where d (q - 8) is -0)."""
    block = GGML_BLOCK[qtype][0]
    w = QTensor(qtype, (24, 2 * block), _random_blocks(qtype, 24 * 2, 3))
    ids = np.array([[3, 0, 23], [3, 17, 5]])
    want = w.dequantize()[ids].view(np.uint32)
    np.testing.assert_array_equal(w.rows(ids).view(np.uint32), want)
    if w.repack() is not None:
        assert w.rows(ids).dtype == np.float32
        np.testing.assert_array_equal(w.rows(ids), w.dequantize()[ids])
    assert w.rows(np.array([], np.int64)).shape == (0, 2 * block)


def test_q4_0_literal() -> None:
    """Hand-checkable: x = -16..15 gives d = -16 / -8 = 2, q = trunc(x / 2 + 8.5) clipped to 15,
    so even x come back exactly, odd x round up to x + 1, and 15 saturates to 14."""
    x = np.arange(-16, 16, dtype=np.float32)[None]
    y = quant.quantize(x, GGMLType.Q4_0).dequantize()[0]
    want = np.where(x[0] % 2 == 0, x[0], x[0] + 1)
    want[-1] = 14
    np.testing.assert_array_equal(y, want)
    assert quant.quantize(x, GGMLType.Q4_0).blocks[0, :2].view(np.float16)[0] == 2


def test_q8_0_literal() -> None:
    """A block whose largest magnitude is 127 has d = 127 / 127 = 1: its integers round-trip."""
    x = np.array([[127, -127, *range(-15, 15)]], dtype=np.float32)
    np.testing.assert_array_equal(quant.quantize(x, GGMLType.Q8_0).dequantize(), x)


@pytest.mark.parametrize(
    ("qtype", "max_rel_rms"), [(GGMLType.Q4_K, 0.12), (GGMLType.Q5_K, 0.06), (GGMLType.Q6_K, 0.03)]
)
def test_k_quant_round_trip_error(qtype: GGMLType, max_rel_rms: float) -> None:
    """Our k-quant quantizer (no oracle exists) must stay within the step of its bit width:
    uniform rounding error is step / sqrt(12), step ~ range / (2^bits - 1) of a sub-block."""
    x = np.random.default_rng(3).standard_normal((64, 1024)).astype(np.float32)
    err = quant.quantize(x, qtype).dequantize() - x
    assert np.sqrt(np.mean(err**2)) / np.sqrt(np.mean(x**2)) < max_rel_rms


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        quant.quantize(np.zeros((4, 48), np.float32), GGMLType.Q8_0)
    with pytest.raises(ValueError, match="multiple of 256"):
        quant.quantize(np.zeros((4, 512 + 32), np.float32), GGMLType.Q4_K)
    with pytest.raises(NotImplementedError, match="Q2_K"):
        quant.quantize(np.zeros((1, 256), np.float32), GGMLType.Q2_K)
    with pytest.raises(ValueError, match="bytes"):
        QTensor(GGMLType.Q8_0, (2, 32), np.zeros(34, np.uint8))


def test_from_raw_and_cached_repack() -> None:
    x = np.random.default_rng(4).standard_normal((3, 64)).astype(np.float32)
    blocks = quant.quantize(x, GGMLType.Q4_0).blocks.reshape(-1)
    w = QTensor.from_raw(RawTensor(GGMLType.Q4_0, (3, 64), blocks))
    assert w.shape == (3, 64) and w.nbytes == 3 * 2 * 18
    np.testing.assert_array_equal(w.dequantize_rows(1, 3), w.dequantize()[1:3])
    assert w.repack() is w.repack()
    assert QTensor(GGMLType.Q6_K, (1, 256), np.zeros(210, np.uint8)).repack() is None


def _weighted_err(x: np.ndarray, w: QTensor, imp: np.ndarray) -> np.ndarray:
    """Per 32-block importance-weighted squared error, float64."""
    d = (w.dequantize().astype(np.float64) - x).reshape(-1, 32) ** 2
    return (d * np.broadcast_to(imp, x.shape).reshape(-1, 32)).sum(axis=1)


@pytest.mark.parametrize("qtype", quant.WEIGHTED_TYPES, ids=lambda t: t.name)
def test_importance_weighted_blocks_never_worse(qtype: GGMLType) -> None:
    """The weighted quantizer keeps valid blocks (gguf-py decodes them to the same values), on
    skewed importance the total weighted error is clearly lower, and for the 32-weight types
    each block's is at most the plain rule's (its candidate set holds the plain block; a
    k-quant's six-bit codes couple its sub-blocks, so only the total is promised there)."""
    rng = np.random.default_rng(7)
    x = np.concatenate([_edge_rows(256), rng.standard_normal((64, 256)).astype(np.float32)])
    imp = rng.gamma(0.3, 1.0, 256)  # a few channels dominate, as measured activations do
    imp[:7] = 0.0  # and some never fire
    plain, weighted = quant.quantize(x, qtype), quant.quantize(x, qtype, importance=imp)
    np.testing.assert_array_equal(
        weighted.dequantize(), gq.dequantize(weighted.blocks, _oracle(qtype)).reshape(x.shape)
    )
    e_plain, e_weighted = _weighted_err(x, plain, imp), _weighted_err(x, weighted, imp)
    if qtype in (GGMLType.Q4_0, GGMLType.Q5_0):
        assert (e_weighted <= e_plain).all()
    edge = 10 * 256 // 32  # blocks of the edge rows (one row is 1e4 times larger): left out
    assert e_weighted[edge:].sum() < 0.8 * e_plain[edge:].sum()
    # all-zero importance: nothing to prefer, the plain blocks stay
    zero = quant.quantize(x, qtype, importance=np.zeros(256))
    np.testing.assert_array_equal(zero.blocks, plain.blocks)


def _minmax_k(x: np.ndarray, levels: int) -> np.ndarray:
    """The plain k-quant fit, dequantized: each sub-block's grid spans [min(x, 0), max(x)],
    scales and offsets coded in six bits against the super-block's largest (no search)."""
    sub = x.reshape(-1, 8, 32).astype(np.float32)
    lo, hi = np.minimum(sub.min(-1), 0), sub.max(-1)
    step = (hi - lo) / (levels - 1)

    def six_bit(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sup = (v.max(-1, keepdims=True) / 63).astype(np.float16).astype(np.float32)
        return sup, np.clip(np.rint(v / np.where(sup > 0, sup, 1)), 0, 63)

    d, sc = six_bit(step)
    dm, mn = six_bit(-lo)
    scale, off = (d * sc)[..., None], (dm * mn)[..., None]
    q = np.clip(np.rint((sub + off) / np.where(scale > 0, scale, 1)), 0, levels - 1)
    return (scale * q - off).reshape(x.shape)


@pytest.mark.parametrize(("qtype", "levels"), [(GGMLType.Q4_K, 16), (GGMLType.Q5_K, 32)])
def test_k_quant_search_beats_min_max(qtype: GGMLType, levels: int) -> None:
    """The k-quant grid search (`quant._fit_affine`) lowers the squared error of gaussian
    weights well below the plain min/max fit (measured 9% for Q4_K, 6% for Q5_K), and no
    sub-block's fitted grid, before six-bit coding, is worse than the min/max one under its
    weights."""
    x = np.random.default_rng(11).standard_normal((64, 1024)).astype(np.float32)
    e_search = np.mean((quant.quantize(x, qtype).dequantize() - x) ** 2)
    e_minmax = np.mean((_minmax_k(x, levels) - x) ** 2)
    assert e_search < 0.96 * e_minmax
    sub = x.reshape(-1, 32)
    w = np.random.default_rng(12).gamma(0.5, 1.0, sub.shape)
    s, o = quant._fit_affine(sub, w, levels)
    lo, hi = np.minimum(sub.min(-1, keepdims=True), 0), sub.max(-1, keepdims=True)

    def err(s: np.ndarray, o: np.ndarray) -> np.ndarray:
        q = np.clip(np.rint((sub + o) / np.where(s > 0, s, 1)), 0, levels - 1)
        return (w * (sub - s * q + o) ** 2).sum(-1)

    assert (err(s, o) <= err((hi - lo) / (levels - 1), -lo) * (1 + 1e-12)).all()
    assert (s >= 0).all() and (o >= 0).all()


def _output_err(x: np.ndarray, w: QTensor, h: np.ndarray) -> float:
    """tr(D h D^T) with D = dequantized - x: the summed squared error of the products over
    inputs of second moment h."""
    d = w.dequantize().astype(np.float64) - x
    return float(np.einsum("ij,jk,ik->", d, h, d))


def _correlated_moment(k: int, seed: int) -> np.ndarray:
    """Second moment of (4k, k) inputs with correlated channels of very unequal size."""
    rng = np.random.default_rng(seed)
    mix = np.eye(k) + rng.standard_normal((k, k)) / np.sqrt(k)
    x = rng.standard_normal((4 * k, k)) @ mix * rng.gamma(0.5, 1.0, k)
    return x.T @ x / len(x)


@pytest.mark.parametrize("qtype", quant.WEIGHTED_TYPES, ids=lambda t: t.name)
def test_error_feedback_lowers_the_output_error(qtype: GGMLType) -> None:
    """With a (K, K) second moment the whole matrix is quantized with error feedback: valid
    blocks, and an output error clearly below both the plain and the diagonal-importance
    blocks (measured 0.55-0.80 of the diagonal's on this data)."""
    k = 512
    h = _correlated_moment(k, 5)
    x = np.random.default_rng(6).standard_normal((96, k)).astype(np.float32)
    fed = quant.quantize(x, qtype, importance=h)
    np.testing.assert_array_equal(
        fed.dequantize(), gq.dequantize(fed.blocks, _oracle(qtype)).reshape(x.shape)
    )
    e_fed = _output_err(x, fed, h)
    assert e_fed < 0.9 * _output_err(x, quant.quantize(x, qtype, importance=np.diag(h)), h)
    assert e_fed < 0.7 * _output_err(x, quant.quantize(x, qtype), h)


@pytest.mark.parametrize("qtype", [GGMLType.Q4_0, GGMLType.Q4_K], ids=lambda t: t.name)
def test_error_feedback_edge_cases(qtype: GGMLType) -> None:
    """A rank-1 second moment (damped as in GPTQ) and the edge rows quantize to finite valid
    blocks; with uncorrelated inputs (h = I) nothing is fed forward, so each 32-block is the
    nearest point of its grid and no worse than the plain one."""
    x = _edge_rows(256)
    v = np.random.default_rng(8).standard_normal(256)
    for h in (np.outer(v, v), np.eye(256)):
        w = quant.quantize(x, qtype, importance=h)
        assert np.isfinite(w.dequantize()).all()
    if qtype == GGMLType.Q4_0:
        ident = quant.quantize(x, qtype, importance=np.eye(256)).dequantize() - x
        plain = quant.quantize(x, qtype).dequantize() - x
        e_i, e_p = ((a.astype(np.float64) ** 2).reshape(-1, 32).sum(-1) for a in (ident, plain))
        assert (e_i <= e_p * (1 + 1e-6) + 1e-30).all()


def test_importance_errors() -> None:
    x = np.ones((2, 64), np.float32)
    with pytest.raises(NotImplementedError, match="Q8_0"):
        quant.quantize(x, GGMLType.Q8_0, importance=np.ones(64))
    asym = np.eye(64)
    asym[0, 1] = 1.0
    neg = np.eye(64)
    neg[3, 3] = -1.0
    for bad in (np.ones(32), -np.ones(64), np.full(64, np.nan), np.ones((32, 32)), asym, neg,
                np.zeros((64, 64)), np.full((64, 64), np.inf)):
        with pytest.raises(ValueError, match="importance"):
            quant.quantize(x, GGMLType.Q4_0, importance=bad)
    with pytest.raises(ValueError, match="positive definite"):  # damping cannot rescue this
        indefinite = np.eye(64)
        indefinite[0, 1] = indefinite[1, 0] = 2.0  # eigenvalue -1 on a non-negative diagonal
        quant.quantize(x, GGMLType.Q4_0, importance=indefinite)
