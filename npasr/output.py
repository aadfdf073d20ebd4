"""Transcript writers: txt, srt, vtt, tsv and json files with openai-whisper's layout.

The files are meant to be interchangeable with those of the `whisper` CLI (openai-whisper 20250625
`whisper/utils.py`): the same `<stem>.<ext>` naming in the output directory, the same timestamp
rounding, and byte-identical txt/srt/vtt/tsv for the same segments (tests/test_output.py checks
this against the reference). Word-level timestamps are not produced by npasr, so subtitles hold one
cue per segment.

Deviations, both on purpose:
* files are UTF-8 with "\\n" line ends on every platform (whisper writes the platform newline);
* json keeps non-ASCII text readable (`ensure_ascii=False`) instead of `\\uXXXX` escapes.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from npasr.types import TranscriptionResult

FORMATS: tuple[str, ...] = ("txt", "vtt", "srt", "tsv", "json")  # "all" writes every one

ResultLike = TranscriptionResult | dict[str, Any]
Writer = Callable[[ResultLike, "str | os.PathLike[str]", "str | os.PathLike[str]"], list[Path]]


def format_timestamp(
    seconds: float, always_include_hours: bool = False, decimal_marker: str = "."
) -> str:
    """Seconds -> "[HH:]MM:SS<marker>mmm", rounded to the nearest millisecond.

    Hours appear when asked for or when the time reaches one hour:
    ``format_timestamp(3661.5, True, ",") == "01:01:01,500"``,
    ``format_timestamp(75.25) == "01:15.250"``.
    """
    if seconds < 0:
        raise ValueError(f"timestamps must be non-negative, got {seconds}")
    ms = round(seconds * 1000.0)  # round half to even, as whisper does
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1_000)
    hh = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{hh}{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def _as_dict(result: ResultLike) -> dict[str, Any]:
    return result if isinstance(result, dict) else result.to_dict()


def _cue_text(segment: dict[str, Any]) -> str:
    # "-->" inside a cue would be read as a timing line by subtitle parsers
    return str(segment["text"]).strip().replace("-->", "->")


def _write_txt(result: dict[str, Any], f: TextIO) -> None:
    for seg in result["segments"]:
        f.write(f"{seg['text'].strip()}\n")


def _write_vtt(result: dict[str, Any], f: TextIO) -> None:
    f.write("WEBVTT\n\n")
    for seg in result["segments"]:
        start, end = format_timestamp(seg["start"]), format_timestamp(seg["end"])
        f.write(f"{start} --> {end}\n{_cue_text(seg)}\n\n")


def _write_srt(result: dict[str, Any], f: TextIO) -> None:
    for i, seg in enumerate(result["segments"], start=1):
        start = format_timestamp(seg["start"], always_include_hours=True, decimal_marker=",")
        end = format_timestamp(seg["end"], always_include_hours=True, decimal_marker=",")
        f.write(f"{i}\n{start} --> {end}\n{_cue_text(seg)}\n\n")


def _write_tsv(result: dict[str, Any], f: TextIO) -> None:
    # integer milliseconds: no locale can turn the decimal point into a comma
    f.write("start\tend\ttext\n")
    for seg in result["segments"]:
        text = seg["text"].strip().replace("\t", " ")
        f.write(f"{round(1000 * seg['start'])}\t{round(1000 * seg['end'])}\t{text}\n")


def _json_default(obj: Any) -> Any:
    # numpy scalars/arrays that reach a Segment (np.float32 timestamps, token arrays)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _write_json(result: dict[str, Any], f: TextIO) -> None:
    json.dump(result, f, ensure_ascii=False, default=_json_default)


_WRITERS: dict[str, Callable[[dict[str, Any], TextIO], None]] = {
    "txt": _write_txt,
    "vtt": _write_vtt,
    "srt": _write_srt,
    "tsv": _write_tsv,
    "json": _write_json,
}


def _check_format(fmt: str) -> list[str]:
    if fmt == "all":
        return list(FORMATS)
    if fmt not in _WRITERS:
        raise ValueError(f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}, all")
    return [fmt]


def format_result(result: ResultLike, fmt: str) -> str:
    """The text `write_result` would put in the `fmt` file (one format, not "all")."""
    if fmt == "all":
        raise ValueError('format_result renders one format; "all" is only for write_result')
    buf = io.StringIO()
    _WRITERS[_check_format(fmt)[0]](_as_dict(result), buf)
    return buf.getvalue()


def output_path(
    audio_path: str | os.PathLike[str], output_dir: str | os.PathLike[str], ext: str
) -> Path:
    """`<output_dir>/<name minus last suffix>.<ext>`: "a/talk.en.flac" -> "talk.en.<ext>"."""
    stem = os.path.splitext(os.path.basename(os.fspath(audio_path)))[0]
    return Path(output_dir) / f"{stem}.{ext}"


def get_writer(fmt: str) -> Writer:
    """A function `(result, audio_path, output_dir) -> [written paths]` for `fmt` or "all".

    The output directory must exist. Unknown formats raise ValueError here, before any work is done.
    """
    fmts = _check_format(fmt)

    def write(
        result: ResultLike,
        audio_path: str | os.PathLike[str],
        output_dir: str | os.PathLike[str],
    ) -> list[Path]:
        data = _as_dict(result)
        paths = []
        for name in fmts:
            path = output_path(audio_path, output_dir, name)
            with open(path, "w", encoding="utf-8", newline="\n") as f:
                _WRITERS[name](data, f)
            paths.append(path)
        return paths

    return write


def write_result(
    result: ResultLike,
    audio_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    fmt: str = "all",
) -> list[Path]:
    """Write `result` as `<stem>.<ext>` for `fmt` ("txt", "vtt", "srt", "tsv", "json" or "all").

    `result` is a `TranscriptionResult` or its `to_dict()` form (whisper's result dict also works).
    Returns the paths written, in FORMATS order for "all".
    """
    return get_writer(fmt)(result, audio_path, output_dir)
