"""Imported first by every timing script, before NumPy loads its BLAS.

`import npasr` sets OPENBLAS_THREAD_TIMEOUT=4 (see npasr/__init__.py) so that OpenBLAS's threads
sleep right after a call instead of spinning for ~0.1 s and starving npasr's Numba threads, but
only if NumPy has not loaded OpenBLAS yet. These scripts import NumPy before npasr, so they set it
here, as a program that imports npasr first gets it. No peer engine uses NumPy's OpenBLAS for its
compute (CTranslate2 and torch bring their own), so they are unaffected.
"""

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
