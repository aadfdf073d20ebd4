"""Write the clips `npasr convert` runs through a model's encoder to weigh the input channels of
its 4-bit matrices (importance-weighted Q4_0; npasr/models/whisper/calibrate.py):

* npasr/assets/jfk-16k.flac: the README sample samples/jfk.flac (public-domain speech) as 16 kHz
  mono 16-bit, real speech;
* npasr/assets/calibration-en.flac: synthetic speech of our own text, for more varied words.

The text below was written for this file and appears in no evaluation set. It is spoken by
espeak-ng with two voices (en-us male, en-gb female variant) at 165 wpm, resampled to 16 kHz mono
and joined with 0.4 s of silence; the result is about 25 s, under one 30 s Whisper window.
Run where espeak-ng and sox exist (Debian: apt-get install espeak-ng sox); the committed file was
made with espeak-ng 1.51 and SoX 14.4.2:

    python scripts/make_calibration_audio.py
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "npasr" / "assets" / "calibration-en.flac"
JFK_OUT = REPO / "npasr" / "assets" / "jfk-16k.flac"
SR = 16000
PARTS = [
    (
        "en-us",
        "Good morning. Before the river rose, the village kept its boats on the northern bank, "
        "where the willows grow thick. Please check the pressure twice, then write down what "
        "you measured and how long it took.",
    ),
    (
        "en-gb+f2",
        "My grandmother never trusted weather forecasts; she watched the swallows instead. "
        "Could you bring the blue folder from the second shelf? Quiet engines, bright windows "
        "and a cold wind over the harbour.",
    ),
]


def speak(voice: str, text: str, tmp: Path) -> np.ndarray:
    wav, res = tmp / "raw.wav", tmp / "res.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "165", "-w", str(wav), text], check=True)
    subprocess.run(["sox", str(wav), "-r", str(SR), "-c", "1", "-b", "16", str(res)], check=True)
    x, sr = sf.read(str(res), dtype="float32")
    assert sr == SR
    return x


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        gap = np.zeros(int(0.4 * SR), np.float32)
        pieces = []
        for voice, text in PARTS:
            pieces += [speak(voice, text, Path(d)), gap]
    x = np.concatenate(pieces)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(OUT), x, SR, subtype="PCM_16")
    print(f"{OUT}: {x.shape[0] / SR:.1f} s")
    from npasr.audio.io import load_audio  # noqa: PLC0415

    jfk = load_audio(REPO / "samples" / "jfk.flac")
    sf.write(str(JFK_OUT), jfk, SR, subtype="PCM_16")
    print(f"{JFK_OUT}: {jfk.shape[0] / SR:.1f} s")


if __name__ == "__main__":
    main()
