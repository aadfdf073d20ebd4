"""Shared fixtures: paths to the real speech data and the real Whisper models."""

from __future__ import annotations

import npasr  # noqa: F401  (first: it tunes the BLAS thread pool before NumPy loads)

# isort: split
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"  # real speech with transcripts (manifest.tsv)
JFK = REPO / "samples" / "jfk.flac"
JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"speech data not found at {DATA}")
    return DATA


def _model_path(name: str) -> Path:
    from npasr import hub
    from npasr.types import ModelNotFoundError

    try:
        return hub.resolve(name)
    except ModelNotFoundError as e:
        if os.environ.get("CI"):
            raise  # CI installs the `models` extra: a missing model is a failure there
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def tiny_en_gguf() -> Path:
    return _model_path("whisper-tiny.en")


@pytest.fixture(scope="session")
def base_gguf() -> Path:
    return _model_path("whisper-base")
