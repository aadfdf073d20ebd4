"""npasr.audio.resample against scipy.signal.resample_poly (the filter it restates) and against
its own NumPy reference.

Tolerances: SciPy casts the filter to the input's float32 and sums in float32; we sum in float64.
On unit-variance noise the two differ by at most 2.0e-6 (measured over the cases below), so 5e-6
is asserted. Kernel and reference both sum in float64 and round once: at most one float32 ulp
apart (6e-8 at these magnitudes), 1e-6 asserted.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from npasr.audio.resample import polyphase_filter, resample_kernel, resample_poly, resample_ref
from npasr.types import AudioError

RATES = [44100, 48000, 8000, 22050, 11025, 37800, 24000, 16001]
LENGTHS = [1, 2, 3, 441, 5000, 48_013]


@pytest.mark.parametrize("orig_sr", RATES)
def test_matches_scipy_resample_poly(orig_sr: int) -> None:
    from scipy.signal import resample_poly as scipy_resample_poly

    rng = np.random.default_rng(orig_sr)
    g = math.gcd(orig_sr, 16000)
    for n in LENGTHS:
        x = rng.standard_normal(n).astype(np.float32)
        want = scipy_resample_poly(x, 16000 // g, orig_sr // g)
        got = resample_poly(x, orig_sr, 16000)
        assert got.dtype == np.float32 and got.shape == want.shape == (
            math.ceil(n * 16000 / orig_sr),
        )
        np.testing.assert_allclose(got, want, rtol=0, atol=5e-6)


@pytest.mark.parametrize(("orig_sr", "sr"), [(44100, 16000), (8000, 16000), (16000, 8000)])
def test_kernel_matches_numpy_reference(orig_sr: int, sr: int) -> None:
    x = np.random.default_rng(0).standard_normal(30_011).astype(np.float32)
    np.testing.assert_allclose(resample_poly(x, orig_sr, sr), resample_ref(x, orig_sr, sr),
                               rtol=0, atol=1e-6)  # fmt: skip
    assert resample_kernel.signatures  # the kernel, not the reference, ran


def test_polyphase_rows_have_unit_dc_gain() -> None:
    """Each phase of the 44.1 -> 16 kHz filter passes DC with gain 1 (to the window's ripple),
    so a constant stays constant away from the edges."""
    table, half = polyphase_filter(160, 441)
    assert table.shape == (160, -(-(2 * half + 1) // 160)) and half == 4410
    np.testing.assert_allclose(table.sum(axis=1), 1.0, atol=2e-3)
    y = resample_poly(np.ones(44100, np.float32), 44100, 16000)
    np.testing.assert_allclose(y[1000:-1000], 1.0, atol=2e-3)


def test_same_rate_empty_and_bad_rates() -> None:
    x = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(resample_poly(x, 16000, 16000), x)
    assert resample_poly(np.zeros(0, np.float32), 44100, 16000).shape == (0,)
    with pytest.raises(ValueError, match="positive"):
        resample_poly(x, 0, 16000)
    with pytest.raises(ValueError, match="positive"):
        resample_poly(x, 44100, -1)
    with pytest.raises(AudioError, match="2147483647 Hz -> 16000 Hz.*tap filter"):
        resample_poly(x, 2**31 - 1, 16000)  # a hostile header: no 43-billion-tap allocation


def test_no_scipy_signal_needed() -> None:
    """The module stands alone: importing it does not import scipy.signal."""
    import subprocess

    code = "import sys, npasr.audio.resample; print('scipy.signal' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
