"""npasr.nn.calibration: the recorders see exactly the layer inputs and are always removed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from npasr.nn.calibration import input_mean_squares
from npasr.nn.layers import Linear


def test_mean_squares_of_the_inputs_and_restore() -> None:
    rng = np.random.default_rng(0)
    lin = Linear(rng.standard_normal((5, 8)).astype(np.float32), None)
    owner = SimpleNamespace(fc=lin, other=lin)
    xs = [rng.standard_normal((3, 8)).astype(np.float32), rng.standard_normal((2, 4, 8))]
    with input_mean_squares({"fc": (owner, "fc"), "unused": (owner, "other")}) as stats:
        outs = [owner.fc(x.astype(np.float32)) for x in xs]
        assert owner.fc is not lin
    assert owner.fc is lin and owner.other is lin
    for x, y in zip(xs, outs, strict=True):  # the recorder passed the call through
        np.testing.assert_array_equal(y, lin(x.astype(np.float32)))
    rows = np.concatenate([x.reshape(-1, 8) for x in xs]).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(stats["fc"], (rows**2).mean(axis=0), rtol=1e-12)
    assert set(stats) == {"fc"}  # never called: absent


def test_restored_after_an_error() -> None:
    lin = Linear(np.ones((2, 2), np.float32), None)
    owner = SimpleNamespace(fc=lin)
    with pytest.raises(RuntimeError), input_mean_squares({"fc": (owner, "fc")}):
        raise RuntimeError("forward failed")
    assert owner.fc is lin
