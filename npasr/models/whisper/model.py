"""Whisper encoder-decoder in NumPy (float32 compute).

Follows openai/whisper model.py (Radford et al. 2022, "Robust Speech Recognition via Large-Scale
Weak Supervision"): attribute paths equal the openai `state_dict` keys, so `Weights.sub()` walks
them directly. Shapes: T encoder frames (1500 per 30 s), D width, H heads, Dh = D // H,
B decoding rows (beams), U tokens. One audio window is processed at a time.

Run state (the self-attention KV cache, the per-window cross-attention K/V) lives in explicit
objects passed to and returned from the decoder; the weights never change after `load`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from npasr.io.gguf import RawTensor
from npasr.io.weights import Weights
from npasr.models.whisper.config import WhisperConfig
from npasr.nn import int8_gemm, ops
from npasr.nn.layers import Conv1d, LayerNorm, Linear, linears
from npasr.nn.quant import Packed, QTensor
from npasr.types import F16, F32, ModelFileError


@dataclass
class MultiHeadAttention:
    query: Linear
    key: Linear  # openai whisper: the key projection has no bias
    value: Linear
    out: Linear
    n_head: int

    @classmethod
    def load(cls, w: Weights, n_head: int, half: bool = False) -> MultiHeadAttention:
        # key and value run once over all encoder frames (many rows): the encoder's form
        return cls(
            Linear.load(w.sub("query"), half=half),
            Linear.load(w.sub("key"), bias=False),
            Linear.load(w.sub("value")),
            Linear.load(w.sub("out"), half=half),
            n_head,
        )

    def kv(self, x: F32, half: bool = False) -> ops.KeysValues:
        """Keys and values of x (T, D) split into heads, packed once (`ops.pack_keys`, float16
        if `half`) for every decoding step that attends over them."""
        k, v = (ops.split_heads(lin(x), self.n_head) for lin in (self.key, self.value))
        return ops.pack_keys(k, v, half)

    def __call__(self, x: F32, kv: ops.KeysValues) -> F32:
        q = ops.split_heads(self.query(x), self.n_head)  # (..., H, Tq, Dh)
        return self.out(ops.merge_heads(ops.attention_keys(q, kv)))


@dataclass
class SelfAttention:
    """Self-attention with the query, key and value projections stacked into one matrix."""

    qkv: Linear  # (3 D, D): query | key | value (openai whisper: the key has no bias)
    out: Linear
    n_head: int

    @classmethod
    def load(cls, w: Weights, n_head: int, half: bool = False) -> SelfAttention:
        parts = [Linear.load(w.sub("query"), half=half), Linear.load(w.sub("key"), False, half)]
        return cls(
            Linear.stack([*parts, Linear.load(w.sub("value"), half=half)]),
            Linear.load(w.sub("out"), half=half),
            n_head,
        )

    def project(self, x: F32) -> tuple[F32, F32, F32]:
        """x (..., T, D) -> q, k, v, each (..., H, T, Dh)."""
        y = self.qkv(x)
        d = y.shape[-1] // 3
        q, k, v = (ops.split_heads(y[..., i * d : (i + 1) * d], self.n_head) for i in range(3))
        return q, k, v

    def attend(self, q: F32, k: F32, v: F32) -> F32:
        """Unmasked attention of q over k, v (the encoder's), through the output projection."""
        return self.out(ops.merge_heads(ops.attention(q, k, v)))


@dataclass
class MLP:
    fc1: Linear  # openai key "mlp.0"
    fc2: Linear  # openai key "mlp.2"

    @classmethod
    def load(cls, w: Weights, half: bool = False) -> MLP:
        return cls(Linear.load(w.sub(0), half=half), Linear.load(w.sub(2), half=half))

    def __call__(self, x: F32) -> F32:
        return self.fc2(ops.gelu(self.fc1(x)))

    def layers(self) -> tuple[Linear, Linear]:
        return self.fc1, self.fc2


@dataclass
class ResidualAttentionBlock:
    attn: SelfAttention
    attn_ln: LayerNorm
    cross_attn: MultiHeadAttention | None
    cross_attn_ln: LayerNorm | None
    mlp: MLP
    mlp_ln: LayerNorm

    @classmethod
    def load(cls, w: Weights, n_head: int, cross: bool) -> ResidualAttentionBlock:
        # Decoder blocks (cross=True) keep float16 matrices as they are: every decoding step
        # reads them all for one row (or a beam), so the f16 GEMV halves the bytes.
        return cls(
            SelfAttention.load(w.sub("attn"), n_head, half=cross),
            LayerNorm.load(w.sub("attn_ln")),
            MultiHeadAttention.load(w.sub("cross_attn"), n_head, half=cross) if cross else None,
            LayerNorm.load(w.sub("cross_attn_ln")) if cross else None,
            MLP.load(w.sub("mlp"), half=cross),
            LayerNorm.load(w.sub("mlp_ln")),
        )


@dataclass
class AudioEncoder:
    conv1: Conv1d  # (D, n_mels, 3), padding 1
    conv2: Conv1d  # (D, D, 3), stride 2, padding 1: 3000 mel frames -> 1500 positions
    positional_embedding: F32  # (n_audio_ctx, D) sinusoids
    blocks: list[ResidualAttentionBlock]
    ln_post: LayerNorm

    @classmethod
    def load(cls, w: Weights, cfg: WhisperConfig) -> AudioEncoder:
        d = cfg.n_audio_state
        encoder = cls(
            Conv1d.load(w.sub("conv1"), stride=1, padding=1),
            Conv1d.load(w.sub("conv2"), stride=2, padding=1),
            w.f32("positional_embedding", (cfg.n_audio_ctx, d)),
            [
                ResidualAttentionBlock.load(w.sub("blocks").sub(i), cfg.n_audio_head, cross=False)
                for i in range(cfg.n_audio_layer)
            ],
            LayerNorm.load(w.sub("ln_post")),
        )
        for lin in linears(encoder.blocks):  # every matrix here multiplies all frames at once
            lin.prepare_gemm()
        return encoder

    def __call__(self, mel: F32) -> F32:
        """mel (n_mels, 3000) -> audio features (n_audio_ctx, D)."""
        x = ops.gelu(self.conv1(mel))
        x = ops.gelu(self.conv2(x)).T  # (T, D)
        if x.shape != self.positional_embedding.shape:
            raise ValueError(
                f"encoder input gives {x.shape}, expected {self.positional_embedding.shape}"
            )
        x = x + self.positional_embedding
        for blk in self.blocks:
            x = x + blk.attn.attend(*blk.attn.project(blk.attn_ln(x)))
            x = x + blk.mlp(blk.mlp_ln(x))
        return self.ln_post(x)


@dataclass
class KVCache:
    """Self-attention keys/values of the tokens decoded so far, one array pair per layer.

    Stored transposed, (B, H, Dh, capacity), as `ops.attention`'s decoding kernel reads them
    (each product then runs over contiguous positions). After `branch` the first `shared`
    positions, the prompt every row starts from, are held once, (H, Dh, shared) per layer, and
    the rows hold only the positions after them: a beam search over a 224-token prompt then
    reads and copies the prompt's keys once instead of once per beam."""

    k: list[F32]  # per layer (B, H, Dh, capacity): positions shared .. length - 1
    v: list[F32]
    length: int = 0  # positions filled, the shared ones included
    shared_k: list[F32] | None = None  # per layer (H, Dh, >= shared), or None
    shared_v: list[F32] | None = None
    shared: int = 0  # positions in the shared arrays

    @classmethod
    def empty(cls, cfg: WhisperConfig, n_batch: int) -> KVCache:
        h, dh = cfg.n_text_head, cfg.n_text_state // cfg.n_text_head
        shape = (n_batch, h, dh, cfg.n_text_ctx)
        return cls(
            [np.zeros(shape, np.float32) for _ in range(cfg.n_text_layer)],
            [np.zeros(shape, np.float32) for _ in range(cfg.n_text_layer)],
        )

    def branch(self, n_rows: int) -> KVCache:
        """A cache of n_rows rows that all continue this one-row cache: its positions become
        the shared part (not copied), and each row gets room for the rest of the context."""
        if self.k[0].shape[0] != 1 or self.shared_k is not None:
            raise ValueError("KVCache.branch: only a one-row cache without a shared part")
        n = self.length
        _, h, dh, ctx = self.k[0].shape
        rows = (n_rows, h, dh, ctx - n)
        return KVCache(
            [np.zeros(rows, np.float32) for _ in self.k],
            [np.zeros(rows, np.float32) for _ in self.v],
            n,
            [a[0] for a in self.k],
            [a[0] for a in self.v],
            n,
        )

    def follow(self, slots: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Beam search: decoding row j lives in cache row slots[j]; afterwards decoding row i
        continues old decoding row rows[i]. Returns the new slots. A cache row that only one
        new row continues stays where it is; each further row that continues it gets an unused
        cache row, into which its own positions (after the shared ones) are copied: one copy per
        duplicate instead of a reorder of the whole cache (which took 6 ms a step for base,
        beam 5)."""
        parents = slots[rows]
        free = iter(np.setdiff1d(np.arange(len(slots)), parents).tolist())
        new = parents.copy()
        claimed: set[int] = set()
        n = self.length - self.shared
        for i, p in enumerate(parents.tolist()):
            if p in claimed:
                new[i] = dst = next(free)
                for arr in (*self.k, *self.v):
                    arr[dst, ..., :n] = arr[p, ..., :n]
            claimed.add(p)
        return new

    def attend(self, layer: int, q: F32, k: F32, v: F32, mask: F32 | None = None) -> F32:
        """Write k, v (B, H, U, Dh) at positions [length, length + U) and return the attention
        of q (B, H, U, Dh) over positions [0, length + U) (mask (U, length + U) or None).
        `length` itself moves on only when the caller sets it (after the last layer)."""
        start = self.length - self.shared
        end = start + k.shape[-2]
        if end > self.k[layer].shape[-1]:
            raise ValueError(f"KVCache: {self.length + k.shape[-2]} positions exceed the context")
        self.k[layer][..., start:end] = np.swapaxes(k, -1, -2)
        self.v[layer][..., start:end] = np.swapaxes(v, -1, -2)
        own_k, own_v = np.swapaxes(self.k[layer], -1, -2), np.swapaxes(self.v[layer], -1, -2)
        if self.shared_k is None or self.shared_v is None:
            return ops.attention(q, own_k, own_v, mask, end)
        return ops.attention_split(
            q,
            np.swapaxes(self.shared_k[layer], -1, -2),
            np.swapaxes(self.shared_v[layer], -1, -2),
            self.shared,
            own_k,
            own_v,
            end,
            mask,
        )


@dataclass
class CrossKV:
    """Cross-attention keys/values of one audio window, computed once per window."""

    layers: list[ops.KeysValues]  # per decoder layer, from `MultiHeadAttention.kv`


def _embedding_rows(emb: F32 | QTensor, ids: np.ndarray) -> F32:
    """Rows `ids` (any shape) of a (V, D) embedding table -> (*ids.shape, D) float32."""
    if isinstance(emb, np.ndarray):
        return emb[ids].astype(np.float32, copy=False)
    return emb.rows(ids)


@dataclass
class TextDecoder:
    token_embedding: F32 | F16 | QTensor  # (V, D); also the output projection (tied)
    positional_embedding: F32  # (n_text_ctx, D) learned
    blocks: list[ResidualAttentionBlock]
    ln: LayerNorm
    # A quantized model whose file keeps an f16 table (npasr format 6 and older, other writers):
    # a Q8_0 copy of it for the output projection only (half the bytes every step reads), the
    # input lookup keeps the f16 rows. Newer quantized files store the table as Q8_0 itself.
    output: Packed | None = None

    @property
    def half_cross(self) -> bool:
        """Whether each window's cross-attention keys and values are kept in float16: for
        quantized models (half the bytes every step reads; base, one layer, one row 0.32 ->
        0.20-0.23 ms). The rounding moves the logits by at most 3.5e-3 on jfk, where Q8_0
        weights alone move them by 0.56-0.69 against f16 weights; float models keep them
        float32 (openai-whisper's logits within 1e-3)."""
        return isinstance(self.blocks[0].mlp.fc1.weight, QTensor)

    @classmethod
    def load(cls, w: Weights, cfg: WhisperConfig) -> TextDecoder:
        d = cfg.n_text_state
        emb = w["token_embedding.weight"]
        if tuple(emb.shape) != (cfg.n_vocab, d):
            raise ModelFileError(
                f"token_embedding has shape {emb.shape}, expected {(cfg.n_vocab, d)}"
            )
        if isinstance(emb, RawTensor):
            table: F32 | QTensor = QTensor.from_raw(emb)
            table.repack()
        elif emb.dtype == np.float16:  # stays half: the logits GEMV reads half the bytes
            table = np.ascontiguousarray(emb)
        else:
            table = np.asarray(emb, np.float32)
        blocks = [
            ResidualAttentionBlock.load(w.sub("blocks").sub(i), cfg.n_text_head, cross=True)
            for i in range(cfg.n_text_layer)
        ]
        for blk in blocks:  # the matrices every decoding step multiplies by a few rows
            cross = blk.cross_attn
            assert cross is not None
            for lin in (blk.attn.qkv, blk.attn.out, cross.query, cross.out, *blk.mlp.layers()):
                lin.prepare_gemv()
            cross.key.prepare_gemm()  # once per window, over all its audio frames
            cross.value.prepare_gemm()
        output = None
        if isinstance(table, np.ndarray) and isinstance(blocks[0].mlp.fc1.weight, QTensor):
            output = int8_gemm.quantize_q8_0(table)
        return cls(
            table,
            w.f32("positional_embedding", (cfg.n_text_ctx, d)),
            blocks,
            LayerNorm.load(w.sub("ln")),
            output,
        )

    def cross_kv(self, audio_features: F32) -> CrossKV:
        return CrossKV(
            [blk.cross_attn.kv(audio_features, self.half_cross) for blk in self.blocks]  # type: ignore[union-attr]
        )

    def __call__(self, tokens: np.ndarray, cross: CrossKV, cache: KVCache) -> F32:
        """tokens (B, U) new tokens after `cache.length` cached ones -> hidden (B, U, D).

        The cache is extended in place by U positions.
        """
        n_batch, n_new = tokens.shape
        start = cache.length
        end = start + n_new
        if start + n_new > self.positional_embedding.shape[0]:
            raise ValueError(
                f"decoder context overflow: {start + n_new} > {self.positional_embedding.shape[0]}"
            )
        x = _embedding_rows(self.token_embedding, tokens) + self.positional_embedding[start:end]
        mask = None
        if n_new > 1:  # causal mask for the new positions over [0, end)
            mask = np.triu(np.full((n_new, end), -np.inf, np.float32), k=start + 1)
        for i, blk in enumerate(self.blocks):
            q, k, v = blk.attn.project(blk.attn_ln(x))
            x = x + blk.attn.out(ops.merge_heads(cache.attend(i, q, k, v, mask)))
            x = x + blk.cross_attn(blk.cross_attn_ln(x), cross.layers[i])  # type: ignore[misc]
            x = x + blk.mlp(blk.mlp_ln(x))
        cache.length = end
        return self.ln(x)

    def logits(self, hidden: F32) -> F32:
        """hidden (..., D) -> logits (..., V)."""
        if self.output is None:
            return ops.linear(hidden, self.token_embedding)
        return ops.linear_packed(hidden, self.output)


@dataclass
class Whisper:
    config: WhisperConfig
    encoder: AudioEncoder
    decoder: TextDecoder
    alignment_heads: np.ndarray | None = None  # (n, 2) [layer, head] pairs, when the file has them

    @classmethod
    def load(
        cls, tensors: dict[str, np.ndarray], cfg: WhisperConfig, origin: str = "whisper"
    ) -> Whisper:
        w = Weights(tensors, origin=origin)
        model = cls(
            cfg, AudioEncoder.load(w.sub("encoder"), cfg), TextDecoder.load(w.sub("decoder"), cfg)
        )
        w.assert_all_used()
        return model
