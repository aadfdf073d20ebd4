"""Output error of the 4-bit encoder MLP matrices on held-out real speech, per quantization rule.

The 4-bit Whisper files quantize only the encoder MLPs (weights/README.md). For each of those
matrices W this prints the relative error of its products on speech that is not in the
calibration clips: ||(Q - W) X||^2 / ||W X||^2 over the rows X that reach it when the float
encoder runs the held-out clips (every English clip of ../shared/data except jfk, which is a
calibration clip; one 30 s window per 30 s of audio). It is the cheap, low-noise measure that
the rules are chosen on before any WER is run (bench/RESULTS.md).

Rules: plain (gguf-py's blocks; the k-quant search under plain squared error), diag (each block
weighted by `calibrate.shrink` of the calibration mean squares), gptq (error feedback with
`shrink` of the calibration second moment, `quant._gptq`), gptq-raw (the second moment alone,
scaled to mean diagonal 1).

    python bench/quant_error.py [--models tiny.en,base] [--types q4_0,q4_k]

With --kl it measures what the decoder sees instead (llama.cpp's KL-divergence measure): on
each held-out clip (the clips above that fit one window, plus the real-aug clips of
bench/make_speech_set.py that do not come from jfk), the f16 model's greedy transcript is fed
to the decoder after the f16 encoder and after an encoder whose MLPs are quantized by each
rule; printed are the mean KL divergence of the next-token distributions from f16's and the
share of positions whose top token differs. --files adds whole GGUF files (every quantized
tensor of the file, not only the encoder MLPs) to that comparison.

    python bench/make_speech_set.py   # once
    python bench/quant_error.py --kl [--files a.gguf,b.gguf]
"""

from __future__ import annotations

import _blas_env  # noqa: F401  (first: before NumPy loads OpenBLAS)

# isort: split

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def held_out_clips() -> list[np.ndarray]:
    """30 s windows of every English manifest clip except jfk (a calibration clip)."""
    rows = [r for r in C.read_manifest().values() if r["language"] == "en"]
    out = []
    for r in rows:
        if r["file"].startswith("jfk"):
            continue
        x = C.load_audio_16k(C.DATA / r["file"])
        out += [x[i : i + 30 * C.SR] for i in range(0, len(x), 30 * C.SR)]
    return out


def kl_clips() -> list[np.ndarray]:
    """Held-out clips of at most 30 s: real speech not in the calibration."""
    clips = [x for x in held_out_clips() if len(x) < 30 * C.SR]
    aug = C.REPO / "bench" / "out" / "speech_set"
    if not (aug / "manifest.tsv").is_file():
        sys.exit(f"{aug} is missing: run python bench/make_speech_set.py first")
    for line in (aug / "manifest.tsv").read_text().splitlines()[1:]:
        f, part = line.split("\t")[:2]
        if part == "real-aug" and not f.startswith("aug_jfk"):
            clips.append(C.load_audio_16k(aug / f))
    return clips


def kl_table(
    model: str, wtypes: list[str], rules: list[str], files: list[str], layers: str = ""
) -> None:
    """Teacher-forced divergence from f16 (module docstring), one row per rule and type; with
    `layers` ("0,3") only those encoder layers' MLPs are quantized (per-layer sensitivity)."""
    import copy

    from npasr import hub
    from npasr.audio.features import log_mel_whisper
    from npasr.models.whisper.asr import WhisperModel
    from npasr.models.whisper.model import KVCache
    from npasr.models.whisper.transcribe import N_FRAMES, N_SAMPLES
    from npasr.models.whisper.weights import load_source
    from npasr.nn.layers import Linear

    clips = kl_clips()
    m16 = WhisperModel.from_gguf(hub.resolve(f"whisper-{model}", wtype="f16"))
    cfg = m16.config
    tok = m16.tokenizer.with_options("en", "transcribe") if cfg.is_multilingual else m16.tokenizer
    prefix = list(tok.sot_sequence_including_notimestamps)
    mels, seqs = [], []
    for x in clips:
        mels.append(log_mel_whisper(x, cfg.n_mels, padding=N_SAMPLES)[:, :N_FRAMES])
        r = m16.transcribe(x, temperature=0.0, language="en", without_timestamps=True)
        text = [t for s in r.segments for t in s.tokens if t < tok.eot]
        seqs.append(np.array([prefix + text + [tok.eot]]))

    def log_probs(m: WhisperModel, i: int) -> np.ndarray:
        dec = m.model.decoder
        h = dec(seqs[i][:, :-1], dec.cross_kv(m.model.encoder(mels[i])), KVCache.empty(cfg, 1))
        z = dec.logits(h[0])[len(prefix) - 1 :].astype(np.float64)
        z -= z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    ref = [log_probs(m16, i) for i in range(len(clips))]

    def score(m: WhisperModel) -> tuple[float, float, int]:
        kls, flips, n = 0.0, 0, 0
        for i, lp in enumerate(ref):
            lq = log_probs(m, i)
            kls += float((np.exp(lp) * (lp - lq)).sum())
            flips += int((lp.argmax(-1) != lq.argmax(-1)).sum())
            n += len(lp)
        return kls / n, flips / n, n

    src = load_source(hub.source_dirs(f"whisper-{model}"))
    calib, raw = _statistics(src)
    print(f"{model}: {len(clips)} held-out clips, {sum(len(r) for r in ref)} token positions")
    print("| model | weights | rule | mean KL from f16 (nats) | top token differs |")
    print("|---|---|---|---|---|")
    for wtype in wtypes:
        for rule in rules:
            m = copy.copy(m16)
            m.model = copy.copy(m16.model)
            enc = m.model.encoder = copy.copy(m16.model.encoder)
            enc.blocks = [copy.copy(b) for b in enc.blocks]
            for i, blk in enumerate(enc.blocks):
                if layers and str(i) not in layers.split(","):
                    continue
                blk.mlp = copy.copy(blk.mlp)
                for j, attr in ((0, "fc1"), (2, "fc2")):
                    n = f"encoder.blocks.{i}.mlp.{j}.weight"
                    q = _quantized(src.tensors[n], wtype, _rule_importance(rule, raw[n], calib[n]))
                    setattr(blk.mlp, attr, Linear(q, getattr(blk.mlp, attr).bias))
            kl, flip, _ = score(m)
            which = f"encoder MLPs {wtype}" + (f" (layers {layers})" if layers else "")
            print(f"| {model} | {which} | {rule} | {kl:.5f} | {100 * flip:.2f}% |", flush=True)
    for f in files:
        kl, flip, _ = score(WhisperModel.from_gguf(f))
        print(
            f"| {model} | file {Path(f).name} | as stored | {kl:.5f} | {100 * flip:.2f}% |",
            flush=True,
        )


def _statistics(src) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The converter's calibration statistics, shrink(H) = H / mean diag + I, and H / mean diag."""
    from npasr.models.whisper.calibrate import encoder_mlp_importance

    calib = encoder_mlp_importance(src, full=True)
    raw = {n: h - np.eye(len(h), dtype=h.dtype) for n, h in calib.items()}
    for h in raw.values():  # rounding may leave a dead channel at -1e-8
        np.fill_diagonal(h, np.maximum(np.diag(h), 0.0))
    return calib, raw


def _quantized(w: np.ndarray, wtype: str, imp: np.ndarray | None):
    """w stored as a `wtype` file's encoder MLP is (the converter's own type rule, so Q5_0 where
    a Q4_K row would be narrower than 256), quantized with importance imp."""
    import re

    from npasr.io.weights import storage_for
    from npasr.nn.quant import QTensor

    never = re.compile(r"$^")
    return QTensor.from_raw(storage_for("w", w, wtype, never, importance=lambda _: imp))


def _rule_importance(rule: str, raw: np.ndarray, calib: np.ndarray) -> np.ndarray | None:
    """importance for `quantize` under a rule name (module docstring); raw = H / mean diag."""
    from npasr.models.whisper.calibrate import shrink

    if rule.startswith("gptq:"):  # gptq:A, the second moment mixed with A * I
        return raw + float(rule[5:]) * np.eye(len(raw))
    rules = {"plain": None, "diag": shrink(np.diag(raw).copy()), "gptq": calib, "gptq-raw": raw}
    return rules[rule]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="tiny.en,base")
    ap.add_argument("--types", default="q4_0,q4_k")
    ap.add_argument("--rules", default="plain,diag,gptq,gptq-raw")
    ap.add_argument("--kl", action="store_true", help="decoder divergence from f16 instead")
    ap.add_argument("--files", default="", help="with --kl: GGUF files to score too")
    ap.add_argument("--layers", default="", help="with --kl: quantize only these encoder layers")
    args = ap.parse_args()
    if args.kl:
        for model in args.models.split(","):
            files = [f for f in args.files.split(",") if f and model in Path(f).name]
            rules = [r for r in args.rules.split(",") if r]  # --rules "": the files alone
            kl_table(model, args.types.split(","), rules, files, args.layers)
        return

    from npasr import hub
    from npasr.models.whisper.calibrate import encoder_mlp_importance
    from npasr.models.whisper.weights import load_source

    held = held_out_clips()
    print(f"load average {C.loadavg()}; {len(held)} held-out windows")
    print("| model | type | rule | mean rel. output error | per matrix (fc1, fc2 by layer) |")
    print("|---|---|---|---|---|")
    for model in args.models.split(","):
        src = load_source(hub.source_dirs(f"whisper-{model}"))
        t0 = time.perf_counter()
        calib, raw = _statistics(src)
        test = encoder_mlp_importance(src, clips=held, full=True)
        print(f"<!-- {model}: statistics {time.perf_counter() - t0:.1f} s -->")
        names = sorted(calib, key=lambda n: (int(n.split(".")[2]), n))
        for wtype in args.types.split(","):
            for rule in args.rules.split(","):
                errs = []
                t0 = time.perf_counter()
                for n in names:
                    w = np.asarray(src.tensors[n], np.float32)
                    q = _quantized(w, wtype, _rule_importance(rule, raw[n], calib[n]))
                    d = q.dequantize().astype(np.float64) - w
                    h, w64 = test[n], w.astype(np.float64)
                    errs.append(
                        np.einsum("ij,jk,ik->", d, h, d) / np.einsum("ij,jk,ik->", w64, h, w64)
                    )
                per = " ".join(f"{100 * e:.2f}" for e in errs)
                print(
                    f"| {model} | {wtype} | {rule} | {100 * np.mean(errs):.3f}% | {per} |"
                    f"  <!-- {time.perf_counter() - t0:.1f} s -->",
                    flush=True,
                )


if __name__ == "__main__":
    main()
