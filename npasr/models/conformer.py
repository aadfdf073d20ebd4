"""Conformer encoder layers in NumPy, shared by every Conformer family (GigaAM now, Parakeet next).

References (facts only, no code copied):
  GigaAM  salute-developers/GigaAM@8555893 gigaam/encoder.py (ConformerLayer, ConformerConvolution,
          ConformerFeedForward, RotaryPositionMultiHeadAttention, RelPositionMultiHeadAttention,
          RotaryPositionalEmbedding, RelPositionalEmbedding) and gigaam/utils.py (rtt_half)
  NeMo    NVIDIA/NeMo@8cfedd7203 nemo/collections/asr/parts/submodules/conformer_modules.py and
          multi_head_attention.py: the same layer layout and attribute names
  Paper   Gulati et al. 2020, "Conformer", Fig. 1 (macaron feed-forward halves around MHSA + conv)

Attribute names equal the state_dict keys (`norm_feed_forward1`, `self_attn.linear_q`,
`conv.batch_norm`, ...), so a layer loads from `Weights.sub("encoder.layers.<i>")` unchanged.
Subsampling differs per family (GigaAM striding conv1d/conv2d, NeMo dw_striding) and lives there.
One utterance at a time, no padding, so no attention or time masks are needed.
Shapes: T frames, D = d_model, H heads, Dh = D // H.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from npasr.io.weights import Weights
from npasr.nn import ops, ref
from npasr.nn.layers import BatchNorm1d, LayerNorm, Linear, linears
from npasr.types import F32


@dataclass(frozen=True)
class ConformerConfig:
    d_model: int  # residual width: 768 (GigaAM), 1024 (Parakeet 0.6B)
    n_layers: int  # 16 (GigaAM), 24 (Parakeet 0.6B)
    n_heads: int  # 16 (GigaAM), 8 (Parakeet)
    ff_expansion_factor: int = 4  # d_ff = d_model * ff_expansion_factor
    conv_kernel_size: int = 31  # depthwise kernel, odd: 5 (GigaAM v3), 31 (v2), 9 (Parakeet)
    conv_norm_type: Literal["batch_norm", "layer_norm"] = "batch_norm"  # v3: layer_norm
    self_attention_model: Literal["rotary", "rel_pos"] = "rel_pos"  # GigaAM: rotary
    pos_emb_max_len: int = 5000  # GigaAM passes this as the RoPE base (not a length!)
    use_bias: bool = True  # Parakeet v3: False (no biases in linear/conv layers)

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads


@dataclass
class FeedForward:
    linear1: Linear  # (D * ff, D)
    linear2: Linear  # (D, D * ff)

    @classmethod
    def load(cls, w: Weights, cfg: ConformerConfig) -> FeedForward:
        b = cfg.use_bias
        return cls(Linear.load(w.sub("linear1"), bias=b), Linear.load(w.sub("linear2"), bias=b))

    def __call__(self, x: F32) -> F32:  # (T, D) -> (T, D)
        return self.linear2(ops.silu(self.linear1(x)))


@dataclass
class ConvModule:
    pointwise_conv1: Linear  # (2D, D): doubled for the GLU gate
    depthwise_conv: tuple[F32, F32 | None]  # weight (D, 1, K), bias (D,)
    batch_norm: BatchNorm1d | LayerNorm  # named batch_norm in the checkpoint even when a LayerNorm
    pointwise_conv2: Linear  # (D, D)

    @classmethod
    def load(cls, w: Weights, cfg: ConformerConfig) -> ConvModule:
        b, dw = cfg.use_bias, w.sub("depthwise_conv")
        norm = w.sub("batch_norm")
        return cls(
            Linear.load(w.sub("pointwise_conv1"), bias=b),  # kernel-1 Conv1d as a Linear
            (dw.f32("weight"), dw.f32("bias") if b else None),
            LayerNorm.load(norm) if cfg.conv_norm_type == "layer_norm" else BatchNorm1d.load(norm),
            Linear.load(w.sub("pointwise_conv2"), bias=b),
        )

    @property
    def halo(self) -> int:
        return (self.depthwise_conv[0].shape[-1] - 1) // 2  # frames each side: 4 for kernel 9

    def __call__(self, x: F32, pad: tuple[int, int] | None = None) -> F32:  # (T, D) -> (T, D)
        """`pad` (before, after): zero frames around x; default `halo` on both sides ("same").
        A window of a longer sequence passes its neighbour frames in x and pads only at the
        sequence's ends, and gets len(x) - 2 * halo + sum(pad) frames back."""
        y = ops.glu(self.pointwise_conv1(x))  # (T, D): a * sigmoid(gate) over channels
        w, b = self.depthwise_conv
        before, after = (self.halo, self.halo) if pad is None else pad
        if before == after:
            y = ops.depthwise_conv1d_tc(y, w, b, padding=before)
        else:
            y = ops.depthwise_conv1d_tc(np.pad(y, ((before, after), (0, 0))), w, b, padding=0)
        if isinstance(self.batch_norm, BatchNorm1d):
            y = self.batch_norm(y.T).T  # statistics per channel, on the (D, T) view
        else:
            y = self.batch_norm(y)  # v3: LayerNorm over the channels of each frame
        return self.pointwise_conv2(ops.silu(y))


def _split_heads(x: F32, n_heads: int) -> F32:
    t, d = x.shape
    # contiguous: batched matmul on strided views misses BLAS (0.3 s vs 3 ms per layer at D=768)
    x = x.reshape(t, n_heads, d // n_heads).transpose(1, 0, 2)  # (H, T, Dh)
    return np.ascontiguousarray(x)


def _merge_heads(x: F32) -> F32:
    h, t, dh = x.shape
    return x.transpose(1, 0, 2).reshape(t, h * dh)  # (T, D)


@dataclass
class RotaryAttention:
    """GigaAM rotary MHSA: RoPE rotates the layer input per head *before* the q/k projections
    (not q and k after them, as in LLMs); v is projected from the unrotated input."""

    linear_q: Linear
    linear_k: Linear
    linear_v: Linear
    linear_out: Linear
    n_heads: int

    @classmethod
    def load(cls, w: Weights, cfg: ConformerConfig) -> RotaryAttention:
        lin = {n: Linear.load(w.sub(n), bias=cfg.use_bias) for n in
               ("linear_q", "linear_k", "linear_v", "linear_out")}  # fmt: skip
        return cls(**lin, n_heads=cfg.n_heads)

    def __call__(self, x: F32, pos: tuple[F32, F32]) -> F32:  # x (T, D), cos/sin (T, Dh)
        cos, sin = pos
        xr = _merge_heads(ref.rope(_split_heads(x, self.n_heads), cos, sin))  # (T, D)
        q = _split_heads(self.linear_q(xr), self.n_heads)  # (H, T, Dh)
        k = _split_heads(self.linear_k(xr), self.n_heads)
        v = _split_heads(self.linear_v(x), self.n_heads)
        return self.linear_out(_merge_heads(ops.attention(q, k, v)))


@dataclass(frozen=True)
class RelPositions:
    """Position table handed to RelPositionAttention: full context (rows for relative positions
    T-1 ... -(T-1)) or NeMo's limited context `rel_pos_local_attn` [L, R] (rows L ... -R)."""

    table: F32  # (2T - 1, D) or (L + R + 1, D)
    context: tuple[int, int] | None = None  # (L, R) frames; None = full attention


ATTENTION_BLOCK = 512  # query rows per block: scores stay (H, 512, keys), never (H, T, T)


@dataclass
class RelPositionAttention:
    """Transformer-XL relative-position MHSA (NeMo RelPositionMultiHeadAttention; GigaAM's copy).

    score[i, j] = ((q_i + u) . k_j + (q_i + v) . p_(i-j)) / sqrt(Dh), with p = linear_pos(pe)
    over relative positions T-1 ... -(T-1). NeMo reaches p_(i-j) with `rel_shift` (pad one
    column on the left, reshape, drop a row); indexing column T-1-i+j directly is the same.

    Limited context [L, R] (NeMo RelPositionMultiHeadAttentionLongformer, as set by
    `change_attention_model("rel_pos_local_attn", [L, R])`): query i sees keys i-L ... i+R. NeMo
    lays the scores out in a band of 2w + 1 columns, w = max(L, R), offset j - i = c - w, and adds
    position row c for band columns c < L and row L + c - (2w - R) for c >= 2w - R (rows hold
    positions L ... -R). With L = R that is position i - j; with L != R the rows it adds are
    NeMo's, reproduced as they are.

    Queries run in blocks of ATTENTION_BLOCK rows, so memory grows with T * block, not T^2.
    """

    linear_q: Linear
    linear_k: Linear
    linear_v: Linear
    linear_out: Linear
    linear_pos: Linear  # (D, D), no bias
    pos_bias_u: F32  # (H, Dh)
    pos_bias_v: F32  # (H, Dh)
    n_heads: int

    @classmethod
    def load(cls, w: Weights, cfg: ConformerConfig) -> RelPositionAttention:
        lin = {n: Linear.load(w.sub(n), bias=cfg.use_bias) for n in
               ("linear_q", "linear_k", "linear_v", "linear_out")}  # fmt: skip
        shape = (cfg.n_heads, cfg.d_head)
        return cls(**lin, linear_pos=Linear.load(w.sub("linear_pos"), bias=False),
                   pos_bias_u=w.f32("pos_bias_u", shape), pos_bias_v=w.f32("pos_bias_v", shape),
                   n_heads=cfg.n_heads)  # fmt: skip

    def __call__(self, x: F32, pos: RelPositions) -> F32:  # x (T, D) -> (T, D)
        t = x.shape[0]
        local = pos.context is not None
        if not local:  # every block meets every key: project them once
            k_all = _split_heads(self.linear_k(x), self.n_heads)  # (H, T, Dh)
            v_all = _split_heads(self.linear_v(x), self.n_heads)
        p = _split_heads(self.linear_pos(pos.table), self.n_heads)  # (H, P, Dh)
        scale = np.float32(self.pos_bias_u.shape[-1] ** -0.5)
        out = np.empty_like(x)
        for b0 in range(0, t, ATTENTION_BLOCK):
            b1 = min(t, b0 + ATTENTION_BLOCK)
            q = _split_heads(self.linear_q(x[b0:b1]), self.n_heads)  # (H, B, Dh)
            if local:  # this block's keys only: memory stays O(block) for any length, for
                # (L + R) / block more key/value projection work (1.5x of that part at 128/512)
                k0, k1 = max(0, b0 - pos.context[0]), min(t, b1 + pos.context[1])  # type: ignore[index]
                k = _split_heads(self.linear_k(x[k0:k1]), self.n_heads)
                v = _split_heads(self.linear_v(x[k0:k1]), self.n_heads)
            else:
                k0, k1, k, v = 0, t, k_all, v_all
            ac = (q + self.pos_bias_u[:, None]) @ k.transpose(0, 2, 1)  # (H, B, K)
            row, valid = _position_rows(b0, b1, k0, k1, t, pos.context)
            lo, hi = (t - b1, 2 * t - 1 - b0) if pos.context is None else (0, p.shape[1])
            bd = (q + self.pos_bias_v[:, None]) @ p[:, lo:hi].transpose(0, 2, 1)  # (H, B, P')
            if pos.context is not None:  # a last zero column for scores without a position term
                bd = np.concatenate([bd, np.zeros(bd.shape[:2] + (1,), bd.dtype)], axis=-1)
            row -= lo  # full context: this block's rows T-b1 ... 2T-2-b0 only
            s = ac + np.take_along_axis(bd, np.broadcast_to(row, bd.shape[:1] + row.shape), -1)
            s *= scale
            if valid is not None:
                s[:, ~valid] = -np.inf  # outside [i - L, i + R]
            out[b0:b1] = self.linear_out(_merge_heads(ops.softmax(s) @ v))
        return out


def _position_rows(b0: int, b1: int, k0: int, k1: int, t: int, context: tuple[int, int] | None,
                   ) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
    """For queries b0..b1-1 and keys k0..k1-1: the position-table row each score adds, and
    (limited context) which scores are inside the window. Full context: row T-1-i+j. Limited:
    a score that NeMo gives no position term, or that lies outside the window (then -inf),
    points at row L + R + 1, the zero column appended to the table's scores."""
    i = np.arange(b0, b1)[:, None]
    j = np.arange(k0, k1)[None, :]
    if context is None:
        return t - 1 - i + j, None
    left, right = context
    w = max(left, right)
    c = j - i + w  # NeMo's band column
    row = np.where(c < left, c, left + c - (2 * w - right))
    valid = (j - i >= -left) & (j - i <= right)
    in_band = (c < left) | (c >= 2 * w - right)
    return np.where(valid & in_band, row, left + right + 1), valid


def rotary_tables(t: int, cfg: ConformerConfig) -> tuple[F32, F32]:
    """cos, sin (T, Dh) for GigaAM RoPE, base = pos_emb_max_len (5000), not 10000.

    GigaAM caches a 5000-row table and would read sin rows as cos beyond 5000 frames (200 s);
    we build the table for any T, which agrees wherever the reference is defined.
    """
    return ref.rope_tables(t, cfg.d_head, float(cfg.pos_emb_max_len))


def rel_pos_table(t: int, d_model: int, context: tuple[int, int] | None = None) -> F32:
    """Sinusoids at relative positions T-1 ... -(T-1), (2T - 1, D), sin on even and cos on odd
    channels with wavelengths 10000^(2i/D) (NeMo/GigaAM RelPositionalEmbedding), in float32.
    With a limited context (L, R): positions L ... -R (NeMo LocalAttRelPositionalEncoding)."""
    hi, lo = (t - 1, -(t - 1)) if context is None else (context[0], -context[1])
    pos = np.arange(hi, lo - 1, -1, dtype=np.float32)[:, None]  # (P, 1)
    step = np.float32(-np.log(10000.0) / d_model)
    div = np.exp(np.arange(0, d_model, 2, dtype=np.float32) * step)  # (D / 2,)
    ang = pos * div.astype(np.float32)  # (2T - 1, D / 2)
    pe = np.empty((pos.shape[0], d_model), np.float32)
    pe[:, 0::2], pe[:, 1::2] = np.sin(ang), np.cos(ang)
    return pe


@dataclass
class ConformerLayer:
    norm_feed_forward1: LayerNorm
    feed_forward1: FeedForward
    norm_self_att: LayerNorm
    self_attn: RotaryAttention | RelPositionAttention
    norm_conv: LayerNorm
    conv: ConvModule
    norm_feed_forward2: LayerNorm
    feed_forward2: FeedForward
    norm_out: LayerNorm

    @classmethod
    def load(cls, w: Weights, cfg: ConformerConfig) -> ConformerLayer:
        attn = RotaryAttention if cfg.self_attention_model == "rotary" else RelPositionAttention
        parts: dict[str, object] = {}
        for name, kind in _LAYER_PARTS.items():
            sub = w.sub(name)
            parts[name] = (LayerNorm.load(sub) if kind is LayerNorm
                           else (attn if kind is None else kind).load(sub, cfg))  # fmt: skip
        return cls(**parts)  # type: ignore[arg-type]

    def __call__(self, x: F32, pos: object) -> F32:  # x (T, D) -> (T, D)
        if x.shape[0] > LAYER_ROWS:
            return self._long(x, pos)
        x = x + 0.5 * self.feed_forward1(self.norm_feed_forward1(x))  # macaron half-step FFN
        x = x + self.self_attn(self.norm_self_att(x), pos)  # type: ignore[arg-type]
        x = x + self.conv(self.norm_conv(x))
        x = x + 0.5 * self.feed_forward2(self.norm_feed_forward2(x))
        return self.norm_out(x)

    def _long(self, x: F32, pos: object, inplace: bool = False) -> F32:
        """The same layer over LAYER_ROWS frames at a time wherever frames are independent (the
        feed-forwards, norms, and the convolution module with its halo of neighbour frames), so
        an hour of audio never holds a (T, 4D) activation; only attention sees all frames."""
        t = x.shape[0]
        if not inplace:
            x = np.array(x, np.float32)  # our own copy: updated in place
        spans = [(r, min(t, r + LAYER_ROWS)) for r in range(0, t, LAYER_ROWS)]
        for r0, r1 in spans:
            x[r0:r1] += 0.5 * self.feed_forward1(self.norm_feed_forward1(x[r0:r1]))
        xn = np.empty_like(x)
        for r0, r1 in spans:
            xn[r0:r1] = self.norm_self_att(x[r0:r1])
        x += self.self_attn(xn, pos)  # type: ignore[arg-type]
        h = self.conv.halo
        for r0, r1 in spans:  # xn now takes the conv output; reads of x stay unmodified
            lo, hi = max(0, r0 - h), min(t, r1 + h)
            pad = (h - (r0 - lo), h - (hi - r1))
            xn[r0:r1] = self.conv(self.norm_conv(x[lo:hi]), pad)
        x += xn
        for r0, r1 in spans:
            x[r0:r1] += 0.5 * self.feed_forward2(self.norm_feed_forward2(x[r0:r1]))
            x[r0:r1] = self.norm_out(x[r0:r1])
        return x


LAYER_ROWS = 4096  # frames per slice of a long input (ConformerLayer._long): 5.5 min at 80 ms


# attribute -> class; None = the attention kind chosen by self_attention_model
_LAYER_PARTS: dict[str, type | None] = {
    "norm_feed_forward1": LayerNorm, "feed_forward1": FeedForward,
    "norm_self_att": LayerNorm, "self_attn": None,
    "norm_conv": LayerNorm, "conv": ConvModule,
    "norm_feed_forward2": LayerNorm, "feed_forward2": FeedForward, "norm_out": LayerNorm,
}  # fmt: skip


@dataclass
class ConformerStack:
    """The layers after subsampling: (T, D) -> (T, D). No final norm (each layer ends in one)."""

    layers: list[ConformerLayer]
    cfg: ConformerConfig

    @classmethod
    def load(cls, w: Weights, cfg: ConformerConfig) -> ConformerStack:
        stack = cls([ConformerLayer.load(w.sub(i), cfg) for i in range(cfg.n_layers)], cfg)
        for lin in linears(stack):  # every matrix here multiplies all frames at once
            lin.prepare_gemm()
        return stack

    def positions(self, t: int, context: tuple[int, int] | None = None) -> object:
        if self.cfg.self_attention_model == "rotary":
            if context is not None:
                raise ValueError("limited-context attention needs rel_pos attention")
            return rotary_tables(t, self.cfg)
        return RelPositions(rel_pos_table(t, self.cfg.d_model, context), context)

    def __call__(self, x: F32, context: tuple[int, int] | None = None, *,
                 inplace: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> F32:  # fmt: skip
        """`context` (L, R): every layer attends to L frames back and R ahead only (NeMo's
        rel_pos_local_attn); None: full attention. `inplace`: a long x (float32, contiguous) is
        the caller's to give up, and the layers update it instead of a copy. `progress(done,
        total)` after each layer (an hour takes minutes)."""
        pos = self.positions(x.shape[0], context)
        if x.shape[0] > LAYER_ROWS:  # one copy at most, then every layer updates it in place
            if not (inplace and x.dtype == np.float32 and x.flags.c_contiguous):
                x = np.array(x, np.float32)
            for i, layer in enumerate(self.layers):
                x = layer._long(x, pos, inplace=True)
                if progress is not None:
                    progress(i + 1, len(self.layers))
            return x
        for i, layer in enumerate(self.layers):
            x = layer(x, pos)
            if progress is not None:
                progress(i + 1, len(self.layers))
        return x


def layer_shapes(cfg: ConformerConfig, prefix: str = "encoder.layers.",
                 ) -> dict[str, tuple[int, ...]]:  # fmt: skip
    """Every state_dict key of the Conformer layers (NeMo/GigaAM names) with its shape;
    BatchNorm's `num_batches_tracked` counter is left out (converters drop it)."""
    d, ff, s = cfg.d_model, cfg.d_model * cfg.ff_expansion_factor, {}
    for i in range(cfg.n_layers):
        p = f"{prefix}{i}."
        for n in ("norm_feed_forward1", "norm_self_att", "norm_conv", "norm_feed_forward2",
                  "norm_out", "conv.batch_norm"):  # fmt: skip
            s[p + n + ".weight"] = s[p + n + ".bias"] = (d,)
        if cfg.conv_norm_type == "batch_norm":
            s[p + "conv.batch_norm.running_mean"] = s[p + "conv.batch_norm.running_var"] = (d,)
        mats = {f"{n}.linear1": (ff, d) for n in ("feed_forward1", "feed_forward2")}
        mats |= {f"{n}.linear2": (d, ff) for n in ("feed_forward1", "feed_forward2")}
        mats |= {f"self_attn.linear_{n}": (d, d) for n in ("q", "k", "v", "out")}
        mats |= {"conv.pointwise_conv1": (2 * d, d, 1), "conv.pointwise_conv2": (d, d, 1),
                 "conv.depthwise_conv": (d, 1, cfg.conv_kernel_size)}  # fmt: skip
        for n, shape in mats.items():
            s[p + n + ".weight"] = shape
            if cfg.use_bias:
                s[p + n + ".bias"] = (shape[0],)
        if cfg.self_attention_model == "rel_pos":
            s[p + "self_attn.linear_pos.weight"] = (d, d)
            bias = (cfg.n_heads, cfg.d_head)
            s[p + "self_attn.pos_bias_u"] = s[p + "self_attn.pos_bias_v"] = bias
    return s
