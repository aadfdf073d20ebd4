"""Parameter-holding layers: a dataclass of arrays, a `load` from `Weights`, and `__call__`.

Compute is float32; weights stored as f16 are widened once at load time.
"""

from __future__ import annotations

from dataclasses import dataclass

from npasr.io.weights import Weights
from npasr.nn import ref
from npasr.types import F32


@dataclass
class Linear:
    weight: F32  # (Dout, Din)
    bias: F32 | None  # (Dout,)

    @classmethod
    def load(cls, w: Weights, bias: bool = True) -> Linear:
        return cls(w.f32("weight"), w.f32("bias") if bias else None)

    def __call__(self, x: F32) -> F32:
        return ref.linear(x, self.weight, self.bias)


@dataclass
class LayerNorm:
    weight: F32
    bias: F32
    eps: float = 1e-5

    @classmethod
    def load(cls, w: Weights) -> LayerNorm:
        return cls(w.f32("weight"), w.f32("bias"))

    def __call__(self, x: F32) -> F32:
        return ref.layer_norm(x, self.weight, self.bias, self.eps)


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
