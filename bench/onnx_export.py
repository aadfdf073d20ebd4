"""ONNX exports for the onnx-asr races (bench/parakeet.py, bench/gigaam.py): each model's own
exporter, then onnxruntime's dynamic int8 quantization, laid out as onnx-asr loads a folder.

    /tmp/venv_nemo/bin/python bench/onnx_export.py nemo M.nemo DIR       # NeMo's model.export
    /tmp/venv_gigaam/bin/python bench/onnx_export.py gigaam M.ckpt DIR   # GigaAM's model.to_onnx
    /tmp/venv_onnx/bin/python bench/onnx_export.py quantize DIR          # *.onnx -> *.int8.onnx

nemo: `ASRModel.restore_from(M.nemo)`, then `model.export(DIR/model.onnx)` (NeMo 3.0's
TorchScript-based torch.onnx.export; a transducer is written as encoder-model.onnx +
decoder_joint-model.onnx, a CTC model as model.onnx), vocab.txt ("piece id" lines, "<blk>"
last) and config.json as onnx-asr's docs/conversion.md describes (features_size 128,
subsampling_factor 8, max_tokens_per_step = the model's greedy max_symbols).

gigaam: `gigaam.load_model(name, fp16_encoder=False, use_flash=False)` from the checkpoint's
folder (its md5 registered, as bench/gigaam.py does), `model.to_onnx(dir_path=DIR)` (GigaAM's
own exporter: v3_ctc.onnx, encoder + CTC head, outputs log_probs), v3_vocab.txt as conversion.md
writes it and config.json {"version": "v3"} (onnx-asr's gigaam_v3 preprocessor).

quantize: `onnxruntime.quantization.quantize_dynamic(src, dst, weight_type=QuantType.QUInt8)`
(default op types, per-tensor), as sherpa-onnx's NeMo export scripts make their *.int8.onnx.
Files over 2 GB are written with external data by the exporters; the int8 ones fit in one file.
"""

# ruff: noqa: PLC0415 (each subcommand runs in its own venv)

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def export_nemo(src: Path, out: Path) -> None:
    import torch

    torch.set_num_threads(2)
    from nemo.collections.asr.models import ASRModel

    model = ASRModel.restore_from(str(src), map_location="cpu").eval()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model.export(str(out / "model.onnx"))
    print(
        f"exported {src} in {time.perf_counter() - t0:.0f} s: "
        f"{sorted(p.name for p in out.glob('*.onnx'))}"
    )
    pieces = list(model.tokenizer.vocab)
    (out / "vocab.txt").write_text(
        "".join(f"{tok} {i}\n" for i, tok in enumerate([*pieces, "<blk>"])), encoding="utf-8"
    )
    transducer = hasattr(model, "joint")
    cfg = {
        "model_type": "nemo-conformer-tdt" if transducer else "nemo-conformer-ctc",
        "features_size": int(model.cfg.preprocessor.features),
        "subsampling_factor": int(model.cfg.encoder.subsampling_factor),
    }
    if transducer:
        durations = list(model.cfg.decoding.get("durations", []) or [])
        cfg["model_type"] = "nemo-conformer-tdt" if durations else "nemo-conformer-rnnt"
        cfg["max_tokens_per_step"] = int(model.cfg.decoding.greedy.max_symbols)
    (out / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")


def export_gigaam(ckpt: Path, out: Path) -> None:
    import torch

    torch.set_num_threads(2)
    here = Path(__file__).resolve().parent  # holds bench/gigaam.py: not the package
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    import gigaam

    name = ckpt.stem
    gigaam._MODEL_HASHES[name] = gigaam.hash_path(str(ckpt))  # local random weights
    model = gigaam.load_model(
        name, fp16_encoder=False, use_flash=False, device="cpu", download_root=str(ckpt.parent)
    )
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model.to_onnx(dir_path=str(out))
    print(
        f"exported {ckpt} in {time.perf_counter() - t0:.0f} s: "
        f"{sorted(p.name for p in out.glob('*.onnx'))}"
    )
    version = name.split("_", 1)[0]  # v3
    vocab = ["\u2581", *(chr(ord("а") + i) for i in range(32)), "<blk>"]
    assert vocab[1:-1] == list(model.decoding.tokenizer.vocab[1:]), "not the v2/v3 char vocabulary"
    (out / f"{version}_vocab.txt").write_text(
        "".join(f"{tok} {i}\n" for i, tok in enumerate(vocab)), encoding="utf-8"
    )
    cfg = {
        "model_type": f"gigaam-{version}-{'ctc' if 'ctc' in name else 'rnnt'}",
        "features_size": 64,
        "subsampling_factor": 4,
        "version": version,
    }
    (out / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")


def quantize(folder: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    for src in sorted(folder.glob("*.onnx")):
        if src.name.endswith(".int8.onnx"):
            continue
        dst = src.with_name(src.name[: -len(".onnx")] + ".int8.onnx")
        t0 = time.perf_counter()
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8)
        print(f"{dst.name}: {dst.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - t0:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=("nemo", "gigaam", "quantize"))
    ap.add_argument("paths", nargs="+", type=Path)
    a = ap.parse_args()
    if a.what == "quantize":
        quantize(a.paths[0])
    elif a.what == "nemo":
        export_nemo(*a.paths)
    else:
        export_gigaam(*a.paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
