"""Build the ~5-minute long-form benchmark file from the real English clips in ../shared/data.

Whole clips are concatenated in a fixed order with 0.5–1.0 s of silence between them (seeded, so the
file is identical on every run) and the cycle repeats until the next clip would push the length
past the target (so it lands up to one clip, < 12 s, short of it; checked to be within 5 s): no
clip is ever cut. The 88 s `en_hard-long-*` clip (music, noise, shouting) is left out. The
reference transcript (manifest texts joined by spaces) is written next to the WAV.

    python bench/make_long_audio.py [--out bench/out/long5min.wav] [--seconds 300]
"""

# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DATA, REPO, SR, load_audio_16k, read_manifest  # noqa: E402

CLIPS = [  # fixed order: mixes speakers/sources so no two neighbours are alike
    "jfk.flac",
    "en_psphinx-austen-0870.wav",
    "en_ljspeech-LJ001-0001.wav",
    "en_hard-noisy-funasr-noise_en.wav",
    "en_psphinx-austen-0890.wav",
]
TOLERANCE_S = 5.0


def build(seconds: float, seed: int = 0) -> tuple[np.ndarray, str, list[str]]:
    """-> (int16 samples, reference text, clip order)."""
    manifest = read_manifest()
    clips = {name: load_audio_16k(DATA / name) for name in CLIPS}
    rng = np.random.default_rng(seed)
    lead = np.zeros(SR // 2, np.float32)  # 0.5 s before the first clip
    parts, texts, order = [lead], [], []
    total = lead.size
    limit = int(seconds * SR)
    i = 0
    while True:
        name = CLIPS[i % len(CLIPS)]
        gap = np.zeros(int(rng.uniform(0.5, 1.0) * SR), np.float32)
        if total + clips[name].size + gap.size > limit:  # stop before exceeding; never cut a clip
            break
        parts += [clips[name], gap]
        texts.append(manifest[name]["transcript"].strip())
        order.append(name)
        total += clips[name].size + gap.size
        i += 1
    x = np.concatenate(parts)
    if abs(x.size / SR - seconds) > TOLERANCE_S:
        raise SystemExit(f"built {x.size / SR:.1f} s, outside {seconds} ± {TOLERANCE_S} s")
    pcm = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)
    return pcm, " ".join(texts), order


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "long5min.wav")
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=0, help="seed for the silence lengths")
    args = ap.parse_args()
    import soundfile as sf

    pcm, text, order = build(args.seconds, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(args.out), pcm, SR, subtype="PCM_16")
    args.out.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
    print(f"{args.out}: {pcm.size / SR:.2f} s, {len(order)} clips, {len(text.split())} words")


if __name__ == "__main__":
    main()
