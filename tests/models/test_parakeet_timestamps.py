"""Parakeet timestamps (npasr.models.parakeet.timestamps) against NeMo 3.0.0's own functions.

The golden tests/golden/parakeet_timestamps_cases.json holds hand-made decoding results (TDT,
RNN-T, CTC; English, Russian, Spanish; the real v3 tokenizer) and what NeMo's RNNTBPEDecoding /
CTCBPEDecoding + process_timestamp_outputs return for them; made by
scripts/make_goldens_parakeet_timestamps.py. The reference test re-runs that script with NeMo
when NPASR_NEMO_PYTHON names a Python that has it (e.g. /tmp/venv_nemo/bin/python).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import sentencepiece as spm

from npasr.models.parakeet import timestamps as ts

REPO = Path(__file__).resolve().parents[2]
TOKENIZER = REPO / "tests" / "tiny" / "parakeet_v3_tokenizer.model"
GOLDEN = REPO / "tests" / "golden" / "parakeet_timestamps_cases.json"
SCRIPT = REPO / "scripts" / "make_goldens_parakeet_timestamps.py"
FRAME_SECONDS = 0.08  # window_stride 0.01 * subsampling 8

GOLD = json.loads(GOLDEN.read_text(encoding="utf-8"))
CASES = {c["name"]: c for c in GOLD["cases"]}


@pytest.fixture(scope="module")
def sp() -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(TOKENIZER))


@pytest.fixture(scope="module")
def punct(sp) -> set[str]:
    return ts.vocab_punctuation(sp)


def ours(case: dict, sp, punct) -> ts.Timestamps:
    if case["kind"] == "ctc":
        return ts.ctc_timestamps(
            case["path"],
            case["blank_id"],
            sp,
            punct,
            frame_seconds=FRAME_SECONDS,
            gap_threshold=case["gap_threshold"],
        )
    return ts.transducer_timestamps(
        case["tokens"],
        case["frames"],
        case["durations"],
        sp,
        punct,
        frame_seconds=FRAME_SECONDS,
        gap_threshold=case["gap_threshold"],
    )


def assert_matches(case: dict, got: ts.Timestamps) -> None:
    ref = case["nemo"]
    assert got.text == ref["text"]
    for kind in ("char", "word", "segment"):
        mine = [asdict(s) for s in getattr(got, kind)]
        exp = ref[kind]
        key = lambda s: (s["text"], s["start_offset"], s["end_offset"])  # noqa: E731
        assert [key(s) for s in mine] == [key(s) for s in exp], kind
        for m, e in zip(mine, exp, strict=True):
            assert abs(m["start"] - e["start"]) <= 1e-9 and abs(m["end"] - e["end"]) <= 1e-9, kind


def test_golden_setup(sp):
    meta = GOLD["_meta"]
    assert hashlib.sha256(TOKENIZER.read_bytes()).hexdigest() == meta["tokenizer_sha256"]
    assert sp.get_piece_size() == 8192
    assert meta["window_stride"] * meta["subsampling_factor"] == FRAME_SECONDS
    assert len(CASES) >= 12 and {c["kind"] for c in CASES.values()} == {"tdt", "rnnt", "ctc"}


def test_supported_punctuation(sp, punct):
    assert sorted(punct) == GOLD["_meta"]["supported_punctuation"]
    # NeMo skips special pieces: '<...>', '[...]', '##...', '▁...', blank
    assert ts.supported_punctuation(["<|a.b|>", "[x,y]", "##;", "▁¿", " ", "a;b", "x"]) == {";"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_nemo(name, sp, punct):
    case = CASES[name]
    got = ours(case, sp, punct)
    assert_matches(case, got)
    if case["kind"] != "ctc":
        assert got.tokens == case["tokens"]


def test_punctuation_computed_from_tokenizer_by_default(sp):
    case = CASES["tdt_en_pause_punct"]
    got = ts.transducer_timestamps(
        case["tokens"], case["frames"], case["durations"], sp, gap_threshold=case["gap_threshold"]
    )
    assert_matches(case, got)


def test_tdt_refines_punctuation_rnnt_does_not(sp, punct):
    ids = sp.encode("Yes.")  # ▁Y es .
    frames, durations = [0, 2, 30], [1, 1, 2]
    tdt = ts.token_stamps(ids, frames, durations, sp, punct)
    rnnt = ts.token_stamps(ids, frames, None, sp, punct)
    assert [(s.start_offset, s.end_offset) for s in tdt] == [(0, 1), (2, 3), (3, 3)]
    assert [(s.start_offset, s.end_offset) for s in rnnt] == [(0, 1), (2, 3), (30, 31)]
    assert tdt[2].start == pytest.approx(0.24) and rnnt[2].end == pytest.approx(2.48)


def test_ctc_offsets_follow_previous_token_start(sp, punct):
    a, b = sp.encode("Hello")  # ▁H ello
    blank = sp.get_piece_size()
    tokens, stamps = ts.ctc_token_stamps(
        [blank, blank, a, a, blank, b, b, blank, b], blank, sp, punct
    )
    assert tokens == [a, b, b]  # a blank between two equal tokens makes two tokens
    assert [(s.start_offset, s.end_offset) for s in stamps] == [(1, 2), (2, 5), (5, 8)]
    assert ts.ctc_token_stamps([blank] * 4, blank, sp, punct) == ([], [])


def test_text_removes_one_space_before_punctuation(sp, punct):
    assert ts.transcript_text(sp.encode("stop - go , now"), sp, punct) == "stop- go, now"
    assert ts.transcript_text([], sp, punct) == ""


def test_segments_custom_delimiters_and_gap():
    w = [ts.Stamp("a;", 0, 2), ts.Stamp("b", 3, 4), ts.Stamp("c.", 20, 21)]
    assert [s.text for s in ts.segment_stamps(w, delimiters=(";",))] == ["a;", "b c."]
    # with a gap threshold, delimiters are only checked for a segment's first word (NeMo's elif)
    seg = ts.segment_stamps(w, gap_threshold=10, frame_seconds=0.04)
    assert [(s.text, s.start_offset, s.end_offset) for s in seg] == [("a; b", 0, 4), ("c.", 20, 21)]
    assert seg[1].start == pytest.approx(0.8)


@pytest.mark.reference
def test_golden_reproduced_by_nemo(tmp_path, sp, punct):
    python = os.environ.get("NPASR_NEMO_PYTHON")
    if not python:
        pytest.skip("set NPASR_NEMO_PYTHON to a Python with nemo_toolkit 3.0.0 (and torch)")
    out = tmp_path / "cases.json"
    proc = subprocess.run(
        [python, str(SCRIPT), "--out", str(out)],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    fresh = json.loads(out.read_text(encoding="utf-8"))
    assert fresh["cases"] == GOLD["cases"]
    assert fresh["_meta"]["versions"]["nemo_toolkit"] == "3.0.0", fresh["_meta"]["versions"]
    for case in fresh["cases"]:
        assert_matches(case, ours(case, sp, punct))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
