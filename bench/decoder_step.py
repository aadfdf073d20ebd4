"""Time of one Whisper decoder step (one new token after a 2-token prompt, then the logits),
median of --steps steps after 5 warm-up steps, over the cross-attention keys of one encoded
30 s window. This is the per-token cost of greedy decoding without the Python decoding rules.

    python bench/decoder_step.py [--models tiny.en,base] [--types q8_0,f16] [--threads 2]

To compare with an older checkout, run that checkout's npasr on the same script:
    PYTHONPATH=/path/to/old/checkout python bench/decoder_step.py
"""

from __future__ import annotations

import _blas_env  # noqa: F401  (first: before NumPy loads OpenBLAS)

# isort: split

import argparse
import time

import numpy as np


def step_ms(model: str, wtype: str, steps: int) -> float:
    from npasr import hub, load_model
    from npasr.models.whisper.model import KVCache

    m = load_model(hub.resolve(f"whisper-{model}", wtype=wtype))
    cfg, dec = m.config, m.model.decoder
    mel = np.random.default_rng(0).standard_normal((cfg.n_mels, 3000)).astype(np.float32)
    cross = dec.cross_kv(m.model.encoder(mel))
    sot = m.tokenizer.sot_sequence_including_notimestamps[:2]
    cache = KVCache.empty(cfg, 1)
    dec(np.array([list(sot)]), cross, cache)
    times = []
    for i in range(5 + steps):
        t0 = time.perf_counter()
        h = dec(np.array([[300 + i]]), cross, cache)
        dec.logits(h[0])
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times[5:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="tiny.en,base")
    ap.add_argument("--types", default="q8_0,f16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    import npasr

    npasr.set_num_threads(args.threads)
    print(f"npasr from {npasr.__file__}, {args.threads} threads")
    print("| model | type | decoder step ms (median) |")
    print("|---|---|---|")
    for model in args.models.split(","):
        for wtype in args.types.split(","):
            print(f"| {model} | {wtype} | {step_ms(model, wtype, args.steps):.2f} |", flush=True)


if __name__ == "__main__":
    main()
