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


def test_full_second_moment() -> None:
    """full=True: the mean outer product of the input rows (float32 sums), whose diagonal is
    the mean square; `shrink` of it mixes in the identity as the vector rule adds 1."""
    from npasr.models.whisper.calibrate import shrink

    rng = np.random.default_rng(1)
    lin = Linear(rng.standard_normal((5, 8)).astype(np.float32), None)
    owner = SimpleNamespace(fc=lin)
    xs = [rng.standard_normal((30, 8)).astype(np.float32), rng.standard_normal((2, 7, 8))]
    with input_mean_squares({"fc": (owner, "fc")}, full=True) as full:
        for x in xs:
            owner.fc(x.astype(np.float32))
    rows = np.concatenate([x.reshape(-1, 8) for x in xs]).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(full["fc"], rows.T @ rows / len(rows), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.diag(full["fc"]), (rows**2).mean(axis=0), rtol=1e-5)
    h = full["fc"].astype(np.float64)
    np.testing.assert_allclose(np.diag(shrink(h)), shrink(np.diag(h).copy()), rtol=1e-12)
    np.testing.assert_array_equal(shrink(np.zeros((3, 3))), np.eye(3))


def test_restored_after_an_error() -> None:
    lin = Linear(np.ones((2, 2), np.float32), None)
    owner = SimpleNamespace(fc=lin)
    with pytest.raises(RuntimeError), input_mean_squares({"fc": (owner, "fc")}):
        raise RuntimeError("forward failed")
    assert owner.fc is lin
