"""Activation statistics for importance-weighted quantization (`quant.quantize(importance=)`).

`input_mean_squares` swaps chosen `Linear` layers of a loaded model for recorders while a
forward pass runs on calibration audio; each recorder passes its input on unchanged and adds
up, per input channel, the squares of every row it saw (or, with full=True, the products of
every pair of channels: the second moment matrix that error-feedback quantization needs). The
mean square of input channel k is how much an error in column k of the weight moves the layer's
output on such data, which is the weight the quantizer gives that column (llama.cpp calls the
collection an importance matrix).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np

from npasr.types import F32


@contextmanager
def input_mean_squares(
    slots: Mapping[str, tuple[object, str]], full: bool = False
) -> Iterator[dict[str, np.ndarray]]:
    """slots: name -> (owner, attribute) of a callable layer (e.g. (mlp, "fc1")). Inside the
    block each is replaced by a recorder; on exit the layers are put back and the yielded dict
    holds name -> (K,) float64 mean square per input channel of the layer (names never called
    are absent). full=True: the (K, K) mean outer product of the input rows instead (its
    diagonal is the mean square), the second moment that `quant._gptq` takes, summed in
    float32 (all of a model's are held at once: 4 (d^2 + 16 d^2) bytes per encoder layer,
    40 MB for tiny.en, 3.5 GB for large-v3)."""
    sums: dict[str, np.ndarray] = {}
    rows: dict[str, int] = {}
    saved = {name: getattr(owner, attr) for name, (owner, attr) in slots.items()}

    def recorder(name: str, layer: Callable[[F32], F32]) -> Callable[[F32], F32]:
        def run(x: F32) -> F32:
            if full:  # float32: (K, K) per layer is what bounds the memory (large-v3's 5120)
                x2 = np.asarray(x, np.float32).reshape(-1, x.shape[-1])
                s = x2.T @ x2
            else:
                x2 = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
                s = np.einsum("ij,ij->j", x2, x2)
            sums[name] = sums.get(name, 0.0) + s
            rows[name] = rows.get(name, 0) + x2.shape[0]
            return layer(x)

        return run

    result: dict[str, np.ndarray] = {}
    try:
        for name, (owner, attr) in slots.items():
            setattr(owner, attr, recorder(name, saved[name]))
        yield result
    finally:
        for name, (owner, attr) in slots.items():
            setattr(owner, attr, saved[name])
        result.update({name: sums[name] / rows[name] for name in sums})
