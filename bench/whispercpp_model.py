"""Write a whisper.cpp model file (its legacy "ggml" container) from an openai-whisper checkpoint.

whisper.cpp does not read GGUF or .pt; it reads one binary stream, all integers little-endian int32:

    magic 0x67676d6c ("ggml")
    hparams   n_vocab n_audio_ctx n_audio_state n_audio_head n_audio_layer
              n_text_ctx n_text_state n_text_head n_text_layer n_mels ftype (0 f32, 1 f16)
    mel       n_mel n_fft, then n_mel*n_fft float32 (the Slaney filterbank, 80 or 128 x 201)
    vocab     count, then per token: byte length + raw bytes, in token-id order
    tensors   until EOF: n_dims, name length, type (0 f32, 1 f16), the dims innermost-first,
              the name (utf-8), the data (row-major, i.e. the numpy layout)

Tensor names are openai-whisper's state-dict names. Matrices and conv kernels are stored in the
requested type; vectors, the two conv biases (as (n, 1)) and both positional embeddings stay
float32, as whisper.cpp allocates them. A q8_0 file is then made with whisper.cpp's own tool:
`whisper-quantize ggml-tiny.en-f16.bin ggml-tiny.en-q8_0.bin q8_0`.

Inputs: the openai-format .pt checkpoints bench/whisper_e2e.py caches (by default the one written
from npasr's own GGUF, so whisper.cpp runs the very weights npasr and openai-whisper run), the
mel filterbank and the tiktoken BPE ranks shipped inside the openai-whisper package.

    python bench/whispercpp_model.py --model tiny.en --out-dir /tmp/whispercpp-models
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import struct
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

MAGIC = 0x67676D6C
CACHE = C.REPO / "bench" / "out" / "cache"
HPARAMS = (
    "n_vocab",
    "n_audio_ctx",
    "n_audio_state",
    "n_audio_head",
    "n_audio_layer",
    "n_text_ctx",
    "n_text_state",
    "n_text_head",
    "n_text_layer",
    "n_mels",
)
KEEP_F32 = {  # ≥ 2-D tensors whisper.cpp holds as float32 whatever the file type
    "encoder.conv1.bias",
    "encoder.conv2.bias",
    "encoder.positional_embedding",
    "decoder.positional_embedding",
}


def whisper_assets() -> Path:
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("openai-whisper is not installed: its assets hold the mel filters/vocab")
    return Path(next(iter(spec.submodule_search_locations))) / "assets"


def mel_filters(n_mels: int) -> np.ndarray:
    with np.load(whisper_assets() / "mel_filters.npz") as f:
        return np.ascontiguousarray(f[f"mel_{n_mels}"], dtype=np.float32)


def vocab(n_vocab: int) -> list[bytes]:
    """BPE tokens in id order. Special tokens are not listed: whisper.cpp derives them from
    n_vocab (≥ 51865 means multilingual) and pads the table itself."""
    name = "multilingual.tiktoken" if n_vocab >= 51865 else "gpt2.tiktoken"
    ranks: dict[int, bytes] = {}
    for line in (whisper_assets() / name).read_bytes().splitlines():
        if line.strip():
            tok, rank = line.split()
            ranks[int(rank)] = base64.b64decode(tok)
    if sorted(ranks) != list(range(len(ranks))):
        raise ValueError(f"{name}: ranks are not 0..{len(ranks) - 1}")
    return [ranks[i] for i in range(len(ranks))]


def load_checkpoint(pt: Path) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    import torch

    ck = torch.load(pt, map_location="cpu", weights_only=False)
    dims = {k: int(v) for k, v in dict(ck["dims"]).items()}
    state = {k: v.detach().float().numpy() for k, v in ck["model_state_dict"].items()}
    return dims, state


def write_ggml(dims: dict[str, int], state: dict[str, np.ndarray], out: Path, f16=True) -> Path:
    def i32(*xs: int) -> bytes:
        return struct.pack(f"<{len(xs)}i", *xs)

    filters = mel_filters(dims["n_mels"])
    tokens = vocab(dims["n_vocab"])
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "wb") as f:
        f.write(i32(MAGIC, *(dims[k] for k in HPARAMS), int(f16)))
        f.write(i32(*filters.shape))
        f.write(filters.astype("<f4").tobytes())
        f.write(i32(len(tokens)))
        for t in tokens:
            f.write(i32(len(t)) + t)
        for name, t in state.items():
            conv_bias = name in ("encoder.conv1.bias", "encoder.conv2.bias")
            x = t.reshape(-1, 1) if conv_bias else t
            as_f16 = f16 and x.ndim >= 2 and name not in KEEP_F32
            data = x.astype("<f2" if as_f16 else "<f4")
            key = name.encode()
            f.write(i32(x.ndim, len(key), int(as_f16), *reversed(x.shape)))
            f.write(key)
            f.write(np.ascontiguousarray(data).tobytes())
    tmp.replace(out)
    return out


def default_checkpoint(model: str) -> Path:
    """bench/out/cache/openai-{model}-from-gguf.pt (npasr's weights), made if missing."""
    pt = CACHE / f"openai-{model}-from-gguf.pt"
    if not pt.exists():
        from npasr import hub
        from tests.models.whisper_ref import whisper_pt_from_gguf

        CACHE.mkdir(parents=True, exist_ok=True)
        whisper_pt_from_gguf(str(hub.resolve(f"whisper-{model}")), str(pt))
    return pt


def convert(model: str, out_dir: Path, pt: Path | None = None, f32=False) -> Path:
    pt = pt or default_checkpoint(model)
    dims, state = load_checkpoint(pt)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"ggml-{model}-{'f32' if f32 else 'f16'}.bin"
    return write_ggml(dims, state, out, f16=not f32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny.en", help="tiny.en, base, …")
    ap.add_argument("--pt", type=Path, help="openai-format checkpoint (default: from npasr GGUF)")
    ap.add_argument("--out-dir", type=Path, default=Path("/tmp/whispercpp-models"))
    ap.add_argument("--f32", action="store_true", help="float32 matrices instead of float16")
    args = ap.parse_args()
    out = convert(args.model, args.out_dir, args.pt, args.f32)
    print(f"{out} ({out.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
