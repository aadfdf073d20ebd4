"""GigaAM v3 CTC at real size (d=768, 16 layers; random weights): npasr Q8_0 and F16 against the
official PyTorch code on CPU, 60 s of real speech, 2 threads, every engine in its own subprocess.

The official `transcribe` refuses audio over 25 s and its `transcribe_longform` needs a pyannote
VAD (gated weights, not installable here), so every engine is timed on the same 3 x 20 s chunks
(official: `model.forward` + `model._decode` per chunk, exactly `transcribe` minus file loading;
npasr: `transcribe` per chunk). npasr is also timed on the whole 60 s in one call (24 s windows
overlapping by 4 s: 68 s of audio through the encoder).

Run (about 3 minutes; the random-weight checkpoint comes from scripts/make_goldens_gigaam.py):
    python bench/gigaam.py --ckpt /work/gigaam_real/v3_ctc.ckpt \\
        --ref-python /work/venv_gigaam/bin/python --json bench/out/gigaam.json
"""

# ruff: noqa: PLC0415 (each child imports only the engine it times)

from __future__ import annotations

import _blas_env  # noqa: F401  (first: before NumPy loads OpenBLAS)

# isort: split

import argparse
import json
import os
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
    for mode, fn in modes.items():
        walls = []
        for _ in range(spec["repeats"]):
            t0 = time.perf_counter()
            text = fn()
            walls.append(time.perf_counter() - t0)
        res[mode] = {"min_s": min(walls), "walls": walls, "chars": len(text)}
    res["peak_rss_mib"] = C.peak_rss_mib()
    C.emit(res)


# --- parent ---------------------------------------------------------------------------------------


def _env(npasr_child: bool) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[k] = str(THREADS)
    if npasr_child:
        # what `import npasr` sets when it loads before NumPy (as in the CLI); the child imports
        # NumPy first, so pass them in
        env.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(C.REPO), env.get("PYTHONPATH")]))
    return env


def spawn(python: str, spec: dict) -> dict:
    cmd = [python, __file__, "--child", json.dumps(spec)]
    env = _env(python == sys.executable)
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=C.REPO, check=False)
    for line in p.stdout.splitlines():
        if line.startswith("@@RESULT "):
            return json.loads(line[9:])
    return {"error": f"exit {p.returncode}: {p.stderr[-800:]}"}


def wait_for_quiet(limit: float = 1.5, tries: int = 6, pause: float = 30.0) -> str:
    for _ in range(tries):
        load = C.loadavg()
        if float(load.split()[0]) <= limit:
            return load
        print(f"loadavg {load} > {limit}: waiting {pause:.0f} s", file=sys.stderr, flush=True)
        time.sleep(pause)
    return C.loadavg()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", type=Path, default=Path("/work/gigaam_real/v3_ctc.ckpt"))
    ap.add_argument("--ref-python", default="/work/venv_gigaam/bin/python")
    ap.add_argument("--engines", default="npasr-q8_0,npasr-f16,official")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.child:
        return child(json.loads(args.child))
    audio = OUT / "gigaam60.wav"
    if not audio.is_file():
        build_audio(audio)
    from npasr.convert import convert

    load_start = wait_for_quiet()
    rows = {}
    for engine in args.engines.split(","):
        spec = {"engine": engine, "audio": str(audio), "repeats": args.repeats,
                "ckpt": str(args.ckpt)}  # fmt: skip
        python = args.ref_python if engine == "official" else sys.executable
        if engine.startswith("npasr-"):
            wtype = engine.split("-", 1)[1]
            gguf = OUT / f"gigaam_{args.ckpt.stem}_{wtype}.gguf"
            if not gguf.is_file():
                convert(args.ckpt, gguf, wtype=wtype)
            spec["gguf"] = str(gguf)
        rows[engine] = spawn(python, spec)
        print(engine, json.dumps(rows[engine]), file=sys.stderr, flush=True)
    report(rows, load_start, C.loadavg())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        facts = {**C.machine_facts(), "loadavg_start": load_start, "loadavg_end": C.loadavg()}
        args.json.write_text(json.dumps({"machine": facts, "results": rows}, indent=1) + "\n")


def report(rows: dict[str, dict], load_start: str, load_end: str) -> None:
    ref = rows.get("official", {}).get("3x20s", {}).get("min_s")
    print(f"GigaAM v3 CTC real size, {SECONDS} s audio, {THREADS} threads; "
          f"loadavg start {load_start}, end {load_end}")  # fmt: skip
    print("| engine | 3 x 20 s (min) | x official | 60 s one call (min) | load s | first call s "
          "| peak RSS MiB | load1 in child |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for engine, r in rows.items():
        if "error" in r:
            print(f"| {engine} | error: {r['error'][:200]} |")
            continue
        t = r["3x20s"]["min_s"]
        rel = f"{t / ref:.2f}" if ref else "-"
        one = f"{r['60s']['min_s']:.2f}" if "60s" in r else "n/a (refuses > 25 s)"
        print(f"| {engine} | {t:.2f} | {rel} | {one} | {r['load_s']:.1f} | {r['first_s']:.2f} "
              f"| {r['peak_rss_mib']:.0f} | {r['load1']} |")  # fmt: skip


if __name__ == "__main__":
    main()
