"""npasr: speech recognition inference in NumPy + Numba, from GGUF weights, without torch.

>>> import npasr
>>> model = npasr.load_model("whisper-tiny.en")
>>> model.transcribe("samples/jfk.flac").text
"""

from __future__ import annotations

import os

# Both thread pools that npasr drives busy-wait after each call by default: OpenBLAS's pthreads
# (until OPENBLAS_THREAD_TIMEOUT) and Numba's OpenMP workers (OMP_WAIT_POLICY). Alternating BLAS
# GEMMs with Numba kernels on a 2-core machine, the spinning pool then holds the core the other
# one needs, which made 2 threads slower than 1. Sleeping at once fixes that (encoder 0.49 s ->
# 0.24 s for tiny.en). These only act if set before NumPy/Numba load, hence here; a user's own
# settings win.
import sys  # noqa: E402

if "numpy" in sys.modules and "OPENBLAS_THREAD_TIMEOUT" not in os.environ:
    import warnings

    # Measured: Whisper base encoder 0.36 s with the setting, 0.60 s without (2 threads).
    warnings.warn(
        "NumPy was imported before npasr, so its OpenBLAS threads keep the default busy-wait "
        "and slow npasr's own parallel kernels (up to ~1.6x on 2 cores): import npasr first, "
        "or set OPENBLAS_THREAD_TIMEOUT=4 in the environment",
        stacklevel=2,
    )
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402
from typing import Any

from npasr.threads import get_num_threads, set_num_threads
from npasr.types import (
    AudioError,
    DeviceError,
    ModelFileError,
    ModelNotFoundError,
    NpasrError,
    Segment,
    TranscriptionResult,
    UnsafeCheckpointError,
)

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "DeviceError",
    "ModelFileError",
    "ModelNotFoundError",
    "NpasrError",
    "Segment",
    "TranscriptionResult",
    "UnsafeCheckpointError",
    "get_num_threads",
    "load_model",
    "set_num_threads",
    "transcribe",
    "warmup",
]


def load_model(
    name_or_path: str | Path | None = None, *, threads: int | None = None, device: str = "cpu"
) -> Any:
    """Load a model by name (`npasr models list`) or from a .gguf path.

    A named model is converted into the cache on first use from its installed weight package;
    a checkpoint path of any family in `npasr.models.registry` is converted into the cache too.
    device "cuda" (Whisper only, experimental): the encoder's blocks run on a CUDA GPU through
    numba.cuda (numba-cuda and a CUDA driver needed); decoding stays on the CPU.
    """
    from npasr import hub
    from npasr.io.gguf import read_gguf
    from npasr.models import registry

    if threads is not None:
        set_num_threads(threads)
    path = hub.resolve(str(name_or_path) if name_or_path is not None else hub.DEFAULT_MODEL)
    f = read_gguf(path)
    return registry.for_architecture(f.architecture, origin=path).load(f, device)


def transcribe(audio: Any, model: str | Path | None = None, **options: Any) -> TranscriptionResult:
    """One-shot helper: load `model` (default: the bundled default) and transcribe `audio`."""
    return load_model(model).transcribe(audio, **options)


def warmup(workers: int | None = None) -> float:
    """Compile every Numba kernel now, in `workers` processes at once (default: one per CPU, up
    to four), so that the first transcription does not compile them one at a time; returns the
    seconds it took. Later processes load them from Numba's on-disk cache. It starts processes:
    call it from a script's `if __name__ == "__main__":` block."""
    from npasr.nn import ops
    from npasr.threads import default_num_threads

    return ops.warmup(workers=workers or default_num_threads())
