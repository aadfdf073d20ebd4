"""Calibration for the 4-bit Whisper files: how the inputs of the encoder MLP matrices (the only
4-bit tensors, `weights._Q8_0`) are distributed, measured by running the source weights' encoder
on CALIBRATION_CLIPS (scripts/make_calibration_audio.py made them): the README's public-domain
jfk sample (real speech) and 25 s of espeak-ng speech of our own text. The converter takes the
second moment of each matrix's inputs (`full=True`) and quantizes with error feedback
(`quant._gptq`); the per-channel mean squares alone drive the per-block weighting.

Why: on held-out real speech (bench/quant_error.py --kl), the tiny.en decoder's next-token KL
divergence from f16 with Q4_0 encoder MLPs is 0.0100 nats with the plain blocks, 0.0090 with
per-block weighting and 0.0061 with error feedback (Q4_K: 0.0042, 0.0034, 0.0026).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from npasr.audio.features import log_mel_whisper
from npasr.audio.io import load_audio
from npasr.io.weights import Weights
from npasr.models.whisper.model import AudioEncoder
from npasr.models.whisper.transcribe import N_FRAMES, N_SAMPLES
from npasr.nn.calibration import input_mean_squares

if TYPE_CHECKING:
    from npasr.models.whisper.weights import WhisperSource

_ASSETS = Path(__file__).resolve().parents[2] / "assets"
CALIBRATION_CLIPS = [_ASSETS / "jfk-16k.flac", _ASSETS / "calibration-en.flac"]


def encoder_mlp_importance(
    src: WhisperSource, clips: list[np.ndarray] | None = None, full: bool = False
) -> dict[str, np.ndarray]:
    """name of each encoder MLP weight -> (K,) importance of its input channels (`shrink` of
    their mean square over the encoder frames of `clips`: 16 kHz audio, one 30 s window each;
    default CALIBRATION_CLIPS), from the float weights of a `weights.WhisperSource`.
    full=True: (K, K), `shrink` of the inputs' second moment matrix."""
    cfg = src.config
    enc_tensors = {n: a for n, a in src.tensors.items() if n.startswith("encoder.")}
    encoder = AudioEncoder.load(Weights(enc_tensors, origin=src.source).sub("encoder"), cfg)
    if clips is None:
        clips = [load_audio(p) for p in CALIBRATION_CLIPS]
    slots: dict[str, tuple[object, str]] = {}
    for i, blk in enumerate(encoder.blocks):
        slots[f"encoder.blocks.{i}.mlp.0.weight"] = (blk.mlp, "fc1")
        slots[f"encoder.blocks.{i}.mlp.2.weight"] = (blk.mlp, "fc2")
    with input_mean_squares(slots, full) as mean_squares:
        for x in clips:
            encoder(log_mel_whisper(x, cfg.n_mels, padding=N_SAMPLES)[:, :N_FRAMES])
    return {name: shrink(ms) for name, ms in mean_squares.items()}


def shrink(mean_square: np.ndarray) -> np.ndarray:
    """Importance = the mean squares scaled to mean 1, plus 1: an equal mix of the calibration
    statistics and uniform weights. 36 s of calibration audio cannot stand for every voice and
    channel; with the raw statistics tiny.en q4_0 gained on synthetic speech and lost on the
    real recordings, with the mix it keeps f16's 5-minute WER (bench/RESULTS.md)."""
    if mean_square.ndim == 2:  # a second moment matrix: the same mix on its diagonal
        m = float(np.diag(mean_square).mean())
        eye = np.eye(len(mean_square), dtype=mean_square.dtype)
        return mean_square / m + eye if m > 0 else eye
    m = float(mean_square.mean())
    return mean_square / m + 1.0 if m > 0 else np.ones_like(mean_square)
