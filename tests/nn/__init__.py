"""Shared helpers of the kernel tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_fresh(script: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    """Run `script` in a new Python with this checkout's npasr and `env_vars` added to the
    environment (settings Numba reads once, at import)."""
    env = dict(os.environ, **env_vars)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip


def assert_runs_without_jit(script: str) -> None:
    """Run `script` in a fresh Python with NUMBA_DISABLE_JIT=1 (kernels run as plain Python,
    prange = range); it must print "ok"."""
    run = run_fresh(script, NUMBA_DISABLE_JIT="1")
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-2000:]
