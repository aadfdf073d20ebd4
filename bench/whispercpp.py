"""whisper.cpp on the end-to-end Whisper benchmark (jfk + the 5-minute file, tiny.en + base).

Runs the `whisper-cli` binary of a local whisper.cpp build, f16 and q8_0, on the same audio and
with the same decoding options as bench/whisper_e2e.py: language en, temperature 0 without
fallback (`-nf`), timestamps on, previous text as prompt (whisper.cpp's default `-mc -1`),
non-speech tokens suppressed like openai/faster-whisper's default `suppress_tokens=[-1]`
(`-sns`), greedy (`-bs 1 -bo 1`), 2 threads (`-t 2 -p 1`). Every run is its own process: one
untimed warm-up run per model file, then jfk best-of-2 and the 5-minute file once
(--repeats / --long-repeats). ggml's worker threads spin-wait at every graph barrier, so when
other jobs share the 2 cores a run can take many times longer (CPU s then balloons too): look
at load1 and the CPU s / wall s ratio before trusting a row, and prefer best-of-N.

Build (CPU only, no BLAS; tested at ggml-org/whisper.cpp 233fe1fc9b48a09e361d3594520838ca266537fe,
2026-08-22, ggml 0.21.0, gcc 12.2, OpenMP):

    git clone https://github.com/ggml-org/whisper.cpp /tmp/whisper.cpp   # outside this repo
    cd /tmp/whisper.cpp
    cmake -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_CUDA=OFF -DGGML_BLAS=OFF \
        -DGGML_OPENMP=ON -DWHISPER_BUILD_TESTS=OFF -DWHISPER_SDL2=OFF -DWHISPER_CURL=OFF
    cmake --build build -j2 --config Release --target whisper-cli whisper-quantize

Models: bench/whispercpp_model.py writes ggml-{model}-f16.bin from the openai-format checkpoint
made from npasr's GGUF (same weights as the npasr and openai rows); q8_0 comes from
`whisper-quantize`. Both are made on first use in --model-dir.

    python bench/whispercpp.py [--model-dir /tmp/whispercpp-models] [--models tiny.en,base]
        [--types f16,q8_0] [--beams 1] [--repeats 2] [--long-repeats 1] [--json OUT]
    python bench/whispercpp.py --report OUT            # re-print a saved run

Columns as in RESULTS.md's end-to-end table. "wall s" is the process wall time minus the model
load time whisper.cpp reports itself (the other engines' rows exclude model loading too);
"process s" is the whole process. "CPU s" (user + system) and "peak RSS" are GNU time's
(/usr/bin/time) for that process, so they include loading. The binary dir is $WHISPER_CPP_DIR
(default /tmp/whisper.cpp/build/bin).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import whispercpp_model  # noqa: E402

OUT = C.REPO / "bench" / "out"
BIN = Path(os.environ.get("WHISPER_CPP_DIR", "/tmp/whisper.cpp/build/bin"))
TIME = "/usr/bin/time"  # GNU time (apt-get install time)
BUILD_HELP = __doc__.split("Build ", 1)[1].split("Models:", 1)[0]


def binary(name: str) -> Path:
    p = BIN / name
    if not p.is_file():
        raise SystemExit(f"{p} not found (set WHISPER_CPP_DIR). Build {BUILD_HELP}")
    return p


def model_file(model: str, wtype: str, model_dir: Path) -> Path:
    f16 = model_dir / f"ggml-{model}-f16.bin"
    if not f16.exists():
        print(f"writing {f16}", file=sys.stderr, flush=True)
        whispercpp_model.convert(model, model_dir)
    if wtype == "f16":
        return f16
    out = model_dir / f"ggml-{model}-{wtype}.bin"
    if not out.exists():
        cmd = [str(binary("whisper-quantize")), str(f16), str(out), wtype]
        print("$ " + shlex.join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, capture_output=True)
    return out


def cli_command(model: Path, wav: Path, beam: int, threads: int, out_base: Path) -> list[str]:
    return [
        str(binary("whisper-cli")),
        "-m", str(model),
        "-f", str(wav),
        "-t", str(threads),
        "-p", "1",
        "-l", "en",
        "-bs", str(beam),
        "-bo", str(beam),
        "-nf",
        "-sns",
        "-oj",
        "-of", str(out_base),
    ]  # fmt: skip


def run_once(cmd: list[str], out_base: Path) -> dict:
    """One whisper-cli process: wall, CPU and peak RSS, self-reported load time, the text.

    Peak RSS comes from GNU time wrapping the binary: a direct child of this Python process
    would inherit Python's own RSS high-water mark across fork + exec (Linux keeps it in
    ru_maxrss), so wait4() here would report max(python, whisper-cli)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        full = [TIME, "-f", "%U %S %M", "-o", tf.name, *cmd]
        t0 = time.perf_counter()
        p = subprocess.run(
            full, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        wall = time.perf_counter() - t0
        usr, sys_, rss_kib = Path(tf.name).read_text().split()[-3:]
    if p.returncode:
        raise RuntimeError(f"exit {p.returncode}: {p.stderr[-300:]}")
    m = re.search(r"load time =\s*([\d.]+) ms", p.stderr)
    load_s = float(m.group(1)) / 1000 if m else 0.0
    segs = json.loads(Path(f"{out_base}.json").read_text(encoding="utf-8"))["transcription"]
    return {
        "process_s": wall,
        "wall_s": wall - load_s,
        "load_s": load_s,
        "cpu_s": float(usr) + float(sys_),
        "peak_rss_mib": int(rss_kib) / 1024,
        "text": "".join(s["text"] for s in segs).strip(),
    }


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def openai_texts(e2e_json: Path | None) -> dict[tuple, str]:
    """(model, audio, beam) -> openai-whisper's transcript from a saved whisper_e2e.py --json."""
    if not (e2e_json and e2e_json.is_file()):
        return {}
    rows = json.loads(e2e_json.read_text())["rows"]
    return {
        (r["model"], r["audio"], r["beam"]): r["text"]
        for r in rows
        if r["engine"] == "openai" and r.get("text") is not None
    }


def report(rows: list[dict], openai: dict[tuple, str]) -> str:
    lines = [
        "| engine | model | audio | beam | wall s | RTF | CPU s | peak RSS MiB | WER ref | "
        "WER vs openai | process s | load1 |",
        "|" + "---|" * 12,
    ]
    for r in rows:
        cells = [f"whisper.cpp {r['type']}", r["model"], r["audio"], str(r["beam"])]
        oa = openai.get((r["model"], r["audio"], r["beam"]))
        if r.get("wall_s") is None:
            cells += [r.get("reason", "n/a")] + [""] * 7
        else:
            cells += [
                fmt(r["wall_s"]),
                fmt(r["wall_s"] / r["seconds"], ".3f"),
                fmt(r["cpu_s"]),
                fmt(r["peak_rss_mib"], ".0f"),
                fmt(C.wer(r["ref"], r["text"]), ".3f"),
                fmt(None if oa is None else C.wer(oa, r["text"]), ".3f"),
                fmt(r["process_s"]),
                r["load1"],
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", type=Path, default=Path("/tmp/whispercpp-models"))
    ap.add_argument("--models", default="tiny.en,base")
    ap.add_argument("--types", default="f16,q8_0", help="f16 and/or whisper-quantize types")
    ap.add_argument("--beams", default="1", help="comma list; 1 = greedy")
    ap.add_argument("--long", type=Path, default=OUT / "long5min.wav")
    ap.add_argument("--no-long", action="store_true", help="jfk only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="best-of-N on jfk")
    ap.add_argument("--long-repeats", type=int, default=1, help="best-of-N on the long file")
    ap.add_argument("--json", type=Path, help="write all rows here")
    ap.add_argument(
        "--e2e-json",
        type=Path,
        default=OUT / "e2e.json",
        help="a whisper_e2e.py --json file: its openai-whisper texts give 'WER vs openai'",
    )
    ap.add_argument("--report", type=Path, help="only re-print the table of a saved --json file")
    args = ap.parse_args()

    if args.report:
        saved = json.loads(args.report.read_text())
        print(f"command: {saved['command']}\nmachine: {json.dumps(saved['machine'])}\n")
        return print(report(saved["rows"], openai_texts(args.e2e_json)))
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    machine = C.machine_facts() | {"whisper_cpp_bin": str(BIN)}
    print(f"command: {command}\nmachine: {json.dumps(machine)}", flush=True)
    binary("whisper-cli")
    if not Path(TIME).is_file():
        raise SystemExit(f"{TIME} (GNU time) is needed for CPU s / peak RSS: apt-get install time")
    tmp = Path(tempfile.mkdtemp(prefix="whispercpp-"))
    # jfk.flac is 44.1 kHz stereo 24-bit: hand whisper.cpp the very 16 kHz array the other
    # engines get (as PCM16, like long5min.wav already is), so its own resampler plays no part.
    import soundfile as sf

    jfk_wav = tmp / "jfk.wav"
    sf.write(jfk_wav, C.load_audio_16k(C.DATA / "jfk.flac"), C.SR, subtype="PCM_16")
    audio = {"jfk": (jfk_wav, C.read_manifest()["jfk.flac"]["transcript"], args.repeats)}
    if not args.no_long:
        if not args.long.exists():
            raise SystemExit(f"{args.long} missing: run python bench/make_long_audio.py first")
        ref = args.long.with_suffix(".txt").read_text("utf-8")
        audio["long5min"] = (args.long, ref, args.long_repeats)

    rows, commands = [], []
    beams = [int(b) for b in args.beams.split(",")]
    for model in args.models.split(","):
        for wtype in args.types.split(","):
            mfile = model_file(model, wtype, args.model_dir)
            warm = cli_command(mfile, jfk_wav, 1, args.threads, tmp / "warm")
            try:
                run_once(warm, tmp / "warm")
            except RuntimeError as e:
                why = {"type": wtype, "model": model, "reason": f"n/a: {e}"[:200]}
                rows += [why | {"audio": a, "beam": int(b)} for a in audio for b in beams]
                continue
            for name, (wav, ref, repeats) in audio.items():
                for beam in beams:
                    base = tmp / f"{model}-{wtype}-{name}-b{beam}"
                    cmd = cli_command(mfile, wav, beam, args.threads, base)
                    commands.append(shlex.join(cmd))
                    load1 = C.loadavg().split()[0]
                    runs = [run_once(cmd, base) for _ in range(repeats)]
                    best = min(runs, key=lambda r: r["wall_s"])
                    row = {"type": wtype, "model": model, "audio": name, "beam": beam,
                           "seconds": sf.info(str(wav)).duration,
                           "ref": ref, "load1": load1, "walls": [r["wall_s"] for r in runs],
                           "peak_rss_mib": max(r["peak_rss_mib"] for r in runs)}  # fmt: skip
                    row |= {k: best[k] for k in ("wall_s", "process_s", "load_s", "cpu_s", "text")}
                    rows.append(row)
                    print(
                        f"[whisper.cpp {wtype} {model}] {name} beam{beam}: "
                        f"{row['wall_s']:.2f} s  {row['text'][:70]!r}",
                        file=sys.stderr,
                        flush=True,
                    )
    machine["loadavg_end"] = C.loadavg()
    print(f"\ncommand: {command}\nmachine: {json.dumps(machine)}\n")
    print("whisper-cli commands (each timed run is one process; warm-up run first):")
    print("\n".join(f"    {c}" for c in dict.fromkeys(commands)))
    print()
    print(report(rows, openai_texts(args.e2e_json)))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"command": command, "machine": machine, "rows": rows, "commands": commands},
                indent=1,
            )  # fmt: skip
        )


if __name__ == "__main__":
    main()
