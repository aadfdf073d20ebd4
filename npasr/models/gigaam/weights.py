"""GigaAM checkpoints (.ckpt) -> GGUF, without torch or omegaconf.

An official checkpoint is `torch.save({"cfg": DictConfig, "state_dict": {...}})`
(salute-developers/GigaAM@8555893 gigaam/__init__.py::load_model reads it with
`weights_only=False`). We read it with the restricted unpickler of `npasr.io.torch_zip`; the
OmegaConf classes the cfg pickle names are replaced by the inert stand-ins below, which keep
only the values (`_content` of containers, `_val` of leaf nodes) and never import omegaconf.
Any other global (os.system, builtins.eval, ...) is refused with `UnsafeCheckpointError`.

Canonical tensor names are the GigaAM state_dict keys (they fit GGUF's 63-byte limit), so the
GGUF stores them unchanged; the only source-side drop is BatchNorm's `num_batches_tracked`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from npasr.io.config import resolve_interpolations
from npasr.io.torch_zip import load_torch_checkpoint
from npasr.io.weights import (
    check_names_and_shapes,
    write_model_gguf,
)
from npasr.models.conformer import layer_shapes
from npasr.models.gigaam.config import GigaAMConfig
from npasr.types import ModelFileError

WINDOW = "preprocessor.featurizer.0.spectrogram.window"
FILTERBANK = "preprocessor.featurizer.0.mel_scale.fb"  # (F, n_mels), torchaudio layout


class _Container:
    """Stand-in for omegaconf DictConfig/ListConfig: keeps `_content`, drops the metadata."""

    content: Any = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.content = state.get("_content") if isinstance(state, dict) else None


class _Node:
    """Stand-in for omegaconf value nodes (AnyNode, StringNode, ...): keeps `_val`."""

    val: Any = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.val = state.get("_val") if isinstance(state, dict) else None


class _Ignored:
    """Stand-in for omegaconf metadata records; their state is discarded."""

    def __setstate__(self, state: Any) -> None:
        pass


_TYPE_REF = object()  # what a pickled reference to a type (dict, typing.Any, ...) becomes
_NODES = ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "BytesNode",
          "PathNode", "ValueNode")  # fmt: skip
# Everything an OmegaConf 2.x cfg pickle names, mapped to inert replacements. Protocol-2
# pickles (torch.save's default) spell builtins as __builtin__ (int as `long`).
OMEGACONF_ALLOWED: dict[tuple[str, str], Any] = {
    ("omegaconf.dictconfig", "DictConfig"): _Container,
    ("omegaconf.listconfig", "ListConfig"): _Container,
    **{("omegaconf.nodes", n): _Node for n in _NODES},
    ("omegaconf.base", "ContainerMetadata"): _Ignored,
    ("omegaconf.base", "Metadata"): _Ignored,
    ("collections", "defaultdict"): lambda *args: {},  # metadata resolver_cache only
    ("typing", "Any"): _TYPE_REF,
    **{(m, n): _TYPE_REF for m in ("__builtin__", "builtins")
       for n in ("dict", "list", "int", "long", "float", "str", "unicode", "bool", "object")},
}  # fmt: skip


def plain(obj: Any) -> Any:
    """The stand-in tree as plain dicts, lists and scalars."""
    if isinstance(obj, _Container):
        return plain(obj.content)
    if isinstance(obj, _Node):
        return plain(obj.val)
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    return obj


@dataclass
class GigaAMSource:
    config: GigaAMConfig
    tensors: dict[str, np.ndarray]  # canonical names, float32
    vocabulary: list[str]  # characters, or SentencePiece pieces (e2e)
    sentencepiece: bytes | None  # the tokenizer .model of e2e variants
    source: str


def load_source(path: str | os.PathLike[str], tokenizer: str | os.PathLike[str] | None = None,
                ) -> GigaAMSource:  # fmt: skip
    """Read an official `.ckpt` (and, for SentencePiece models, its `_tokenizer.model`)."""
    path = Path(path)
    ckpt = load_torch_checkpoint(path, extra_allowed=OMEGACONF_ALLOWED)
    if not isinstance(ckpt, dict) or "cfg" not in ckpt or "state_dict" not in ckpt:
        raise ModelFileError(f"{path}: not a GigaAM checkpoint (expected keys 'cfg', 'state_dict')")
    try:
        cfg = resolve_interpolations(plain(ckpt["cfg"]))  # v2 cfgs may use `${...}` references
        config = GigaAMConfig.from_checkpoint(cfg)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: GigaAM cfg lacks or mangles {e}") from None
    tensors = {k: np.asarray(v) for k, v in ckpt["state_dict"].items()
               if not k.endswith("num_batches_tracked")}  # fmt: skip
    check_names_and_shapes(tensors, expected_shapes(config), source=str(path))
    vocab, sp = _vocabulary(cfg, path, tokenizer)
    if len(vocab) + 1 != config.num_classes:
        raise ModelFileError(f"{path}: {len(vocab)} tokens + blank != {config.num_classes} classes")
    tensors = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
    return GigaAMSource(config, tensors, vocab, sp, f"gigaam:{path.stem}")


def _vocabulary(cfg: dict[str, Any], path: Path, tokenizer: str | os.PathLike[str] | None,
                ) -> tuple[list[str], bytes | None]:  # fmt: skip
    decoding = cfg.get("decoding") or {}
    chars = decoding.get("vocabulary") or cfg.get("labels")  # v2 cfgs keep `labels` at the top
    if chars and tokenizer is None:
        return [str(c) for c in chars], None
    tok = Path(tokenizer) if tokenizer else path.with_name(f"{path.stem}_tokenizer.model")
    if not tok.is_file():
        raise ModelFileError(
            f"{path}: this model uses a SentencePiece tokenizer; pass it with --tokenizer "
            f"(official name {path.stem}_tokenizer.model, next to the checkpoint)"
        )
    import sentencepiece as spm  # noqa: PLC0415 (only e2e models need it)

    blob = tok.read_bytes()
    sp = spm.SentencePieceProcessor(model_proto=blob)
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())], blob


def expected_shapes(cfg: GigaAMConfig) -> dict[str, tuple[int, ...]]:
    """Every state_dict key of the official GigaAMASR with its shape (strict loading)."""
    d, f = cfg.d_model, cfg.n_fft // 2 + 1
    s: dict[str, tuple[int, ...]] = {WINDOW: (cfg.win_length,), FILTERBANK: (f, cfg.features)}
    k = cfg.subs_kernel_size
    for i in range(2):  # conv.0 and conv.2 (conv.1 / conv.3 are ReLUs)
        c_in = d if i > 0 else (cfg.feat_in if cfg.subsampling == "conv1d" else 1)
        kernel = (k,) if cfg.subsampling == "conv1d" else (k, k)
        s[f"encoder.pre_encode.conv.{2 * i}.weight"] = (d, c_in, *kernel)
        s[f"encoder.pre_encode.conv.{2 * i}.bias"] = (d,)
    if cfg.subsampling == "conv2d":
        freq = cfg.feat_in
        for _ in range(2):
            freq = (freq + 2 * ((k - 1) // 2) - k) // 2 + 1
        s["encoder.pre_encode.out.weight"], s["encoder.pre_encode.out.bias"] = (d, d * freq), (d,)
    s |= layer_shapes(cfg.conformer())
    c = cfg.num_classes
    if cfg.head == "ctc":
        s["head.decoder_layers.0.weight"], s["head.decoder_layers.0.bias"] = (c, d, 1), (c,)
        return s
    h, j = cfg.pred_hidden, cfg.joint_hidden
    s["head.decoder.embed.weight"] = (c, h)
    for i in range(cfg.pred_rnn_layers):
        s[f"head.decoder.lstm.weight_ih_l{i}"] = s[f"head.decoder.lstm.weight_hh_l{i}"] = (4 * h, h)
        s[f"head.decoder.lstm.bias_ih_l{i}"] = s[f"head.decoder.lstm.bias_hh_l{i}"] = (4 * h,)
    s["head.joint.pred.weight"], s["head.joint.pred.bias"] = (j, h), (j,)
    s["head.joint.enc.weight"], s["head.joint.enc.bias"] = (j, d), (j,)
    s["head.joint.joint_net.1.weight"], s["head.joint.joint_net.1.bias"] = (c, j), (c,)
    return s


# Never quantized: the mel buffers (kept f32 too: filterbank entries near zero would lose
# precision in f16), the subsampling convolutions (they see raw features), the prediction net
# (embedding rows and LSTM, read as float), and the output layers whose logits decide every token
# (CTC `decoder_layers`, `joint_net`; both tiny). Everything else that is a matrix (attention,
# feed-forward, pointwise convolutions, `joint.enc/pred`, v2 `pre_encode.out`) is quantized.
_KEEP_FLOAT = re.compile(
    r"^preprocessor\.|pre_encode\.conv\.|^head\.decoder\.|^head\.decoder_layers\.|joint_net\."
)
_KEEP_F32 = re.compile(r"^preprocessor\.")


def save_gguf(src: GigaAMSource, out: str | os.PathLike[str], wtype: str = "f16") -> Path:
    """Per-tensor storage by `npasr.io.weights.storage_for` (f32, f16, q8_0, q4_0, q4_k)."""
    return write_model_gguf(out, "gigaam", wtype, src.tensors, keep_float=_KEEP_FLOAT,
                            keep_f32=_KEEP_F32, config=src.config.to_gguf(), source=src.source,
                            tokens=src.vocabulary, sentencepiece=src.sentencepiece)  # fmt: skip
