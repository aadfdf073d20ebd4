"""Transcript writers: hand-computed literals, and byte parity with openai-whisper's writers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from npasr.output import FORMATS, format_result, format_timestamp, get_writer, write_result
from npasr.types import Segment, TranscriptionResult


def _result() -> TranscriptionResult:
    # leading spaces (as decoded), a "-->", a tab, non-ASCII text, a time past one hour,
    # and x.xxx5 times that exercise round-half-even
    texts = [" Hello world.", " a --> b", "\ttab\there ", " Grüße, 日本語!", " late"]
    times = [(0.0, 1.5), (1.5, 2.0005), (2.0015, 59.9996), (59.9996, 75.25), (3599.9995, 3661.5)]
    segs = [
        Segment(id=i, seek=0, start=s, end=e, text=t, tokens=[1, 2, 3])
        for i, (t, (s, e)) in enumerate(zip(texts, times, strict=True))
    ]
    return TranscriptionResult(text="".join(texts), segments=segs, language="en")


@pytest.mark.parametrize(
    ("seconds", "hours", "marker", "want"),
    [
        (0.0, False, ".", "00:00.000"),
        (0.0, True, ",", "00:00:00,000"),
        (75.25, False, ".", "01:15.250"),
        (3661.5, True, ",", "01:01:01,500"),
        (3661.5, False, ".", "01:01:01.500"),  # hours appear once they are non-zero
        (59.9996, False, ".", "01:00.000"),  # rounding carries into the minutes
        (0.0005, False, ".", "00:00.000"),  # round half to even: 0.5 ms -> 0
        (0.0015, False, ".", "00:00.002"),  # 1.5 ms -> 2
    ],
)
def test_format_timestamp_literals(seconds, hours, marker, want):
    assert format_timestamp(seconds, hours, marker) == want


def test_format_timestamp_rejects_negative():
    with pytest.raises(ValueError, match="non-negative"):
        format_timestamp(-0.001)


def test_literal_srt_vtt_tsv_txt():
    segs = [Segment(0, 0, 0.0, 2.5, " Hi --> there."), Segment(1, 0, 3661.5, 3662.0, " Bye\t!")]
    result = TranscriptionResult(text=" Hi --> there. Bye\t!", segments=segs, language="en")
    assert format_result(result, "srt") == (
        "1\n00:00:00,000 --> 00:00:02,500\nHi -> there.\n\n"
        "2\n01:01:01,500 --> 01:01:02,000\nBye\t!\n\n"
    )
    assert format_result(result, "vtt") == (
        "WEBVTT\n\n"
        "00:00.000 --> 00:02.500\nHi -> there.\n\n"
        "01:01:01.500 --> 01:01:02.000\nBye\t!\n\n"
    )
    # tsv keeps "-->" (no cue syntax to protect) but turns tabs into spaces
    assert (
        format_result(result, "tsv")
        == "start\tend\ttext\n0\t2500\tHi --> there.\n3661500\t3662000\tBye !\n"
    )
    assert format_result(result, "txt") == "Hi --> there.\nBye\t!\n"


def test_json_is_to_dict_and_utf8(tmp_path):
    result = _result()
    (path,) = write_result(result, "talk.flac", tmp_path, "json")
    assert path == tmp_path / "talk.json"
    raw = path.read_bytes()
    assert "Grüße".encode() in raw  # readable UTF-8, not \u escapes
    assert json.loads(raw.decode("utf-8")) == result.to_dict()


def test_json_accepts_numpy_values(tmp_path):
    seg = Segment(0, 0, np.float32(0.5), np.float64(1.0), " x", tokens=np.arange(3))
    result = TranscriptionResult(text=" x", segments=[seg], language="en")
    data = json.loads(format_result(result, "json"))
    assert data["segments"][0]["start"] == 0.5
    assert data["segments"][0]["tokens"] == [0, 1, 2]


def test_all_writes_every_format_with_whisper_names(tmp_path):
    paths = write_result(_result(), "/somewhere/else/my.talk.wav", tmp_path, "all")
    assert [p.name for p in paths] == [f"my.talk.{ext}" for ext in FORMATS]
    assert all(p.parent == tmp_path and p.stat().st_size > 0 for p in paths)


def test_dict_result_accepted(tmp_path):
    d = _result().to_dict()
    assert format_result(d, "srt") == format_result(_result(), "srt")


def test_unknown_format_raises_early():
    with pytest.raises(ValueError, match="unknown output format"):
        get_writer("docx")
    with pytest.raises(ValueError):
        format_result(_result(), "all")


def test_empty_result(tmp_path):
    empty = TranscriptionResult(text="", segments=[], language=None)
    assert format_result(empty, "vtt") == "WEBVTT\n\n"
    assert format_result(empty, "srt") == ""
    assert format_result(empty, "tsv") == "start\tend\ttext\n"


@pytest.mark.reference
@pytest.mark.parametrize("fmt", ["txt", "srt", "vtt", "tsv"])
def test_bytes_match_openai_whisper(tmp_path, fmt):
    whisper_utils = pytest.importorskip("whisper.utils")
    result = _result()
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    write_result(result, "dir/talk.en.flac", ours, fmt)
    whisper_utils.get_writer(fmt, str(theirs))(result.to_dict(), "dir/talk.en.flac")
    assert (ours / f"talk.en.{fmt}").read_bytes() == (theirs / f"talk.en.{fmt}").read_bytes()


@pytest.mark.reference
def test_format_timestamp_matches_openai_whisper():
    whisper_utils = pytest.importorskip("whisper.utils")
    rng = np.random.default_rng(0)
    # integer ms, half-ms (rounding ties) and random times up to 3 h
    times = np.concatenate([np.arange(0, 4000) * 0.001, np.arange(0, 2000) * 0.0005 + 3599.0,
                            rng.uniform(0, 3 * 3600, 2000)])  # fmt: skip
    for t in times.tolist():
        for hours, marker in [(False, "."), (True, ",")]:
            assert format_timestamp(t, hours, marker) == whisper_utils.format_timestamp(
                t, hours, marker
            )
