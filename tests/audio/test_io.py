"""load_audio / pad_or_trim: formats, downmix, resampling, every input kind, every bad input.

Audio files are generated in tmp_path with soundfile (or ffmpeg, when installed); none is committed.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from npasr.audio.io import SAMPLE_RATE, load_audio, pad_or_trim
from npasr.types import AudioError

JFK = Path(__file__).resolve().parents[2] / "samples" / "jfk.flac"  # 44.1 kHz stereo 24-bit
HAS_FFMPEG = shutil.which("ffmpeg") is not None
needs_ffmpeg = pytest.mark.skipif(not HAS_FFMPEG, reason="ffmpeg is not installed")


def sine(sr: int, seconds: float = 1.0, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float64)


def write(path: Path, x: np.ndarray, sr: int, subtype: str | None = None) -> Path:
    sf.write(path, x, sr, subtype=subtype)
    return path


def peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


@pytest.fixture
def no_ffmpeg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PATH on which ffmpeg cannot be found, whatever is installed."""
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert shutil.which("ffmpeg") is None


# --- formats and channels --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "subtype", "atol"),
    [
        (".wav", "PCM_16", 2**-15),
        (".wav", "PCM_24", 2**-23),
        (".wav", "PCM_32", 2**-23),  # float32 output keeps 24 bits of mantissa
        (".wav", "FLOAT", 0.0),
        (".wav", "DOUBLE", 1e-7),
        (".flac", "PCM_16", 2**-15),
        (".flac", "PCM_24", 2**-23),
        (".aiff", "PCM_16", 2**-15),
    ],
)
def test_formats_roundtrip(tmp_path: Path, suffix: str, subtype: str, atol: float) -> None:
    x = sine(SAMPLE_RATE, 0.5)
    y = load_audio(write(tmp_path / f"a{suffix}", x, SAMPLE_RATE, subtype))
    assert y.dtype == np.float32 and y.ndim == 1 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=atol + 1e-7, rtol=0)


def test_stereo_is_averaged(tmp_path: Path) -> None:
    left = sine(SAMPLE_RATE, 0.25)
    x = np.stack([left, -0.5 * left], axis=1)  # (N, 2)
    y = load_audio(write(tmp_path / "st.wav", x, SAMPLE_RATE, "FLOAT"))
    np.testing.assert_allclose(y, 0.25 * left, atol=1e-7)


def test_real_flac_44k_stereo_24bit() -> None:
    y = load_audio(JFK)
    assert y.dtype == np.float32 and y.shape == (176000,)  # 11.0 s at 16 kHz
    assert 0.1 < np.abs(y).max() <= 1.0


# --- resampling ------------------------------------------------------------------------------


@pytest.mark.parametrize("sr", [44100, 48000, 8000, 22050, 11025, 37800])
def test_resample_length_and_pitch(tmp_path: Path, sr: int) -> None:
    x = sine(sr, 1.0)[:-7]  # an awkward length: not a whole number of output samples
    y = load_audio(write(tmp_path / "r.wav", x, sr, "FLOAT"))
    assert abs(len(y) - math.ceil(len(x) * SAMPLE_RATE / sr)) <= 1
    assert abs(peak_hz(y, SAMPLE_RATE) - 440.0) <= 1.5  # bins are ~1 Hz wide
    mid = y[len(y) // 4 : 3 * len(y) // 4]  # away from the filter's edge transients
    np.testing.assert_allclose(np.sqrt(np.mean(mid**2)), 0.5 / np.sqrt(2), rtol=0.01)


def test_absurd_header_rate_is_refused(tmp_path: Path) -> None:
    """A header claiming 2 MHz (coprime with 16 kHz) would need a 40M-tap filter: a clear
    error naming the file, not minutes of work or an allocation failure."""
    path = write(tmp_path / "odd.wav", np.zeros(100, np.float32), 2000003, "FLOAT")
    with pytest.raises(AudioError, match=r"odd\.wav: cannot resample 2000003 Hz"):
        load_audio(path)


def test_target_rate_argument(tmp_path: Path) -> None:
    y = load_audio(write(tmp_path / "a.wav", sine(16000), 16000, "FLOAT"), sr=8000)
    assert len(y) == 8000 and abs(peak_hz(y, 8000) - 440.0) <= 1.5


# --- input kinds -----------------------------------------------------------------------------


def wav_bytes(x: np.ndarray, sr: int = SAMPLE_RATE) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def test_stdin_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    x = sine(22050, 0.2)
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(wav_bytes(x, 22050))))
    y = load_audio("-")
    assert abs(len(y) - math.ceil(len(x) * 16000 / 22050)) <= 1


def test_bytes_and_file_objects(tmp_path: Path) -> None:
    x = sine(SAMPLE_RATE, 0.2)
    data = wav_bytes(x)
    path = tmp_path / "a.wav"
    path.write_bytes(data)
    with path.open("rb") as f:
        from_file = load_audio(f)
    for y in (load_audio(data), load_audio(bytearray(data)), load_audio(io.BytesIO(data)),
              from_file, load_audio(str(path))):  # fmt: skip
        np.testing.assert_allclose(y, x, atol=1e-7)


def test_text_mode_file_object_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("not audio")
    with (tmp_path / "t.txt").open() as f, pytest.raises(AudioError, match="binary mode"):
        load_audio(f)


def test_unsupported_source_type() -> None:
    with pytest.raises(AudioError, match="cannot load audio from int"):
        load_audio(42)  # type: ignore[arg-type]


def test_arrays() -> None:
    x = sine(SAMPLE_RATE, 0.1).astype(np.float32)
    assert load_audio(x) is x  # float32 mono at 16 kHz is passed through untouched
    np.testing.assert_array_equal(load_audio(x.astype(np.float64)), x)
    np.testing.assert_array_equal(
        load_audio(np.array([-32768, 0, 16384], np.int16)), [-1.0, 0.0, 0.5]
    )
    np.testing.assert_array_equal(load_audio(np.array([0, 128, 192], np.uint8)), [-1.0, 0.0, 0.5])
    np.testing.assert_array_equal(load_audio(np.array([2**31 - 2**8, -(2**31)], np.int32)),
                                  np.array([1 - 2**-23, -1.0], np.float32))  # fmt: skip
    stereo = np.stack([x, np.zeros_like(x)], axis=1)  # (N, 2)
    np.testing.assert_allclose(load_audio(stereo), 0.5 * x, atol=1e-8)
    stereo16 = np.array([[16384, -16384], [32767, 32767]], np.int16)
    np.testing.assert_allclose(load_audio(stereo16), [0.0, 32767 / 32768], atol=1e-7)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        (np.zeros((2, 16000), np.float32), "channels-first"),
        (np.zeros((2, 3, 4), np.float32), "1-D"),
        (np.zeros(4, np.complex64), "not audio"),
        (np.zeros(4, bool), "not audio"),
        (np.array([0.0, np.nan], np.float32), "non-finite"),
        (np.array([0.0, np.inf]), "non-finite"),
    ],
)
def test_bad_arrays(x: np.ndarray, match: str) -> None:
    with pytest.raises(AudioError, match=match):
        load_audio(x)


# --- bad input -------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"nope\.wav: no such file"):
        load_audio(tmp_path / "nope.wav")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)


def test_empty_file_and_empty_bytes(tmp_path: Path) -> None:
    (tmp_path / "e.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"e\.wav: file is empty \(0 bytes\)"):
        load_audio(tmp_path / "e.wav")
    with pytest.raises(AudioError, match=r"no data \(0 bytes\)"):
        load_audio(b"")
    with pytest.raises(AudioError, match=r"<stdin>: no data"):
        sys_stdin = types.SimpleNamespace(buffer=io.BytesIO(b""))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(sys, "stdin", sys_stdin)
            load_audio("-")


def undecodable_files(tmp_path: Path) -> dict[str, Path]:
    full = wav_bytes(sine(SAMPLE_RATE, 0.1))
    files = {
        "truncated_header.wav": full[:20],
        "header_only_no_data_chunk.wav": full[:36],
        "text.wav": b"this is a text file, not audio\n" * 10,
        "random.bin": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in files}


@pytest.mark.parametrize("ffmpeg", ["absent", pytest.param("present", marks=needs_ffmpeg)])
def test_undecodable_files(tmp_path: Path, request: pytest.FixtureRequest, ffmpeg: str) -> None:
    if ffmpeg == "absent":
        request.getfixturevalue("no_ffmpeg")
    for name, path in undecodable_files(tmp_path).items():
        with pytest.raises(AudioError, match=rf"{name}: cannot decode audio") as err:
            load_audio(path)
        assert ("ffmpeg is not installed" in str(err.value)) == (ffmpeg == "absent")
        with pytest.raises(AudioError, match=r"<bytes>: cannot decode audio"):
            load_audio(path.read_bytes())


def test_ffmpeg_missing_message_for_container(tmp_path: Path, no_ffmpeg: None) -> None:
    path = tmp_path / "voice.m4a"
    path.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + bytes(64))
    with pytest.raises(AudioError) as err:
        load_audio(path)
    msg = str(err.value)
    assert "voice.m4a" in msg and "libsndfile cannot read .m4a files" in msg
    assert "installing ffmpeg" in msg


def test_truncated_data_gives_the_samples_present() -> None:
    data = wav_bytes(np.full(1000, 0.25))
    y = load_audio(data[: len(data) // 2])  # header intact, data chunk cut short
    assert 0 < len(y) < 1000 and np.all(y == 0.25)


def test_zero_length_audio_is_empty(tmp_path: Path) -> None:
    for sr in (SAMPLE_RATE, 44100):
        y = load_audio(write(tmp_path / f"z{sr}.wav", np.zeros(0), sr, "PCM_16"))
        assert y.dtype == np.float32 and y.shape == (0,)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(tmp_path: Path, bad: float) -> None:
    x = sine(SAMPLE_RATE, 0.1)
    x[100] = bad
    with pytest.raises(AudioError, match="non-finite"):
        load_audio(write(tmp_path / "nan.wav", x, SAMPLE_RATE, "FLOAT"))


def test_silence_is_valid(tmp_path: Path) -> None:
    y = load_audio(write(tmp_path / "s.wav", np.zeros(4410), 44100, "PCM_16"))
    assert len(y) == 1600 and not y.any()


# --- ffmpeg path -----------------------------------------------------------------------------


@needs_ffmpeg
@pytest.mark.parametrize(("suffix", "codec"), [(".m4a", "aac"), (".webm", "libopus")])
def test_ffmpeg_containers(tmp_path: Path, suffix: str, codec: str) -> None:
    src = write(tmp_path / "src.wav", sine(44100, 1.0), 44100, "PCM_16")
    out = tmp_path / f"out{suffix}"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(src), "-c:a", codec,
                    "-b:a", "96k", str(out)], check=True)  # fmt: skip
    for y in (load_audio(out), load_audio(out.read_bytes())):
        assert y.dtype == np.float32 and abs(len(y) - 16000) < 1000  # codecs add priming samples
        assert abs(peak_hz(y, SAMPLE_RATE) - 440.0) <= 2.0


def test_ogg_vorbis_via_libsndfile(tmp_path: Path, no_ffmpeg: None) -> None:
    y = load_audio(write(tmp_path / "a.ogg", sine(48000, 1.0), 48000, "VORBIS"))
    assert abs(len(y) - 16000) <= 1 and abs(peak_hz(y, SAMPLE_RATE) - 440.0) <= 1.5


# --- pad_or_trim -----------------------------------------------------------------------------


def test_pad_or_trim() -> None:
    x = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(pad_or_trim(x, 3), [0, 1, 2])
    np.testing.assert_array_equal(pad_or_trim(x, 7), [0, 1, 2, 3, 4, 0, 0])
    assert pad_or_trim(x, 5) is x
    m = np.ones((2, 4), np.float32)  # (M, T)
    assert pad_or_trim(m, 6).shape == (2, 6) and pad_or_trim(m, 6)[:, 4:].sum() == 0
    assert pad_or_trim(m, 1, axis=0).shape == (1, 4)


def test_scipy_signal_and_special_load_only_when_used(tmp_path: Path) -> None:
    """scipy.signal and scipy.special (the reference GELU) cost ~65 MB of RSS and up to 1.2 s
    at import; reading audio, resampled or not, and importing the NumPy references must not pull
    them in."""
    import soundfile as sf

    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(1600, np.float32), 16000)
    wav44 = tmp_path / "b.wav"
    sf.write(wav44, np.zeros(4410, np.float32), 44100)
    code = (
        "import sys, npasr.nn.ref, npasr.audio.features, npasr.audio.io as io\n"
        f"io.load_audio({str(wav)!r})\n"
        "print(sorted(m for m in ('scipy.signal', 'scipy.special') if m in sys.modules))\n"
        f"io.load_audio({str(wav44)!r})\n"
        "print(sorted(m for m in ('scipy.signal', 'scipy.special') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "[]"], out.stdout
