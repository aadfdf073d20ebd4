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

    def __call__(self, x: F32) -> F32:  # (T, D) -> (T, D)
        y = ops.glu(self.pointwise_conv1(x))  # (T, D): a * sigmoid(gate) over channels
        w, b = self.depthwise_conv
        y = ops.depthwise_conv1d_tc(y, w, b, padding=(w.shape[-1] - 1) // 2)  # (T, D), "same"
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


@dataclass
class RelPositionAttention:
    """Transformer-XL relative-position MHSA (NeMo RelPositionMultiHeadAttention; GigaAM's copy).

    score[i, j] = ((q_i + u) . k_j + (q_i + v) . p_(i-j)) / sqrt(Dh), with p = linear_pos(pe)
    over relative positions T-1 ... -(T-1). NeMo reaches p_(i-j) with `rel_shift` (pad one
    column on the left, reshape, drop a row); indexing column T-1-i+j directly is the same.
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

    def __call__(self, x: F32, pe: F32) -> F32:  # x (T, D), pe (2T - 1, D)
        t = x.shape[0]
        q = _split_heads(self.linear_q(x), self.n_heads)  # (H, T, Dh)
        k = _split_heads(self.linear_k(x), self.n_heads)
        v = _split_heads(self.linear_v(x), self.n_heads)
        p = _split_heads(self.linear_pos(pe), self.n_heads)  # (H, 2T - 1, Dh)
        ac = (q + self.pos_bias_u[:, None]) @ k.transpose(0, 2, 1)  # (H, T, T) content
        bd = (q + self.pos_bias_v[:, None]) @ p.transpose(0, 2, 1)  # (H, T, 2T - 1) position
        i, j = np.arange(t)[:, None], np.arange(t)[None, :]
        bd = bd[:, i, t - 1 - i + j]  # (H, T, T): row i keeps relative position i - j
        s = (ac + bd) * np.float32(self.pos_bias_u.shape[-1] ** -0.5)
        return self.linear_out(_merge_heads(ops.softmax(s) @ v))


def rotary_tables(t: int, cfg: ConformerConfig) -> tuple[F32, F32]:
    """cos, sin (T, Dh) for GigaAM RoPE, base = pos_emb_max_len (5000), not 10000.

    GigaAM caches a 5000-row table and would read sin rows as cos beyond 5000 frames (200 s);
    we build the table for any T, which agrees wherever the reference is defined.
    """
    return ref.rope_tables(t, cfg.d_head, float(cfg.pos_emb_max_len))


def rel_pos_table(t: int, d_model: int) -> F32:
    """Sinusoids at relative positions T-1 ... -(T-1), (2T - 1, D), sin on even and cos on odd
    channels with wavelengths 10000^(2i/D) (NeMo/GigaAM RelPositionalEmbedding), in float32."""
    pos = np.arange(t - 1, -t, -1, dtype=np.float32)[:, None]  # (2T - 1, 1)
    step = np.float32(-np.log(10000.0) / d_model)
    div = np.exp(np.arange(0, d_model, 2, dtype=np.float32) * step)  # (D / 2,)
    ang = pos * div.astype(np.float32)  # (2T - 1, D / 2)
    pe = np.empty((2 * t - 1, d_model), np.float32)
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
        x = x + 0.5 * self.feed_forward1(self.norm_feed_forward1(x))  # macaron half-step FFN
        x = x + self.self_attn(self.norm_self_att(x), pos)  # type: ignore[arg-type]
        x = x + self.conv(self.norm_conv(x))
        x = x + 0.5 * self.feed_forward2(self.norm_feed_forward2(x))
        return self.norm_out(x)


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

    def positions(self, t: int) -> object:
        if self.cfg.self_attention_model == "rotary":
            return rotary_tables(t, self.cfg)
        return rel_pos_table(t, self.cfg.d_model)

    def __call__(self, x: F32) -> F32:
        pos = self.positions(x.shape[0])
        for layer in self.layers:
            x = layer(x, pos)
        return x
