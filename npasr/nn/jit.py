"""Numba compile options shared by every kernel module.

Each set names `fastmath` explicitly, and that matters. A jitted function that does not set its
own fastmath is compiled with the flags of whichever jitted caller needs it first
(numba/core/cpu.py: `flags.inherit_if_not_set("fastmath")`), and that one compiled version then
serves every later caller with the same argument types, in this process and through the on-disk
cache. When the options here left fastmath unset, `kernels._exp` came out with `reassoc` if an
attention kernel (REDUCE) compiled it first and without if the SiLU kernel did: after a cleared
cache, results depended on the order in which kernels first ran (measured: 185 of 6600 SiLU
outputs one ulp apart, failing its 6-ulp bound, and one nibble of a converted 4-bit Whisper file
different, through the encoder activations its calibration reads).
"""

from __future__ import annotations

JIT = dict(nogil=True, cache=True, fastmath=False)  # IEEE order everywhere
# reassociation only: lets LLVM vectorize a row reduction (sum, max); never set on a function
# whose rounding is part of its contract (kernels._exp, _erf)
REDUCE = dict(nogil=True, cache=True, fastmath={"reassoc", "nsz"})
FAST = dict(nogil=True, cache=True, fastmath=True)  # the fused GEMV's reductions (quant_kernels)
