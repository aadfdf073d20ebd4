"""Write tests/golden/whisper_mel_jfk.npz: openai-whisper's log-mel of samples/jfk.flac via npasr.

The audio comes from ``npasr.audio.io.load_audio`` (soundfile + resample_poly), so the golden tests
only the mel front end, not resampling. The mel comes from the reference,
``whisper.log_mel_spectrogram(torch.from_numpy(audio), n_mels=80, padding=0)``.

Environment the committed file was made with:
    Python 3.11.7, torch 2.13.0+cpu, openai-whisper 20250625 (installed --no-deps),
    numpy 2.4.6, scipy 1.17.1, soundfile 0.14.0 / libsndfile 1.2.2

Command (from the repository root):
    python scripts/make_golden_mel.py            # writes the file
    python scripts/make_golden_mel.py --check    # recomputes and compares with the committed file

Stored keys: ``mel`` (80, 1100) float32, ``audio_len`` (number of 16 kHz samples),
``audio_sha256`` (hex digest of the float32 audio bytes, to detect a changed loader),
``versions`` (the reference versions above, as one string).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
JFK = REPO / "samples" / "jfk.flac"  # same bytes as shared/data/jfk.flac (44.1 kHz stereo 24-bit)
OUT = REPO / "tests" / "golden" / "whisper_mel_jfk.npz"
N_MELS = 80


def reference_mel(audio: np.ndarray) -> tuple[np.ndarray, str]:
    import torch
    import whisper

    mel = whisper.log_mel_spectrogram(torch.from_numpy(audio), N_MELS, padding=0).numpy()
    versions = f"torch {torch.__version__}; openai-whisper {whisper.__version__}"
    return mel.astype(np.float32), versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))  # run from a checkout without installing npasr
    from npasr.audio.io import load_audio

    audio = load_audio(JFK)  # (N,) float32 at 16 kHz
    mel, versions = reference_mel(audio)
    digest = hashlib.sha256(audio.tobytes()).hexdigest()
    if args.check:
        with np.load(OUT) as golden:
            err = float(np.abs(golden["mel"] - mel).max())
            same_audio = str(golden["audio_sha256"]) == digest
        print(f"max abs diff {err:.3g}; audio unchanged: {same_audio}")
        sys.exit(0 if err == 0.0 and same_audio else 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT, mel=mel, audio_len=np.int64(audio.size), audio_sha256=digest, versions=versions
    )
    print(
        f"wrote {OUT.relative_to(REPO)}: mel {mel.shape}, {OUT.stat().st_size} bytes ({versions})"
    )


if __name__ == "__main__":
    main()
