"""Reference-side helpers: write our GGUF weights as an openai-whisper .pt (needs torch); a
Whisper audio encoder with random weights (tests and bench/gpu_check.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from npasr.io.gguf import GGMLType, read_gguf
from npasr.models.whisper.config import WhisperConfig


def whisper_pt_from_gguf(gguf_path: str | Path, out_pt: str | Path) -> Path:
    """torch.save({"dims", "model_state_dict", "alignment_heads"}) from an npasr Whisper GGUF,
    so `whisper.load_model(out_pt)` runs openai-whisper on exactly the same weights."""
    import torch  # noqa: PLC0415

    g = read_gguf(gguf_path)
    cfg = WhisperConfig.from_gguf(g.metadata)
    state = {k: torch.from_numpy(np.array(v)) for k, v in g.tensors.items()}
    ckpt: dict[str, object] = {"dims": {k.split(".", 1)[1]: v for k, v in cfg.to_gguf().items()},
                               "model_state_dict": state}  # fmt: skip
    heads = g.get("whisper.alignment_heads")
    if heads:  # openai-whisper keeps them as a sparse (n_text_layer, n_text_head) bool mask
        mask = torch.zeros(cfg.n_text_layer, cfg.n_text_head, dtype=torch.bool)
        mask[tuple(torch.tensor(heads).reshape(-1, 2).T)] = True
        ckpt["alignment_heads"] = mask.to_sparse()
    torch.save(ckpt, out_pt)
    return Path(out_pt)


def random_encoder(
    rng: np.random.Generator, n_mels: int, d: int, n_head: int, n_layer: int, t: int,
    qtype: GGMLType | None = None,
):  # type: ignore[no-untyped-def]  # fmt: skip
    """A Whisper `AudioEncoder` of width d and t positions with random weights (matrices of std
    K^-1/2, as trained ones roughly are, quantized to `qtype` unless None; the key projection
    without bias, as openai-whisper's), and a random mel (n_mels, 2 t) for it."""
    from npasr.models.whisper.model import (  # noqa: PLC0415
        MLP,
        AudioEncoder,
        ResidualAttentionBlock,
        SelfAttention,
    )
    from npasr.nn import quant, ref  # noqa: PLC0415
    from npasr.nn.layers import Conv1d, LayerNorm, Linear  # noqa: PLC0415

    def rand(*shape: int, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def lin(n: int, k: int, no_bias: slice | None = None) -> Linear:
        w, b = rand(n, k, scale=k**-0.5), rand(n, scale=0.1)
        if no_bias is not None:
            b[no_bias] = 0.0
        return Linear(w if qtype is None else quant.quantize(w, qtype), b)

    def ln() -> LayerNorm:
        return LayerNorm(1 + rand(d, scale=0.1), rand(d, scale=0.1))

    blocks = [
        ResidualAttentionBlock(
            SelfAttention(lin(3 * d, d, slice(d, 2 * d)), lin(d, d), n_head), ln(), None, None,
            MLP(lin(4 * d, d), lin(d, 4 * d)), ln(),
        )
        for _ in range(n_layer)
    ]  # fmt: skip
    conv1 = Conv1d(rand(d, n_mels, 3, scale=0.3), rand(d, scale=0.1), 1, 1)
    conv2 = Conv1d(rand(d, d, 3, scale=0.1), rand(d, scale=0.1), 2, 1)
    mel = rand(n_mels, 2 * t)
    return AudioEncoder(conv1, conv2, ref.sinusoids(t, d), blocks, ln()), mel
