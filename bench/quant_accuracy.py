"""Word error rate of each weight type on the repo's real English speech (issue #3 accuracy).

Every English clip of ../shared/data/manifest.tsv (the 88 s music+noise clip included), greedy,
temperature 0, language "en"; corpus WER = total word errors / total reference words, after the
normaliser of bench/_common.py (lower case, punctuation stripped). Also the GGUF file sizes.
The short clips hold only 117 words (outside the 88 s clip), where one word is 0.9 points, so
the 5-minute file of bench/make_long_audio.py (concatenated real speech with its reference
transcript, ~800 words) is scored too, as the steadier number.

    python bench/make_long_audio.py   # once
    python bench/quant_accuracy.py [--models tiny.en,base] [--types f16,q8_0,q4_0,q4_k]

With --set DIR it scores a manifest.tsv set instead (columns file, part, transcript; e.g. the
~5000-word set of bench/make_speech_set.py): corpus WER overall and per part, with word counts,
then each type against f16 (`compare_to_f16`: difference, clip-resampling interval, clips worse
and better).

    python bench/make_speech_set.py   # once
    python bench/quant_accuracy.py --set bench/out/speech_set --threads 1 [--json out.json]

--decode greedy (the default: temperature 0 only) or fallback (transcribe()'s default options,
with openai-whisper's temperature fallback).
"""

from __future__ import annotations

import _blas_env  # noqa: F401  (first: before NumPy loads OpenBLAS)

# isort: split

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

# greedy: temperature 0 only (a repetition loop stays in the transcript); fallback: the default
# options of transcribe() and of the speed bar, `transcribe(audio, beam_size=1)`, i.e.
# openai-whisper's temperature fallback (0, 0.2, ..., 1.0) on a compression ratio > 2.4 or a mean
# log-probability < -1 (sampling seeded, so runs repeat).
DECODE = {
    "greedy": {"temperature": 0.0, "language": "en"},
    "fallback": {"beam_size": 1, "language": "en"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="tiny.en,base")
    ap.add_argument("--types", default="f16,q8_0,q4_0,q4_k")
    ap.add_argument("--set", type=Path, help="score DIR/manifest.tsv instead of the default clips")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="with --set: write per-clip hypotheses and errors")
    ap.add_argument("--decode", choices=list(DECODE), default="greedy", help="decoding options")
    args = ap.parse_args()

    import npasr

    npasr.set_num_threads(args.threads)
    if args.set is not None:
        score_set(args.set, args.models.split(","), args.types.split(","), args.json, args.decode)
        return
    from npasr import hub
    from npasr.audio.io import load_audio

    rows = [r for r in C.read_manifest().values() if r["language"] == "en"]
    audio = {r["file"]: load_audio(C.DATA / r["file"]) for r in rows}
    long_wav = C.REPO / "bench" / "out" / "long5min.wav"
    if not long_wav.exists():
        sys.exit(f"{long_wav} is missing: run python bench/make_long_audio.py first")
    long_audio = load_audio(long_wav)
    long_ref = C.normalize(long_wav.with_suffix(".txt").read_text()).split()
    print(f"load average {C.loadavg()}; decode {args.decode}; {len(rows)} clips, "
          f"{sum(len(C.normalize(r['transcript']).split()) for r in rows)} reference words")
    print(
        "| model | type | file MB | corpus WER | WER without the 88 s clip | per clip WER "
        f"| 5-min file WER ({len(long_ref)} words) |"
    )
    print("|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for wtype in args.types.split(","):
            path = hub.resolve(f"whisper-{model}", wtype=wtype)
            m = npasr.load_model(path)
            errors = words = short_errors = short_words = 0
            per = []
            for r in rows:
                hyp = m.transcribe(audio[r["file"]], **DECODE[args.decode]).text
                ref = C.normalize(r["transcript"]).split()
                e = C.word_errors(ref, C.normalize(hyp).split())
                errors, words = errors + e, words + len(ref)
                if not r["file"].startswith("en_hard-long"):
                    short_errors, short_words = short_errors + e, short_words + len(ref)
                per.append(f"{e / max(len(ref), 1):.2f}")
            hyp = m.transcribe(long_audio, **DECODE[args.decode]).text
            long_wer = C.word_errors(long_ref, C.normalize(hyp).split()) / len(long_ref)
            size = Path(path).stat().st_size / 1e6
            print(f"| {model} | {wtype} | {size:.1f} | {errors / words:.4f} | "
                  f"{short_errors / short_words:.4f} | {' '.join(per)} | {long_wer:.4f} |",
                  flush=True)  # fmt: skip


def score_set(
    set_dir: Path, models: list[str], wtypes: list[str], json_out: Path | None, decode: str
) -> None:
    """Corpus WER (total word errors / total reference words) of each model and weight type on
    every clip of set_dir/manifest.tsv, overall and per `part`."""
    import npasr
    from npasr import hub
    from npasr.audio.io import load_audio

    rows = list(C.read_manifest(set_dir).values())
    parts = sorted({r["part"] for r in rows}, key=lambda p: (p != "tts", p))
    audio = {r["file"]: load_audio(set_dir / r["file"]) for r in rows}
    refs = {r["file"]: C.normalize(r["transcript"]).split() for r in rows}
    n_words = {p: sum(len(refs[r["file"]]) for r in rows if r["part"] == p) for p in parts}
    total = sum(n_words.values())
    secs = sum(float(r["seconds"]) for r in rows)
    print(
        f"load average {C.loadavg()}; decode {decode}; {set_dir}: {len(rows)} clips, {secs:.0f} s, "
        f"{total} reference words ({', '.join(f'{p} {n_words[p]}' for p in parts)})"
    )
    print(
        "| model | type | file MB | WER | words | "
        + " | ".join(f"WER {p} | words {p}" for p in parts)
        + " | wall s |"
    )
    print("|---|---|---|---|---|" + "---|---|" * len(parts) + "---|")
    report: dict[str, object] = {"set": str(set_dir), "results": []}
    for model in models:
        for wtype in wtypes:
            path = hub.resolve(f"whisper-{model}", wtype=wtype)
            m = npasr.load_model(path)
            t0 = time.perf_counter()
            errors = dict.fromkeys(parts, 0)
            clips = []
            for r in rows:
                hyp = m.transcribe(audio[r["file"]], **DECODE[decode]).text
                e = C.word_errors(refs[r["file"]], C.normalize(hyp).split())
                errors[r["part"]] += e
                clips.append(
                    {"file": r["file"], "errors": e, "words": len(refs[r["file"]]), "hyp": hyp}
                )
            wall = time.perf_counter() - t0
            size = Path(path).stat().st_size / 1e6
            per = " | ".join(f"{errors[p] / n_words[p]:.4f} | {n_words[p]}" for p in parts)
            print(
                f"| {model} | {wtype} | {size:.1f} | {sum(errors.values()) / total:.4f} | "
                f"{total} | {per} | {wall:.0f} |",
                flush=True,
            )
            report["results"].append(
                {
                    "model": model,
                    "type": wtype,
                    "errors": errors,
                    "words": n_words,
                    "wall_s": wall,
                    "clips": clips,
                }
            )
            if json_out is not None:
                json_out.write_text(json.dumps(report, indent=1))
    compare_to_f16(report["results"])  # type: ignore[arg-type]


def compare_to_f16(results: list[dict], draws: int = 10_000) -> None:
    """Each type against the f16 run of its model on the same clips: the WER difference in
    points, a 95% interval from resampling whole clips (paired: a draw takes the same clips for
    both), and how many clips have more / fewer word errors than f16."""
    import numpy as np

    base = {r["model"]: r for r in results if r["type"] == "f16"}
    print("\n| model | type | Δ f16 (points) | 95% interval | clips worse / better |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for r in results:
        ref = base.get(r["model"])
        if ref is None or r is ref:
            continue
        e = np.array([c["errors"] for c in r["clips"]])
        e0 = np.array([c["errors"] for c in ref["clips"]])
        w = np.array([c["words"] for c in r["clips"]])
        idx = rng.integers(0, len(w), (draws, len(w)))
        deltas = 100 * ((e - e0)[idx].sum(axis=1) / w[idx].sum(axis=1))
        lo, hi = np.percentile(deltas, [2.5, 97.5])
        print(
            f"| {r['model']} | {r['type']} | {100 * (e - e0).sum() / w.sum():+.2f} | "
            f"{lo:+.2f} … {hi:+.2f} | {(e > e0).sum()} / {(e < e0).sum()} |"
        )


if __name__ == "__main__":
    main()
