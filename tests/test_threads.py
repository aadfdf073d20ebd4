"""npasr.threads: one knob for Numba and BLAS."""

from __future__ import annotations

import os
import warnings

import numba
import pytest

from npasr import threads


@pytest.fixture(autouse=True)
def _restore_threads():
    yield
    threads.set_num_threads(None)


def test_default_is_affinity_or_cpu_count():
    n = threads.default_num_threads()
    want = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert n == want >= 1


def test_numba_follows_and_is_capped():
    threads.set_num_threads(1)
    assert numba.get_num_threads() == 1
    assert threads.get_num_threads() == 1
    cap = numba.config.NUMBA_NUM_THREADS
    assert threads.set_num_threads(cap + 7) == cap + 7  # recorded as asked ...
    assert numba.get_num_threads() == cap  # ... but Numba's pool cannot grow


def test_none_means_default():
    threads.set_num_threads(1)
    assert threads.set_num_threads(None) == threads.default_num_threads()
    assert numba.get_num_threads() == min(
        threads.default_num_threads(), numba.config.NUMBA_NUM_THREADS
    )


def test_blas_limit_via_threadpoolctl():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not threadpoolctl.threadpool_info():
        pytest.skip("threadpoolctl finds no BLAS in this NumPy build")
    for n in (1, 2):
        threads.set_num_threads(n)
        blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert blas and all(p["num_threads"] == n for p in blas)


def test_env_fallback_without_threadpoolctl(monkeypatch):
    monkeypatch.setattr(threads, "threadpool_limits", None)
    monkeypatch.setattr(threads, "_state", threads._State())
    for var in threads._BLAS_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.warns(UserWarning, match="threadpoolctl is not installed"):
        threads.set_num_threads(1)
    assert all(os.environ[v] == "1" for v in threads._BLAS_ENV_VARS)
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        threads.set_num_threads(1)
    assert again == []  # said once is enough
    assert numba.get_num_threads() == 1


@pytest.mark.parametrize("bad", [0, -3])
def test_rejects_less_than_one(bad):
    with pytest.raises(ValueError, match="at least 1"):
        threads.set_num_threads(bad)


@pytest.mark.parametrize("bad", [1.5, "2", True])
def test_rejects_non_integers(bad):
    with pytest.raises(TypeError):
        threads.set_num_threads(bad)


def _import_warnings(code: str) -> str:
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    run = subprocess.run(
        [sys.executable, "-W", "always", "-c", code], env=env, capture_output=True, text=True,
        timeout=120, check=True,
    )  # fmt: skip
    return run.stderr


def test_warns_when_numpy_was_imported_first() -> None:
    """OpenBLAS reads its spin timeout when NumPy loads: importing npasr after NumPy cannot set
    it any more, and npasr says so (once, with the fix); imported first, it sets it silently."""
    late = _import_warnings("import numpy, npasr")
    assert "OPENBLAS_THREAD_TIMEOUT" in late and "import npasr first" in late
    early = _import_warnings(
        "import npasr, os, numpy; assert os.environ['OPENBLAS_THREAD_TIMEOUT'] == '4'"
    )
    assert "OPENBLAS_THREAD_TIMEOUT" not in early
