"""Audio input: any source → float32 mono waveform at 16 kHz.

libsndfile (through soundfile) reads WAV/FLAC/OGG/MP3/AIFF/... in-process; an ``ffmpeg``
subprocess is the fallback for what libsndfile cannot read (m4a, mp4, webm, aac, video).
Everything is computed in float32: soundfile converts PCM up to 24 bits exactly, and
``npasr.audio.resample`` (SciPy's resample_poly filter, without importing scipy.signal) keeps
float32 in and out.

Shapes: N samples, C channels. Every loader returns ``(N,)`` float32.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

import numpy as np
import soundfile as sf

from npasr.audio.resample import resample_poly
from npasr.types import F32, AudioError

SAMPLE_RATE = 16000  # Hz; every model in npasr runs at 16 kHz

AudioSource = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes] | np.ndarray

# Containers that libsndfile has no reader for: a failure on these means "install ffmpeg".
_FFMPEG_ONLY_SUFFIXES = frozenset(
    {".m4a", ".mp4", ".m4b", ".aac", ".webm", ".mkv", ".mka", ".mov", ".avi", ".wma", ".wmv"}
    | {".amr", ".3gp", ".ac3", ".flv"}
)
_MAX_CHANNELS = 64  # a (N, C) array with more "channels" than this is almost surely (C, N)
# ffmpeg decodes far faster than real time; allow 60 s plus 10 s per MiB of input before giving up.
_FFMPEG_TIMEOUT_BASE_S = 60.0
_FFMPEG_TIMEOUT_PER_MIB_S = 10.0


def load_audio(source: AudioSource, sr: int = SAMPLE_RATE) -> F32:
    """Decode ``source`` to a mono float32 waveform at ``sr`` Hz.

    Parameters
    ----------
    source
        A path (``str`` / ``Path``); ``"-"`` for all bytes of standard input; encoded file bytes;
        a binary file-like object (read to the end); or a NumPy array of samples, taken to be
        at ``sr`` already: ``(N,)`` or ``(N, C)`` (channels last, averaged), float kept as is,
        integers scaled by their dtype range (int16 / 32768, uint8 → (x - 128) / 128).
    sr
        Target sample rate. Files at another rate are resampled with a polyphase filter
        (`npasr.audio.resample.resample_poly`: SciPy's polyphase filter for ``sr / file_rate``).

    Returns
    -------
    (N,) float32, integer PCM scaled to [-1, 1). Float files are not clipped or renormalised.
    A valid file with 0 samples gives an empty array; callers decide whether that is an error.
    All-zero audio is valid.

    Raises
    ------
    AudioError
        Missing or empty file, undecodable data (not audio, truncated header, a container
        libsndfile cannot read while ffmpeg is not installed), NaN/inf samples, bad array shape.
    """
    if isinstance(source, np.ndarray):
        return _check_finite(_array_to_mono(source), "array")
    if isinstance(source, str) and source == "-":
        return _load_bytes(sys.stdin.buffer.read(), sr, "<stdin>")
    if isinstance(source, bytes | bytearray | memoryview):
        return _load_bytes(bytes(source), sr, "<bytes>")
    if hasattr(source, "read"):
        data = source.read()  # type: ignore[union-attr]
        if not isinstance(data, bytes | bytearray):
            raise AudioError(
                f"file object returned {type(data).__name__}; open it in binary mode ('rb')"
            )
        return _load_bytes(bytes(data), sr, getattr(source, "name", "<file object>"))
    if isinstance(source, str | os.PathLike):
        return _load_path(Path(source), sr)
    raise AudioError(
        f"cannot load audio from {type(source).__name__}; "
        "pass a path, '-', bytes, a binary file object or a NumPy array"
    )


def pad_or_trim(x: np.ndarray, length: int, axis: int = -1) -> np.ndarray:
    """Cut ``x`` to ``length`` along ``axis``, or zero-pad it at the end to ``length``."""
    n = x.shape[axis]
    if n > length:
        return np.take(x, np.arange(length), axis=axis)
    if n < length:
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, length - n)
        return np.pad(x, widths)
    return x


def _load_path(path: Path, sr: int) -> F32:
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    try:
        x, file_sr = sf.read(path, dtype="float32", always_2d=True)  # (N, C)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        return _ffmpeg_fallback(path, None, sr, str(path), e)
    return _finish(x, file_sr, sr, str(path))


def _load_bytes(data: bytes, sr: int, name: str) -> F32:
    if len(data) == 0:
        raise AudioError(f"{name}: no data (0 bytes)")
    try:
        x, file_sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)  # (N, C)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        return _ffmpeg_fallback(None, data, sr, name, e)
    return _finish(x, file_sr, sr, name)


def _finish(x: np.ndarray, file_sr: int, sr: int, name: str) -> F32:
    """(N, C) float32 at file_sr → (N',) float32 at sr."""
    x = _check_finite(x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0], name)
    try:
        return _resample(x, file_sr, sr)
    except AudioError as e:  # an absurd rate in the header
        raise AudioError(f"{name}: {e}") from None


def _resample(x: F32, orig_sr: int, sr: int) -> F32:
    if orig_sr == sr or x.size == 0:
        return np.ascontiguousarray(x, dtype=np.float32)
    # 44100 → 16000 is up 160 / down 441; output length is ceil(N * up / down)
    return resample_poly(x, orig_sr, sr)


def _array_to_mono(x: np.ndarray) -> F32:
    if x.ndim not in (1, 2):
        raise AudioError(f"array must be 1-D (N,) or 2-D (N, C), got shape {x.shape}")
    if x.ndim == 2 and x.shape[1] > _MAX_CHANNELS:
        raise AudioError(
            f"array of shape {x.shape} has {x.shape[1]} channels; arrays are (frames, channels)"
            " — pass x.T if yours is channels-first"
        )
    if np.issubdtype(x.dtype, np.floating):
        y = x.astype(np.float32, copy=False)
    elif np.issubdtype(x.dtype, np.signedinteger):
        y = (x / -float(np.iinfo(x.dtype).min)).astype(np.float32)  # int16: / 32768
    elif np.issubdtype(x.dtype, np.unsignedinteger):
        mid = float(np.iinfo(x.dtype).max // 2 + 1)  # uint8 WAV: silence is 128
        y = ((x - mid) / mid).astype(np.float32)
    else:
        raise AudioError(f"array dtype {x.dtype} is not audio; use a float or integer array")
    if y.ndim == 2:
        y = y.mean(axis=1, dtype=np.float32)  # (N, C) -> (N,)
    return np.ascontiguousarray(y)


def _check_finite(x: F32, name: str) -> F32:
    if not np.isfinite(x).all():
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise AudioError(
            f"{name}: audio has {bad} non-finite samples (NaN or inf); the file is corrupt or was"
            " written from a broken float signal — fix it (e.g. np.nan_to_num) before loading"
        )
    return x


def _ffmpeg_fallback(
    path: Path | None, data: bytes | None, sr: int, name: str, sf_error: Exception
) -> F32:
    """Decode with an ffmpeg subprocess after libsndfile failed on ``path`` or ``data``."""
    # LibsndfileError.error_string is the reason without "Error opening <BytesIO object at 0x…>"
    sf_reason = (getattr(sf_error, "error_string", None) or str(sf_error)).rstrip(".")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        suffix = path.suffix.lower() if path is not None else ""
        what = (
            f"libsndfile cannot read {suffix} files"
            if suffix in _FFMPEG_ONLY_SUFFIXES
            else f"libsndfile cannot decode it ({sf_reason}); it may be truncated, not audio, or a"
            " format libsndfile does not support"
        )
        raise AudioError(
            f"{name}: cannot decode audio: {what}. ffmpeg is not installed; installing ffmpeg "
            "(`apt install ffmpeg`, `brew install ffmpeg`) enables m4a/mp4/webm/aac/video input"
        )
    if path is None:
        # Write in-memory data to a temporary file rather than a pipe: mp4/m4a keep their index
        # (moov atom) at the end, which ffmpeg can only reach on a seekable input.
        assert data is not None
        with tempfile.NamedTemporaryFile(suffix=".bin") as tmp:
            tmp.write(data)
            tmp.flush()
            return _run_ffmpeg(ffmpeg, Path(tmp.name), sr, name, sf_reason)
    return _run_ffmpeg(ffmpeg, path, sr, name, sf_reason)


def _run_ffmpeg(ffmpeg: str, path: Path, sr: int, name: str, sf_reason: str) -> F32:
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "0",
           "-i", str(path), "-f", "s16le", "-ac", "1", "-acodec", "pcm_s16le",
           "-ar", str(sr), "-"]  # fmt: skip
    timeout = _FFMPEG_TIMEOUT_BASE_S + _FFMPEG_TIMEOUT_PER_MIB_S * path.stat().st_size / 2**20
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        raise AudioError(f"{name}: ffmpeg did not finish decoding within {timeout:.0f} s") from e
    except OSError as e:
        raise AudioError(f"{name}: could not run ffmpeg at {ffmpeg}: {e}") from e
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        reason = lines[-1].replace(str(path), name) if lines else f"exit {proc.returncode}"
        raise AudioError(
            f"{name}: cannot decode audio: libsndfile: {sf_reason}; ffmpeg: {reason}. "
            "Is this an audio/video file?"
        )
    # s16le mono: ffmpeg has already downmixed and resampled; scale like the PCM path.
    return np.frombuffer(proc.stdout, dtype="<i2").astype(np.float32) / np.float32(32768.0)
