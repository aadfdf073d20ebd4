"""Reference-side helpers: write our GGUF weights as an openai-whisper .pt (needs torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from npasr.io.gguf import read_gguf
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
