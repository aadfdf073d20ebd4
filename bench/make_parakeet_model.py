"""Random-weight Parakeet TDT / CTC .nemo files for bench/parakeet.py, built by NeMo's own classes
exactly as scripts/make_goldens_parakeet.py builds them (its `build` and `save_nemo`: seeded
random weights, heads balanced on the repo's clips), without writing any golden.

    /tmp/venv_nemo/bin/python bench/make_parakeet_model.py --size small --out /tmp/parakeet_small
    /tmp/venv_nemo/bin/python bench/make_parakeet_model.py --size real --names tdt \\
        --out /tmp/parakeet_real      # the same weights as `make_goldens_parakeet.py --real`

`real` is parakeet-tdt-0.6b-v3's size (24 x 1024, pred/joint 640: same table and seeds as the
goldens script, so the same .nemo); `small` (4 x 256, 4 heads, pred/joint 160) is for debugging
the harness. Files: DIR/parakeet_{size}_{name}.nemo.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def goldens_module():
    spec = importlib.util.spec_from_file_location(
        "make_goldens_parakeet", REPO / "scripts" / "make_goldens_parakeet.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=("small", "real"), default="small")
    ap.add_argument("--names", nargs="*", default=["tdt", "ctc"])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    g = goldens_module()
    small_enc = {
        **g.V3_ENC,
        "n_layers": 4,
        "d_model": 256,
        "n_heads": 4,
        "subsampling_conv_channels": 64,
    }
    table = (
        g.REAL
        if args.size == "real"
        else {
            "tdt": ("EncDecRNNTBPEModel", g.transducer_cfg(small_enc, 160, 160), 21),
            "ctc": ("EncDecCTCModelBPE", g.ctc_cfg(small_enc), 22),
        }
    )
    # The goldens' checks (every clip 30-70 % blank steps, all durations, the symbol cap hit, no
    # near-ties) guard decoding tests; a timing model needs only a realistic mix. `small` takes
    # the first draw; `real` also accepts a joint or CTC layer whose blank share over all clips
    # (steps or frames) is 30-70 %, however the clips differ.
    real_ok = {name: getattr(g, name) for name in ("transducer_ok", "ctc_ok")}

    def transducer_ok(*a):
        ok, stats = real_ok["transducer_ok"](*a)
        blank = sum(s["blank_steps"] for s in stats) / sum(s["steps"] for s in stats)
        return ok or args.size == "small" or 0.3 <= blank <= 0.7, stats

    def ctc_ok(*a):
        ok, stats = real_ok["ctc_ok"](*a)
        blank = sum(s["blank_frames"] for s in stats) / sum(s["frames"] for s in stats)
        return ok or args.size == "small" or 0.3 <= blank <= 0.7, stats

    g.transducer_ok, g.ctc_ok = transducer_ok, ctc_ok
    clips = g.load_clips()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tok = g.write_tokenizer_dir(Path(tmp) / "tokenizer")
        for name in args.names:
            cls_name, cfg, seed = table[name]
            print(f"building parakeet_{args.size}_{name} ({cls_name})", flush=True)
            model, info = g.build(cls_name, cfg, seed, clips, tok)
            path = args.out / f"parakeet_{args.size}_{name}.nemo"
            g.save_nemo(model, path)
            print(f"  {path}: {path.stat().st_size / 1e6:.1f} MB, {info}", flush=True)
            del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
