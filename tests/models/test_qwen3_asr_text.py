"""npasr/models/qwen3_asr/text.py against the qwen-asr 0.0.6 pipeline functions, through the
goldens scripts/make_goldens_qwen3_asr_text.py recorded from them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from npasr.models.qwen3_asr import text

GOLDEN = json.loads(
    (Path(__file__).parents[1] / "golden" / "qwen3_asr_text.json").read_text("utf-8")
)


@pytest.mark.parametrize(("raw", "fixed"), GOLDEN["repetitions"])
def test_repetition_fix_equals_reference(raw: str, fixed: str) -> None:
    assert text.fix_repetitions(raw) == fixed


@pytest.mark.parametrize(("raw", "forced", "expected"), GOLDEN["parse"])
def test_parse_equals_reference(raw: str, forced: str | None, expected: list[str]) -> None:
    assert list(text.parse_output(raw, forced)) == expected


@pytest.mark.parametrize(("merged", "expected"), GOLDEN["merge"])
def test_merge_languages_equals_reference(merged: list[str], expected: str) -> None:
    assert text.merge_languages(merged) == expected


def test_language_names() -> None:
    for given, canonical in GOLDEN["language_names"]:
        assert text.language_name(given) == canonical
    assert text.language_name("en") == "English"
    assert text.language_name("ru") == "Russian"
    assert text.language_name("yue") == "Cantonese"
    assert text.language_name("tl") == "Filipino"
    with pytest.raises(ValueError, match="not one Qwen3-ASR supports"):
        text.language_name("Klingon")
    with pytest.raises(ValueError, match="not one Qwen3-ASR supports"):
        text.language_name("sw")  # a Whisper language the model card does not list
    assert text.language_code("English") == "en"
    assert text.language_code("Chinese,English") == "zh,en"
    assert text.language_code("") is None


def test_split_audio_equals_reference() -> None:
    rng = np.random.default_rng(0)
    for case in GOLDEN["split"]:
        x = (rng.standard_normal(int(case["seconds"] * 16000)) * 0.1).astype(np.float32)
        x[rng.integers(0, len(x), 5)] = 0.0
        parts = text.split_audio(x, 16000, case["max_seconds"], case["search_seconds"])
        # the reference pads pieces under 0.5 s within the split; npasr where it transcribes
        assert [len(text.pad_to(p, 8000)) for p, _ in parts] == case["lengths"]
        assert [o for _, o in parts] == pytest.approx(case["offsets"], abs=1e-9)
        assert np.array_equal(np.concatenate([p for p, _ in parts]), x)  # nothing lost


def test_peak_normalize() -> None:
    x = np.array([0.5, -2.0, 1.0], np.float32)
    assert text.peak_normalize(x).tolist() == [0.25, -1.0, 0.5]
    y = np.array([0.5, -0.25], np.float32)
    assert text.peak_normalize(y).tolist() == [0.5, -0.25]  # within range: unchanged
    assert text.peak_normalize(np.zeros(0, np.float32)).size == 0
