"""Time of one Whisper decoder step (one new token after a 2-token prompt, then the logits),
median of --steps steps after 5 warm-up steps, over the cross-attention keys of one encoded
30 s window. This is the per-token cost of greedy decoding without the Python decoding rules.

    python bench/decoder_step.py [--models tiny.en,base] [--types q8_0,f16] [--threads 2]

--beam N times a beam-search step instead: N rows after a prompt of --prompt tokens (the
previous window's text, up to 223 tokens in long-form transcription), the rows reordered after
each step as a beam search does when one row's history continues twice ([0, 0, 1, 2, ...]).

To compare with an older checkout, run that checkout's npasr on the same script:
    PYTHONPATH=/path/to/old/checkout python bench/decoder_step.py
"""

from __future__ import annotations

import _blas_env  # noqa: F401  (first: before NumPy loads OpenBLAS)

# isort: split

import argparse
import time

import numpy as np


def step_ms(model: str, wtype: str, steps: int, beam: int = 1, prompt: int = 2) -> float:
    from npasr import hub, load_model
    from npasr.models.whisper.model import KVCache

    m = load_model(hub.resolve(f"whisper-{model}", wtype=wtype))
    cfg, dec = m.config, m.model.decoder
    mel = np.random.default_rng(0).standard_normal((cfg.n_mels, 3000)).astype(np.float32)
    cross = dec.cross_kv(m.model.encoder(mel))
    sot = list(m.tokenizer.sot_sequence_including_notimestamps[:2])
    cache = KVCache.empty(cfg, 1)
    dec(np.array([sot + list(range(400, 400 + prompt - len(sot)))]), cross, cache)
    slots, rows = np.arange(beam), np.maximum(np.arange(beam) - 1, 0)
    if beam > 1:
        if hasattr(cache, "branch"):  # the shared prompt (this checkout)
            cache = cache.branch(beam)
        else:  # older checkouts: every row holds a copy
            cache.k = [np.repeat(a, beam, axis=0) for a in cache.k]
            cache.v = [np.repeat(a, beam, axis=0) for a in cache.v]
    times = []
    for i in range(5 + steps):
        t0 = time.perf_counter()
        h = dec(np.full((beam, 1), 300 + i), cross, cache)
        dec.logits(h[:, 0])
        if beam > 1:
            slots = cache.follow(slots, rows) if hasattr(cache, "follow") else slots
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times[5:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="tiny.en,base")
    ap.add_argument("--types", default="q8_0,f16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--beam", type=int, default=1, help="rows per step (1: greedy)")
    ap.add_argument("--prompt", type=int, default=2, help="tokens before the timed steps")
    args = ap.parse_args()
    import npasr

    npasr.set_num_threads(args.threads)
    print(f"npasr from {npasr.__file__}, {args.threads} threads")
    what = f"{args.beam} rows after a {args.prompt}-token prompt"
    print(f"| model | type | decoder step ms (median; {what}) |")
    print("|---|---|---|")
    for model in args.models.split(","):
        for wtype in args.types.split(","):
            ms = step_ms(model, wtype, args.steps, args.beam, args.prompt)
            print(f"| {model} | {wtype} | {ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()
