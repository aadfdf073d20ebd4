"""Quantized weights: `QTensor`, GGML block layouts, NumPy quantize/dequantize per type.

The NumPy code here is the specification. `dequantize` is bit-exact with gguf-py
(ggml-org/llama.cpp gguf-py/gguf/quants.py, `gguf` 0.19 on PyPI) for every type listed in
`QUANT_TYPES`, and `quantize` is bit-exact with it for the types gguf-py can quantize (Q8_0, Q4_0,
Q4_1, Q5_0, Q5_1). gguf-py has no k-quant quantizer; ours (`_quantize_k`) searches each
sub-block's scale and offset (`_fit_affine`: trial steps, weighted least-squares refits; 9% less
squared error than a min/max fit on gaussian weights, as llama.cpp's search aims to). With
calibration statistics, `quantize(importance=)` picks blocks that minimise the error of the
products rather than of the weights: per block for a diagonal importance, and across the
columns of a matrix (`_gptq`, error feedback) for a full second moment.

Block layouts (bytes per block; little-endian; `d`, `m`, `dmin` are f16):

    Q8_0  32 w   d | 32 x i8                                   w = d * q
    Q4_0  32 w   d | 16 B, byte j = q[j] | q[j+16] << 4          w = d * (q - 8)
    Q4_1  32 w   d | m | 16 B as Q4_0                            w = d * q + m
    Q5_0  32 w   d | u32 qh (bit j = q[j] >> 4) | 16 B as Q4_0   w = d * (q - 16)
    Q5_1  32 w   d | m | u32 qh | 16 B                           w = d * q + m
    Q4_K 256 w   d | dmin | 12 B six-bit (sc, mn) x 8 | 128 B    w = (d*sc) * q - (dmin*mn)
    Q5_K 256 w   d | dmin | 12 B | 32 B qh | 128 B               same, q has a 5th bit
    Q6_K 256 w   128 B low nibbles | 64 B high pairs | 16 x i8 sc | d     w = (d*sc) * (q - 32)

In the k-quants a 256-weight super-block holds 8 sub-blocks of 32 (16 of 16 for Q6_K); 128 bytes
of nibbles hold 4 chunks of 64 weights, the low nibbles of chunk c being sub-block 2c and the
high nibbles sub-block 2c+1.

Shapes: a QTensor is (..., K) in NumPy order like the f32 array it stands for; K must be a
multiple of the block size. Its `blocks` are uint8 (rows, K // block * bytes_per_block).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from npasr.io.gguf import GGML_BLOCK, QK_K, GGMLType, RawTensor
from npasr.types import F32

U8 = np.ndarray  # uint8 block bytes

QUANT_TYPES = (
    GGMLType.Q8_0,
    GGMLType.Q4_0,
    GGMLType.Q4_1,
    GGMLType.Q5_0,
    GGMLType.Q5_1,
    GGMLType.Q4_K,
    GGMLType.Q5_K,
    GGMLType.Q6_K,
)


def _check_type(qtype: GGMLType, what: str) -> GGMLType:
    qtype = GGMLType(qtype)
    if qtype not in QUANT_TYPES:
        raise NotImplementedError(f"{what} for {qtype.name} is not implemented")
    return qtype


def _f16(a: F32) -> U8:
    """(n, 1) f32 -> (n, 2) bytes of the f16 value (round to nearest even, as ggml)."""
    return a.astype(np.float16).view(np.uint8)


def _from_f16(b: U8) -> F32:
    """(n, 2) bytes -> (n, 1) f32."""
    return np.ascontiguousarray(b).view(np.float16).astype(np.float32)


def _inv(d: F32) -> F32:
    """1 / d with 0 for d == 0 (an all-zero block quantizes to zeros)."""
    with np.errstate(divide="ignore"):
        return np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)


def _round_half_away(v: F32) -> F32:
    """roundf(): halves go away from zero, unlike np.round (ggml quantize_row_q8_0 uses roundf)."""
    t = np.trunc(v)
    return np.where(np.abs(v - t) >= np.float32(0.5), t + np.sign(v), t)


def _pack_nibbles(q: U8) -> U8:
    """(n, 32) values < 16 -> (n, 16) bytes: byte j = q[j] | q[j + 16] << 4."""
    return (q[:, :16] & np.uint8(0x0F)) | (q[:, 16:] << np.uint8(4))


def _unpack_nibbles(qs: U8) -> U8:
    """(n, 16) bytes -> (n, 32) values, the inverse of `_pack_nibbles`."""
    return np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=-1)


def _signed_max(x: F32) -> F32:
    """(n, 32) -> (n, 1): the element of largest magnitude, with its sign (first one on ties)."""
    return np.take_along_axis(x, np.abs(x).argmax(axis=-1, keepdims=True), axis=-1)


def _qh_pack(q: U8) -> U8:
    """(n, 32) 5-bit values -> (n, 4) bytes of a little-endian u32 whose bit j is q[j] >> 4."""
    return np.packbits(q >> np.uint8(4), axis=-1, bitorder="little")


def _qh_unpack(qh: U8) -> U8:
    """(n, 4) bytes -> (n, 32) values 0/16, the inverse of `_qh_pack`."""
    return np.unpackbits(qh, axis=-1, bitorder="little") << np.uint8(4)


# --- legacy 32-weight types: quantize (bit-exact with gguf-py) ----------------------------------


def _quantize_q8_0(x: F32) -> U8:
    d = np.abs(x).max(axis=-1, keepdims=True) / np.float32(127)
    q = _round_half_away(x * _inv(d)).astype(np.int8)
    return np.concatenate([_f16(d), q.view(np.uint8)], axis=-1)


def _quantize_sym(x: F32, levels: int) -> tuple[F32, U8]:
    """Q4_0/Q5_0: d = -max / (levels / 2), q = trunc(x / d + levels / 2 + 0.5) in [0, levels)."""
    d = _signed_max(x) / np.float32(-(levels // 2))
    v = np.trunc(x * _inv(d) + np.float32(levels // 2 + 0.5))
    return d, v.astype(np.uint8).clip(0, levels - 1)


def _quantize_affine(x: F32, levels: int) -> tuple[F32, F32, U8]:
    """Q4_1/Q5_1: d = (max - min) / (levels - 1), q = trunc((x - min) / d + 0.5)."""
    lo, hi = x.min(axis=-1, keepdims=True), x.max(axis=-1, keepdims=True)
    d = (hi - lo) / np.float32(levels - 1)
    v = np.trunc((x - lo) * _inv(d) + np.float32(0.5))
    return d, lo, v.astype(np.uint8).clip(0, levels - 1)


def _quantize_sym_weighted(x: F32, levels: int, imp: np.ndarray) -> tuple[F32, U8]:
    """Q4_0/Q5_0 blocks chosen to minimise the importance-weighted error sum_j imp_j (x_j -
    d (q_j - levels / 2))^2 per block, as llama.cpp does with an importance matrix.

    Candidates: the plain quantizer's (d, q), and for each of 21 trial scales d0 = -max /
    (levels / 2 + t), t in -1.0..1.0 step 0.1, the values q = round(x / d0) clipped to the range
    with the scale refitted by weighted least squares for those values. The refitted d is rounded
    to float16 (as stored) before its error is measured, so the block kept is never worse than
    the plain one under the weighted error. imp (R, 32) >= 0; an all-zero row of imp keeps the
    plain block.
    """
    half = levels // 2
    d_plain, q_plain = _quantize_sym(x, levels)
    x64, w = x.astype(np.float64), imp.astype(np.float64)

    def err(d: np.ndarray, v: np.ndarray) -> np.ndarray:
        return (w * (x64 - d * v) ** 2).sum(axis=-1, keepdims=True)

    best_d = d_plain.astype(np.float16).astype(np.float64)
    best_v = q_plain.astype(np.float64) - half
    best_e = err(best_d, best_v)
    mx = _signed_max(x).astype(np.float64)
    for t in np.arange(-10, 11) / 10:
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(mx == 0, 0.0, -(half + t) / mx)
        v = np.clip(np.rint(x64 * inv), -half, half - 1)
        sl2, slx = (w * v * v).sum(-1, keepdims=True), (w * v * x64).sum(-1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(sl2 > 0, slx / sl2, 0.0).astype(np.float16).astype(np.float64)
        e = err(d, v)
        better = e < best_e
        best_e = np.where(better, e, best_e)
        best_d = np.where(better, d, best_d)
        best_v = np.where(better, v, best_v)
    return best_d.astype(np.float32), (best_v + half).astype(np.uint8)


def _pack_sym(d: F32, q: U8, levels: int) -> U8:
    """Q4_0 (levels 16) / Q5_0 (levels 32) block bytes from scales (n, 1) and values (n, 32)."""
    if levels == 16:
        return np.concatenate([_f16(d), _pack_nibbles(q)], axis=-1)
    return np.concatenate([_f16(d), _qh_pack(q), _pack_nibbles(q)], axis=-1)


def _quantize_q4_0(x: F32, imp: np.ndarray | None = None) -> U8:
    d, q = _quantize_sym(x, 16) if imp is None else _quantize_sym_weighted(x, 16, imp)
    return _pack_sym(d, q, 16)


def _quantize_q4_1(x: F32) -> U8:
    d, lo, q = _quantize_affine(x, 16)
    return np.concatenate([_f16(d), _f16(lo), _pack_nibbles(q)], axis=-1)


def _quantize_q5_0(x: F32, imp: np.ndarray | None = None) -> U8:
    d, q = _quantize_sym(x, 32) if imp is None else _quantize_sym_weighted(x, 32, imp)
    return _pack_sym(d, q, 32)


def _quantize_q5_1(x: F32) -> U8:
    d, lo, q = _quantize_affine(x, 32)
    return np.concatenate([_f16(d), _f16(lo), _qh_pack(q), _pack_nibbles(q)], axis=-1)


# --- k-quants: quantize (own grid search; gguf-py has none to compare with) ---------------------


def _k_codes(v: np.ndarray, sup: F32) -> U8:
    """Sub-block scales or offsets (n, S) >= 0 -> six-bit codes against the super scale (n, 1)."""
    return np.clip(np.rint(v * _inv(sup)), 0, 63).astype(np.uint8)


def _six_bit(v: np.ndarray) -> tuple[F32, U8]:
    """Per-sub-block values (n, S) >= 0 -> super scale (n, 1), max / 63 as stored in f16, and
    the codes 0..63 against it."""
    sup = _from_f16(_f16((v.max(-1, keepdims=True) / 63).astype(np.float32)))
    return sup, _k_codes(v, sup)


def _pack_k_scales(sc: U8, mn: U8) -> U8:
    """(n, 8) six-bit scales and mins -> the 12-byte Q4_K/Q5_K scale field."""
    b = np.empty((sc.shape[0], 12), np.uint8)
    b[:, 0:4] = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    b[:, 4:8] = mn[:, :4] | ((mn[:, 4:] >> 4) << 6)
    b[:, 8:12] = (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4)
    return b


def _unpack_k_scales(b: U8) -> tuple[U8, U8]:
    """12-byte field -> (n, 8) scales, (n, 8) mins (6 bits each)."""
    lo_sc, lo_mn, hi = b[:, 0:4], b[:, 4:8], b[:, 8:12]
    sc = np.concatenate([lo_sc & 0x3F, (hi & 0x0F) | ((lo_sc >> 6) << 4)], axis=-1)
    mn = np.concatenate([lo_mn & 0x3F, (hi >> 4) | ((lo_mn >> 6) << 4)], axis=-1)
    return sc, mn


def _chunk_nibbles(q: U8) -> U8:
    """(n, 256) values < 16 -> (n, 128): chunk c packs sub-block 2c low and 2c+1 high."""
    q = q.reshape(-1, 4, 2, 32)
    return (q[:, :, 0] | (q[:, :, 1] << np.uint8(4))).reshape(-1, 128)


def _unchunk_nibbles(qs: U8) -> U8:
    """(n, 128) -> (n, 8, 32) sub-block values, the inverse of `_chunk_nibbles`."""
    qs = qs.reshape(-1, 4, 1, 32)
    return np.concatenate([qs & 0x0F, qs >> 4], axis=2).reshape(-1, 8, 32)


def _fit_affine(x: np.ndarray, w: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-blocks x (m, 32) with weights w (m, 32) >= 0 -> scale s (m, 1) >= 0 and offset
    o (m, 1) >= 0 (float64, before any rounding) of the grid x ~ s * q - o, q in [0, levels),
    chosen to minimise sum_j w_j (x_j - s q_j + o)^2.

    Candidates: the min/max grid (lo = min(x, 0) at q = 0, max(x) at q = levels - 1) and, for
    21 trial steps (max - lo) / (levels - 1 + t), t in -1.0..1.0 step 0.1, the values
    q = round((x - lo) / step) with (s, o) refitted to them by weighted least squares (the 2x2
    normal equations; where they want o < 0, o = 0 and s alone is refitted). Where w is all
    zero over a sub-block, uniform weights stand in.
    """
    x = x.astype(np.float64)
    w = np.where(w.sum(-1, keepdims=True) > 0, w, 1.0)
    lo, hi = np.minimum(x.min(-1, keepdims=True), 0.0), x.max(-1, keepdims=True)
    top = levels - 1

    def err(s: np.ndarray, o: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.clip(np.rint((x + o) / s), 0, top)
        q = np.where(s > 0, q, 0.0)
        return (w * (x - s * q + o) ** 2).sum(-1, keepdims=True)

    best_s, best_o = np.maximum(hi - lo, 0.0) / top, -lo
    best_e = err(best_s, best_o)
    sw = w.sum(-1, keepdims=True)
    swx = (w * x).sum(-1, keepdims=True)
    for t in np.arange(-10, 11) / 10:
        step = (hi - lo) / (top + t)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(step > 0, np.clip(np.rint((x - lo) / step), 0, top), 0.0)
        a, b = (w * q * q).sum(-1, keepdims=True), (w * q).sum(-1, keepdims=True)
        e = (w * q * x).sum(-1, keepdims=True)
        det = a * sw - b * b
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(det > 0, (e * sw - b * swx) / det, 0.0)
            o = np.where(det > 0, (b * e - a * swx) / det, 0.0)
            s0 = np.where(a > 0, e / a, 0.0)  # o clamped at 0
        s, o = np.where(o < 0, s0, s), np.maximum(o, 0.0)
        s = np.maximum(s, 0.0)
        cand = err(s, o)
        better = cand < best_e
        best_e = np.where(better, cand, best_e)
        best_s, best_o = np.where(better, s, best_s), np.where(better, o, best_o)
    return best_s, best_o


def _k_grid(sub: np.ndarray, w: np.ndarray, levels: int) -> tuple[F32, F32, U8, U8]:
    """Super-blocks sub (n, 8, 32), weights w (n, 8, 32) -> d, dmin (n, 1) as stored (f16
    values) and the six-bit codes sc, mn (n, 8) of `_fit_affine`'s scales and offsets."""
    n = sub.shape[0]
    s, o = (a.reshape(n, 8) for a in _fit_affine(sub.reshape(-1, 32), w.reshape(-1, 32), levels))
    (d, sc), (dmin, mn) = _six_bit(s), _six_bit(o)
    return d, dmin, sc, mn


def _k_round(x: F32, scale: F32, offset: F32, levels: int) -> U8:
    """Values q of x on the grid scale * q - offset (scale, offset as dequantize forms them)."""
    return np.clip(np.rint((x + offset) * _inv(scale)), 0, levels - 1).astype(np.uint8)


def _pack_k(d: F32, dmin: F32, sc: U8, mn: U8, q: U8, levels: int) -> U8:
    """Q4_K (levels 16) / Q5_K (levels 32) block bytes from the super scales, codes and (n, 256)
    values."""
    n = q.shape[0]
    parts = [_f16(d), _f16(dmin), _pack_k_scales(sc, mn)]
    if levels == 32:  # bit k of qh[j] is the 5th bit of weight j of sub-block k
        bits = (q.reshape(n, 8, 32) >> 4).astype(np.uint8)
        parts.append((bits << np.arange(8, dtype=np.uint8)[:, None]).sum(axis=1, dtype=np.uint8))
    parts.append(_chunk_nibbles(q & 0x0F))
    return np.concatenate(parts, axis=-1)


def _quantize_k(x: F32, levels: int, imp: np.ndarray | None = None) -> U8:
    """Q4_K (levels 16) / Q5_K (levels 32): per sub-block w = scale * q - offset, each
    sub-block's grid searched (`_fit_affine`) under the importance imp (n, 256) or, without
    it, plain squared error; then the six-bit codes against the super scales, and the values
    rounded on the grid as stored."""
    n = x.shape[0]
    sub = x.reshape(n, 8, 32)
    w = np.ones(sub.shape) if imp is None else imp.reshape(n, 8, 32).astype(np.float64)
    d, dmin, sc, mn = _k_grid(sub, w, levels)
    scale = (d * sc.astype(np.float32))[..., None]  # (n, 8, 1) exactly as dequantize forms it
    offset = (dmin * mn.astype(np.float32))[..., None]
    q = _k_round(sub, scale, offset, levels).reshape(n, QK_K)
    return _pack_k(d, dmin, sc, mn, q, levels)


def _quantize_q6_k(x: F32) -> U8:
    n = x.shape[0]
    sub = x.reshape(n, 16, 16)
    step = _signed_max(sub.reshape(n * 16, 16)).reshape(n, 16) / np.float32(-32)
    big = np.abs(step).max(axis=-1, keepdims=True)
    d = _from_f16(_f16(big / np.float32(127)))
    sc = np.clip(np.rint(step * _inv(d)), -128, 127).astype(np.int8)
    scale = (d * sc.astype(np.float32))[..., None]  # (n, 16, 1)
    q = np.clip(np.rint(sub * _inv(scale)) + 32, 0, 63).astype(np.uint8).reshape(n, 2, 4, 32)
    ql = (q[:, :, 0:2] & 0x0F) | ((q[:, :, 2:4] & 0x0F) << 4)  # (n, 2, 2, 32): 64 B per half
    qh = (q >> 4) << (2 * np.arange(4, dtype=np.uint8)[:, None])
    qh = qh.sum(axis=2, dtype=np.uint8)  # (n, 2, 32)
    return np.concatenate(
        [ql.reshape(n, 128), qh.reshape(n, 64), sc.view(np.uint8), _f16(d)], axis=-1
    )


# --- error feedback over the input channels (GPTQ) ------------------------------------------------


def _gptq(x: F32, qtype: GGMLType, h: np.ndarray, batch: int = 256) -> U8:
    """Blocks for x (N, K) that minimise the output error tr((W - Q) H (W - Q)^T) over inputs of
    second moment h (K, K) (symmetric positive definite), by the column-by-column error
    feedback of GPTQ (Frantar et al. 2022, arXiv:2210.17323): column j is rounded on its
    block's grid, and its rounding error, divided by U[j, j], is taken off the columns still to
    come along U[j, j+1:], where U is the upper Cholesky factor of h^-1 (U^T U = h^-1).
    Updates are applied to a `batch` of columns at a time and to the rest once per batch. As in
    GPTQ, 1% of the mean diagonal is added to h first, so nearly dead channels cannot make the
    inverse blow up.

    A block's grid (scale, for the k-quants also offset and the super scales) is fitted when
    its first column comes up, to the columns as updated by then, weighted by diag(h), with the
    same searches as the diagonal-importance quantizer; Q4_K/Q5_K fit the super scales at each
    256-column super-block and the six-bit codes of each 32-column sub-block at its start.
    """
    n, k = x.shape
    kquant = qtype in (GGMLType.Q4_K, GGMLType.Q5_K)
    levels = {GGMLType.Q4_0: 16, GGMLType.Q5_0: 32, GGMLType.Q4_K: 16, GGMLType.Q5_K: 32}[qtype]
    half = levels // 2
    h = np.asarray(h, np.float64)
    h = h + np.eye(k) * (0.01 * np.diag(h).mean())
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    diag = np.diag(h)
    w = x.astype(np.float64)  # a copy: updated in place as errors are fed forward
    q = np.zeros((n, k), np.uint8)
    scale = np.zeros((n, k // 32), np.float32)  # per 32 columns, as dequantize forms them
    offset = np.zeros((n, k // 32), np.float32)
    supers: list[tuple[F32, F32, U8, U8]] = []  # k-quants: d, dmin, sc, mn per super-block
    for j0 in range(0, k, batch):
        j1 = min(j0 + batch, k)
        errs = np.empty((n, j1 - j0))
        for j in range(j0, j1):
            b = j // 32
            if kquant and j % QK_K == 0:
                sub = w[:, j : j + QK_K].astype(np.float32).reshape(n, 8, 32)
                wts = np.broadcast_to(diag[j : j + QK_K].reshape(8, 32), sub.shape)
                supers.append(_k_grid(sub, wts, levels))
            if j % 32 == 0:
                cols = w[:, j : j + 32].astype(np.float32)
                wts = np.broadcast_to(diag[j : j + 32], cols.shape)
                if kquant:  # this sub-block's six-bit codes, fitted to its updated columns
                    d, dmin, sc, mn = supers[-1]
                    s, o = _fit_affine(cols, wts, levels)
                    i = b % 8
                    sc[:, i], mn[:, i] = _k_codes(s, d)[:, 0], _k_codes(o, dmin)[:, 0]
                    scale[:, b] = d[:, 0] * sc[:, i].astype(np.float32)
                    offset[:, b] = dmin[:, 0] * mn[:, i].astype(np.float32)
                else:
                    scale[:, b] = _quantize_sym_weighted(cols, levels, wts)[0][:, 0]
            col = w[:, j].astype(np.float32)
            if kquant:
                qj = _k_round(col, scale[:, b], offset[:, b], levels)
                deq = scale[:, b] * qj.astype(np.float32) - offset[:, b]
            else:
                v = np.clip(np.rint(col * _inv(scale[:, b])), -half, half - 1)
                qj = (v + half).astype(np.uint8)
                deq = scale[:, b] * v.astype(np.float32)
            q[:, j] = qj
            e = (w[:, j] - deq) / u[j, j]
            w[:, j + 1 : j1] -= np.outer(e, u[j, j + 1 : j1])
            errs[:, j - j0] = e
        w[:, j1:] -= errs @ u[j0:j1, j1:]
    if kquant:
        d, dmin, sc, mn = (np.concatenate(a, axis=0) for a in zip(*supers, strict=True))
        nb = k // QK_K  # supers are per (super-block) in column order, each (n, ...)
        d, dmin = (a.reshape(nb, n).T.reshape(-1, 1) for a in (d, dmin))
        sc, mn = (a.reshape(nb, n, 8).transpose(1, 0, 2).reshape(-1, 8) for a in (sc, mn))
        return _pack_k(d, dmin, sc, mn, q.reshape(-1, QK_K), levels)
    return _pack_sym(scale.reshape(-1, 1), q.reshape(-1, 32), levels)


# --- dequantize (bit-exact with gguf-py: same operations in the same order) ----------------------


def _dq_sym(b: U8, zero: int) -> F32:
    d = _from_f16(b[:, :2])
    if zero == 8:
        q = _unpack_nibbles(b[:, 2:])
    else:
        q = _unpack_nibbles(b[:, 6:]) | _qh_unpack(b[:, 2:6])
    return d * (q.astype(np.int8) - np.int8(zero)).astype(np.float32)


def _dq_affine(b: U8, five_bit: bool) -> F32:
    d, m = _from_f16(b[:, :2]), _from_f16(b[:, 2:4])
    q = _unpack_nibbles(b[:, 8:]) | _qh_unpack(b[:, 4:8]) if five_bit else _unpack_nibbles(b[:, 4:])
    return d * q.astype(np.float32) + m


def _k_scales(b: U8) -> tuple[F32, F32]:
    """Q4_K/Q5_K block bytes -> per sub-block scale and offset, (n, 8, 1) each."""
    d, dmin = _from_f16(b[:, 0:2]), _from_f16(b[:, 2:4])
    sc, mn = _unpack_k_scales(b[:, 4:16])
    return (d * sc.astype(np.float32))[..., None], (dmin * mn.astype(np.float32))[..., None]


def _k_values(b: U8) -> U8:
    """Q4_K/Q5_K block bytes -> (n, 8, 32) unsigned sub-block values."""
    if b.shape[1] == GGML_BLOCK[GGMLType.Q4_K][1]:
        return _unchunk_nibbles(b[:, 16:])
    hi = (b[:, None, 16:48] >> np.arange(8, dtype=np.uint8)[:, None]) & 1  # (n, 8, 32)
    return _unchunk_nibbles(b[:, 48:]) | (hi << 4)


def _dq_k(b: U8) -> F32:
    scale, offset = _k_scales(b)
    return (scale * _k_values(b).astype(np.float32) - offset).reshape(-1, QK_K)


def _q6_k_values(b: U8) -> U8:
    """Q6_K block bytes -> (n, 256) values 0..63."""
    ql = b[:, :128].reshape(-1, 2, 1, 64) >> np.array([0, 4], np.uint8)[:, None]
    qh = b[:, 128:192].reshape(-1, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8)[:, None]
    return ((ql & 0x0F).reshape(-1, 8, 32) | ((qh & 0x03).reshape(-1, 8, 32) << 4)).reshape(-1, 256)


def _dq_q6_k(b: U8) -> F32:
    scale = _from_f16(b[:, 208:210]) * b[:, 192:208].view(np.int8).astype(np.float32)  # (n, 16)
    q = (_q6_k_values(b).astype(np.int8) - np.int8(32)).astype(np.float32).reshape(-1, 16, 16)
    return (scale[..., None] * q).reshape(-1, QK_K)


_QUANTIZE = {
    GGMLType.Q8_0: _quantize_q8_0,
    GGMLType.Q4_0: _quantize_q4_0,
    GGMLType.Q4_1: _quantize_q4_1,
    GGMLType.Q5_0: _quantize_q5_0,
    GGMLType.Q5_1: _quantize_q5_1,
    GGMLType.Q4_K: lambda x, imp=None: _quantize_k(x, 16, imp),
    GGMLType.Q5_K: lambda x, imp=None: _quantize_k(x, 32, imp),
    GGMLType.Q6_K: _quantize_q6_k,
}
_DEQUANTIZE = {
    GGMLType.Q8_0: lambda b: _from_f16(b[:, :2]) * b[:, 2:].view(np.int8).astype(np.float32),
    GGMLType.Q4_0: lambda b: _dq_sym(b, 8),
    GGMLType.Q4_1: lambda b: _dq_affine(b, five_bit=False),
    GGMLType.Q5_0: lambda b: _dq_sym(b, 16),
    GGMLType.Q5_1: lambda b: _dq_affine(b, five_bit=True),
    GGMLType.Q4_K: _dq_k,
    GGMLType.Q5_K: _dq_k,
    GGMLType.Q6_K: _dq_q6_k,
}


# --- repacked layouts for the kernels -----------------------------------------------------------


class Packed(NamedTuple):
    """Kernel layout: w[r, 32 b + j] = scale[r, b] * v - offset[r, b] for the j-th value v.

    kind "i8": qs (R, K) int8 values. kind "u4": qs (R, K // 2) uint8, byte 16 b + j holding
    values 32 b + j (low nibble) and 32 b + j + 16 (high nibble). scale, offset: (R, K // 32) f32;
    offset is None where it is zero.
    """

    kind: str
    qs: np.ndarray
    scale: F32
    offset: F32 | None


def _repack(qtype: GGMLType, b: U8, rows: int) -> Packed | None:
    """Block bytes (rows * blocks_per_row, bytes) -> Packed; None where no kernel takes the type."""

    def per_row(a: np.ndarray) -> np.ndarray:  # (rows * blocks, ...) -> (rows, ...) contiguous
        return np.ascontiguousarray(a).reshape(rows, -1)

    d = _from_f16(b[:, :2])
    if qtype == GGMLType.Q8_0:
        return Packed("i8", per_row(b[:, 2:].view(np.int8)), per_row(d), None)
    if qtype == GGMLType.Q4_0:  # 8 d is exact (a power-of-two multiple)
        return Packed("u4", per_row(b[:, 2:]), per_row(d), per_row(d * np.float32(8)))
    if qtype == GGMLType.Q4_1:
        return Packed("u4", per_row(b[:, 4:]), per_row(d), per_row(-_from_f16(b[:, 2:4])))
    if qtype == GGMLType.Q5_0:
        v = _unpack_nibbles(b[:, 6:]) | _qh_unpack(b[:, 2:6])
        return Packed("i8", per_row(v.astype(np.int8) - np.int8(16)), per_row(d), None)
    if qtype == GGMLType.Q5_1:
        v = _unpack_nibbles(b[:, 8:]) | _qh_unpack(b[:, 4:8])
        return Packed("i8", per_row(v.view(np.int8)), per_row(d), per_row(-_from_f16(b[:, 2:4])))
    if qtype in (GGMLType.Q4_K, GGMLType.Q5_K):
        scale, offset = (per_row(a) for a in _k_scales(b))
        v = _k_values(b).reshape(-1, 32)
        if qtype == GGMLType.Q4_K:  # nibbles re-paired into the Q4_0 order the kernel reads
            return Packed("u4", per_row(_pack_nibbles(v)), scale, offset)
        return Packed("i8", per_row(v.view(np.int8)), scale, offset)
    return None  # Q6_K: 16-weight scales; no kernel (ops falls back to dequantize + BLAS)


# --- QTensor ------------------------------------------------------------------------------------


@dataclass
class QTensor:
    """A quantized tensor: GGML blocks plus the logical shape (..., K) of the array it encodes."""

    qtype: GGMLType
    shape: tuple[int, ...]
    blocks: U8  # (rows, row_bytes) uint8, often a zero-copy view into a GGUF memmap
    _packed: list[Packed | None] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.qtype = _check_type(self.qtype, "QTensor")
        block, nbytes = GGML_BLOCK[self.qtype]
        if not self.shape or self.shape[-1] % block:
            raise ValueError(
                f"{self.qtype.name} needs a last dimension that is a multiple of {block}, "
                f"got shape {self.shape}"
            )
        rows = int(np.prod(self.shape[:-1], dtype=np.int64))
        row_bytes = self.shape[-1] // block * nbytes
        if self.blocks.dtype != np.uint8 or self.blocks.size != rows * row_bytes:
            raise ValueError(
                f"{self.qtype.name} {self.shape}: expected {rows * row_bytes} uint8 bytes, "
                f"got {self.blocks.size} {self.blocks.dtype}"
            )
        self.blocks = self.blocks.reshape(rows, row_bytes)

    @classmethod
    def from_raw(cls, raw: RawTensor) -> QTensor:
        return cls(raw.ggml_type, tuple(raw.shape), raw.data)

    @property
    def nbytes(self) -> int:
        return int(self.blocks.nbytes)

    def _block_bytes(self) -> U8:
        return self.blocks.reshape(-1, GGML_BLOCK[self.qtype][1])

    def dequantize(self) -> F32:
        """The f32 array (shape `self.shape`), bit-exact with gguf.quants.dequantize."""
        return _DEQUANTIZE[self.qtype](self._block_bytes()).reshape(self.shape)

    def dequantize_rows(self, r0: int, r1: int) -> F32:
        """Rows r0:r1 of the 2-D (rows, K) view, as f32 (r1 - r0, K)."""
        blk = GGML_BLOCK[self.qtype][1]
        part = self.blocks[r0:r1].reshape(-1, blk)
        return _DEQUANTIZE[self.qtype](part).reshape(r1 - r0, self.shape[-1])

    def rows(self, ids: np.ndarray) -> F32:
        """Rows `ids` (any shape) of the 2-D (rows, K) view -> (*ids.shape, K) float32, equal
        to `dequantize()[ids]`. Read from the kernel layout where it is built (an embedding
        table that is also the output projection), so a lookup after the model's load touches
        none of the file's pages (`GGUFFile.release_pages`): the same values, a zero's sign
        aside (Q4_0 gives 8 d - 8 d = +0 where d (8 - 8) is -0 for d < 0); else from the
        blocks, bit for bit."""
        ids = np.asarray(ids)
        flat = ids.reshape(-1)
        p = self._packed[0] if self._packed else None
        if p is None:
            part = self.blocks[flat].reshape(-1, GGML_BLOCK[self.qtype][1])
            out = _DEQUANTIZE[self.qtype](part)
        else:
            v = p.qs[flat]
            if p.kind == "u4":  # the Q4_0 byte order (`Packed`)
                v = _unpack_nibbles(v.reshape(-1, 16))
            v = v.reshape(flat.size, self.shape[-1] // 32, 32)
            out = v.astype(np.float32) * p.scale[flat][..., None]
            if p.offset is not None:
                out -= p.offset[flat][..., None]
        return out.reshape(*ids.shape, self.shape[-1])

    def repack(self, keep: bool = True) -> Packed | None:
        """The kernel layout (`Packed`), built once and cached; None if no kernel takes the type.

        keep=False: not cached when not already built (for a caller that derives its own
        layout from it, such as `int8_gemm.gemm_pack`, so the weight is not held twice)."""
        if self._packed:
            return self._packed[0]
        p = _repack(self.qtype, self._block_bytes(), self.blocks.shape[0])
        if keep:
            self._packed.append(p)
        return p


# types whose quantizer takes an importance (`quantize(..., importance=)`)
WEIGHTED_TYPES = (GGMLType.Q4_0, GGMLType.Q5_0, GGMLType.Q4_K, GGMLType.Q5_K)


def quantize(x: np.ndarray, qtype: GGMLType, importance: np.ndarray | None = None) -> QTensor:
    """Quantize an array (..., K) to `qtype`; K must be a multiple of the block size.

    importance, for a weight matrix (N, K) and the WEIGHTED_TYPES only, says how errors in its
    input channels move the products on calibration data (`npasr.nn.calibration`):

    * (K,) >= 0, the mean square of each input channel (llama.cpp's importance matrix): each
      block is chosen on its own to minimise its weighted error (`_quantize_sym_weighted`,
      `_quantize_k`);
    * (K, K) symmetric positive definite, the second moment of the inputs: the whole matrix is
      quantized with error feedback across its columns (`_gptq`), which minimises the error of
      the products themselves.

    Without it Q8_0 and the 32-weight types are bit-exact with gguf-py, and the k-quants take
    `_quantize_k`'s search under plain squared error.
    """
    qtype = _check_type(qtype, "quantize")
    block, _ = GGML_BLOCK[qtype]
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0 or x.shape[-1] % block:
        raise ValueError(
            f"{qtype.name} needs a last dimension that is a multiple of {block}, got {x.shape}"
        )
    rows = np.ascontiguousarray(x).reshape(-1, block)
    if importance is None:
        return QTensor(qtype, x.shape, _QUANTIZE[qtype](rows))
    if qtype not in WEIGHTED_TYPES:
        raise NotImplementedError(f"importance-weighted {qtype.name} is not implemented")
    imp = np.asarray(importance, dtype=np.float64)
    k = x.shape[-1]
    if imp.shape == (k, k) and x.ndim == 2:
        finite = np.isfinite(imp).all()
        sym = finite and np.allclose(imp, imp.T, rtol=1e-6, atol=1e-12 * np.abs(imp).max())
        if not sym or (np.diag(imp) < 0).any() or not imp.any():
            raise ValueError("importance (K, K) must be finite, symmetric, non-zero, diagonal >= 0")
        try:
            blocks = _gptq(x, qtype, (imp + imp.T) / 2)
        except np.linalg.LinAlgError:
            raise ValueError("importance (K, K) must be positive definite") from None
        return QTensor(qtype, x.shape, blocks)
    if imp.shape != x.shape[-1:] or not np.isfinite(imp).all() or (imp < 0).any():
        raise ValueError(
            f"importance must be ({k},) finite and >= 0 or ({k}, {k}) for a matrix, "
            f"got {imp.shape}"
        )
    imp_rows = np.broadcast_to(imp, x.shape).reshape(-1, block)
    return QTensor(qtype, x.shape, _QUANTIZE[qtype](rows, imp_rows))


def dequantize(w: QTensor) -> F32:
    """Module-level `QTensor.dequantize`: the reference every kernel is tested against."""
    return w.dequantize()
