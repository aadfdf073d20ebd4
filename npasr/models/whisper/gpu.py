"""The Whisper audio encoder's transformer blocks on a CUDA GPU (`npasr.nn.cuda_kernels`).

`GpuAudioEncoder.from_encoder(enc)` takes a loaded CPU `AudioEncoder` and uploads every block
matrix once as float32 (a quantized `QTensor` is copied in its packed layout and dequantized on
the device, bit-exact with `QTensor.dequantize`; float16 and `Panels` weights are widened on the
host), with the biases and LayerNorm gains. A call keeps the two convolutions, their GELUs and
the positional embedding on the CPU (the encoder's own layers: a small share of the work),
uploads the (T, D) result, runs every block and `ln_post` on the device and downloads once.

Per block, with T frames, D width, H heads, Dh = D / H (all float32, as the CPU encoder):

    h = layer_norm(x); qkv = gemm(h, Wqkv) + b       (T, 3 D)
    q * Dh^-1/2, k (H, T, Dh), v^T (H, Dh, T)         split_qkv
    p = softmax(q k^T) (H, T, T); o = p v (H, T, Dh)  batched_gemm, softmax, batched_gemm
    x = x + (gemm(merge_heads(o), Wout) + b)
    x = x + (gemm(gelu(gemm(layer_norm(x), W1) + b1), W2) + b2)

The result equals `AudioEncoder.__call__` up to float32 summation order (the CPU's int8 GEMM,
where it runs for quantized weights, also rounds the activations: compare with
NPASR_INT8_GEMM=0). Device buffers are allocated per call and reused across the blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from npasr.models.whisper.model import AudioEncoder
from npasr.nn import cuda_kernels as ck
from npasr.nn import ops
from npasr.nn.float_gemm import Panels
from npasr.nn.layers import LayerNorm, Linear
from npasr.nn.quant import QTensor
from npasr.types import F32, DeviceError

Array = Any  # a numba device array


def _device_matrix(w: Any) -> Array:
    """A `Linear` weight (float32/float16 array, `Panels` or 2-D `QTensor`) as a float32 (N, K)
    device array."""
    if isinstance(w, QTensor):
        packed = w.repack(keep=False)  # not cached on the host weight: it is only uploaded
        if packed is not None and packed.kind in ck.WORDS:
            return ck.dequantize(ck.DeviceWeight.upload(packed))
        w = w.dequantize()  # a type without a GPU layout: dequantized here, uploaded as f32
    elif isinstance(w, Panels):
        w = w.unpack()
    return ck.to_device(np.asarray(w, dtype=np.float32))


@dataclass
class GpuLinear:
    weight: Array  # (N, K) float32 on the device
    bias: Array | None  # (N,)

    @classmethod
    def upload(cls, lin: Linear) -> GpuLinear:
        bias = None if lin.bias is None else ck.to_device(lin.bias)
        return cls(_device_matrix(lin.weight), bias)

    @property
    def n_out(self) -> int:
        return int(self.weight.shape[0])


@dataclass
class GpuLayerNorm:
    weight: Array
    bias: Array
    eps: float

    @classmethod
    def upload(cls, ln: LayerNorm) -> GpuLayerNorm:
        return cls(ck.to_device(ln.weight), ck.to_device(ln.bias), float(ln.eps))


@dataclass
class GpuBlock:
    attn_ln: GpuLayerNorm
    qkv: GpuLinear  # (3 D, D): query | key | value
    out: GpuLinear
    mlp_ln: GpuLayerNorm
    fc1: GpuLinear
    fc2: GpuLinear
    n_head: int


@dataclass
class Launch:
    """Launch shapes: GEMM tiles of threads * micro rows and columns, K slices of bk, threads
    per LayerNorm/softmax row and per element-wise block (small ones keep the simulator fast)."""

    threads: int = 16
    micro: int = 4
    bk: int = 16
    row_threads: int = 128
    elem_threads: int = 256


@dataclass
class GpuAudioEncoder:
    encoder: AudioEncoder  # the CPU encoder: convolutions and positional embedding
    blocks: list[GpuBlock]
    ln_post: GpuLayerNorm
    launch: Launch

    @classmethod
    def from_encoder(cls, enc: AudioEncoder, launch: Launch | None = None) -> GpuAudioEncoder:
        """Upload every block's matrices, biases and LayerNorms of a loaded `AudioEncoder`."""
        if not ck.available():
            raise DeviceError(
                "no CUDA device: numba.cuda finds none (a GPU, its driver and numba-cuda are "
                "needed for device='cuda')"
            )
        blocks = [
            GpuBlock(
                GpuLayerNorm.upload(b.attn_ln),
                GpuLinear.upload(b.attn.qkv),
                GpuLinear.upload(b.attn.out),
                GpuLayerNorm.upload(b.mlp_ln),
                GpuLinear.upload(b.mlp.fc1),
                GpuLinear.upload(b.mlp.fc2),
                b.attn.n_head,
            )
            for b in enc.blocks
        ]
        return cls(enc, blocks, GpuLayerNorm.upload(enc.ln_post), launch or Launch())

    def embed(self, mel: F32) -> F32:
        """mel (n_mels, frames) -> (T, D) float32 on the host: conv1, GELU, conv2, GELU and the
        positional embedding, as `AudioEncoder.__call__` computes them."""
        enc = self.encoder
        x = ops.gelu(enc.conv1(mel))
        x = ops.gelu(enc.conv2(x)).T
        if x.shape != enc.positional_embedding.shape:
            raise ValueError(
                f"encoder input gives {x.shape}, expected {enc.positional_embedding.shape}"
            )
        return np.ascontiguousarray(x + enc.positional_embedding, dtype=np.float32)

    def __call__(self, mel: F32) -> F32:
        """mel (n_mels, frames) -> audio features (n_audio_ctx, D) float32 on the host."""
        x = ck.to_device(self.embed(mel))  # (T, D), updated in place by each residual
        self.run_blocks(x)
        return self._ln(x, self.ln_post).copy_to_host()

    def run_blocks(self, x: Array) -> Array:
        """Every block over x (T, D) on the device, in place; returns x."""
        if not self.blocks:
            return x
        n_t, d = x.shape
        lc = self.launch
        gk = {"threads": lc.threads, "micro": lc.micro, "bk": lc.bk}
        et = {"threads": lc.elem_threads}
        n_head = self.blocks[0].n_head
        dh = d // n_head
        h = ck.cuda.device_array((n_t, d), np.float32)
        proj = ck.cuda.device_array((n_t, d), np.float32)  # a branch's output before the residual
        qkv = ck.cuda.device_array((n_t, 3 * d), np.float32)
        heads = (
            ck.cuda.device_array((n_head, n_t, dh), np.float32),
            ck.cuda.device_array((n_head, n_t, dh), np.float32),
            ck.cuda.device_array((n_head, dh, n_t), np.float32),
        )
        scores = ck.cuda.device_array((n_head, n_t, n_t), np.float32)
        probs = ck.cuda.device_array((n_head, n_t, n_t), np.float32)
        o = ck.cuda.device_array((n_head, n_t, dh), np.float32)
        hidden = ck.cuda.device_array((n_t, self.blocks[0].fc1.n_out), np.float32)
        scale = float(np.float32(dh**-0.5))  # the float32 factor `ref.attention` multiplies by
        for blk in self.blocks:
            assert blk.n_head == n_head and blk.qkv.n_out == 3 * d
            self._ln(x, blk.attn_ln, out=h)
            self._linear(h, blk.qkv, out=qkv, gk=gk, et=et)
            q, k, vt = ck.split_qkv(qkv, n_head, scale, out=heads, **et)
            ck.batched_gemm(q, k, out=scores, **gk)
            ck.softmax(scores, threads=lc.row_threads, out=probs)
            ck.batched_gemm(probs, vt, out=o, **gk)
            ck.merge_heads(o, out=h, **et)
            self._linear(h, blk.out, out=proj, gk=gk, et=et, residual=x)
            self._ln(x, blk.mlp_ln, out=h)
            if hidden.shape[1] != blk.fc1.n_out:
                hidden = ck.cuda.device_array((n_t, blk.fc1.n_out), np.float32)
            self._linear(h, blk.fc1, out=hidden, gk=gk, et=et)
            ck.gelu(hidden, out=hidden, **et)
            self._linear(hidden, blk.fc2, out=proj, gk=gk, et=et, residual=x)
        return x

    def _ln(self, x: Array, ln: GpuLayerNorm, out: Array | None = None) -> Array:
        return ck.layer_norm(
            x, ln.weight, ln.bias, ln.eps, threads=self.launch.row_threads, out=out
        )

    @staticmethod
    def _linear(
        x: Array, lin: GpuLinear, gk: dict[str, int], et: dict[str, int],
        out: Array | None = None, residual: Array | None = None,
    ) -> Array:  # fmt: skip
        """x @ W.T + b into `out`; with `residual`, residual + (x @ W.T + b) written into
        the residual (in place)."""
        y = ck.gemm(x, lin.weight, out=out, **gk)
        if lin.bias is None and residual is None:
            return y
        dest = y if residual is None else residual
        return ck.add_bias_residual(y, lin.bias, residual, out=dest, **et)
