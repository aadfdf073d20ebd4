"""GigaAM v3 CTC at real size (d=768, 16 layers; random weights): npasr Q8_0 and F16 against the
official PyTorch code on CPU, and against onnx-asr (ONNX Runtime, the engine of sherpa-onnx and
parakeet-rs) on the official code's own ONNX export (`model.to_onnx`), fp32 and dynamic int8;
60 s of real speech, 2 threads, every engine in its own subprocess.

The official `transcribe` refuses audio over 25 s and its `transcribe_longform` needs a pyannote
VAD (gated weights, not installable here), so every engine is timed on the same 3 x 20 s chunks
(official: `model.forward` + `model._decode` per chunk, exactly `transcribe` minus file loading;
npasr: `transcribe` per chunk; onnx-asr: `recognize` per chunk). npasr is also timed on the whole
60 s in one call (24 s windows overlapping by 4 s: 68 s of audio through the encoder), onnx-asr
too (one 60 s pass: it has no length limit). Each child warms up on the first chunk, then times
`--repeats` runs per mode (min and median reported).

onnx-asr: `onnx_asr.load_model("gigaam-v3-ctc", DIR, quantization=None | "int8",
sess_options=intra_op 2 / inter_op 1, providers=["CPUExecutionProvider"]).recognize(x)`, DIR
made by bench/onnx_export.py (GigaAM's `to_onnx`, then onnxruntime's `quantize_dynamic`) on the
first run if missing.

Run (about 5 minutes; the random-weight checkpoint comes from scripts/make_goldens_gigaam.py):
    python bench/gigaam.py --ckpt /work/gigaam_real/v3_ctc.ckpt \\
        --ref-python /work/venv_gigaam/bin/python --onnx-python /tmp/venv_onnx/bin/python \\
        --json bench/out/gigaam.json
"""

# ruff: noqa: PLC0415 (each child imports only the engine it times)

from __future__ import annotations

import _blas_env  # noqa: F401  (first: before NumPy loads OpenBLAS)

# isort: split

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

OUT = C.REPO / "bench" / "out"
CLIPS = ["ru_sherpa-qwen3-ru1.wav", "ru_pisets-neural-nets.wav", "en_psphinx-austen-0870.wav",
         "en_psphinx-austen-0890.wav", "en_ljspeech-LJ001-0001.wav",
         "en_hard-noisy-funasr-noise_en.wav", "en_hard-long-noise1-en.wav"]  # fmt: skip
SECONDS, CHUNK_S, THREADS = 60, 20, 2


def build_audio(path: Path) -> Path:
    """The clips in CLIPS order, concatenated and cut at 60.0 s (the last one is 88 s long)."""
    import soundfile as sf

    x = np.concatenate([C.load_audio_16k(C.DATA / c) for c in CLIPS])[: SECONDS * C.SR]
    assert x.shape[0] == SECONDS * C.SR
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, C.SR, subtype="PCM_16")
    return path


# --- children -------------------------------------------------------------------------------------


def _engine(spec: dict):
    """(run(audio) -> text) for the engine, after loading its model."""
    if spec["engine"] == "official":
        import torch

        torch.set_num_threads(THREADS)
        here = Path(__file__).resolve().parent  # holds this gigaam.py: not the package
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
        import gigaam

        ckpt = Path(spec["ckpt"])
        gigaam._MODEL_HASHES[ckpt.stem] = gigaam.hash_path(str(ckpt))  # local random weights
        model = gigaam.load_model(ckpt.stem, fp16_encoder=False, device="cpu",
                                  download_root=str(ckpt.parent))  # fmt: skip

        def run(x: np.ndarray) -> str:
            wav = torch.from_numpy(x)[None]
            length = torch.full([1], wav.shape[-1])
            with torch.inference_mode():
                enc, enc_len = model.forward(wav, length)
                return model._decode(enc, enc_len, length)[0][0]

        return run
    if spec["engine"].startswith("onnx-"):
        import onnx_asr
        import onnxruntime as rt

        so = rt.SessionOptions()
        so.intra_op_num_threads = THREADS
        so.inter_op_num_threads = 1
        quant = "int8" if spec["engine"] == "onnx-int8" else None
        name = f"gigaam-{Path(spec['ckpt']).stem.replace('_', '-')}"  # gigaam-v3-ctc
        m = onnx_asr.load_model(name, spec["onnx_dir"], quantization=quant, sess_options=so,
                                providers=["CPUExecutionProvider"])  # fmt: skip
        return lambda x: m.recognize(x, sample_rate=C.SR)
    import npasr

    npasr.set_num_threads(THREADS)
    from npasr.models.gigaam.asr import GigaAMModel

    m = GigaAMModel.from_gguf(spec["gguf"])
    return lambda x: m.transcribe(x).text


def child(spec: dict) -> None:
    import soundfile as sf

    audio, _ = sf.read(spec["audio"], dtype="float32")
    t0 = time.perf_counter()
    run = _engine(spec)
    load_s = time.perf_counter() - t0
    chunks = [audio[i : i + CHUNK_S * C.SR] for i in range(0, audio.shape[0], CHUNK_S * C.SR)]
    t0 = time.perf_counter()
    run(chunks[0])  # warm-up: numba JIT / torch first-call costs
    first_s = time.perf_counter() - t0
    res: dict = {"load_s": load_s, "first_s": first_s, "load1": C.loadavg().split()[0]}
    modes = {"3x20s": lambda: " ".join(run(c) for c in chunks)}
    if spec["engine"] != "official":
        modes["60s"] = lambda: run(audio)
    res["text_3x20s"] = modes["3x20s"]()  # untimed: the transcript, for the agreement check
    for mode, fn in modes.items():
        walls = []
        for _ in range(spec["repeats"]):
            t0 = time.perf_counter()
            text = fn()
            walls.append(time.perf_counter() - t0)
        res[mode] = {"min_s": min(walls), "median_s": float(np.median(walls)), "walls": walls,
                     "chars": len(text)}  # fmt: skip
    res["peak_rss_mib"] = C.peak_rss_mib()
    res["load1_end"] = C.loadavg().split()[0]
    C.emit(res)


# --- parent ---------------------------------------------------------------------------------------


def spawn(python: str, spec: dict) -> dict:
    cmd = [python, __file__, "--child", json.dumps(spec)]
    env = C.child_env(THREADS, python == sys.executable)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=C.REPO, check=False)
    for line in p.stdout.splitlines():
        if line.startswith("@@RESULT "):
            return json.loads(line[9:])
    return {"error": f"exit {p.returncode}: {p.stderr[-800:]}"}


def onnx_dir(args) -> Path:
    """The official export and its int8 quantization (bench/onnx_export.py), made if missing."""
    folder = args.ckpt.parent / f"onnx_{args.ckpt.stem}"
    here = Path(__file__).resolve().parent
    steps = []
    if not (folder / "config.json").is_file():
        steps.append([args.ref_python, str(here / "onnx_export.py"), "gigaam", str(args.ckpt),
                      str(folder)])  # fmt: skip
    if not any(folder.glob("*.int8.onnx")):
        steps.append([args.onnx_python, str(here / "onnx_export.py"), "quantize", str(folder)])
    for cmd in steps:
        print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, cwd=C.REPO, env=C.child_env(THREADS, False))
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", type=Path, default=Path("/work/gigaam_real/v3_ctc.ckpt"))
    ap.add_argument("--ref-python", default="/work/venv_gigaam/bin/python")
    ap.add_argument("--onnx-python", default="/tmp/venv_onnx/bin/python")
    ap.add_argument("--engines", default="official,onnx-fp32,onnx-int8,npasr-f16,npasr-q8_0")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-load", type=float, default=0.7,
                    help="wait before each engine until the 1-min load is <= this")  # fmt: skip
    ap.add_argument("--max-wait", type=float, default=1200, help="at most this long (s)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.child:
        return child(json.loads(args.child))
    audio = OUT / "gigaam60.wav"
    if not audio.is_file():
        build_audio(audio)
    from npasr.convert import convert

    engines = args.engines.split(",")
    folder = onnx_dir(args) if any(e.startswith("onnx-") for e in engines) else None
    load_start = C.loadavg()
    rows = {}
    for engine in engines:
        load = C.wait_for_quiet(args.max_load, args.max_wait)
        spec = {"engine": engine, "audio": str(audio), "repeats": args.repeats,
                "ckpt": str(args.ckpt), "onnx_dir": str(folder)}  # fmt: skip
        python = sys.executable
        if engine == "official":
            python = args.ref_python
        elif engine.startswith("onnx-"):
            python = args.onnx_python
        if engine.startswith("npasr-"):
            wtype = engine.split("-", 1)[1]
            gguf = OUT / f"gigaam_{args.ckpt.stem}_{wtype}.gguf"
            if C.stale(gguf, args.ckpt, C.REPO / "npasr" / "models" / "gigaam" / "weights.py"):
                convert(args.ckpt, gguf, wtype=wtype)
            spec["gguf"] = str(gguf)
        rows[engine] = {**spawn(python, spec), "loadavg_before": load}
        print(engine, json.dumps(rows[engine]), file=sys.stderr, flush=True)
    ref_text = rows.get("official", {}).get("text_3x20s")
    for r in rows.values():
        if ref_text is not None and "text_3x20s" in r:
            r["same_text_as_official"] = r["text_3x20s"] == ref_text
    report(rows, load_start, C.loadavg())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        facts = {**C.machine_facts(), "loadavg_start": load_start, "loadavg_end": C.loadavg()}
        args.json.write_text(json.dumps({"machine": facts, "results": rows}, indent=1) + "\n")


def report(rows: dict[str, dict], load_start: str, load_end: str) -> None:
    def med(engine: str, mode: str) -> float | None:
        return rows.get(engine, {}).get(mode, {}).get("median_s")

    ref, ort8 = med("official", "3x20s"), med("onnx-int8", "3x20s")
    print(f"GigaAM v3 CTC real size, {SECONDS} s audio, {THREADS} threads; "
          f"loadavg start {load_start}, end {load_end}; medians (min)")  # fmt: skip
    print("| engine | 3 x 20 s s | x official | x onnx-int8 | 60 s one call s | x onnx-int8 "
          "| load s | first call s | peak RSS MiB | same text | load1 in child |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for engine, r in rows.items():
        if "error" in r:
            print(f"| {engine} | error: {r['error'][-300:]!r} |")
            continue
        t = r["3x20s"]["median_s"]
        rel = f"{t / ref:.2f}" if ref else "-"
        rel8 = f"{t / ort8:.2f}" if ort8 else "-"
        one, rel8_one = "n/a (refuses > 25 s)", "-"
        if "60s" in r:
            one = f"{r['60s']['median_s']:.2f} ({r['60s']['min_s']:.2f})"
            o8 = med("onnx-int8", "60s")
            rel8_one = f"{r['60s']['median_s'] / o8:.2f}" if o8 else "-"
        print(f"| {engine} | {t:.2f} ({r['3x20s']['min_s']:.2f}) | {rel} | {rel8} | {one} "
              f"| {rel8_one} | {r['load_s']:.1f} | {r['first_s']:.2f} | {r['peak_rss_mib']:.0f} "
              f"| {r.get('same_text_as_official', '-')} "
              f"| {r['load1']}-{r.get('load1_end', '?')} |")  # fmt: skip


if __name__ == "__main__":
    main()
