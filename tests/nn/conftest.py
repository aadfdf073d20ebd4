"""Fixtures shared by the kernel tests."""

from __future__ import annotations

import pytest

from npasr import threads


@pytest.fixture(params=[1, 2], ids=lambda n: f"threads{n}")
def n_threads(request: pytest.FixtureRequest):
    before = threads.get_num_threads()
    threads.set_num_threads(request.param)
    yield request.param
    threads.set_num_threads(before)
