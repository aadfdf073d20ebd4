"""Parakeet / NeMo FastConformer sources -> GGUF.

Source: a NeMo `.nemo` archive (EncDecRNNTBPEModel with a TDT or RNN-T loss,
EncDecCTCModelBPE, EncDecHybridRNNTCTCBPEModel), read by `npasr.io.nemo` without NeMo or torch.
Canonical tensor names are NeMo's state_dict keys (all within GGUF's 63 bytes); only BatchNorm's
`num_batches_tracked` counters are dropped. The SentencePiece model is embedded in the GGUF
(`tokenizer.sentencepiece.model`) with its pieces as `tokenizer.ggml.tokens`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npasr.audio.features import hann_window, mel_filterbank
from npasr.io.nemo import NemoArchive, open_nemo
from npasr.io.safetensors import read_hf_weights, read_json
from npasr.io.weights import (
    apply_name_table,
    check_names_and_shapes,
    write_model_gguf,
)
from npasr.models.conformer import layer_shapes
from npasr.models.parakeet.config import ParakeetConfig, from_hf, from_nemo
from npasr.models.parakeet.model import FILTERBANK, WINDOW, conv_length
from npasr.types import ModelFileError

ARCH = "parakeet"


@dataclass
class ParakeetSource:
    config: ParakeetConfig
    tensors: dict[str, np.ndarray]  # canonical names, float32
    vocabulary: list[str]  # SentencePiece pieces; the blank is not among them
    sentencepiece: bytes
    source: str


def load_source(path: str | os.PathLike[str], tokenizer: str | os.PathLike[str] | None = None,
                ) -> ParakeetSource:  # fmt: skip
    """Read a `.nemo` archive or a transformers directory (config.json + safetensors); a
    SentencePiece model given as `tokenizer` replaces the source's own."""
    path = Path(path)
    if path.is_dir():
        return _load_hf(path, Path(tokenizer) if tokenizer is not None else None)
    arch = open_nemo(path)
    cfg = arch.config
    blob = Path(tokenizer).read_bytes() if tokenizer is not None else _tokenizer_blob(arch)
    pieces = _pieces(blob, path)
    config = from_nemo(cfg, vocab_size=len(pieces))
    sd = arch.state_dict()
    tensors = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    _check_vocabulary(tensors, config, len(pieces), path)
    check_names_and_shapes(tensors, expected_shapes(config), source=str(path))
    tensors = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
    return ParakeetSource(config, tensors, pieces, blob, f"nemo:{path.stem}")


# transformers ParakeetFor{TDT,RNNT,CTC} names -> NeMo's (first match wins; the rest of a name
# after the matched prefix is kept)
HF_TO_NEMO = [
    (r"encoder\.subsampling\.layers\.", "encoder.pre_encode.conv."),
    (r"encoder\.subsampling\.linear\.", "encoder.pre_encode.out."),
    (r"(encoder\.layers\.\d+\.self_attn)\.q_proj\.", r"\1.linear_q."),
    (r"(encoder\.layers\.\d+\.self_attn)\.k_proj\.", r"\1.linear_k."),
    (r"(encoder\.layers\.\d+\.self_attn)\.v_proj\.", r"\1.linear_v."),
    (r"(encoder\.layers\.\d+\.self_attn)\.o_proj\.", r"\1.linear_out."),
    (r"(encoder\.layers\.\d+\.self_attn)\.relative_k_proj\.", r"\1.linear_pos."),
    (r"(encoder\.layers\.\d+\.self_attn)\.bias_(u|v)$", r"\1.pos_bias_\2"),
    (r"(encoder\.layers\.\d+\.conv)\.norm\.", r"\1.batch_norm."),
    (r"encoder\.layers\.", "encoder.layers."),
    (r"encoder_projector\.", "joint.enc."),
    (r"decoder\.embedding\.", "decoder.prediction.embed."),
    (r"decoder\.lstm\.", "decoder.prediction.dec_rnn.lstm."),
    (r"decoder\.decoder_projector\.", "joint.pred."),
    (r"joint\.head\.", "joint.joint_net.2."),
    (r"ctc_head\.", "decoder.decoder_layers.0."),
]


def _load_hf(d: Path, tokenizer: Path | None) -> ParakeetSource:
    source = f"hf:{d.name}"
    pre_path = d / "preprocessor_config.json"
    config = from_hf(read_json(d / "config.json"),
                     read_json(pre_path) if pre_path.is_file() else {})  # fmt: skip
    tok = tokenizer or next((d / n for n in ("tokenizer.model", "spm.model")
                             if (d / n).is_file()), None)  # fmt: skip
    if tok is None or not tok.is_file():
        raise ModelFileError(f"{d}: no SentencePiece tokenizer.model here; pass the model's "
                             "tokenizer with --tokenizer (tokenizer=)")  # fmt: skip
    blob = tok.read_bytes()
    pieces = _pieces(blob, tok)
    raw = {k: v for k, v in read_hf_weights(d).items() if not k.endswith("num_batches_tracked")}
    tensors = apply_name_table(raw, HF_TO_NEMO, source=source)
    # transformers computes the front end's window and filterbank; NeMo stores them
    tensors[WINDOW] = hann_window(config.win_length, periodic=False).astype(np.float32)
    fb = mel_filterbank(config.sample_rate, config.n_fft, config.features)
    tensors[FILTERBANK] = np.asarray(fb, np.float32)[None]
    _check_vocabulary(tensors, config, len(pieces), d)
    check_names_and_shapes(tensors, expected_shapes(config), source=source)
    tensors = {k: np.asarray(v, np.float32) for k, v in tensors.items()}
    return ParakeetSource(config, tensors, pieces, blob, source)


def _tokenizer_blob(arch: NemoArchive) -> bytes:
    tok = (arch.config.get("tokenizer") or {}).get("model_path")
    name = str(tok).removeprefix("nemo:") if tok else None
    if name is None or name not in arch.members:
        found = arch.find("tokenizer.model")
        if len(found) != 1:
            raise ModelFileError(
                f"{arch.path}: {'no' if not found else 'more than one'} SentencePiece "
                "tokenizer (<hash>_tokenizer.model) in the archive; pass one with --tokenizer"
            )
        name = found[0]
    return arch.read(name)


def _pieces(blob: bytes, path: Path) -> list[str]:
    import sentencepiece as spm  # noqa: PLC0415

    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(blob)
    except (RuntimeError, OSError, TypeError) as e:
        raise ModelFileError(f"{path}: the tokenizer is not a SentencePiece model: {e}") from None
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


def _check_vocabulary(tensors: dict[str, np.ndarray], cfg: ParakeetConfig, n_pieces: int,
                      path: Path) -> None:  # fmt: skip
    """The output layer must have one row per piece, plus the blank (and the TDT durations):
    a tokenizer of another model would otherwise decode to wrong text without any error."""
    name = "decoder.decoder_layers.0.weight" if cfg.head == "ctc" else "joint.joint_net.2.weight"
    if name not in tensors:
        return  # reported by the strict name check
    rows = tensors[name].shape[0] - len(cfg.durations)
    if rows != n_pieces + 1:
        raise ModelFileError(
            f"{path}: the tokenizer has {n_pieces} pieces but the model's output layer has "
            f"{rows} token classes (pieces + blank = {n_pieces + 1}): wrong tokenizer for "
            "this model"
        )


def expected_shapes(cfg: ParakeetConfig) -> dict[str, tuple[int, ...]]:
    """Every state_dict key of the NeMo model (num_batches_tracked left out) with its shape."""
    c, d, f = cfg.subsampling_conv_channels, cfg.d_model, cfg.n_fft // 2 + 1
    s: dict[str, tuple[int, ...]] = {WINDOW: (cfg.win_length,), FILTERBANK: (1, cfg.features, f)}
    p = "encoder.pre_encode."
    s[p + "conv.0.weight"], s[p + "conv.0.bias"] = (c, 1, 3, 3), (c,)
    freq = conv_length(cfg.feat_in)
    for i in range(1, cfg.subsampling_factor.bit_length() - 1):
        s[p + f"conv.{3 * i - 1}.weight"], s[p + f"conv.{3 * i - 1}.bias"] = (c, 1, 3, 3), (c,)
        s[p + f"conv.{3 * i}.weight"], s[p + f"conv.{3 * i}.bias"] = (c, c, 1, 1), (c,)
        freq = conv_length(freq)
    s[p + "out.weight"], s[p + "out.bias"] = (d, c * freq), (d,)
    s |= layer_shapes(cfg.conformer())
    classes = cfg.vocab_size + 1
    if cfg.head == "ctc" or cfg.aux_ctc:
        q = "decoder." if cfg.head == "ctc" else "ctc_decoder."
        s[q + "decoder_layers.0.weight"] = (classes, d, 1)
        s[q + "decoder_layers.0.bias"] = (classes,)
    if cfg.head == "ctc":
        return s
    h, j = cfg.pred_hidden, cfg.joint_hidden
    s["decoder.prediction.embed.weight"] = (classes, h)
    for i in range(cfg.pred_rnn_layers):
        q = "decoder.prediction.dec_rnn.lstm."
        s[q + f"weight_ih_l{i}"] = s[q + f"weight_hh_l{i}"] = (4 * h, h)
        s[q + f"bias_ih_l{i}"] = s[q + f"bias_hh_l{i}"] = (4 * h,)
    s["joint.pred.weight"], s["joint.pred.bias"] = (j, h), (j,)
    s["joint.enc.weight"], s["joint.enc.bias"] = (j, d), (j,)
    out = classes + len(cfg.durations)
    s["joint.joint_net.2.weight"], s["joint.joint_net.2.bias"] = (out, j), (out,)
    return s


# Never quantized: the mel buffers (f32 too: tiny filterbank entries), the subsampling
# convolutions (they see the raw features), the prediction net (embedding rows and LSTM, read as
# float) and the CTC output layer. Every other matrix (attention, feed-forward, pointwise
# convolutions, `pre_encode.out`, `joint.enc/pred`) is quantized, and the joint's output layer
# is Q8_0 in every quantized type: it is read whole at every decoding step (8198 x 640: 21 MB in
# float32, 5.6 MB in Q8_0), which made it most of a step's time.
_KEEP_FLOAT = re.compile(
    r"^preprocessor\.|pre_encode\.conv\.|^decoder\.prediction\.|decoder_layers\."
)
_Q8_0 = re.compile(r"^joint\.joint_net\.")
_KEEP_F32 = re.compile(r"^preprocessor\.")


def save_gguf(src: ParakeetSource, out: str | os.PathLike[str], wtype: str = "f16") -> Path:
    """Per-tensor storage by `npasr.io.weights.storage_for` (f32, f16, q8_0, q4_0, q4_k)."""
    return write_model_gguf(out, ARCH, wtype, src.tensors, keep_float=_KEEP_FLOAT,
                            keep_f32=_KEEP_F32, q8_0=_Q8_0, config=src.config.to_gguf(),
                            source=src.source, tokens=src.vocabulary,
                            sentencepiece=src.sentencepiece)  # fmt: skip
