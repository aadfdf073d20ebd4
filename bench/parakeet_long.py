"""One call over a long file: Parakeet at real size (24 x 1024, random weights), peak RSS and time.

The issue's target: a 60-minute file through the real-size model in one `transcribe` call, peak
RSS under 2 GiB for Q8_0. `attention="auto"` switches to limited context past 10 minutes, the
subsampling runs in chunks and the Conformer layers in row slices, so memory is linear in the
length. The audio is the speech set of `make_long_audio.py` built to the asked length. Each run
is a child process that reports its own peak RSS (VmHWM).

    python bench/parakeet_long.py --nemo /tmp/parakeet_real/parakeet_real_tdt.nemo \
        [--minutes 60] [--types q8_0] [--threads 2] [--json out.json]
"""

# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _blas_env  # noqa: F401, E402  (first: before NumPy loads OpenBLAS)
from _common import REPO, SR, emit, loadavg, machine_facts, peak_rss_mib  # noqa: E402


def child(gguf: str, audio: str, threads: int, attention: str) -> None:
    import npasr

    npasr.set_num_threads(threads)
    import soundfile as sf

    t0 = time.perf_counter()
    model = npasr.load_model(gguf)
    load_s = time.perf_counter() - t0
    x, sr = sf.read(audio, dtype="float32")
    assert sr == SR
    t0 = time.perf_counter()
    res = model.transcribe(x, attention=attention)
    wall = time.perf_counter() - t0
    emit({"load_s": load_s, "wall_s": wall, "audio_s": x.size / SR, "peak_rss_mib": peak_rss_mib(),
          "segments": len(res.segments), "chars": len(res.text)})  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nemo", type=Path, required=True, help="real-size random .nemo")
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--types", nargs="+", default=["q8_0"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attention", default="auto", choices=["auto", "full", "local"])
    ap.add_argument("--out-dir", type=Path, default=REPO / "bench" / "out")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), args.child[3])
        return
    import numpy as np
    import soundfile as sf
    from make_long_audio import build

    from npasr.convert import convert

    args.out_dir.mkdir(parents=True, exist_ok=True)
    audio = args.out_dir / f"long{args.minutes:g}min.wav"
    if not audio.is_file():  # the 5-minute speech set repeated, cut to the exact length
        pcm, _, _ = build(300.0)
        n = int(args.minutes * 60 * SR)
        sf.write(str(audio), np.tile(pcm, -(-n // pcm.size))[:n], SR, subtype="PCM_16")
    rows = []
    for wtype in args.types:
        gguf = args.out_dir / f"{args.nemo.stem}-{wtype}.gguf"
        if not gguf.is_file():
            convert(args.nemo, gguf, wtype=wtype)
        load = loadavg()
        out = subprocess.run([sys.executable, __file__, "--nemo", str(args.nemo), "--child",
                              str(gguf), str(audio), str(args.threads), args.attention],
                             capture_output=True, text=True, check=True)  # fmt: skip
        line = next(x for x in out.stdout.splitlines() if x.startswith("@@RESULT "))
        r = json.loads(line.removeprefix("@@RESULT "))
        r |= {"type": wtype, "loadavg_before": load, "gguf_mb": gguf.stat().st_size / 1e6}
        rows.append(r)
        speed = r["audio_s"] / r["wall_s"]
        print(f"{wtype}: {r['audio_s'] / 60:.1f} min audio in {r['wall_s']:.1f} s "
              f"({speed:.1f}x realtime), peak RSS {r['peak_rss_mib']:.0f} MiB, "
              f"file {r['gguf_mb']:.0f} MB, load avg before {load}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_facts(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
