"""A real-size Qwen3-ASR-0.6B with random weights, for bench/qwen3_asr.py (no hub, no real weights).

The 0.6B configuration (shared/REFERENCE.md §3.1: audio 18 layers x 896, 14 heads, FFN 3584,
conv 480, n_window 50 / 800; LLM 28 x 1024, 16 / 8 heads, head_dim 128, intermediate 3072,
vocab 151936, tied embeddings, rope_theta 1e6, rms eps 1e-6) built by transformers 5.23's
`Qwen3ASRForConditionalGeneration` by scripts/make_goldens_qwen3_asr.py's own builder
(`build_asr` with its REAL dims: parameters redrawn from one seeded generator as REFERENCE-SETUP
§0 says, then its "rebalance" so that greedy decoding does not repeat one token forever) — the
token agreement between engines then means something. Saved with `save_pretrained`
in bfloat16 (as the real checkpoints), hf layout, with Qwen3ASRFeatureExtractor's config and the
synthetic tokenizer of tests/tiny/qwen3_asr_tokenizer (2008 tokens; the config's special ids are
taken from it, vocab_size stays 151936 so the embedding / output head are real size).

    /tmp/venv_ref/bin/python bench/make_qwen3_asr_model.py /tmp/qwen3_bench   # ~1 min, 1.6 GB
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

# bench/ (sys.path[0] for a script run from it) holds kernels.py, which shadows the `kernels`
# package transformers probes for; the model classes then fail to import
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

REPO = Path(__file__).resolve().parent.parent
TOK_DIR = REPO / "tests" / "tiny" / "qwen3_asr_tokenizer"
VOCAB = 151936  # real size; npasr pads the 2008-token table to it


def goldens_script():
    """scripts/make_goldens_qwen3_asr.py as a module: the real config and the random init."""
    path = REPO / "scripts" / "make_goldens_qwen3_asr.py"
    spec = importlib.util.spec_from_file_location("make_goldens_qwen3_asr", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def special_ids(names: list[str]) -> dict[str, int]:
    tok = json.loads((TOK_DIR / "tokenizer.json").read_text("utf-8"))
    ids = {t["content"]: int(t["id"]) for t in tok["added_tokens"]}
    return {s: ids[s] for s in names}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, nargs="?", default=Path("/tmp/qwen3_bench"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch
    from transformers import Qwen3ASRFeatureExtractor

    torch.set_num_threads(2)
    g = goldens_script()
    t0 = time.perf_counter()
    model = g.build_asr(g.REAL, VOCAB, special_ids(g.SPECIAL_TOKENS), args.seed)
    n = sum(p.numel() for p in model.parameters())
    print(f"built {n / 1e6:.0f} M parameters in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.out.exists():
        shutil.rmtree(args.out)
    model.to(torch.bfloat16).save_pretrained(args.out, safe_serialization=True)
    Qwen3ASRFeatureExtractor().save_pretrained(args.out)
    for f in TOK_DIR.iterdir():
        shutil.copyfile(f, args.out / f.name)
    print(
        f"saved {args.out} in {time.perf_counter() - t0:.0f} s:",
        sorted(p.name for p in args.out.iterdir()),
    )


if __name__ == "__main__":
    main()
