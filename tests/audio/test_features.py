"""Mel filterbanks, STFT and log-mel front ends against openai-whisper, torch.stft and closed forms.

Tests marked ``reference`` import torch / openai-whisper and are skipped without them; the golden
test runs everywhere from tests/golden/whisper_mel_jfk.npz (scripts/make_golden_mel.py).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from npasr.audio.features import (
    GIGAAM_V3,
    NEMO_128,
    WHISPER_80,
    WHISPER_128,
    MelConfig,
    feature_length,
    hann_window,
    log_mel,
    log_mel_whisper,
    mel_filterbank,
    stft_power,
)
from npasr.audio.io import load_audio
from npasr.types import AudioError

REPO = Path(__file__).resolve().parents[2]
JFK = REPO / "samples" / "jfk.flac"  # committed; same bytes as shared/data/jfk.flac
DATA = REPO / ".." / "shared" / "data"  # real clips, present on dev machines only
GOLDEN = REPO / "tests" / "golden" / "whisper_mel_jfk.npz"
MEL_ATOL = 1e-4  # log-mel vs openai-whisper; measured ≤ 3.3e-5 on shared/data clips
CONFIGS = {
    "whisper80": WHISPER_80,
    "whisper128": WHISPER_128,
    "gigaam": GIGAAM_V3,
    "nemo": NEMO_128,
}


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    return load_audio(JFK)  # (176000,) float32


# --- filterbanks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sr", "n_fft", "n_mels", "scale", "norm"),
    [(16000, 400, 80, "slaney", "slaney"), (16000, 400, 128, "slaney", "slaney"),
     (16000, 512, 128, "slaney", "slaney"), (16000, 320, 64, "htk", None),
     (16000, 400, 64, "htk", None)],
)  # fmt: skip
def test_filterbank_structure(
    sr: int, n_fft: int, n_mels: int, scale: str, norm: str | None
) -> None:
    fb = mel_filterbank(sr, n_fft, n_mels, scale=scale, norm=norm)  # type: ignore[arg-type]
    assert fb.shape == (n_mels, n_fft // 2 + 1) and fb.dtype == np.float32
    assert not fb.flags.writeable  # cached and shared: must not be mutated by callers
    assert (fb >= 0).all() and (fb.max(axis=1) > 0).all()  # no empty filter at these sizes
    peaks = fb.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all()  # centres rise with the filter index
    for row in fb:  # each filter is one contiguous triangle
        nz = np.flatnonzero(row)
        assert (np.diff(nz) == 1).all()
    if norm is None:
        assert fb.max() <= 1.0 + 1e-6


def htk_mel(f: float) -> float:
    return 2595.0 * math.log10(1.0 + f / 700.0)


def htk_hz(m: float) -> float:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@pytest.mark.parametrize(("n_fft", "n_mels"), [(320, 64), (400, 64), (512, 80)])
def test_htk_filterbank_closed_form(n_fft: int, n_mels: int) -> None:
    """torchaudio melscale_fbanks(norm=None, mel_scale="htk"), written out one bin at a time."""
    sr = 16000
    fb = mel_filterbank(sr, n_fft, n_mels, scale="htk", norm=None)
    step = (htk_mel(sr / 2) - htk_mel(0.0)) / (n_mels + 1)
    corners = [htk_hz(i * step) for i in range(n_mels + 2)]  # Hz at equal HTK-mel spacing
    n_freqs = n_fft // 2 + 1
    for i in range(n_mels):
        lo, mid, hi = corners[i : i + 3]
        for k in range(n_freqs):
            f = k * (sr / 2) / (n_freqs - 1)
            if f <= lo or f >= hi:
                want = 0.0  # zero outside the triangle
            elif f <= mid:
                want = (f - lo) / (mid - lo)
            else:
                want = (hi - f) / (hi - mid)
            assert fb[i, k] == pytest.approx(want, abs=1e-6), (i, k)


def test_slaney_scale_corners() -> None:
    """Slaney mel: linear below 1 kHz (15 mel = 1000 Hz), 27 log steps per factor 6.4 above."""
    fb = mel_filterbank(16000, 16000, 40, fmax=6400.0)  # 1 Hz bins: the peak bin is the corner
    m_hi = 15 + 27  # 6400 Hz = 1000 Hz · 6.4: one factor 6.4 above 15 mel
    corners = [i * m_hi / 41 for i in range(42)]
    hz = [200 / 3 * m if m < 15 else 1000 * 6.4 ** ((m - 15) / 27) for m in corners]
    np.testing.assert_allclose(fb.argmax(axis=1), np.round(hz[1:-1]), atol=1)
    areas = fb.sum(axis=1)  # Slaney norm: unit area per triangle in Hz (1 Hz bins)
    np.testing.assert_allclose(areas, 1.0, rtol=0.02)


@pytest.mark.reference
@pytest.mark.parametrize("n_mels", [80, 128])
def test_slaney_filterbank_equals_whisper_asset(n_mels: int) -> None:
    whisper_audio = pytest.importorskip("whisper.audio")
    asset = Path(whisper_audio.__file__).parent / "assets" / "mel_filters.npz"
    with np.load(asset) as f:
        ref = f[f"mel_{n_mels}"]
    ours = mel_filterbank(16000, 400, n_mels)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-6


def test_hann_window() -> None:
    np.testing.assert_allclose(hann_window(4), [0.0, 0.5, 1.0, 0.5])
    np.testing.assert_allclose(hann_window(5, periodic=False), [0.0, 0.5, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(hann_window(400, periodic=False), np.hanning(400), atol=1e-15)


# --- STFT ------------------------------------------------------------------------------------

STFT_CASES = [  # n_fft, hop, window kind, win_length, center, pad_mode
    (400, 160, "hann_periodic", 400, True, "reflect"),  # Whisper
    (400, 160, "hann_periodic", 400, False, "reflect"),
    (320, 160, "hann_periodic", 320, False, "reflect"),  # GigaAM v3
    (512, 160, "hann_symmetric", 400, True, "constant"),  # NeMo: window shorter than n_fft
    (512, 128, "hann_periodic", 301, True, "reflect"),  # odd window inside n_fft
]


@pytest.mark.reference
@pytest.mark.parametrize(("n_fft", "hop", "kind", "win", "center", "pad_mode"), STFT_CASES)
def test_stft_power_vs_torch(
    n_fft: int, hop: int, kind: str, win: int, center: bool, pad_mode: str
) -> None:
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal(5003)
    ours = stft_power(x, n_fft, hop, kind, center=center, pad_mode=pad_mode, win_length=win)
    w = torch.hann_window(win, periodic=kind == "hann_periodic", dtype=torch.float64)
    ref = torch.stft(torch.from_numpy(x), n_fft, hop, win_length=win, window=w, center=center,
                     pad_mode=pad_mode, return_complex=True).abs().numpy() ** 2  # fmt: skip
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


def test_stft_power_frames_and_parseval() -> None:
    x = np.random.default_rng(1).standard_normal(1600)
    p = stft_power(x, 400, 160, np.ones(400), center=False)  # rectangular window
    assert p.shape == (201, 1 + (1600 - 400) // 160)
    frame0 = x[:400]  # Parseval for a real rfft: |X0|² + 2Σ|Xk|² + |X_N/2|² = N Σx²
    total = p[0, 0] + 2 * p[1:-1, 0].sum() + p[-1, 0]
    assert total == pytest.approx(400 * (frame0**2).sum(), rel=1e-10)
    assert stft_power(x[:399], 400, 160, "hann_periodic", center=False).shape == (201, 0)
    assert stft_power(x, 400, 160, "hann_periodic", center=True).shape == (201, 1 + 1600 // 160)


# --- Whisper log-mel -------------------------------------------------------------------------


def test_log_mel_whisper_matches_golden(jfk: np.ndarray) -> None:
    with np.load(GOLDEN) as golden:
        ref, n = golden["mel"], int(golden["audio_len"])
    assert n == jfk.size, "load_audio changed: regenerate with scripts/make_golden_mel.py"
    ours = log_mel_whisper(jfk, 80)
    assert ours.shape == ref.shape == (80, 1100) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() <= MEL_ATOL


@pytest.mark.reference
@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("padding", [0, 480000])
@pytest.mark.parametrize("clip", ["jfk.flac", "en_hard-noisy-funasr-noise_en.wav"])
def test_log_mel_whisper_vs_openai(n_mels: int, padding: int, clip: str) -> None:
    torch = pytest.importorskip("torch")
    whisper = pytest.importorskip("whisper")
    path = JFK if clip == "jfk.flac" else DATA / clip
    if not path.is_file():
        pytest.skip(f"{path} not found")
    audio = load_audio(path)
    ref = whisper.log_mel_spectrogram(torch.from_numpy(audio), n_mels, padding=padding).numpy()
    ours = log_mel_whisper(audio, n_mels, padding=padding)
    assert ours.shape == ref.shape == (n_mels, (audio.size + padding) // 160)
    assert np.abs(ours - ref).max() <= MEL_ATOL


@pytest.mark.reference
@pytest.mark.parametrize("n", [201, 320, 400, 401, 479])
def test_log_mel_whisper_short_vs_openai(n: int) -> None:
    torch = pytest.importorskip("torch")
    whisper = pytest.importorskip("whisper")
    audio = np.random.default_rng(n).uniform(-0.5, 0.5, n).astype(np.float32)
    ref = whisper.log_mel_spectrogram(torch.from_numpy(audio), 80).numpy()
    assert np.abs(log_mel_whisper(audio) - ref).max() <= MEL_ATOL


def test_whisper_silence_floor() -> None:
    mel = log_mel_whisper(np.zeros(16000, np.float32))
    np.testing.assert_array_equal(mel, np.full((80, 100), -1.5, np.float32))  # (log10(1e-10)+4)/4


def test_whisper_padding_is_zeros_before_stft(jfk: np.ndarray) -> None:
    padded = log_mel_whisper(jfk[:16000], 80, padding=3200)
    assert padded.shape == (80, 120)
    np.testing.assert_array_equal(padded, log_mel(np.pad(jfk[:16000], (0, 3200)), WHISPER_80))


# --- short and degenerate input --------------------------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("n", [0, 1, 159, 160, 200, 319, 320, 321, 399, 400, 512, 4321])
def test_short_audio_shapes(name: str, n: int) -> None:
    """Documented contract: 0 samples → (M, 0); too short for a frame → (M, 0); NeMo < 2 valid
    frames → AudioError; otherwise the reference's frame count, all finite."""
    cfg = CONFIGS[name]
    x = np.random.default_rng(n).uniform(-0.5, 0.5, n).astype(np.float32)
    if cfg.normalize == "per_feature" and 0 < n < 2 * cfg.hop_length:
        with pytest.raises(AudioError, match="at least 2 valid frames"):
            log_mel(x, cfg)
        return
    out = log_mel(x, cfg)
    want_t = {"gigaam": (n - 320) // 160 + 1 if n >= 320 else 0,
              "nemo": n // 160 + 1 if n else 0}.get(name, n // 160)  # fmt: skip
    assert out.shape == (cfg.n_mels, want_t) and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert feature_length(n, cfg) == (want_t - 1 if name == "nemo" and n else want_t)


def test_bad_feature_input() -> None:
    with pytest.raises(AudioError, match="NaN or inf"):
        log_mel(np.array([0.0, np.nan] * 400), WHISPER_80)
    with pytest.raises(AudioError, match="mono audio of shape"):
        log_mel(np.zeros((2, 800)), WHISPER_80)


# --- GigaAM and NeMo configurations ----------------------------------------------------------


def test_gigaam_is_ln_of_clamped_htk_mel(jfk: np.ndarray) -> None:
    x = jfk[:32000]
    power = stft_power(x, 320, 160, "hann_periodic", center=False)  # (161, T)
    fb = mel_filterbank(16000, 320, 64, scale="htk", norm=None).astype(np.float64)
    want = np.log(np.clip(fb @ power, 1e-9, 1e9))
    np.testing.assert_allclose(log_mel(x, GIGAAM_V3), want, rtol=1e-6, atol=1e-5)
    assert (log_mel(np.zeros(1600), GIGAAM_V3) == np.float32(np.log(1e-9))).all()


def test_nemo_normalisation(jfk: np.ndarray) -> None:
    x = jfk[:48000]
    out = log_mel(x, NEMO_128).astype(np.float64)  # (128, 301)
    n_valid = 48000 // 160
    assert out.shape == (128, n_valid + 1)
    assert not out[:, n_valid:].any()  # frame past the audio is NeMo's pad_value
    valid = out[:, :n_valid]
    np.testing.assert_allclose(valid.mean(axis=1), 0.0, atol=1e-5)
    assert (np.abs(valid.std(axis=1, ddof=1) - 1.0) < 1e-3).all()  # 1 - eps/(std+eps)


def test_nemo_preemphasis_and_window() -> None:
    """Without normalisation, NEMO_128 is ln(fb @ |STFT(pre-emphasised x)|² + 2**-24)."""
    cfg = MelConfig(**{**NEMO_128.__dict__, "normalize": None})
    x = np.random.default_rng(2).uniform(-0.3, 0.3, 4000)
    y = np.concatenate([x[:1], x[1:] - 0.97 * x[:-1]])
    win = np.pad(np.hanning(400), 56)  # symmetric 400 centred in 512
    frames = np.stack([np.pad(y, 256)[t * 160 : t * 160 + 512] for t in range(4000 // 160 + 1)])
    power = np.abs(np.fft.rfft(frames * win, axis=1)).T ** 2  # (257, T)
    fb = mel_filterbank(16000, 512, 128).astype(np.float64)
    np.testing.assert_allclose(log_mel(x, cfg), np.log(fb @ power + 2.0**-24), rtol=1e-6, atol=1e-5)


# --- memory: frames go through the FFT in batches -------------------------------------------


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("chunk", [7, 2000])
def test_batched_fft_is_invisible(name: str, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bit-identical to one FFT over every frame, across batch edges and a short last batch."""
    from npasr.audio import features

    x = np.random.default_rng(1).standard_normal(16000 * 45 + 123).astype(np.float32) * 0.1
    monkeypatch.setattr(features, "_CHUNK_FRAMES", 10**9)
    whole = log_mel(x, CONFIGS[name])
    monkeypatch.setattr(features, "_CHUNK_FRAMES", chunk)
    np.testing.assert_array_equal(log_mel(x, CONFIGS[name]), whole)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_log_mel_memory_is_linear_in_small_multiples(name: str) -> None:
    """Peak NumPy allocation for 2 minutes of audio: two copies of the audio (pre-emphasis,
    centre padding), the float64 (M, T) scratch and the float32 result, plus ~24 MB of per-batch
    FFT temporaries. One FFT over all frames took 74-116 MB here (complex spectrum of every
    frame); the batches take 16-42 MB."""
    import tracemalloc

    cfg = CONFIGS[name]
    x = np.random.default_rng(2).standard_normal(16000 * 120).astype(np.float32) * 0.1
    tracemalloc.start()
    try:
        out = log_mel(x, cfg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    bound = 2 * x.nbytes + 3 * out.nbytes + 24 * 2**20
    assert peak <= bound, f"log_mel peaked at {peak / 2**20:.1f} MB > {bound / 2**20:.1f} MB"


# --- speed -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_log_mel_whisper_five_minutes_is_fast(jfk: np.ndarray) -> None:
    x = np.resize(jfk, 16000 * 300)  # 5 min, 30000 frames
    log_mel_whisper(x)  # warm the filterbank and window caches
    t0 = time.perf_counter()
    mel = log_mel_whisper(x)
    elapsed = time.perf_counter() - t0
    assert mel.shape == (80, 30000)
    assert elapsed < 0.5, f"log_mel_whisper took {elapsed:.2f} s on 5 min of audio"
