"""Write the Whisper goldens in tests/golden/ from openai-whisper run on npasr's own GGUF weights.

Environment these goldens were made in (see tests/golden/README.md):
    Python 3.11.7, torch 2.13.0+cpu, openai-whisper 20250625 (installed --no-deps), numpy 2.x;
    weights: `npasr models install whisper-tiny.en` / `whisper-base` (CTranslate2 fp16 -> f16 GGUF),
    converted back to an openai .pt by tests/models/whisper_ref.py so both sides use equal weights.
Command:
    python scripts/make_goldens_whisper.py [--long]

Audio is loaded by npasr (soundfile + resample_poly) and handed to openai-whisper as an array,
so resampling is not part of the comparison.
For each model it stores:
  whisper_<model>_jfk.json: transcripts (greedy and beam_size=5) with segments and tokens;
  whisper_<model>_jfk_logits.npz: the first 10 greedy steps of the first window: tokens, and
    the raw logits at the top-32 ids and at 256 fixed ids per step;
  whisper_<model>_long.json (with --long): the greedy transcript of the 5-minute real-speech file
    that bench/make_long_audio.py builds (`build(300.0)`).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "models"))

N_STEPS = 10
N_FIXED = 256


def _env() -> dict[str, str]:
    import torch
    import whisper

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "openai-whisper": whisper.__version__,
        "numpy": np.__version__,
    }


def openai_first_steps(
    model, mel_window: np.ndarray, sot_sequence: list[int]
) -> tuple[list[int], np.ndarray]:
    """Greedy argmax over raw logits (no rules) for N_STEPS steps; returns tokens, logits (N, V)."""
    import torch

    with torch.no_grad():
        feats = model.embed_audio(torch.from_numpy(mel_window)[None])
        tokens = list(sot_sequence)
        rows = []
        for _ in range(N_STEPS):
            logits = model.logits(torch.tensor([tokens]), feats)[0, -1].numpy()
            rows.append(logits)
            tokens.append(int(logits.argmax()))
    return tokens[len(sot_sequence) :], np.stack(rows)


def transcript(model, audio: np.ndarray, **kw) -> dict:
    r = model.transcribe(audio, fp16=False, temperature=0.0, verbose=None, **kw)
    segs = [{k: s[k] for k in ("start", "end", "text", "tokens")} for s in r["segments"]]
    return {"text": r["text"], "language": r["language"], "segments": segs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--long", action="store_true", help="also the 5-minute file of bench/make_long_audio.py"
    )
    ap.add_argument("--models", nargs="*", default=["whisper-tiny.en", "whisper-base"])
    args = ap.parse_args()

    import torch
    import whisper
    from whisper_ref import whisper_pt_from_gguf

    from npasr import hub
    from npasr.audio.features import log_mel_whisper
    from npasr.audio.io import load_audio, pad_or_trim

    torch.set_num_threads(2)
    out_dir = REPO / "tests" / "golden"
    jfk = load_audio(REPO / "samples" / "jfk.flac")
    for name in args.models:
        short = name.removeprefix("whisper-")
        with tempfile.TemporaryDirectory() as tmp:
            pt = Path(tmp) / f"{short}.pt"
            whisper_pt_from_gguf(hub.resolve(name), pt)
            model = whisper.load_model(str(pt), device="cpu")
        tok = whisper.tokenizer.get_tokenizer(
            model.is_multilingual,
            num_languages=model.num_languages,
            language="en",
            task="transcribe",
        )
        mel = pad_or_trim(log_mel_whisper(jfk, model.dims.n_mels, padding=480000), 3000)
        steps, logits = openai_first_steps(model, mel, list(tok.sot_sequence))
        fixed = np.random.default_rng(0).choice(logits.shape[1], N_FIXED, replace=False)
        top = np.argsort(-logits, axis=1)[:, :32]
        ids = np.concatenate([np.tile(fixed, (len(top), 1)), top], axis=1)  # (N, 288)
        np.savez_compressed(
            out_dir / f"whisper_{short}_jfk_logits.npz",
            tokens=np.array(steps),
            sot_sequence=np.array(tok.sot_sequence),
            ids=ids,
            logits=np.take_along_axis(logits, ids, axis=1),
        )
        lang = {} if not model.is_multilingual else {"language": "en"}
        gold = {
            "env": _env(),
            "model": name,
            "audio": "samples/jfk.flac",
            "greedy": transcript(model, jfk, **lang),
            "beam5": transcript(model, jfk, beam_size=5, **lang),
        }
        (out_dir / f"whisper_{short}_jfk.json").write_text(
            json.dumps(gold, indent=1, ensure_ascii=False)
        )
        print(name, "greedy:", gold["greedy"]["text"], "| beam5:", gold["beam5"]["text"])
        if args.long:
            sys.path.insert(0, str(REPO / "bench"))
            from make_long_audio import build

            audio = load_audio(build(300.0)[0])
            long = {
                "env": _env(),
                "model": name,
                "audio": "make_long_audio.build(300.0)",
                "seconds": len(audio) / 16000,
                "greedy": transcript(model, audio, **lang),
            }
            (out_dir / f"whisper_{short}_long.json").write_text(
                json.dumps(long, indent=1, ensure_ascii=False)
            )
            print(name, "long greedy words:", len(long["greedy"]["text"].split()))


if __name__ == "__main__":
    main()
