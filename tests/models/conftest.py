"""Fixtures shared by the model tests."""

from __future__ import annotations

import numpy as np
import pytest

from npasr.audio.io import load_audio

from ..conftest import DATA

RU_CLIP = DATA / "ru_sherpa-qwen3-ru1.wav"  # 4.76 s of real Russian speech (GigaAM goldens)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    if not RU_CLIP.is_file():
        pytest.skip(f"speech data not found at {RU_CLIP}")
    return load_audio(str(RU_CLIP))
