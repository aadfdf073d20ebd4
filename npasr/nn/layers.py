"""Parameter-holding layers: a dataclass of arrays, a `load` from `Weights`, and `__call__`.

Compute is float32. A `Linear` matrix is held in the form its main use runs fastest from:
* `half=True` (decoder matrices, read a few rows at a time): a float16 weight stays a float16
  (N, K) array, widened inside `ops.linear`'s GEMV;
* by default (encoder matrices, many rows per call): `float_gemm.Panels` of the stored float16 or
  float32 values where that AVX-512 kernel runs, else a float32 array for BLAS;
* `panels=False` (small matrices applied to one row per step, e.g. an RNN-T joint): float32.
Quantized weights stay `QTensor`s in every case (`ops.linear` dispatches).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, is_dataclass

import numpy as np

from npasr.io.gguf import RawTensor
from npasr.io.weights import Weights
from npasr.nn import float_gemm, ops, ref
from npasr.nn.float_gemm import Panels
from npasr.nn.quant import QTensor
from npasr.types import F16, F32


@dataclass
class Linear:
    weight: F32 | F16 | QTensor | Panels  # (Dout, Din) (module docstring: which form)
    bias: F32 | None  # (Dout,)

    @classmethod
    def load(cls, w: Weights, bias: bool = True, half: bool = False, panels: bool = True) -> Linear:
        """Also loads a kernel-1 Conv1d (Dout, Din, 1), which is the same matrix (quantized files
        store such a weight as its (Dout, Din) matrix). half, panels: the module docstring."""
        t = w["weight"]
        if isinstance(t, RawTensor):
            # Kernel layouts are built on first use: the GEMV one (`QTensor.repack`) where a
            # decoder runs few rows (`prepare_gemv` builds it at load), the int8 GEMM one for
            # encoder rows; an encoder weight thus never holds the GEMV copy.
            weight: F32 | QTensor = QTensor.from_raw(t)
        else:
            if t.ndim == 3 and t.shape[-1] == 1:
                t = t[:, :, 0]  # pointwise conv (Dout, Din, 1) -> (Dout, Din)
            if half and t.dtype == np.float16 and t.ndim == 2:
                weight = np.ascontiguousarray(t)
            elif panels and not half and t.ndim == 2 and float_gemm.available():
                weight = float_gemm.pack(t)
            else:
                weight = np.asarray(t, dtype=np.float32)
        return cls(weight, w.f32("bias") if bias else None)

    def __call__(self, x: F32) -> F32:
        return ops.linear(x, self.weight, self.bias)

    def prepare_gemv(self) -> None:
        """Build the decoding (few-row) kernel layout now rather than on the first step."""
        if isinstance(self.weight, QTensor):
            self.weight.repack()

    def prepare_gemm(self) -> None:
        """Build the encoder (many-row) kernel layout now rather than on the first call, so a
        model's load leaves nothing more to read from its file (`GGUFFile.release_pages`)."""
        if isinstance(self.weight, QTensor):
            ops.prepare_gemm(self.weight)

    @classmethod
    def stack(cls, parts: list[Linear]) -> Linear:
        """One Linear whose outputs are the parts' outputs concatenated (e.g. a fused Q|K|V
        projection: one matrix pass instead of three). Same-type quantized weights stay
        quantized; a mix of types is widened to float32 (correct, slower)."""
        ws = [p.weight.unpack() if isinstance(p.weight, Panels) else p.weight for p in parts]
        if len({w.shape[1] for w in ws}) != 1:
            raise ValueError(f"cannot stack weights of widths {[w.shape[1] for w in ws]}")
        qtypes = {w.qtype if isinstance(w, QTensor) else None for w in ws}
        if all(isinstance(p.weight, Panels) for p in parts):
            weight = float_gemm.pack(np.concatenate(ws))  # type: ignore[arg-type]
        elif all(isinstance(w, np.ndarray) and w.dtype == np.float16 for w in ws):
            weight = np.concatenate(ws)  # type: ignore[arg-type]
        elif len(qtypes) == 1 and None not in qtypes:
            q0 = ws[0]
            blocks = np.concatenate([w.blocks.reshape(w.shape[0], -1) for w in ws])  # type: ignore[union-attr]
            weight: F32 | QTensor = QTensor(q0.qtype, (blocks.shape[0], q0.shape[1]), blocks)  # type: ignore[union-attr]
        else:
            weight = np.concatenate(
                [w.dequantize() if isinstance(w, QTensor) else w for w in ws]
            ).astype(np.float32, copy=False)
        biases = [
            np.zeros(p.weight.shape[0], np.float32) if p.bias is None else p.bias for p in parts
        ]
        bias = None if all(p.bias is None for p in parts) else np.concatenate(biases)
        return cls(weight, bias)


@dataclass
class LayerNorm:
    weight: F32
    bias: F32
    eps: float = 1e-5

    @classmethod
    def load(cls, w: Weights) -> LayerNorm:
        return cls(w.f32("weight"), w.f32("bias"))

    def __call__(self, x: F32) -> F32:
        return ops.layer_norm(x, self.weight, self.bias, self.eps)


@dataclass
class Conv1d:
    weight: F32  # (Cout, Cin, K)
    bias: F32 | None
    stride: int = 1
    padding: int = 0

    @classmethod
    def load(cls, w: Weights, stride: int = 1, padding: int = 0) -> Conv1d:
        return cls(w.f32("weight"), w.f32("bias") if w.has("bias") else None, stride, padding)

    def __call__(self, x: F32) -> F32:  # (Cin, T) -> (Cout, Tout)
        return ref.conv1d(x, self.weight, self.bias, self.stride, self.padding)


@dataclass
class BatchNorm1d:
    """Inference BatchNorm over channels with running statistics; input (C, T)."""

    weight: F32
    bias: F32
    running_mean: F32
    running_var: F32
    eps: float = 1e-5

    @classmethod
    def load(cls, w: Weights) -> BatchNorm1d:
        if w.has("num_batches_tracked"):
            w["num_batches_tracked"]  # a training counter: read so strict loading accepts it
        return cls(w.f32("weight"), w.f32("bias"), w.f32("running_mean"), w.f32("running_var"))

    def __call__(self, x: F32) -> F32:
        return ref.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, self.eps
        )


@dataclass
class LSTM:
    """torch.nn.LSTM (batch 1, one step at a time); state is (h, c), each (n_layers, H)."""

    w_ih: list[F32]  # per layer (4H, In)
    w_hh: list[F32]  # per layer (4H, H)
    b_ih: list[F32]  # per layer (4H,)
    b_hh: list[F32]

    @classmethod
    def load(cls, w: Weights, n_layers: int) -> LSTM:
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        parts = [[w.f32(f"{n}_l{i}") for i in range(n_layers)] for n in names]
        return cls(*parts)

    @property
    def hidden(self) -> int:
        return self.w_hh[0].shape[1]

    def zero_state(self) -> tuple[F32, F32]:
        z = np.zeros((len(self.w_ih), self.hidden), np.float32)
        return z, z.copy()

    def step(self, x: F32, state: tuple[F32, F32]) -> tuple[F32, tuple[F32, F32]]:
        """x (In,) -> output of the last layer (H,), new state."""
        h0, c0 = state
        hs, cs = [], []
        for i in range(len(self.w_ih)):
            h, c = ref.lstm_cell(
                x, h0[i], c0[i], self.w_ih[i], self.w_hh[i], self.b_ih[i], self.b_hh[i]
            )
            hs.append(h)
            cs.append(c)
            x = h
        return x, (np.stack(hs), np.stack(cs))


def linears(part: object) -> Iterator[Linear]:
    """Every `Linear` inside a model part: its dataclass fields and lists of parts, depth first."""
    if isinstance(part, Linear):
        yield part
    elif isinstance(part, list):
        for p in part:
            yield from linears(p)
    elif is_dataclass(part) and not isinstance(part, type):
        for f in fields(part):
            yield from linears(getattr(part, f.name))
