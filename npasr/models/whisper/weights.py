"""Whisper checkpoints from other formats -> openai/whisper `state_dict` names, and -> GGUF.

Canonical names are openai/whisper@v20250625 `Whisper.state_dict()` keys (STYLE B5). Each foreign
scheme is one table below (syntax in `npasr.io.weights`); loading is strict: every source tensor
is used once and every expected openai key is produced with the openai shape.

Sources: a CTranslate2 directory (faster-whisper models), a Hugging Face transformers directory
(config.json + model.safetensors) and an openai `.pt` checkpoint.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from npasr.io.ct2 import read_ct2
from npasr.io.gguf import RawTensor, write_gguf
from npasr.io.safetensors import read_hf_weights, read_json
from npasr.io.torch_zip import load_torch_checkpoint
from npasr.io.weights import (
    FILE_TYPES,
    FORMAT_VERSION,
    NameTable,
    apply_name_table,
    check_names_and_shapes,
    check_wtype,
    storage_for,
)
from npasr.models.whisper.config import WhisperConfig
from npasr.models.whisper.languages import LANGUAGES
from npasr.types import ModelFileError

_B = r"(en|de)coder/layer_(\d+)"  # CT2 block prefix -> \1coder.blocks.\2
# CTranslate2 WhisperSpec revision 3 (ctranslate2/converters/transformers.py WhisperLoader):
# self-attention q,k,v fused in linear_0 (the key has no bias: CT2 pads zeros), cross-attention
# k,v fused in linear_1; weights are stored as in torch, no scaling or transposition.
CT2_TO_OPENAI: NameTable = [
    (r"^encoder/conv(\d)/(weight|bias)$", r"encoder.conv\1.\2"),
    (r"^encoder/position_encodings/encodings$", "encoder.positional_embedding"),
    (rf"^{_B}/self_attention/linear_0/weight$",
     r"\1coder.blocks.\2.attn.query.weight + \1coder.blocks.\2.attn.key.weight"
     r" + \1coder.blocks.\2.attn.value.weight"),
    (rf"^{_B}/self_attention/linear_0/bias$",
     r"\1coder.blocks.\2.attn.query.bias + 0 + \1coder.blocks.\2.attn.value.bias"),
    (rf"^{_B}/self_attention/linear_1/(weight|bias)$", r"\1coder.blocks.\2.attn.out.\3"),
    (rf"^{_B}/self_attention/layer_norm/gamma$", r"\1coder.blocks.\2.attn_ln.weight"),
    (rf"^{_B}/self_attention/layer_norm/beta$", r"\1coder.blocks.\2.attn_ln.bias"),
    (rf"^{_B}/attention/linear_0/(weight|bias)$", r"\1coder.blocks.\2.cross_attn.query.\3"),
    (rf"^{_B}/attention/linear_1/weight$",
     r"\1coder.blocks.\2.cross_attn.key.weight + \1coder.blocks.\2.cross_attn.value.weight"),
    (rf"^{_B}/attention/linear_1/bias$", r"0 + \1coder.blocks.\2.cross_attn.value.bias"),
    (rf"^{_B}/attention/linear_2/(weight|bias)$", r"\1coder.blocks.\2.cross_attn.out.\3"),
    (rf"^{_B}/attention/layer_norm/gamma$", r"\1coder.blocks.\2.cross_attn_ln.weight"),
    (rf"^{_B}/attention/layer_norm/beta$", r"\1coder.blocks.\2.cross_attn_ln.bias"),
    (rf"^{_B}/ffn/linear_0/(weight|bias)$", r"\1coder.blocks.\2.mlp.0.\3"),
    (rf"^{_B}/ffn/linear_1/(weight|bias)$", r"\1coder.blocks.\2.mlp.2.\3"),
    (rf"^{_B}/ffn/layer_norm/gamma$", r"\1coder.blocks.\2.mlp_ln.weight"),
    (rf"^{_B}/ffn/layer_norm/beta$", r"\1coder.blocks.\2.mlp_ln.bias"),
    (r"^encoder/layer_norm/gamma$", "encoder.ln_post.weight"),
    (r"^encoder/layer_norm/beta$", "encoder.ln_post.bias"),
    (r"^decoder/layer_norm/gamma$", "decoder.ln.weight"),
    (r"^decoder/layer_norm/beta$", "decoder.ln.bias"),
    (r"^decoder/embeddings/weight$", "decoder.token_embedding.weight"),
    (r"^decoder/position_encodings/encodings$", "decoder.positional_embedding"),
    (r"^decoder/projection/weight$", "=decoder.token_embedding.weight"),  # tied (an alias)
]  # fmt: skip
# CT2 scalar variables: structural flags whose value we check (None: read into the config,
# or run-time options with no weight meaning: alignment_heads/alignment_layer)
CT2_SCALARS = {
    "encoder/num_heads": None,
    "decoder/num_heads": None,
    "decoder/activation": 3,  # common_spec.Activation.GELU
    "decoder/pre_norm": 1,
    "decoder/alibi": 0,
    "decoder/scale_embeddings": 0,
    "decoder/start_from_zero_embedding": 0,
    "decoder/alignment_heads": None,
    "decoder/alignment_layer": None,
}

_H = r"^model\.(en|de)coder\.layers\.(\d+)"  # HF block prefix -> \1coder.blocks.\2
# transformers WhisperForConditionalGeneration; same tensors as openai, other names
HF_TO_OPENAI: NameTable = [
    (r"^model\.encoder\.conv(\d)\.(weight|bias)$", r"encoder.conv\1.\2"),
    (r"^model\.encoder\.embed_positions\.weight$", "encoder.positional_embedding"),
    (rf"{_H}\.self_attn\.q_proj\.", r"\1coder.blocks.\2.attn.query."),
    (rf"{_H}\.self_attn\.k_proj\.", r"\1coder.blocks.\2.attn.key."),
    (rf"{_H}\.self_attn\.v_proj\.", r"\1coder.blocks.\2.attn.value."),
    (rf"{_H}\.self_attn\.out_proj\.", r"\1coder.blocks.\2.attn.out."),
    (rf"{_H}\.self_attn_layer_norm\.", r"\1coder.blocks.\2.attn_ln."),
    (rf"{_H}\.encoder_attn\.q_proj\.", r"\1coder.blocks.\2.cross_attn.query."),
    (rf"{_H}\.encoder_attn\.k_proj\.", r"\1coder.blocks.\2.cross_attn.key."),
    (rf"{_H}\.encoder_attn\.v_proj\.", r"\1coder.blocks.\2.cross_attn.value."),
    (rf"{_H}\.encoder_attn\.out_proj\.", r"\1coder.blocks.\2.cross_attn.out."),
    (rf"{_H}\.encoder_attn_layer_norm\.", r"\1coder.blocks.\2.cross_attn_ln."),
    (rf"{_H}\.fc1\.", r"\1coder.blocks.\2.mlp.0."),
    (rf"{_H}\.fc2\.", r"\1coder.blocks.\2.mlp.2."),
    (rf"{_H}\.final_layer_norm\.", r"\1coder.blocks.\2.mlp_ln."),
    (r"^model\.encoder\.layer_norm\.", "encoder.ln_post."),
    (r"^model\.decoder\.layer_norm\.", "decoder.ln."),
    (r"^model\.decoder\.embed_tokens\.weight$", "decoder.token_embedding.weight"),
    (r"^model\.decoder\.embed_positions\.weight$", "decoder.positional_embedding"),
    (r"^proj_out\.weight$", "=decoder.token_embedding.weight"),  # tied output projection
]


def openai_shapes(cfg: WhisperConfig) -> dict[str, tuple[int, ...]]:
    """Every openai `Whisper.state_dict()` key with its shape, in state_dict order."""
    shapes: dict[str, tuple[int, ...]] = {}
    d_a, d_t = cfg.n_audio_state, cfg.n_text_state

    def block(prefix: str, d: int, cross: bool) -> None:
        for part in ("attn", "cross_attn") if cross else ("attn",):
            for lin in ("query", "key", "value", "out"):
                shapes[f"{prefix}.{part}.{lin}.weight"] = (d, d)
                if lin != "key":  # openai/whisper model.py: no bias for the key projection
                    shapes[f"{prefix}.{part}.{lin}.bias"] = (d,)
            shapes[f"{prefix}.{part}_ln.weight"] = shapes[f"{prefix}.{part}_ln.bias"] = (d,)
        shapes[f"{prefix}.mlp.0.weight"], shapes[f"{prefix}.mlp.0.bias"] = (4 * d, d), (4 * d,)
        shapes[f"{prefix}.mlp.2.weight"], shapes[f"{prefix}.mlp.2.bias"] = (d, 4 * d), (d,)
        shapes[f"{prefix}.mlp_ln.weight"] = shapes[f"{prefix}.mlp_ln.bias"] = (d,)

    shapes["encoder.positional_embedding"] = (cfg.n_audio_ctx, d_a)  # buffer first
    shapes["encoder.conv1.weight"], shapes["encoder.conv1.bias"] = (d_a, cfg.n_mels, 3), (d_a,)
    shapes["encoder.conv2.weight"], shapes["encoder.conv2.bias"] = (d_a, d_a, 3), (d_a,)
    for i in range(cfg.n_audio_layer):
        block(f"encoder.blocks.{i}", d_a, cross=False)
    shapes["encoder.ln_post.weight"] = shapes["encoder.ln_post.bias"] = (d_a,)
    shapes["decoder.positional_embedding"] = (cfg.n_text_ctx, d_t)
    shapes["decoder.token_embedding.weight"] = (cfg.n_vocab, d_t)
    for i in range(cfg.n_text_layer):
        block(f"decoder.blocks.{i}", d_t, cross=True)
    shapes["decoder.ln.weight"] = shapes["decoder.ln.bias"] = (d_t,)
    return shapes


# ------------------------------------------------------------------------------- vocabulary


def whisper_specials(cfg: WhisperConfig) -> list[str]:
    """Special tokens after the BPE ranks, in id order (openai/whisper tokenizer.py get_encoding).

    English-only models keep the language tokens too: tiny.en has <|endoftext|> = 50256 and
    n_vocab 51864 = 50256 BPE ranks + 1608 specials; multilingual ones have 50257 ranks.
    """
    return [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *[f"<|{lang}|>" for lang in list(LANGUAGES)[: cfg.num_languages]],
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
        *[f"<|{i * 0.02:.2f}|>" for i in range(1501)],  # 0.00 .. 30.00 s in 20 ms steps
    ]


# HF/CT2 spellings -> openai spellings (HF's tiny.en vocabulary still says <|iw|> for Hebrew)
_RENAMED_SPECIALS = {"<|nocaptions|>": "<|nospeech|>", "<|iw|>": "<|he|>"}


def complete_vocab(
    tokens: list[str], cfg: WhisperConfig, source: str
) -> tuple[list[str], list[int]]:
    """Check a token list against the model and append missing specials -> (tokens, types)."""
    specials = whisper_specials(cfg)
    n_bpe = cfg.n_vocab - len(specials)
    tokens = [_RENAMED_SPECIALS.get(t, t) for t in tokens]
    have = tokens[n_bpe:]
    kind = "multilingual" if cfg.is_multilingual else "English-only"
    if (
        len(tokens) < n_bpe
        or len(tokens) > cfg.n_vocab
        or have != specials[: len(have)]
        or tokens[n_bpe - 1].startswith("<|")
    ):
        raise ModelFileError(
            f"{source}: the tokenizer ({len(tokens)} tokens) does not fit this {kind} model "
            f"(n_vocab {cfg.n_vocab} = {n_bpe} BPE tokens + {len(specials)} specials); "
            "pair an English-only model with gpt2 tokens and a multilingual one with "
            "multilingual tokens"
        )
    tokens = tokens[:n_bpe] + specials
    return tokens, [1] * n_bpe + [3] * len(specials)  # 1 normal, 3 control (gguf TokenType)


def read_vocab(path: Path) -> list[str]:
    """Tokens by id from tokenizer.json, vocab.json, vocabulary.txt/.json or a .tiktoken file."""
    try:
        if path.suffix == ".tiktoken":
            from npasr.models.whisper.tokenizer import spell_bytes  # noqa: PLC0415

            ranks = {}
            for line in path.read_text("utf-8").splitlines():
                if line.strip():
                    tok, rank = line.split()
                    ranks[int(rank)] = spell_bytes(base64.b64decode(tok))
            return _by_id(ranks, path)
        if path.suffix == ".txt":  # one token per line; split on "\n" only (no str.splitlines)
            return path.read_text("utf-8").removesuffix("\n").split("\n")
        data = json.loads(path.read_text("utf-8"))
        if isinstance(data, list):  # CT2 vocabulary.json
            return [str(t) for t in data]
        if "model" in data:  # HF tokenizer.json: BPE vocab + added special tokens
            ids = {int(i): str(t) for t, i in data["model"]["vocab"].items()}
            ids.update({int(a["id"]): str(a["content"]) for a in data.get("added_tokens", [])})
            return _by_id(ids, path)
        ids = {int(i): str(t) for t, i in data.items()}  # HF vocab.json (+ added_tokens.json)
        added = path.with_name("added_tokens.json")
        if added.is_file():
            ids.update({int(i): t for t, i in json.loads(added.read_text("utf-8")).items()})
        return _by_id(ids, path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ModelFileError(f"{path}: cannot read the vocabulary: {e}") from None


def _by_id(ids: dict[int, str], path: Path) -> list[str]:
    if sorted(ids) != list(range(len(ids))):
        raise ModelFileError(f"{path}: token ids are not 0..{len(ids) - 1} without gaps")
    return [ids[i] for i in range(len(ids))]


# ---------------------------------------------------------------------------------- sources


@dataclass
class WhisperSource:
    config: WhisperConfig
    tensors: dict[str, np.ndarray]  # openai names and shapes, source dtype (f16/f32)
    tokens: list[str]  # n_vocab entries, by id
    token_types: list[int]  # 1 normal, 3 control
    alignment_heads: list[tuple[int, int]] | None  # (decoder layer, head)
    source: str  # short provenance, e.g. "ct2:model"


def load_source(
    src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    tokenizer: str | os.PathLike[str] | None = None,
) -> WhisperSource:
    """Detect and load a Whisper checkpoint: CT2 dir (or dirs of a split model), HF dir, or .pt."""
    paths = [Path(p) for p in src] if isinstance(src, list | tuple) else [Path(src)]
    first = paths[0]
    tok = Path(tokenizer) if tokenizer is not None else None
    if first.is_dir() and any(first.glob("model.bin*")):
        return _load_ct2(paths, tok)
    if len(paths) > 1:
        raise ModelFileError(f"{first}: several paths are only accepted for a split CT2 model")
    if first.is_dir() and (first / "config.json").is_file():
        return _load_hf(first, tok)
    if first.is_file() and first.suffix in (".pt", ".pth", ".ckpt"):
        return _load_openai(first, tok)
    raise ModelFileError(
        f"{first}: not a Whisper checkpoint npasr can convert (expected a CTranslate2 directory "
        "with model.bin, a Hugging Face directory with config.json + model.safetensors, or an "
        "openai .pt file)"
    )


def _alignment_heads(pairs: object) -> list[tuple[int, int]] | None:
    if pairs is None:
        return None
    arr = np.asarray(pairs)
    if arr.dtype == np.bool_:  # openai: dense (n_text_layer, n_text_head) mask
        arr = np.argwhere(arr)
    return [(int(a), int(b)) for a, b in arr.reshape(-1, 2)]


def _load_ct2(dirs: list[Path], tok: Path | None) -> WhisperSource:
    main = dirs[0]
    parts = sorted(
        (p for d in dirs[1:] for p in d.glob("model.bin.part*")), key=lambda p: int(p.suffix[5:])
    )
    source = f"ct2:{main.name}"
    spec, variables, aliases = read_ct2(main, extra_parts=parts)
    if spec != "WhisperSpec":
        raise ModelFileError(f"{main}: CTranslate2 spec {spec!r} is not WhisperSpec")
    if any(v.dtype in (np.int8, np.int16) for v in variables.values() if v.ndim > 1):
        raise ModelFileError(f"{main}: int8/int16 CTranslate2 models are not supported; "
                             "use a float16 or float32 conversion")  # fmt: skip
    scalars: dict[str, int] = {}
    for name, want in CT2_SCALARS.items():
        got = variables.pop(name, None)
        if got is None or (want is not None and int(got) != want):
            raise ModelFileError(f"{main}: {name} is {got}, npasr expects {want}")
        scalars[name] = int(got)
    variables.update({a: variables[t] for a, t in aliases.items()})
    tensors = apply_name_table(variables, CT2_TO_OPENAI, source=source)
    emb, conv1 = tensors["decoder.token_embedding.weight"], tensors["encoder.conv1.weight"]
    enc_pos, dec_pos = (
        tensors["encoder.positional_embedding"],
        tensors["decoder.positional_embedding"],
    )
    cfg = WhisperConfig(
        n_mels=conv1.shape[1], n_audio_ctx=enc_pos.shape[0], n_audio_state=enc_pos.shape[1],
        n_audio_head=scalars["encoder/num_heads"],
        n_audio_layer=_count_blocks(tensors, "encoder"),
        n_vocab=emb.shape[0], n_text_ctx=dec_pos.shape[0], n_text_state=emb.shape[1],
        n_text_head=scalars["decoder/num_heads"],
        n_text_layer=_count_blocks(tensors, "decoder"),
    )  # fmt: skip
    check_names_and_shapes(tensors, openai_shapes(cfg), source=source)
    heads = None
    if (main / "config.json").is_file():
        heads = _alignment_heads(read_json(main / "config.json").get("alignment_heads"))
    if tok is None:
        names = ("vocabulary.txt", "vocabulary.json", "tokenizer.json")
        tok = next((main / n for n in names if (main / n).is_file()), None)
        if tok is None:
            raise ModelFileError(
                f"{main}: no vocabulary.txt/.json or tokenizer.json beside model.bin"
            )
    tokens, types = complete_vocab(read_vocab(tok), cfg, source)
    return WhisperSource(cfg, tensors, tokens, types, heads, source)


def _count_blocks(tensors: dict[str, np.ndarray], side: str) -> int:
    return len({k.split(".")[2] for k in tensors if k.startswith(f"{side}.blocks.")})


def _load_hf(d: Path, tok: Path | None) -> WhisperSource:
    source = f"hf:{d.name}"
    cfg = WhisperConfig.from_hf(read_json(d / "config.json"))
    tensors = apply_name_table(read_hf_weights(d), HF_TO_OPENAI, source=source)
    check_names_and_shapes(tensors, openai_shapes(cfg), source=source)
    gen = d / "generation_config.json"
    heads = _alignment_heads(read_json(gen).get("alignment_heads")) if gen.is_file() else None
    if tok is None:
        tok = next((d / n for n in ("tokenizer.json", "vocab.json") if (d / n).is_file()), None)
        if tok is None:
            raise ModelFileError(f"{d}: no tokenizer.json or vocab.json; pass tokenizer=")
    tokens, types = complete_vocab(read_vocab(tok), cfg, source)
    return WhisperSource(cfg, tensors, tokens, types, heads, source)


def _load_openai(path: Path, tok: Path | None) -> WhisperSource:
    source = f"openai:{path.name}"
    ckpt = load_torch_checkpoint(path)
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        raise ModelFileError(f"{path}: not an openai-whisper checkpoint (no dims/model_state_dict)")
    cfg = WhisperConfig.from_openai(ckpt["dims"])
    tensors = dict(ckpt["model_state_dict"])
    check_names_and_shapes(tensors, openai_shapes(cfg), source=source)
    heads = _alignment_heads(ckpt.get("alignment_heads"))
    tok = tok or _default_tokenizer(path, cfg)
    tokens, types = complete_vocab(read_vocab(tok), cfg, source)
    return WhisperSource(cfg, tensors, tokens, types, heads, source)


def _default_tokenizer(pt: Path, cfg: WhisperConfig) -> Path:
    """A tokenizer beside the .pt, else the one shipped in an installed openai-whisper."""
    for name in ("tokenizer.json", "vocabulary.txt", "vocabulary.json"):
        if (pt.parent / name).is_file():
            return pt.parent / name
    asset = "multilingual.tiktoken" if cfg.is_multilingual else "gpt2.tiktoken"
    if (pt.parent / asset).is_file():
        return pt.parent / asset
    # locate the package without importing it (importing whisper imports torch)
    spec = importlib.util.find_spec("whisper")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if (Path(loc) / "assets" / asset).is_file():
            return Path(loc) / "assets" / asset
    raise ModelFileError(
        f"{pt}: no tokenizer found beside the checkpoint and openai-whisper is not installed; "
        f"pass --tokenizer PATH (tokenizer.json, vocabulary.txt or {asset})"
    )


# --------------------------------------------------------------------------------- GGUF out

# Quantized files keep the convolutions (small, and they see raw audio features) in f16 and the
# positional embeddings (added, not multiplied) in f32. The token embedding, both the input lookup
# and the tied output projection that decides every token, is Q8_0 in every quantized type (`_Q8_0`
# below): on held-out real speech (bench/quant_error.py --kl) it moves tiny.en q8_0's next-token KL
# divergence from f16 from 0.00053 to 0.00059 nats, and takes 40 -> 21 MB of tiny.en's file
# (53 -> 28 MB of base's). A 4-bit table would save 10 MB more but multiplies the divergence
# (bench/RESULTS.md).
_KEEP_FLOAT = re.compile(r"(conv\d\.weight|positional_embedding)$")
_KEEP_F32 = re.compile(r"positional_embedding$")
# Q8_0 in the 4-bit files too: every attention projection and the whole decoder, so only the
# encoder MLPs (two thirds of the encoder) are 4-bit. Measured (bench/RESULTS.md, 5-minute file):
# with everything 4-bit, tiny.en q4_0 fell into repetition loops (WER 0.07 -> 0.68) and base q4_k
# rose 0.04 -> 0.09; with this rule both match f16 or better.
_Q8_0 = re.compile(r"(\.attn\.(query|key|value|out)\.|^decoder\.)")
_ENCODER_MLP = re.compile(r"^encoder\.blocks\.\d+\.mlp\.[02]\.weight$")  # the 4-bit tensors


def gguf_tensors(src: WhisperSource, wtype: str) -> dict[str, np.ndarray | RawTensor]:
    """Storage type per tensor: `npasr.io.weights.storage_for` with Whisper's keep-float names,
    so the 2-D attention and MLP matrices are the ones quantized. The 4-bit types quantize the
    encoder MLPs with error feedback over the second moment of their calibration inputs
    (`calibrate`, `quant._gptq`), computed on the first request."""

    @cache
    def statistics() -> dict[str, np.ndarray]:
        from npasr.models.whisper.calibrate import encoder_mlp_importance  # noqa: PLC0415

        return encoder_mlp_importance(src, full=True)

    def importance(name: str) -> np.ndarray | None:
        return statistics().get(name) if _ENCODER_MLP.match(name) else None

    return {
        n: storage_for(n, a, wtype, _KEEP_FLOAT, _KEEP_F32, _Q8_0, importance)
        for n, a in src.tensors.items()
    }


def save_gguf(src: WhisperSource, out: str | os.PathLike[str], wtype: str = "f16") -> Path:
    check_wtype(wtype)
    meta: dict[str, object] = {
        "general.name": src.source.split(":", 1)[-1],
        "general.file_type": FILE_TYPES[wtype],
        "npasr.format_version": FORMAT_VERSION,
        "npasr.source": src.source,
        **src.config.to_gguf(),
        "tokenizer.ggml.model": "whisper",
    }
    if src.alignment_heads:
        meta["whisper.alignment_heads"] = np.asarray(src.alignment_heads, np.int32).reshape(-1)
    return write_gguf(
        out,
        "whisper",
        meta,
        gguf_tensors(src, wtype),
        tokens=src.tokens,
        token_types=src.token_types,
    )
