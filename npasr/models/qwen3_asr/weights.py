"""Qwen3-ASR / Qwen3-ForcedAligner checkpoints -> GGUF.

Sources: a Hugging Face directory in either layout (config.py): config.json, `model.safetensors`
or shards with `model.safetensors.index.json`, and the tokenizer files (vocab.json +
merges.txt + tokenizer_config.json, tokenizer.json when present). Tensor names are mapped to
npasr's canonical ones (model.py's docstring); a stored output head equal to the embedding is
dropped (the 0.6B original layout stores `thinker.lm_head.weight` although it is tied). The
tokenizer is embedded in the GGUF (tokenizer.py), and the special ids the model uses are
checked against it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from npasr.io.safetensors import read_hf_weights, read_json
from npasr.io.weights import apply_name_table, check_names_and_shapes, write_model_gguf
from npasr.models.qwen3_asr.config import Qwen3ASRConfig, from_hf_config, layout
from npasr.types import ModelFileError

ARCH = "qwen3_asr"

_HF_NAMES = [
    (r"model\.audio_tower\.", "audio."),
    (r"model\.multi_modal_projector\.linear_1\.", "audio.proj1."),
    (r"model\.multi_modal_projector\.linear_2\.", "audio.proj2."),
    (r"model\.language_model\.", "llm."),
    (r"lm_head\.", "lm_head."),
    (r"score\.", "lm_head."),  # the forced aligner's classifier (GenericForTokenClassification)
]
_ORIG_NAMES = [
    (r"thinker\.audio_tower\.", "audio."),
    (r"thinker\.model\.", "llm."),
    (r"thinker\.lm_head\.", "lm_head."),
]
# buffers some exports store and npasr recomputes (the sinusoid table)
_DERIVED = re.compile(r"positional_embedding")


@dataclass
class Qwen3ASRSource:
    config: Qwen3ASRConfig
    tensors: dict[str, np.ndarray]  # canonical names, float32
    tokenizer: Any  # tokenizer.TokenizerData
    source: str


def load_source(path: str | os.PathLike[str], tokenizer: str | os.PathLike[str] | None = None,
                ) -> Qwen3ASRSource:  # fmt: skip
    """Read a checkpoint directory; `tokenizer` (a directory with the tokenizer files) replaces
    the checkpoint's own."""
    from npasr.models.qwen3_asr.tokenizer import read_hf_tokenizer  # noqa: PLC0415

    d = Path(path)
    if not d.is_dir():
        raise ModelFileError(f"{d}: a Qwen3-ASR checkpoint is a directory (config.json, "
                             "safetensors, tokenizer files)")  # fmt: skip
    raw_cfg = read_json(d / "config.json")
    config = from_hf_config(raw_cfg, str(d / "config.json"))
    tok = read_hf_tokenizer(Path(tokenizer) if tokenizer is not None else d)
    source = f"hf:{d.name}"
    raw = {k: v for k, v in read_hf_weights(d).items() if not _DERIVED.search(k)}
    table = _ORIG_NAMES if layout(raw_cfg) == "orig" else _HF_NAMES
    tensors = apply_name_table(raw, table, source=source)
    head = tensors.get("lm_head.weight")
    emb = tensors.get("llm.embed_tokens.weight")
    if (head is not None and emb is not None and not config.aligner
            and head.shape == emb.shape and np.array_equal(head, emb)):  # fmt: skip
        del tensors["lm_head.weight"]  # tied: the embedding serves as the output layer
    if emb is not None and emb.shape[0] != config.vocab_size:
        raise ModelFileError(f"{d}: embed_tokens has {emb.shape[0]} rows, config vocab_size "
                             f"{config.vocab_size}")  # fmt: skip
    _check_tokenizer(config, tok, d)
    check_names_and_shapes(tensors, expected_shapes(config, "lm_head.weight" in tensors),
                           source=source)  # fmt: skip
    tensors = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
    return Qwen3ASRSource(config, tensors, tok, source)


def _check_tokenizer(cfg: Qwen3ASRConfig, tok: Any, d: Path) -> None:
    """The model's special ids must name the tokenizer's special tokens (a tokenizer of another
    model would otherwise feed the audio to the wrong rows without any error)."""
    n = len(tok.tokens)
    if n > cfg.vocab_size:
        raise ModelFileError(f"{d}: the tokenizer has {n} tokens, more than the model's "
                             f"{cfg.vocab_size} embedding rows: wrong tokenizer for this "
                             "model")  # fmt: skip
    wanted = {"audio_token_id": "<|audio_pad|>"}
    if cfg.aligner:
        wanted["timestamp_token_id"] = "<timestamp>"
    for key, name in wanted.items():
        tid = tok.special.get(name)
        if tid is None:
            raise ModelFileError(f"{d}: the tokenizer has no {name} token; not a Qwen3-ASR "
                                 "tokenizer")  # fmt: skip
        if getattr(cfg, key) != tid:
            raise ModelFileError(f"{d}: config {key} {getattr(cfg, key)} but the tokenizer's "
                                 f"{name} is {tid}: tokenizer and model do not match")  # fmt: skip


def expected_shapes(cfg: Qwen3ASRConfig, lm_head: bool) -> dict[str, tuple[int, ...]]:
    d, c, e = cfg.d_model, cfg.downsample_hidden_size, cfg.hidden_size
    s: dict[str, tuple[int, ...]] = {}
    a = "audio."
    s[a + "conv2d1.weight"], s[a + "conv2d1.bias"] = (c, 1, 3, 3), (c,)
    for i in (2, 3):
        s[a + f"conv2d{i}.weight"], s[a + f"conv2d{i}.bias"] = (c, c, 3, 3), (c,)
    freq = cfg.num_mel_bins
    for _ in range(3):
        freq = (freq - 1) // 2 + 1
    s[a + "conv_out.weight"] = (d, c * freq)
    for i in range(cfg.encoder_layers):
        p = f"{a}layers.{i}."
        for n in "qkv":
            s[p + f"self_attn.{n}_proj.weight"], s[p + f"self_attn.{n}_proj.bias"] = (d, d), (d,)
        s[p + "self_attn.out_proj.weight"], s[p + "self_attn.out_proj.bias"] = (d, d), (d,)
        for n in ("self_attn_layer_norm", "final_layer_norm"):
            s[p + f"{n}.weight"], s[p + f"{n}.bias"] = (d,), (d,)
        s[p + "fc1.weight"], s[p + "fc1.bias"] = (cfg.encoder_ffn_dim, d), (cfg.encoder_ffn_dim,)
        s[p + "fc2.weight"], s[p + "fc2.bias"] = (d, cfg.encoder_ffn_dim), (d,)
    s[a + "ln_post.weight"], s[a + "ln_post.bias"] = (d,), (d,)
    s[a + "proj1.weight"], s[a + "proj1.bias"] = (d, d), (d,)
    s[a + "proj2.weight"], s[a + "proj2.bias"] = (cfg.output_dim, d), (cfg.output_dim,)
    h, g, dh = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    f = cfg.intermediate_size
    s["llm.embed_tokens.weight"] = (cfg.vocab_size, e)
    for i in range(cfg.num_hidden_layers):
        p = f"llm.layers.{i}."
        s[p + "input_layernorm.weight"] = s[p + "post_attention_layernorm.weight"] = (e,)
        s[p + "self_attn.q_proj.weight"] = (h * dh, e)
        s[p + "self_attn.k_proj.weight"] = s[p + "self_attn.v_proj.weight"] = (g * dh, e)
        s[p + "self_attn.o_proj.weight"] = (e, h * dh)
        s[p + "self_attn.q_norm.weight"] = s[p + "self_attn.k_norm.weight"] = (dh,)
        s[p + "mlp.gate_proj.weight"] = s[p + "mlp.up_proj.weight"] = (f, e)
        s[p + "mlp.down_proj.weight"] = (e, f)
    s["llm.norm.weight"] = (e,)
    if cfg.aligner:
        s["lm_head.weight"] = (cfg.classify_num, e)
    elif lm_head:
        s["lm_head.weight"] = (cfg.vocab_size, e)
    return s


# Kept float: the conv stem (it sees the raw mel; conv2d2/3 are 4-D, so the storage rule keeps
# them f16 anyway). The embedding, which is also the output layer read whole at every decoding
# step (151936 x 1024: 311 MB in f16), is Q8_0 in every quantized type: its logits decide each
# token, and Q8_0 halves its bytes against f16.
_KEEP_FLOAT = re.compile(r"^audio\.conv2d")
_Q8_0 = re.compile(r"^llm\.embed_tokens\.|^lm_head\.")


def save_gguf(src: Qwen3ASRSource, out: str | os.PathLike[str], wtype: str = "f16") -> Path:
    """Per-tensor storage by `npasr.io.weights.storage_for` (f32, f16, q8_0, q4_0, q4_k)."""
    meta = {**src.config.to_gguf(), **src.tokenizer.to_gguf(src.config.vocab_size)}
    tokens = meta.pop("tokenizer.ggml.tokens")  # one per embedding row ("[PAD<id>]" fillers)
    return write_model_gguf(out, ARCH, wtype, src.tensors, keep_float=_KEEP_FLOAT,
                            keep_f32=None, q8_0=_Q8_0, config=meta, source=src.source,
                            tokens=tokens, tokenizer=src.tokenizer.model_name)  # fmt: skip
