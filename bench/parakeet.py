"""Parakeet (NeMo FastConformer, TDT or CTC head) end to end on 60 s of real speech, 2 threads:
npasr Q8_0 / F16 (/ F32) against NeMo 3.0.0 on CPU (torch fp32) and against onnx-asr (ONNX Runtime,
the engine of parakeet-rs and sherpa-onnx) on NeMo's own ONNX export of the same weights, fp32 and
dynamic int8. Every engine runs in its own subprocess, one after the other, in the same run.

Each child loads its model ("load s"), transcribes the file once as warm-up ("first s": Numba
JIT, torch / ORT first-call costs), then times `--repeats` transcriptions of the 60 s WAV file,
end to end from the path to the text, and reports the median (and every wall), its CPU seconds,
its own peak RSS (VmHWM: `_common.peak_rss_mib`) and the token ids of its transcript. What each
engine's "transcribe" is:
  npasr-*     `npasr.load_model(GGUF, threads=2).transcribe(path).text` (GGUF by `npasr convert`)
  nemo        `ASRModel.restore_from(.nemo).transcribe([path], batch_size=1, num_workers=0,
              return_hypotheses=True)` (NeMo's defaults otherwise: greedy_batch decoding; no
              DataLoader worker process, so the child's RSS and CPU time are all of it),
              torch.set_num_threads(2)
  nemo-nomkldnn  (opt-in) the same with torch.backends.mkldnn.enabled = False: a check that
              oneDNN's LSTM does not slow NeMo's decoding (no difference on a quiet machine,
              RESULTS.md); x NeMo uses the faster NeMo row present
  onnx-fp32   `onnx_asr.load_model("nemo-conformer-tdt" | "nemo-conformer-ctc", DIR,
  onnx-int8   quantization=None | "int8", sess_options=intra_op 2 / inter_op 1,
              providers=["CPUExecutionProvider"]).recognize(path)` (onnx-asr's NumPy mel)
The ONNX folder comes from bench/onnx_export.py (NeMo's `model.export`, then onnxruntime's
`quantize_dynamic`), made on the first run if missing.

Agreement: each engine's token ids against NeMo's (1 - Levenshtein / max length, and whether the
texts are equal). With random weights the texts are gibberish, but f32 / f16 should equal NeMo's.

    python bench/parakeet.py --nemo /tmp/parakeet_real/parakeet_real_tdt.nemo \\
        --json bench/out/parakeet_tdt.json
    python bench/parakeet.py --nemo M.nemo --engines npasr-q8_0,onnx-int8 --repeats 3

Environments: --nemo-python (NeMo 3.0.0, torch 2.13 CPU; shared/REFERENCE-SETUP.md §6),
--onnx-python (onnx, onnxruntime, onnx-asr from PyPI). The numbers go to bench/RESULTS.md.
"""

# ruff: noqa: PLC0415 (each child imports only the engine it times)

from __future__ import annotations

import _blas_env  # noqa: F401  (first: before NumPy loads OpenBLAS)

# isort: split

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

OUT = C.REPO / "bench" / "out"
HERE = Path(__file__).resolve().parent
CLIPS = [
    "jfk.flac",
    "en_psphinx-austen-0870.wav",
    "en_ljspeech-LJ001-0001.wav",
    "en_hard-noisy-funasr-noise_en.wav",
    "en_psphinx-austen-0890.wav",
    "en_hard-long-noise1-en.wav",
]
SECONDS, THREADS = 60, 2
DEFAULT_NEMO = Path("/tmp/parakeet_real/parakeet_real_tdt.nemo")
ENGINES = (
    "npasr-q8_0",
    "npasr-f16",
    "npasr-f32",
    "nemo",
    "nemo-nomkldnn",
    "onnx-fp32",
    "onnx-int8",
)
NEMOS = ("nemo", "nemo-nomkldnn")
DEFAULT_ENGINES = "nemo,onnx-fp32,onnx-int8,npasr-f32,npasr-f16,npasr-q8_0"


def build_audio(path: Path) -> Path:
    """The English clips in CLIPS order (jfk.flac resampled by npasr's loader), concatenated and
    cut at 60.0 s (the last one, 88 s long, is cut), written as 16 kHz mono PCM16."""
    import soundfile as sf

    x = np.concatenate([C.load_audio_16k(C.DATA / c) for c in CLIPS])[: SECONDS * C.SR]
    assert x.shape[0] == SECONDS * C.SR
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, C.SR, subtype="PCM_16")
    return path


# --- children -------------------------------------------------------------------------------------


def _npasr(spec: dict):
    import npasr

    npasr.set_num_threads(THREADS)
    m = npasr.load_model(spec["gguf"], threads=THREADS)

    def run(path: str) -> str:
        return m.transcribe(path).text

    def tokens(path: str) -> list[int]:
        from npasr.audio.io import load_audio

        return [int(t) for t in m.decode(m.encode(load_audio(path))).tokens]

    def split(path: str) -> dict:
        """Median s of the stages of `transcribe`: load_audio, encode (mel + encoder), decode."""
        from npasr.audio.io import load_audio

        times: dict[str, list[float]] = {"audio_s": [], "encode_s": [], "decode_s": []}
        for _ in range(3):
            t0 = time.perf_counter()
            x = load_audio(path)
            t1 = time.perf_counter()
            enc = m.encode(x)
            t2 = time.perf_counter()
            m.decode(enc)
            t3 = time.perf_counter()
            for k, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                times[k].append(dt)
        return {k: statistics.median(v) for k, v in times.items()}

    run.split = split
    return run, tokens


def _nemo(spec: dict):
    import logging

    import torch

    torch.set_num_threads(THREADS)
    if spec["engine"] == "nemo-nomkldnn":  # torch's oneDNN LSTM costs ~30 ms a step at batch 1
        torch.backends.mkldnn.enabled = False
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.ERROR)
    from nemo.collections.asr.models import ASRModel

    model = ASRModel.restore_from(spec["nemo"], map_location="cpu").eval()
    if "validation_ds" not in model.cfg:  # the random-weight configs have no datasets; a path
        from omegaconf import open_dict  # input reads validation_ds.use_start_end_token

        with open_dict(model.cfg):
            model.cfg.validation_ds = {"use_start_end_token": False}  # real v3's value
    last: dict = {}

    def run(path: str) -> str:
        with torch.inference_mode():
            out = model.transcribe(
                [path], batch_size=1, num_workers=0, return_hypotheses=True, verbose=False
            )
        hyp = out[0]
        if isinstance(hyp, tuple | list):  # (best, all) in some NeMo versions
            hyp = hyp[0]
        last["tokens"] = [int(t) for t in hyp.y_sequence]
        return hyp.text

    def tokens(path: str) -> list[int]:
        if "tokens" not in last:
            run(path)
        return last["tokens"]

    return run, tokens


def _onnx(spec: dict):
    import onnx_asr
    import onnxruntime as rt

    so = rt.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    folder = Path(spec["onnx_dir"])
    kind = json.loads((folder / "config.json").read_text())["model_type"]
    quant = "int8" if spec["engine"] == "onnx-int8" else None
    m = onnx_asr.load_model(
        kind, folder, quantization=quant, sess_options=so, providers=["CPUExecutionProvider"]
    )
    ids = {}
    for line in (folder / "vocab.txt").read_text(encoding="utf-8").splitlines():
        tok, i = line.split(" ")
        ids[tok.replace("\u2581", " ")] = int(i)  # as onnx-asr reads it

    def tokens(path: str) -> list[int]:
        return [ids[t] for t in m.with_timestamps().recognize(path).tokens]

    return m.recognize, tokens


def child(spec: dict) -> None:
    path = spec["audio"]
    t0 = time.perf_counter()
    engine = spec["engine"]
    run, tokens = (
        _npasr if engine.startswith("npasr-") else _nemo if engine.startswith("nemo") else _onnx
    )(spec)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    run(path)  # warm-up: numba JIT / torch, ORT first-call costs
    first_s = time.perf_counter() - t0
    if spec.get("profile"):  # one more run under cProfile, top `profile` lines by cumtime
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.runcall(run, path)
        wall = time.perf_counter() - t0
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumtime").print_stats(spec["profile"])
        C.emit({"profile": buf.getvalue(), "wall_s": wall, "load1": C.loadavg().split()[0]})
        return
    res: dict = {"load_s": load_s, "first_s": first_s, "load1": C.loadavg().split()[0]}
    walls, cpus, text = [], [], ""
    for _ in range(spec["repeats"]):
        c0, t0 = C.cpu_seconds(), time.perf_counter()
        text = run(path)
        walls.append(time.perf_counter() - t0)
        cpus.append(C.cpu_seconds() - c0)
    res["load1_end"] = C.loadavg().split()[0]
    if hasattr(run, "split"):  # after the timed runs (npasr): where its time goes
        res["split"] = run.split(path)
    res.update(
        median_s=statistics.median(walls),
        walls=walls,
        cpu_s=statistics.median(cpus),
        text=text,
        tokens=tokens(path),
        peak_rss_mib=C.peak_rss_mib(),
    )
    C.emit(res)


# --- parent ---------------------------------------------------------------------------------------


def spawn(python: str, spec: dict, timeout: float = 1800) -> dict:
    cmd = [python, __file__, "--child", json.dumps(spec)]
    env = C.child_env(THREADS, python == sys.executable)
    try:
        p = subprocess.run(
            cmd, capture_output=True, text=True, env=env, cwd=C.REPO, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    for line in p.stdout.splitlines():
        if line.startswith("@@RESULT "):
            return json.loads(line[9:])
    return {"error": f"exit {p.returncode}: {p.stderr[-1500:]}"}


def run_cmd(cmd: list[str], log: list[str]) -> None:
    log.append(shlex.join(cmd))
    print("+ " + log[-1], file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=C.REPO, env=C.child_env(THREADS, False))


def prepare(args, nemo: Path, engines: list[str], log: list[str]) -> dict:
    """GGUFs (npasr convert) and the ONNX folder (onnx_export.py), made when missing."""
    paths: dict = {}
    for e in engines:
        if e.startswith("npasr-"):
            wtype = e.split("-", 1)[1]
            gguf = OUT / f"{nemo.stem}_{wtype}.gguf"
            if C.stale(gguf, nemo, C.REPO / "npasr" / "models" / "parakeet" / "weights.py"):
                run_cmd(
                    [
                        sys.executable,
                        "-m",
                        "npasr",
                        "convert",
                        str(nemo),
                        "-o",
                        str(gguf),
                        "--type",
                        wtype,
                    ],
                    log,
                )
            paths[e] = {"gguf": str(gguf)}
    if any(e.startswith("onnx-") for e in engines):
        folder = args.onnx_root / f"onnx_{nemo.stem}"
        if not (folder / "config.json").is_file():
            run_cmd(
                [args.nemo_python, str(HERE / "onnx_export.py"), "nemo", str(nemo), str(folder)],
                log,
            )
        if not any(folder.glob("*.int8.onnx")):
            run_cmd([args.onnx_python, str(HERE / "onnx_export.py"), "quantize", str(folder)], log)
        for e in engines:
            if e.startswith("onnx-"):
                paths[e] = {"onnx_dir": str(folder)}
    return paths


def agreement(rows: dict) -> None:
    r = next((rows[e] for e in NEMOS if "tokens" in rows.get(e, {})), None)
    if r is None:
        return
    for row in rows.values():
        if "tokens" in row:
            a, b = row["tokens"], r["tokens"]
            row["token_agreement"] = 1 - C.word_errors(a, b) / max(len(a), len(b), 1)
            row["same_text"] = row["text"] == r["text"]
            row["same_tokens"] = a == b


def report(title: str, rows: dict) -> None:
    nemos = [rows[e]["median_s"] for e in NEMOS if "median_s" in rows.get(e, {})]
    nemo = min(nemos) if nemos else None  # the faster NeMo
    ort8 = rows.get("onnx-int8", {}).get("median_s")
    print(f"\n{title}; x NeMo: against the faster NeMo row")
    print(
        "| engine | wall s (median) | x realtime | x NeMo | x onnx-int8 | CPU s | load s "
        "| first s | peak RSS MiB | tokens | agree vs NeMo | same text | load1 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    splits = []
    for engine, r in rows.items():
        if "error" in r:
            print(f"| {engine} | error: {r['error'][-300:]!r} |")
            continue
        t = r["median_s"]
        rel = f"{t / nemo:.2f}" if nemo else "-"
        rel8 = f"{t / ort8:.2f}" if ort8 else "-"
        agree = f"{r['token_agreement']:.3f}" if "token_agreement" in r else "-"
        print(
            f"| {engine} | {t:.2f} | {SECONDS / t:.1f} | {rel} | {rel8} | {r['cpu_s']:.2f} "
            f"| {r['load_s']:.1f} | {r['first_s']:.2f} | {r['peak_rss_mib']:.0f} "
            f"| {len(r['tokens'])} | {agree} | {r.get('same_text', '-')} "
            f"| {r['load1']}-{r['load1_end']} |"
        )
        if "split" in r:
            sp = r["split"]
            splits.append(
                f"{engine}: audio {sp['audio_s']:.2f} + encode {sp['encode_s']:.2f} + "
                f"decode {sp['decode_s']:.2f} s ({len(r['tokens'])} tokens)"
            )
    for line in splits:
        print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument(
        "--nemo",
        type=Path,
        action="append",
        help="a .nemo file (repeatable); default: " + str(DEFAULT_NEMO),
    )
    ap.add_argument("--engines", default=DEFAULT_ENGINES, help=f"comma list of {ENGINES}")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--nemo-python", default="/tmp/venv_nemo/bin/python")
    ap.add_argument("--onnx-python", default="/tmp/venv_onnx/bin/python")
    ap.add_argument(
        "--onnx-root",
        type=Path,
        default=None,
        help="where the ONNX folders go (default: next to the .nemo)",
    )
    ap.add_argument(
        "--max-load",
        type=float,
        default=0.7,
        help="before each engine, wait until the 1-min load average is <= this",
    )
    ap.add_argument("--max-wait", type=float, default=1200, help="at most this long (s)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="instead of timing: after the warm-up, one run of each engine under "
        "cProfile, its top N lines by cumulative time",
    )
    args = ap.parse_args()
    if args.child:
        return child(json.loads(args.child))
    audio = OUT / "parakeet60.wav"
    if not audio.is_file():
        build_audio(audio)
    engines = args.engines.split(",")
    assert all(e in ENGINES for e in engines), engines
    log = [shlex.join([sys.executable, *sys.argv])]
    results = {}
    for nemo in args.nemo or [DEFAULT_NEMO]:
        args.onnx_root = args.onnx_root or nemo.parent
        paths = prepare(args, nemo, engines, log)
        rows = {}
        for engine in engines:
            load = C.wait_for_quiet(args.max_load, args.max_wait)
            spec = {
                "engine": engine,
                "audio": str(audio),
                "repeats": args.repeats,
                "nemo": str(nemo),
                "profile": args.profile,
                **paths.get(engine, {}),
            }
            python = sys.executable
            if engine.startswith(("nemo", "onnx-")):
                python = args.nemo_python if engine in NEMOS else args.onnx_python
            rows[engine] = {**spawn(python, spec), "loadavg_before": load}
            r = rows[engine]
            if "profile" in r:
                print(
                    f"{engine}: {r['wall_s']:.2f} s under cProfile, load1 {r['load1']}\n"
                    f"{r['profile']}"
                )
                continue
            print(
                engine,
                json.dumps({k: v for k, v in r.items() if k not in ("tokens", "text")}),
                file=sys.stderr,
                flush=True,
            )
        if args.profile:
            continue
        agreement(rows)
        report(f"{nemo.name}: {SECONDS} s audio ({audio.name}), {THREADS} threads", rows)
        results[nemo.name] = rows
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        facts = {**C.machine_facts(), "commands": log, "versions": versions(args)}
        args.json.write_text(json.dumps({"machine": facts, "results": results}, indent=1) + "\n")


def versions(args) -> dict:
    """Versions of the peers, asked of their own interpreters."""
    out = {}
    probes = {
        args.nemo_python: ["nemo_toolkit", "torch", "onnx"],
        args.onnx_python: ["onnxruntime", "onnx-asr", "onnx", "numpy"],
    }
    for py, dists in probes.items():
        code = (
            "import importlib.metadata as m, json, sys; print(json.dumps({d: m.version(d) "
            f"for d in {dists!r}}}))"
        )
        p = subprocess.run([py, "-c", code], capture_output=True, text=True, check=False)
        out[py] = json.loads(p.stdout) if p.returncode == 0 else p.stderr[-300:]
    return out


if __name__ == "__main__":
    main()
