"""Qwen3-ASR in NumPy: the AuT audio encoder and the Qwen3 decoder (shared/REFERENCE.md §3).

Facts from transformers 5.23 `models/qwen3_asr` and the qwen-asr package (read, not copied).
Canonical tensor names (npasr's, both checkpoint layouts map to them, `weights.py`):
    audio.conv2d{1,2,3}, audio.conv_out, audio.layers.N.{self_attn.{q,k,v,out}_proj,
    self_attn_layer_norm, fc1, fc2, final_layer_norm}, audio.ln_post, audio.proj{1,2};
    llm.embed_tokens, llm.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj,
    self_attn.{q,k}_norm, post_attention_layernorm, mlp.{gate,up,down}_proj}, llm.norm;
    lm_head (only where it is not the embedding: the forced aligner's classifier).
Shapes: M = 128 mels, T mel frames (10 ms), chunks of 100 frames -> 13 audio tokens each,
C = conv channels (480), D = encoder width, N audio tokens, E = LLM width, H query heads,
G key/value heads, Dh = head width, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from npasr.io.weights import Weights
from npasr.models.qwen3_asr.config import Qwen3ASRConfig
from npasr.nn import ops, ref
from npasr.nn.layers import LayerNorm, Linear, linears
from npasr.nn.quant import QTensor
from npasr.types import F32

CONV_BATCH = 8  # 100-frame chunks per conv-stem pass: conv2's im2col is 14 MB a chunk
PREFILL_BLOCK = 512  # prompt tokens per decoder pass (bounds activations and the causal mask)


# --- audio encoder ---------------------------------------------------------------------------


def _im2col_s2(x: F32) -> F32:
    """Patches of a kernel-3, stride-2, padding-1 convolution over channels-last x (B, H, W, C)
    -> (B, H', W', 9 C), ordered (kh, kw, c)."""
    b, h, w, c = x.shape
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    xp = np.zeros((b, 2 * ho + 1, 2 * wo + 1, c), np.float32)  # the rows/cols a patch can reach
    xp[:, 1 : h + 1, 1 : w + 1] = x
    sb, sh, sw, sc = xp.strides
    view = np.lib.stride_tricks.as_strided(
        xp, (b, ho, wo, 3, 3, c), (sb, 2 * sh, 2 * sw, sh, sw, sc), writeable=False
    )
    return view.reshape(b, ho, wo, 9 * c)


@dataclass
class Conv2dS2:
    """torch Conv2d(kernel 3, stride 2, padding 1) on channels-last activations, as one GEMM."""

    lin: Linear  # (Cout, 9 Cin), columns ordered (kh, kw, cin)

    @classmethod
    def load(cls, w: Weights) -> Conv2dS2:
        k = w.f32("weight")  # (Cout, Cin, 3, 3)
        if k.ndim != 4 or k.shape[2:] != (3, 3):
            raise ValueError(f"{w.origin}: conv weight {k.shape} is not (Cout, Cin, 3, 3)")
        mat = np.ascontiguousarray(k.transpose(0, 2, 3, 1).reshape(k.shape[0], -1))
        return cls(Linear(mat, w.f32("bias")))

    def __call__(self, x: F32) -> F32:
        return ops.gelu(self.lin(_im2col_s2(x)))  # 4-D: ops.linear multiplies it as 2-D


@dataclass
class EncoderLayer:
    """Pre-LN Whisper block; every projection has a bias (the key's too, unlike Whisper)."""

    attn_ln: LayerNorm
    qkv: Linear  # (3 D, D) q | k | v
    out: Linear
    ffn_ln: LayerNorm
    fc1: Linear
    fc2: Linear
    n_head: int

    @classmethod
    def load(cls, w: Weights, n_head: int) -> EncoderLayer:
        a = w.sub("self_attn")
        return cls(
            LayerNorm.load(w.sub("self_attn_layer_norm")),
            Linear.stack([Linear.load(a.sub(f"{p}_proj")) for p in "qkv"]),
            Linear.load(a.sub("out_proj")),
            LayerNorm.load(w.sub("final_layer_norm")),
            Linear.load(w.sub("fc1")),
            Linear.load(w.sub("fc2")),
            n_head,
        )

    def __call__(self, x: F32, window: int) -> F32:
        """x (N, D): attention within consecutive windows of `window` tokens (the last shorter)."""
        n, d = x.shape
        y = self.qkv(self.attn_ln(x))
        att = np.empty((n, d), np.float32)
        full = n // window * window
        for t0, t1, w in ((0, full, window), (full, n, n - full)):
            if t1 == t0:
                continue
            q, k, v = (ops.split_heads(y[t0:t1, i * d : (i + 1) * d].reshape(-1, w, d), self.n_head)
                       for i in range(3))  # fmt: skip  # (windows, H, w, Dh)
            att[t0:t1] = ops.merge_heads(ops.attention(q, k, v)).reshape(t1 - t0, d)
        x = x + self.out(att)
        return x + self.fc2(ops.gelu(self.fc1(self.ffn_ln(x))))


@dataclass
class AudioEncoder:
    """mel (M, T) -> audio embeddings (N, E): per-100-frame conv stem with positions restarting
    in every chunk, windowed attention (104 tokens = 8 chunks), ln_post, proj1, GELU, proj2."""

    convs: list[Conv2dS2]
    conv_out: Linear  # (D, C * M / 8), no bias; columns ordered (c, f)
    positions: F32  # (13, D)
    layers: list[EncoderLayer]
    ln_post: LayerNorm
    proj1: Linear
    proj2: Linear
    config: Qwen3ASRConfig

    @classmethod
    def load(cls, w: Weights, cfg: Qwen3ASRConfig) -> AudioEncoder:
        enc = cls(
            [Conv2dS2.load(w.sub(f"conv2d{i}")) for i in (1, 2, 3)],
            Linear.load(w.sub("conv_out"), bias=False),
            ref.sinusoids(cfg.tokens_per_chunk, cfg.d_model),
            [EncoderLayer.load(w.sub("layers").sub(i), cfg.encoder_attention_heads)
             for i in range(cfg.encoder_layers)],  # fmt: skip
            LayerNorm.load(w.sub("ln_post")),
            Linear.load(w.sub("proj1")),
            Linear.load(w.sub("proj2")),
            cfg,
        )
        for lin in (enc.conv_out, *linears(enc.layers), enc.proj1, enc.proj2):
            lin.prepare_gemm()
        return enc

    def stem(self, mel: F32) -> F32:
        """mel (M, T) -> (N, D): conv stem + conv_out + per-chunk positions, valid tokens only.
        The tail chunk is zero-padded to a full chunk before the convolutions, as the reference
        pads the mel (its last tokens then see the padding: REFERENCE.md §3.3)."""
        cfg = self.config
        m, t = mel.shape
        cf, tpc = cfg.chunk_frames, cfg.tokens_per_chunk
        n_chunks = -(-t // cf)
        tail = t - (n_chunks - 1) * cf
        out = np.empty((cfg.audio_tokens(t), cfg.d_model), np.float32)
        for c0 in range(0, n_chunks, CONV_BATCH):
            c1 = min(n_chunks, c0 + CONV_BATCH)
            x = np.zeros((c1 - c0, m, cf, 1), np.float32)  # channels-last (B, freq, time, 1)
            seg = mel[:, c0 * cf : min(t, c1 * cf)]
            if seg.shape[1] == (c1 - c0) * cf:
                x[..., 0] = seg.reshape(m, c1 - c0, cf).transpose(1, 0, 2)
            else:
                for j in range(c1 - c0):
                    part = seg[:, j * cf : (j + 1) * cf]
                    x[j, :, : part.shape[1], 0] = part
            for conv in self.convs:
                x = conv(x)  # (B, F', T', C)
            b, f, tt, c = x.shape
            y = self.conv_out(np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(b, tt, c * f))
            y += self.positions[:tt]
            y = y.reshape(b * tt, -1)
            if c1 == n_chunks:  # the tail chunk keeps only its valid tokens
                y = y[: (b - 1) * tt + self.config.audio_tokens(tail)]
            out[c0 * tpc : c0 * tpc + len(y)] = y
        return out

    def __call__(self, mel: F32) -> F32:
        """mel (M, T) -> (N, E), N = config.audio_tokens(T)."""
        if mel.shape[1] == 0:
            return np.zeros((0, self.config.output_dim), np.float32)
        return self.project(self.encode_layers(self.stem(mel)))

    def encode_layers(self, x: F32) -> F32:
        window = self.config.window_tokens
        for layer in self.layers:
            x = layer(x, window)
        return self.ln_post(x)

    def project(self, x: F32) -> F32:
        return self.proj2(ops.gelu(self.proj1(x)))


# --- Qwen3 decoder -----------------------------------------------------------------------------


@dataclass
class KVCache:
    """Keys and values of every position so far, per layer (G, Dh, capacity): transposed, the
    layout the decoding attention kernel reads without a copy."""

    k: list[F32]
    v: list[F32]
    length: int = 0

    @classmethod
    def empty(cls, cfg: Qwen3ASRConfig, capacity: int) -> KVCache:
        shape = (cfg.num_key_value_heads, cfg.head_dim, capacity)
        n = cfg.num_hidden_layers
        return cls([np.zeros(shape, np.float32) for _ in range(n)],
                   [np.zeros(shape, np.float32) for _ in range(n)])  # fmt: skip

    @property
    def capacity(self) -> int:
        return self.k[0].shape[-1]


@dataclass
class DecoderLayer:
    input_norm: F32
    qkv: Linear  # (H Dh + 2 G Dh, E): q | k | v, no biases
    q_norm: F32  # (Dh,)
    k_norm: F32
    o: Linear
    post_norm: F32
    gate_up: Linear  # (2 I, E): gate | up
    down: Linear

    @classmethod
    def load(cls, w: Weights) -> DecoderLayer:
        a, m = w.sub("self_attn"), w.sub("mlp")
        half = True  # few rows per call while decoding: float16 stays float16 (GEMV)
        return cls(
            w.f32("input_layernorm.weight"),
            Linear.stack([Linear.load(a.sub(f"{p}_proj"), bias=False, half=half) for p in "qkv"]),
            a.f32("q_norm.weight"),
            a.f32("k_norm.weight"),
            Linear.load(a.sub("o_proj"), bias=False, half=half),
            w.f32("post_attention_layernorm.weight"),
            Linear.stack([Linear.load(m.sub(f"{p}_proj"), bias=False, half=half)
                          for p in ("gate", "up")]),  # fmt: skip
            Linear.load(m.sub("down_proj"), bias=False, half=half),
        )


@dataclass
class TextDecoder:
    """Qwen3: RMSNorm pre-norm blocks, GQA with per-head q/k RMSNorm before NeoX RoPE, SwiGLU;
    logits from the final RMSNorm through the (tied) embedding or the aligner's classifier."""

    embed: F32 | np.ndarray | QTensor  # (V, E)
    layers: list[DecoderLayer]
    norm: F32
    head: Linear  # the embedding itself (tied) or lm_head
    config: Qwen3ASRConfig

    @classmethod
    def load(cls, w: Weights, cfg: Qwen3ASRConfig) -> TextDecoder:
        llm = w.sub("llm")
        embed = Linear.load(llm.sub("embed_tokens"), bias=False, half=True, panels=False)
        head = Linear.load(w.sub("lm_head"), bias=False, half=True) \
            if w.has("lm_head.weight") else embed  # tied: one matrix for both  # fmt: skip
        layers = [DecoderLayer.load(llm.sub("layers").sub(i)) for i in range(cfg.num_hidden_layers)]
        dec = cls(embed.weight, layers, llm.f32("norm.weight"), head, cfg)
        for lin in (*(x for lyr in layers for x in (lyr.qkv, lyr.o, lyr.gate_up, lyr.down)), head):
            lin.prepare_gemv()
        return dec

    def embed_ids(self, ids: np.ndarray) -> F32:
        if isinstance(self.embed, QTensor):
            return self.embed.rows(ids)
        return np.asarray(self.embed[ids], np.float32)

    def __call__(self, x: F32, cache: KVCache) -> F32:
        """Run positions cache.length .. + n (x: (n, E) input embeddings) through every layer,
        appending their keys and values to the cache; returns the final-normed hidden (n, E)."""
        cfg = self.config
        n = x.shape[0]
        p0 = cache.length
        if p0 + n > cache.capacity:
            raise ValueError(f"KV cache holds {cache.capacity} positions, {p0 + n} needed")
        h_q, g, dh = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        rep = h_q // g
        cos, sin = ref.rope_tables(n, dh, cfg.rope_theta, start=p0)
        cos, sin = cos[:, None], sin[:, None]  # over the heads
        mask = None
        if n > 1:  # causal within the block; every earlier position is visible
            tri = np.triu(np.full((n, n), -np.inf, np.float32), 1)
            mask = np.concatenate([np.zeros((n, p0), np.float32), tri], 1)
            mask = np.tile(mask, (rep, 1))  # rows (rep, n) per key/value head
        eps = cfg.rms_norm_eps
        for li, lyr in enumerate(self.layers):
            y = lyr.qkv(ops.rms_norm(x, lyr.input_norm, eps))
            q = ops.rms_norm(y[:, : h_q * dh].reshape(n, h_q, dh), lyr.q_norm, eps)
            k = ops.rms_norm(y[:, h_q * dh : (h_q + g) * dh].reshape(n, g, dh), lyr.k_norm, eps)
            v = y[:, (h_q + g) * dh :].reshape(n, g, dh)
            q, k = ref.rope(q, cos, sin), ref.rope(k, cos, sin)
            kc, vc = cache.k[li], cache.v[li]
            kc[:, :, p0 : p0 + n] = k.transpose(1, 2, 0)
            vc[:, :, p0 : p0 + n] = v.transpose(1, 2, 0)
            # queries grouped by the key/value head they share: (G, rep * n, Dh)
            qg = np.ascontiguousarray(q.reshape(n, g, rep, dh).transpose(1, 2, 0, 3))
            qg = qg.reshape(g, rep * n, dh)
            if n * rep <= ops.GEMV_MAX_ROWS:
                att = ops.attention(qg, kc.swapaxes(1, 2), vc.swapaxes(1, 2), mask, p0 + n)
            else:
                kk = np.ascontiguousarray(kc[:, :, : p0 + n].swapaxes(1, 2))
                vv = np.ascontiguousarray(vc[:, :, : p0 + n].swapaxes(1, 2))
                att = ops.attention(qg, kk, vv, mask)
            att = att.reshape(g, rep, n, dh).transpose(2, 0, 1, 3).reshape(n, h_q * dh)
            x = x + lyr.o(np.ascontiguousarray(att))
            gu = lyr.gate_up(ops.rms_norm(x, lyr.post_norm, eps))
            half = gu.shape[-1] // 2
            x = x + lyr.down(ops.silu(gu[:, :half]) * gu[:, half:])
        cache.length = p0 + n
        return ops.rms_norm(x, self.norm, eps)

    def prefill(self, x: F32, cache: KVCache,
                progress: Callable[[int, int], None] | None = None) -> F32:  # fmt: skip
        """Run a prompt (n, E) in blocks of PREFILL_BLOCK; returns the last position's hidden.
        progress(done, n) after every block."""
        last = x[-1:]
        for t0 in range(0, x.shape[0], PREFILL_BLOCK):
            last = self(x[t0 : t0 + PREFILL_BLOCK], cache)[-1:]
            if progress is not None:
                progress(min(t0 + PREFILL_BLOCK, x.shape[0]), x.shape[0])
        return last

    def hidden_at(self, x: F32, cache: KVCache, where: np.ndarray) -> F32:
        """Run a whole input (n, E) in blocks; the final-normed hidden at positions `where`."""
        out = np.empty((len(where), x.shape[1]), np.float32)
        for t0 in range(0, x.shape[0], PREFILL_BLOCK):
            h = self(x[t0 : t0 + PREFILL_BLOCK], cache)
            sel = (where >= t0) & (where < t0 + len(h))
            out[sel] = h[where[sel] - t0]
        return out

    def logits(self, h: F32) -> F32:
        return self.head(h)


@dataclass
class Qwen3ASR:
    audio: AudioEncoder
    text: TextDecoder
    config: Qwen3ASRConfig

    @classmethod
    def load(cls, w: Weights, cfg: Qwen3ASRConfig) -> Qwen3ASR:
        model = cls(AudioEncoder.load(w.sub("audio"), cfg), TextDecoder.load(w, cfg), cfg)
        w.assert_all_used()
        return model
