"""Log-mel front ends: one STFT, one mel filterbank, one ``log_mel``; each model is a ``MelConfig``.

References (facts only, see shared/REFERENCE.md §1.3, §2.3, §4.1, §5):
  Whisper   openai/whisper@v20250625 whisper/audio.py::log_mel_spectrogram (torch.stft, centre
            reflect, last frame dropped, librosa Slaney filters, log10 clamp 1e-10, max-8, (x+4)/4)
  GigaAM v3 salute-developers/GigaAM gigaam/preprocess.py (torchaudio MelSpectrogram, center=False,
            HTK mels without norm, ln(clamp(x, 1e-9, 1e9)))
  NeMo      NVIDIA/NeMo nemo/collections/asr/parts/preprocessing/features.py::FilterbankFeatures
            (pre-emphasis, symmetric Hann 400 in n_fft 512, zero-padded centre, ln(x + 2**-24),
            per-feature normalisation over the N // hop valid frames)
Qwen3-ASR uses the Whisper front end with 128 mels and no 30 s padding: ``log_mel(x, WHISPER_128)``.

Shapes: N samples, T frames, F = n_fft // 2 + 1 frequency bins, M = n_mels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from npasr.types import F32, AudioError

# FFT precision: float64. Both float32 and float64 stay within 3.3e-5 of openai-whisper (torch's
# float32 STFT) on the real clips in shared/data, because the max-8 floor hides the quiet bins. The
# ln front ends have no such floor: there float32 rounding in quiet bins moves GigaAM features by
# 4.5e-4 and NeMo features by 1.7e-4 vs float64. float64 costs 2x, yet 5 min of audio takes 0.15 s.
_FFT_DTYPE = np.float64

WindowKind = Literal["hann_periodic", "hann_symmetric"]


@dataclass(frozen=True)
class MelConfig:
    """Everything that distinguishes one model's log-mel front end from another's."""

    sample_rate: int  # Hz; 16000 for every supported model
    n_fft: int  # FFT size: 400 (Whisper), 320 (GigaAM v3), 512 (NeMo)
    hop_length: int  # samples between frames: 160 = 10 ms
    win_length: int  # window length ≤ n_fft; a shorter window is zero-padded centred (torch.stft)
    window: WindowKind  # torch.hann_window periodic=True | False
    center: bool  # pad n_fft // 2 on both sides so frame t is centred on sample t * hop
    pad_mode: Literal["reflect", "constant"]  # padding used when center=True
    n_mels: int  # 80 / 128 (Whisper), 64 (GigaAM), 128 (NeMo)
    mel_scale: Literal["slaney", "htk"]  # librosa default "slaney"; torchaudio default "htk"
    mel_norm: Literal["slaney"] | None  # Slaney area normalisation of each triangle, or none
    fmin: float = 0.0  # Hz, lower edge of the first triangle
    fmax: float | None = None  # Hz, upper edge of the last triangle; None = sample_rate / 2
    preemphasis: float | None = None  # y[t] = x[t] - a * x[t-1], y[0] = x[0]; NeMo 0.97
    log: Literal["log10_whisper", "ln_clamp", "ln_add"] = "log10_whisper"
    log_floor: float = 1e-10  # clamp minimum (log10_whisper, ln_clamp) or added guard (ln_add)
    log_ceil: float | None = None  # clamp maximum for ln_clamp (GigaAM 1e9)
    normalize: Literal["per_feature"] | None = None  # NeMo: mean / unbiased std per mel bin
    normalize_eps: float = 1e-5  # added to the std (not the variance), as NeMo does
    drop_last_frame: bool = False  # Whisper: stft[..., :-1] keeps N // hop frames


WHISPER_80 = MelConfig(
    sample_rate=16000, n_fft=400, hop_length=160, win_length=400, window="hann_periodic",
    center=True, pad_mode="reflect", n_mels=80, mel_scale="slaney", mel_norm="slaney",
    log="log10_whisper", log_floor=1e-10, drop_last_frame=True,
)  # fmt: skip
WHISPER_128 = replace(WHISPER_80, n_mels=128)  # large-v3, turbo, Qwen3-ASR
GIGAAM_V3 = MelConfig(
    sample_rate=16000, n_fft=320, hop_length=160, win_length=320, window="hann_periodic",
    center=False, pad_mode="reflect", n_mels=64, mel_scale="htk", mel_norm=None,
    log="ln_clamp", log_floor=1e-9, log_ceil=1e9,
)  # fmt: skip
NEMO_128 = MelConfig(
    sample_rate=16000, n_fft=512, hop_length=160, win_length=400, window="hann_symmetric",
    center=True, pad_mode="constant", n_mels=128, mel_scale="slaney", mel_norm="slaney",
    preemphasis=0.97, log="ln_add", log_floor=2.0**-24, normalize="per_feature",
)  # fmt: skip


@functools.lru_cache(maxsize=32)
def hann_window(n: int, periodic: bool = True) -> np.ndarray:
    """Hann window of length ``n`` (float64, read-only); periodic = torch.hann_window default."""
    denom = n if periodic else n - 1
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / max(denom, 1))
    w.flags.writeable = False
    return w


def _hz_to_mel(f: np.ndarray, scale: str) -> np.ndarray:
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    # Slaney (Auditory Toolbox): linear below 1 kHz at 200/3 Hz per mel, log above, step ln(6.4)/27
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    log_part = min_log_hz / f_sp + np.log(np.maximum(f, min_log_hz) / min_log_hz) / logstep
    return np.where(f >= min_log_hz, log_part, f / f_sp)


def _mel_to_hz(m: np.ndarray, scale: str) -> np.ndarray:
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=32)
def mel_filterbank(
    sr: int,
    n_fft: int,
    n_mels: int,
    *,
    fmin: float = 0.0,
    fmax: float | None = None,
    scale: Literal["slaney", "htk"] = "slaney",
    norm: Literal["slaney"] | None = "slaney",
) -> F32:
    """Triangular mel filters, (n_mels, n_fft // 2 + 1) float32, read-only (cached).

    ``scale="slaney", norm="slaney"`` equals ``librosa.filters.mel`` defaults (openai-whisper's
    mel_filters.npz, NeMo's fb); ``scale="htk", norm=None`` equals torchaudio ``melscale_fbanks``
    (GigaAM). Triangles have corners at n_mels + 2 points equally spaced in mel between fmin
    and fmax, evaluated on the FFT bin frequencies linspace(0, sr / 2, F).
    """
    fmax = sr / 2.0 if fmax is None else fmax
    freqs = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)  # (F,)
    mel_lo, mel_hi = _hz_to_mel(np.float64(fmin), scale), _hz_to_mel(np.float64(fmax), scale)
    mel_pts = np.linspace(mel_lo, mel_hi, n_mels + 2)  # (M + 2,)
    f_pts = _mel_to_hz(mel_pts, scale)  # (M + 2,) triangle corners in Hz
    f_diff = np.diff(f_pts)  # (M + 1,)
    ramps = f_pts[:, None] - freqs[None, :]  # (M + 2, F)
    rising = -ramps[:-2] / f_diff[:-1, None]  # (M, F) left edge, 0 → 1
    falling = ramps[2:] / f_diff[1:, None]  # (M, F) right edge, 1 → 0
    fb = np.maximum(0.0, np.minimum(rising, falling))
    if norm == "slaney":
        fb *= (2.0 / (f_pts[2:] - f_pts[:-2]))[:, None]  # each triangle gets unit area in Hz
    elif norm is not None:
        raise ValueError(f"mel norm must be 'slaney' or None, got {norm!r}")
    fb = fb.astype(np.float32)
    fb.flags.writeable = False
    return fb


@functools.lru_cache(maxsize=32)
def _window(kind: WindowKind, win_length: int, n_fft: int) -> np.ndarray:
    """Hann window of ``win_length`` zero-padded centred to ``n_fft`` (float64, read-only)."""
    if kind not in ("hann_periodic", "hann_symmetric"):
        raise ValueError(f"window must be 'hann_periodic' or 'hann_symmetric', got {kind!r}")
    w = _pad_window(hann_window(win_length, periodic=kind == "hann_periodic"), n_fft)
    w.flags.writeable = False
    return w


def _pad_window(w: np.ndarray, n_fft: int) -> np.ndarray:
    if len(w) > n_fft:
        raise ValueError(f"window length {len(w)} exceeds n_fft {n_fft}")
    left = (
        n_fft - len(w)
    ) // 2  # torch.stft centres a short window: 56 zeros each side for 400/512
    return np.pad(w, (left, n_fft - len(w) - left))


def stft_power(
    x: np.ndarray,
    n_fft: int,
    hop: int,
    window: np.ndarray | WindowKind,
    *,
    center: bool,
    pad_mode: Literal["reflect", "constant"] = "reflect",
    win_length: int | None = None,
) -> np.ndarray:
    """Power spectrogram |STFT|², (F, T) float64, with torch.stft framing.

    ``window`` is an array of length ≤ n_fft, or a window kind built with ``win_length``
    (default n_fft); a window shorter than n_fft is zero-padded centred. With ``center`` the
    signal is padded by n_fft // 2 on both sides, so T = 1 + N // hop; without it
    T = 1 + (N - n_fft) // hop, and 0 when N < n_fft. Reflect padding of a signal shorter than
    n_fft // 2 + 1 follows np.pad (repeated reflection) where torch.stft would raise.
    """
    w = _stft_window(window, win_length or n_fft, n_fft)
    frames = _frames(x, n_fft, hop, center, pad_mode)
    return _power(frames, w, 0, len(frames)).T  # (F, T)


# Frames per FFT batch in log_mel: ~6 MB of float64 temporaries whatever the audio length, where
# one FFT over all frames of a 5-minute file took 280 MB.
_CHUNK_FRAMES = 2000
_STAT_BLOCK = 4096  # frames per block of NeMo's per-feature statistics


def _stft_window(window: np.ndarray | WindowKind, win_length: int, n_fft: int) -> np.ndarray:
    """A window kind (built with win_length) or an array, zero-padded centred to n_fft, float64."""
    if isinstance(window, str):
        return _window(window, win_length, n_fft)
    return _pad_window(np.asarray(window, dtype=np.float64), n_fft)


def _frames(x: np.ndarray, n_fft: int, hop: int, center: bool, pad_mode: str) -> np.ndarray:
    """(T, n_fft) view of the (padded) signal in its own dtype: no float64 copy of the audio."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        x = x.astype(_FFT_DTYPE)
    if center and x.size > 0:
        x = np.pad(x, n_fft // 2, mode=pad_mode)
    if x.size < n_fft:
        return np.zeros((0, n_fft), dtype=x.dtype)
    return sliding_window_view(x, n_fft)[::hop]


def _power(frames: np.ndarray, w: np.ndarray, t0: int, t1: int) -> np.ndarray:
    """|rfft(frame * w)|² of frames t0..t1-1 in float64, (t1 - t0, F); w float64 (n_fft,)."""
    spec = np.fft.rfft(frames[t0:t1].astype(_FFT_DTYPE) * w, axis=-1)
    return spec.real**2 + spec.imag**2


def feature_length(n_samples: int, cfg: MelConfig) -> int:
    """Frames of ``log_mel`` output that hold real audio (the model's feat_len)."""
    if cfg.normalize == "per_feature" or cfg.drop_last_frame:
        return n_samples // cfg.hop_length  # NeMo seq_len; Whisper after dropping the last frame
    if cfg.center:
        return 1 + n_samples // cfg.hop_length if n_samples > 0 else 0
    return 1 + (n_samples - cfg.n_fft) // cfg.hop_length if n_samples >= cfg.n_fft else 0


def log_mel(
    audio: np.ndarray,
    cfg: MelConfig,
    *,
    window: np.ndarray | None = None,
    filterbank: np.ndarray | None = None,
) -> F32:
    """Log-mel features of a 16 kHz mono waveform, (n_mels, T) float32.

    ``window`` (win_length,) and ``filterbank`` (n_mels, F) replace the ones ``cfg`` describes,
    for checkpoints that store their own (GigaAM v3 keeps both rounded to bfloat16).

    T follows the reference of ``cfg``: N // hop (Whisper), 1 + (N - n_fft) // hop (GigaAM v3),
    1 + N // hop (NeMo, whose last frame lies beyond the N // hop valid frames and is zeroed, like
    NeMo's pad_value). Empty audio gives an empty (n_mels, 0) result; so does audio too short
    for one frame (GigaAM: N < 320). NeMo normalisation needs ≥ 2 valid frames (N ≥ 320 samples)
    and raises AudioError otherwise, where NeMo itself would produce NaN.
    """
    x = np.asarray(audio)
    if x.ndim != 1:
        raise AudioError(f"log_mel expects mono audio of shape (N,), got {x.shape}; downmix first")
    if not np.isfinite(x).all():
        raise AudioError("audio has NaN or inf samples; log-mel features would be undefined")
    n = x.size
    if n == 0:
        return np.zeros((cfg.n_mels, 0), dtype=np.float32)
    w = _stft_window(cfg.window if window is None else window, cfg.win_length, cfg.n_fft)
    if cfg.preemphasis is not None and cfg.center and cfg.pad_mode == "constant":
        # NeMo: pre-emphasis written straight into the zero-padded copy that framing needs
        # (one copy of the audio, not two: 230 MB each for an hour)
        frames = _frames(_preemphasized_padded(x, cfg.preemphasis, cfg.n_fft // 2),
                         cfg.n_fft, cfg.hop_length, False, cfg.pad_mode)  # fmt: skip
    else:
        if cfg.preemphasis is not None:
            x = np.concatenate([x[:1], x[1:] - cfg.preemphasis * x[:-1]])
        frames = _frames(x, cfg.n_fft, cfg.hop_length, cfg.center, cfg.pad_mode)
    n_frames = max(len(frames) - 1, 0) if cfg.drop_last_frame else len(frames)  # Whisper drops 1
    fb = filterbank if filterbank is not None else mel_filterbank(
        cfg.sample_rate, cfg.n_fft, cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax,
        scale=cfg.mel_scale, norm=cfg.mel_norm)  # fmt: skip
    if fb.shape != (cfg.n_mels, cfg.n_fft // 2 + 1):
        raise ValueError(f"filterbank {fb.shape} does not fit ({cfg.n_mels}, {cfg.n_fft // 2 + 1})")
    fb64 = fb.astype(_FFT_DTYPE)
    if cfg.normalize == "per_feature" and cfg.log == "ln_add":
        return _nemo_features(frames, w, fb64, n_frames, feature_length(n, cfg), cfg)
    out = np.empty((cfg.n_mels, n_frames), dtype=_FFT_DTYPE)  # (M, T) mel power, then its log
    for t0 in range(0, n_frames, _CHUNK_FRAMES):
        t1 = min(n_frames, t0 + _CHUNK_FRAMES)
        np.matmul(fb64, _power(frames, w, t0, t1).T, out=out[:, t0:t1])
    # in place from here: the same element-wise operations, one (M, T) array
    if cfg.log == "log10_whisper":
        np.log10(np.maximum(out, cfg.log_floor, out=out), out=out)
        if out.size > 0:
            np.maximum(out, out.max() - 8.0, out=out)  # 80 dB dynamic range below the global max
        out += 4.0
        out /= 4.0
    elif cfg.log == "ln_clamp":
        np.log(np.clip(out, cfg.log_floor, cfg.log_ceil, out=out), out=out)
    elif cfg.log == "ln_add":
        out += cfg.log_floor
        np.log(out, out=out)
    else:
        raise ValueError(f"unknown log variant {cfg.log!r}")
    if cfg.normalize == "per_feature":
        out = _normalize_per_feature(out, feature_length(n, cfg), cfg.normalize_eps)
    elif cfg.normalize is not None:
        raise ValueError(f"unknown normalisation {cfg.normalize!r}")
    return out.astype(np.float32)


def _preemphasized_padded(x: np.ndarray, a: float, pad: int) -> np.ndarray:
    """zeros(pad) + [x[0], x[1] - a x[0], ...] + zeros(pad), in the audio's float type; the
    difference is taken a slice at a time (a whole-signal a * x[:-1] is another copy)."""
    dt = x.dtype if x.dtype == np.float32 else _FFT_DTYPE
    out = np.zeros(x.size + 2 * pad, dt)
    out[pad : pad + x.size] = x
    step = 1 << 20
    for i in range(x.size - 1, 0, -step):  # from the end, so each x[t-1] is still unchanged
        lo = max(1, i - step + 1)
        out[pad + lo : pad + i + 1] -= a * out[pad + lo - 1 : pad + i]
    return out


def _nemo_features(frames: np.ndarray, w: np.ndarray, fb64: np.ndarray, n_frames: int,
                   n_valid: int, cfg: MelConfig) -> F32:  # fmt: skip
    """ln(mel + guard) normalised per mel bin, computed a slice of frames at a time in float64
    and kept in float32 between the passes (an hour: 184 MB instead of 368 + 184 MB)."""
    _check_valid_frames(n_valid)
    out = np.empty((cfg.n_mels, n_frames), np.float32)
    for t0 in range(0, n_frames, _CHUNK_FRAMES):
        t1 = min(n_frames, t0 + _CHUNK_FRAMES)
        out[:, t0:t1] = np.log(fb64 @ _power(frames, w, t0, t1).T + cfg.log_floor)
    # statistics over fixed blocks of the stored values: the same sums whatever the FFT batch
    blocks = [slice(t, min(n_valid, t + _STAT_BLOCK)) for t in range(0, n_valid, _STAT_BLOCK)]
    mean = sum(out[:, b].sum(axis=1, dtype=_FFT_DTYPE, keepdims=True) for b in blocks) / n_valid
    ss = np.zeros_like(mean)
    for b in blocks:
        d = out[:, b].astype(_FFT_DTYPE) - mean
        ss += np.einsum("mt,mt->m", d, d)[:, None]
    scale = 1.0 / (np.sqrt(ss / (n_valid - 1)) + cfg.normalize_eps)
    for b in blocks:
        out[:, b] = (out[:, b].astype(_FFT_DTYPE) - mean) * scale
    out[:, n_valid:] = 0.0  # frames past the audio are padding (NeMo pad_value = 0)
    return out


def _check_valid_frames(n_valid: int) -> None:
    if n_valid < 2:
        raise AudioError(
            f"per-feature normalisation needs at least 2 valid frames, got {n_valid}; "
            "the audio is too short (pad it to at least 320 samples = 20 ms)"
        )


def _normalize_per_feature(x: np.ndarray, n_valid: int, eps: float) -> np.ndarray:
    """NeMo normalize_batch('per_feature'): (x - mean) / (unbiased std + eps) over valid frames."""
    _check_valid_frames(n_valid)
    valid = x[:, :n_valid]  # (M, T_valid)
    mean = valid.mean(axis=1, keepdims=True)
    # sum of squared deviations a slice of frames at a time: valid.std() would hold a second
    # (M, T) float64 array, 368 MB for an hour
    ss = np.zeros_like(mean)
    for t0 in range(0, n_valid, _CHUNK_FRAMES):
        d = valid[:, t0 : t0 + _CHUNK_FRAMES] - mean
        ss += np.einsum("mt,mt->m", d, d)[:, None]
    std = np.sqrt(ss / (n_valid - 1))
    out = x  # in place: x is log_mel's own scratch
    out -= mean
    out /= std + eps
    out[:, n_valid:] = 0.0  # frames past the audio are padding (NeMo pad_value = 0)
    return out


def log_mel_whisper(audio: np.ndarray, n_mels: int = 80, padding: int = 0) -> F32:
    """openai-whisper ``log_mel_spectrogram(audio, n_mels, padding)``: (M, (N + padding) // 160).

    ``padding`` zero samples are appended before the STFT (``transcribe`` uses 480000), and the
    max-8 floor uses the max over the whole result, padding included, as the reference does.
    """
    cfg = {80: WHISPER_80, 128: WHISPER_128}.get(n_mels) or replace(WHISPER_80, n_mels=n_mels)
    x = np.asarray(audio)
    if padding > 0:
        x = np.pad(x, (0, padding))
    return log_mel(x, cfg)
