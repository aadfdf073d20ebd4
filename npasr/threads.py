"""One thread-count knob for both compute back ends: Numba kernels and NumPy's BLAS.

Numba runs a pool of `numba.config.NUMBA_NUM_THREADS` workers, sized when the first parallel
kernel starts, and `numba.set_num_threads` can only mask that pool down. The mask is per calling
Python thread, so set it from the thread that will run the model (the CLI does it once at start-up).

BLAS (the OpenBLAS/MKL behind `np.matmul`) is limited through `threadpoolctl` when it is installed,
which works at any time. Without it, the OMP/OPENBLAS/MKL_NUM_THREADS environment variables are set
instead; BLAS reads them only when it is first loaded, i.e. before `import numpy`, so in a process
that already imported NumPy they reach only child processes, and a warning says so once.
"""

from __future__ import annotations

import operator
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import cache

import numba

try:
    from threadpoolctl import ThreadpoolController, threadpool_limits
except ImportError:  # optional: BLAS then falls back to the environment variables
    ThreadpoolController = None  # noqa: N816
    threadpool_limits = None

_BLAS_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class _State:
    num_threads: int | None = None  # last value given to set_num_threads (None: never called)
    warned_env_fallback: bool = False


_state = _State()


def default_num_threads() -> int:
    """CPUs this process may run on: its affinity mask where the OS has one, else os.cpu_count()."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _set_blas_threads(n: int) -> None:
    if threadpool_limits is None:
        for var in _BLAS_ENV_VARS:
            os.environ[var] = str(n)
        if "numpy" in sys.modules and not _state.warned_env_fallback:
            _state.warned_env_fallback = True
            warnings.warn(
                "threadpoolctl is not installed and NumPy is already loaded, so the BLAS thread "
                f"count stays as it was; `pip install threadpoolctl` or set {_BLAS_ENV_VARS[0]} "
                "before starting Python",
                stacklevel=3,
            )
        return
    # Not used as a context manager: the limit stays until the next call.
    threadpool_limits(limits=n, user_api="blas")


def set_num_threads(n: int | None = None) -> int:
    """Use `n` threads for Numba kernels and BLAS; None means `default_num_threads()`.

    Numba gets `min(n, NUMBA_NUM_THREADS)` because its pool cannot grow after start-up; BLAS gets
    `n`. Returns the value recorded for `get_num_threads()`. Raises ValueError for n < 1.
    """
    if n is None:
        n = default_num_threads()
    if isinstance(n, bool):
        raise TypeError(f"thread count must be an int or None, got {n!r}")
    n = operator.index(n)  # int or NumPy integer; floats raise TypeError
    if n < 1:
        raise ValueError(f"thread count must be at least 1, got {n}")
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    _set_blas_threads(n)
    _state.num_threads = n
    return n


def get_num_threads() -> int:
    """The thread count last set by `set_num_threads`, or the default if it was never called.

    Numba may be running fewer (see `set_num_threads`); `numba.get_num_threads()` tells exactly.
    """
    return default_num_threads() if _state.num_threads is None else _state.num_threads


@cache
def _blas_controller() -> object | None:
    return None if ThreadpoolController is None else ThreadpoolController().select(user_api="blas")


@contextmanager
def single_threaded() -> Iterator[None]:
    """BLAS and Numba on one thread inside the block.

    Autoregressive decoding multiplies one or a few rows at a time; there the hand-off to a
    second thread (BLAS's or Numba's pool) costs more than the arithmetic, the two pools' idle
    spinning competes for the same cores, and on a busy machine each hand-off can stall for
    milliseconds. Encoders (long GEMMs) run outside such a block with every thread.
    """
    ctl = _blas_controller()
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with nullcontext() if ctl is None else ctl.limit(limits=1):  # type: ignore[attr-defined]
            yield
    finally:
        numba.set_num_threads(before)
