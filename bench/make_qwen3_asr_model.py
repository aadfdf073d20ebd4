"""A real-size Qwen3-ASR-0.6B with random weights, for bench/qwen3_asr.py (no hub, no real weights).

The 0.6B configuration (shared/REFERENCE.md §3.1: audio 18 layers x 896, 14 heads, FFN 3584,
conv 480, n_window 50 / 800; LLM 28 x 1024, 16 / 8 heads, head_dim 128, intermediate 3072,
vocab 151936, tied embeddings, rope_theta 1e6, rms eps 1e-6) built by transformers 5.23's
`Qwen3ASRForConditionalGeneration`, its parameters redrawn from one seeded generator
(REFERENCE-SETUP §0: matrices N(0, 1/fan_in), 1-D weights 1 + 0.1 N, biases 0.1 N), then the
"rebalance" of scripts/make_goldens_qwen3_asr.py so that greedy decoding does not repeat one token
forever (embedding x 2, every down_proj x 8, the final norm with random signs, the two EOS rows
x 0.05) — the token agreement between engines then means something. Saved with `save_pretrained`
in bfloat16 (as the real checkpoints), hf layout, with Qwen3ASRFeatureExtractor's config and the
synthetic tokenizer of tests/tiny/qwen3_asr_tokenizer (2008 tokens; the config's special ids are
taken from it, vocab_size stays 151936 so the embedding / output head are real size).

    /tmp/venv_ref/bin/python bench/make_qwen3_asr_model.py /tmp/qwen3_bench   # ~1 min, 1.6 GB
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

# bench/ (sys.path[0] for a script run from it) holds kernels.py, which shadows the `kernels`
# package transformers probes for; the model classes then fail to import
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TOK_DIR = REPO / "tests" / "tiny" / "qwen3_asr_tokenizer"
SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|audio_start|>",
    "<|audio_end|>",
    "<|audio_pad|>",
    "<asr_text>",
    "<timestamp>",
]
AUDIO = dict(
    num_mel_bins=128,
    encoder_layers=18,
    encoder_attention_heads=14,
    encoder_ffn_dim=3584,
    d_model=896,
    n_window=50,
    n_window_infer=800,
    downsample_hidden_size=480,
    output_dim=1024,
    max_position_embeddings=13,
)
TEXT = dict(
    vocab_size=151936,
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
    max_position_embeddings=65536,
    rope_parameters={"rope_type": "default", "rope_theta": 1e6},
)


def special_ids() -> dict[str, int]:
    tok = json.loads((TOK_DIR / "tokenizer.json").read_text("utf-8"))
    ids = {t["content"]: int(t["id"]) for t in tok["added_tokens"]}
    return {s: ids[s] for s in SPECIAL}


def build(seed: int):
    import torch
    from transformers import Qwen3ASRConfig, Qwen3ASRForConditionalGeneration

    ids = special_ids()
    cfg = Qwen3ASRConfig(
        audio_config=AUDIO,
        text_config=dict(
            TEXT,
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=None,
        ),
        audio_token_id=ids["<|audio_pad|>"],
        timestamp_token_id=ids["<timestamp>"],
        pad_token_id=ids["<|im_end|>"],
        eos_token_id=[ids["<|endoftext|>"], ids["<|im_end|>"]],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = Qwen3ASRForConditionalGeneration(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(int(np.prod(p.shape[1:]))))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        lm = model.model.language_model
        assert model.lm_head.weight.data_ptr() == lm.embed_tokens.weight.data_ptr(), "not tied"
        lm.embed_tokens.weight *= 2.0
        for layer in lm.layers:
            layer.mlp.down_proj.weight *= 8.0
        g2 = torch.Generator().manual_seed(seed + 1000)
        sign = torch.randint(0, 2, lm.norm.weight.shape, generator=g2).float() * 2 - 1
        lm.norm.weight *= sign
        for t in ("<|endoftext|>", "<|im_end|>"):
            lm.embed_tokens.weight[ids[t]] *= 0.05
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, nargs="?", default=Path("/tmp/qwen3_bench"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch
    from transformers import Qwen3ASRFeatureExtractor

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    model = build(args.seed)
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
