"""Build random-weight GigaAM v2 checkpoints with the PyPI `gigaam` package and record its outputs.

Reference: PyPI `gigaam==0.1.0` (the GigaAM-v2 code; the only release on PyPI). v2 differs from the
v3 GitHub code (scripts/make_goldens_gigaam.py) in the front end (n_fft 400, centred reflect-padded
STFT, fp32 window/filterbank), the subsampling (two Conv2d k=3 s=2 + Linear), the conv module
(kernel 31, BatchNorm) and the loader (no md5 table, `load_state_dict(strict=False)`, a plain
`torch.load`), see docs/gigaam.md.

Environment the committed goldens were made in (torch/torchaudio as in shared/REFERENCE-SETUP.md §3
option B; gigaam 0.1.0 declares torch<=2.5.1, which has no wheel here, so it is installed with
--no-deps and its other pins are honoured):
    python3 -m venv /work/venv_gigaam_v2
    /work/venv_gigaam_v2/bin/pip install torch==2.13.0
    /work/venv_gigaam_v2/bin/pip install --no-deps torchaudio==2.9.1
    mv /work/venv_gigaam_v2/lib/python3.11/site-packages/torchaudio/lib/_torchaudio.so{,.disabled}
    /work/venv_gigaam_v2/bin/pip install --no-deps gigaam==0.1.0
    /work/venv_gigaam_v2/bin/pip install hydra-core==1.3.2 omegaconf==2.3.0 sentencepiece==0.2.0 \
        tqdm soundfile 'numpy==2.*'
    -> Python 3.11.7, torch 2.13.0+cpu, torchaudio 2.9.1 (pure Python), gigaam 0.1.0,
       hydra-core 1.3.2, omegaconf 2.3.0, sentencepiece 0.2.0, soundfile 0.14.0, numpy 2.4.6
    torch >= 2.6 defaults `torch.load` to weights_only=True, which refuses the pickled OmegaConf
    cfg that gigaam 0.1.0 loads with a bare `torch.load`; this script sets
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (torch's documented switch) in main() instead of patching
    gigaam (the live test sets it with monkeypatch).
Commands:
    /work/venv_gigaam_v2/bin/python scripts/make_goldens_gigaam_v2.py             # tiny + goldens
    /work/venv_gigaam_v2/bin/python scripts/make_goldens_gigaam_v2.py --real OUT   # real size
    ... --check  (tiny: rebuild into a temp dir and compare with the committed files)

Each checkpoint is saved as `{"cfg": DictConfig, "state_dict"}` and loaded back through
`gigaam.load_model("v2_ctc" | "v2_rnnt", download_root=<dir holding v2_*.ckpt>)`, which finds the
file and downloads nothing; nothing in gigaam is patched. The cfgs follow the v2 layout: the
character list at the top as `labels` (sherpa-onnx's v2 export scripts read `model.cfg["labels"]`)
and only the keyword arguments the v2 constructors accept. The tiny CTC cfg also uses OmegaConf
interpolations (`${labels}`, `${encoder.d_model}`, ...), which npasr's converter must resolve.

Random weights, head balancing and the audio come from scripts/make_goldens_gigaam.py (imported).
The reference's greedy decoders return only text, so the tokens are taken from what they pass to
the tokenizer and the RNN-T emission frames from the joint calls they make (read-only wrappers).
Besides the official float32 features (`mel`), the official preprocessor module is also run in
float64 (`mel_f64`): float32 STFT rounding in quiet bins moves the log-mel by a few 1e-4, and npasr
computes the STFT in float64.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_goldens_gigaam as v3  # noqa: E402  (shared randomisation, balancing, audio)

REPO = v3.REPO
TINY_DIR, GOLDEN_DIR = v3.TINY_DIR, v3.GOLDEN_DIR
VOCAB = v3.VOCAB  # v2 uses the same 33 characters (no 'ё'); blank = 33

V2_PRE = {"_target_": "gigaam.preprocess.FeatureExtractor", "sample_rate": 16000, "features": 64}
# every keyword of gigaam 0.1.0 ConformerEncoder (conv kernel 31 is also its default)
V2_ENC = {"_target_": "gigaam.encoder.ConformerEncoder", "feat_in": 64, "n_layers": 16,
          "d_model": 768, "subsampling_factor": 4, "ff_expansion_factor": 4,
          "self_attention_model": "rotary", "n_heads": 16, "pos_emb_max_len": 5000,
          "conv_kernel_size": 31, "flash_attn": False}  # fmt: skip
TINY_ENC = {**V2_ENC, "n_layers": 2, "d_model": 32, "n_heads": 4}


def v2_cfg(model_class: str, enc: dict, pred: int = 0, joint: int = 0,
           interpolate: bool = False) -> dict:  # fmt: skip
    n_cls = len(VOCAB) + 1
    if model_class == "ctc":
        head = {"_target_": "gigaam.decoder.CTCHead", "feat_in": enc["d_model"],
                "num_classes": n_cls}  # fmt: skip
    else:
        head = {"_target_": "gigaam.decoder.RNNTHead",
                "decoder": {"pred_hidden": pred, "pred_rnn_layers": 1, "num_classes": n_cls},
                "joint": {"enc_hidden": enc["d_model"], "pred_hidden": pred,
                          "joint_hidden": joint, "num_classes": n_cls}}  # fmt: skip
    cfg = {"model_class": model_class, "sample_rate": 16000, "labels": list(VOCAB),
           "preprocessor": dict(V2_PRE), "encoder": dict(enc), "head": head,
           "decoding": {"_target_": f"gigaam.decoding.{model_class.upper()}GreedyDecoding",
                        "vocabulary": list(VOCAB)}}  # fmt: skip
    if interpolate:
        cfg["preprocessor"]["sample_rate"] = "${sample_rate}"
        cfg["encoder"]["feat_in"] = "${preprocessor.features}"
        cfg["encoder"].pop("conv_kernel_size")  # left to the constructor default (31)
        cfg["head"]["feat_in"] = "${encoder.d_model}"
        cfg["decoding"]["vocabulary"] = "${labels}"
    return cfg


# file stem -> (official model name it is loaded as, cfg, seed)
TINY = {
    "tiny_v2_ctc": ("v2_ctc", v2_cfg("ctc", TINY_ENC, interpolate=True), 21),
    "tiny_v2_rnnt": ("v2_rnnt", v2_cfg("rnnt", TINY_ENC, 16, 24), 22),
}
REAL = {
    "v2_ctc": ("v2_ctc", v2_cfg("ctc", V2_ENC), 31),
    "v2_rnnt": ("v2_rnnt", v2_cfg("rnnt", V2_ENC, 320, 320), 32),
}


def env() -> dict[str, str]:
    from importlib.metadata import version

    import torch
    import torchaudio

    pkgs = ("gigaam", "hydra-core", "omegaconf", "sentencepiece", "soundfile")
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchaudio": torchaudio.__version__, "numpy": np.__version__,
            **{p: version(p) for p in pkgs}}  # fmt: skip


def load_official(root: Path, official_name: str):
    import gigaam

    return gigaam.load_model(official_name, fp16_encoder=False, device="cpu",
                             download_root=str(root))  # fmt: skip


def _greedy_with_spies(model, enc, enc_len) -> tuple[str, list[int], list[int]]:
    """Run the reference's own greedy decoder; record the ids it hands to the tokenizer and,
    for RNN-T, the frame of every joint call (the wrappers only observe)."""
    import torch

    seen: list[list[int]] = []
    tok = model.decoding.tokenizer
    tok_decode = tok.decode
    tok.decode = lambda ids: (seen.append(list(ids)), tok_decode(ids))[1]
    calls: list[tuple[int, int]] = []  # (address of the frame row, argmax)
    joint = getattr(model.head, "joint", None)
    if joint is not None:
        joint_fn = joint.joint

        def spy(f, g):
            out = joint_fn(f, g)
            calls.append((f.data_ptr(), int(out[0, 0, 0].argmax())))
            return out

        joint.joint = spy
    try:
        text = model.decoding.decode(model.head, enc, enc_len)[0]
    finally:
        del tok.decode
        if joint is not None:
            del joint.joint
    assert len(seen) == 1
    ids = seen[0]
    if joint is None:  # CTC: emission frame = where the reference's skip mask keeps a label
        labels = model.head(enc)[0].argmax(-1)
        keep = labels != model.decoding.blank_id
        keep[1:] &= labels[1:] != labels[:-1]
        frames = torch.nonzero(keep[: int(enc_len[0])])[:, 0].tolist()
    else:  # every frame gets at least one joint call, so the sorted row addresses are 0..T-1
        rank = {p: t for t, p in enumerate(sorted({p for p, _ in calls}))}
        blank = model.decoding.blank_id
        frames = [rank[p] for p, k in calls if k != blank]
        assert [k for _, k in calls if k != blank] == ids
    assert len(frames) == len(ids)
    return text, ids, frames


def run_reference(model, wav) -> dict[str, np.ndarray]:
    """Features (float32 and float64), intermediate activations, head outputs, greedy tokens."""
    import torch

    acts: dict[str, np.ndarray] = {}
    hooks = [
        model.encoder.pre_encode.register_forward_hook(
            lambda m, i, o: acts.__setitem__("pre_encode", o[0][0].numpy().copy())),
        model.encoder.layers[0].register_forward_hook(
            lambda m, i, o: acts.__setitem__("layer0", o[0].numpy().copy())),
    ]  # fmt: skip
    length = torch.tensor([wav.shape[0]])
    with torch.no_grad():
        feats, feat_len = model.preprocessor(wav[None], length)
        pre64 = copy.deepcopy(model.preprocessor).double()
        mel64 = pre64(wav[None].double(), length)[0][0].numpy()
        enc, enc_len = model.encoder(feats, feat_len)
        text, ids, frames = _greedy_with_spies(model, enc, enc_len)
        out = {"mel": feats[0].numpy(), "mel_f64": mel64.astype(np.float32),
               "enc": enc[0].T.numpy(), "enc_len": int(enc_len[0]),
               "tokens": np.asarray(ids, np.int32), "frames": np.asarray(frames, np.int32),
               "text": np.asarray(text)}  # fmt: skip
        if hasattr(model.head, "decoder_layers"):
            out["log_probs"] = model.head(enc)[0].numpy()
        else:
            g, _ = model.head.decoder.predict(None, None)
            out["joint0"] = model.head.joint.joint(enc.transpose(1, 2)[:, :1], g)[0, 0, 0].numpy()
    for h in hooks:
        h.remove()
    assert int(feat_len[0]) == feats.shape[-1] == wav.shape[0] // 160 + 1
    return {**out, **acts}


def build_and_run(stem: str, official: str, cfg_dict: dict, seed: int, wav, out_ckpt: Path,
                  ) -> dict[str, np.ndarray]:  # fmt: skip
    """Build + randomise + balance, save as <out_ckpt>/<stem>.ckpt, reload it officially."""
    cfg, model = v3.build(cfg_dict, seed, wav, None)
    path = v3.save_official(cfg, model, out_ckpt, stem)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(path, Path(tmp) / f"{official}.ckpt")
        ref_model = load_official(Path(tmp), official)
    n = sum(t.numel() for t in model.state_dict().values())
    ref = run_reference(ref_model, wav)
    print(f"{stem}: {n} values, {len(ref['tokens'])} tokens: {str(ref['text'])[:60]!r}")
    return ref


def make_tiny(out_ckpt: Path, out_golden: Path) -> None:
    import torch

    torch.set_num_threads(1)
    wav = v3.load_wav()
    for stem, (official, cfg_dict, seed) in TINY.items():
        ref = build_and_run(stem, official, cfg_dict, seed, wav, out_ckpt)
        np.savez_compressed(out_golden / f"gigaam_{stem}.npz", **ref)
    (out_golden / "gigaam_v2_env.json").write_text(json.dumps(env(), indent=1) + "\n")


def make_real(out: Path, names: list[str]) -> None:
    """Real-size (d=768, 16 layers, kernel 31) random checkpoints + a summary of the reference."""
    import torch

    torch.set_num_threads(1)
    wav = v3.load_wav()
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        official, cfg_dict, seed = REAL[name]
        ref = build_and_run(name, official, cfg_dict, seed, wav, out)
        # no mel: the front end has no random weights, so it equals the tiny goldens' mel
        summary = {"enc_head": ref["enc"][:, :16],
                   "enc_len": ref["enc_len"], "enc_norm": np.linalg.norm(ref["enc"], axis=1),
                   "tokens": ref["tokens"], "frames": ref["frames"], "text": ref["text"],
                   "layer0_head": ref["layer0"][:, :16]}  # fmt: skip
        summary.update({k: ref[k] for k in ("log_probs", "joint0") if k in ref})
        np.savez_compressed(out / f"gigaam_real_{name}.npz", **summary)


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        make_tiny(t, t)
        bad = 0
        for stem in TINY:
            new, old = np.load(t / f"gigaam_{stem}.npz"), np.load(GOLDEN_DIR / f"gigaam_{stem}.npz")
            for k in old.files:
                same = np.array_equal(new[k], old[k])
                bad += not same
                print(f"{stem}.{k}: {'same' if same else 'DIFFERENT'}")
    return int(bad > 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--real", type=Path, help="write real-size ckpts + summaries into this dir")
    ap.add_argument("--names", nargs="*", default=list(REAL), help="real-size models to build")
    ap.add_argument("--check", action="store_true", help="rebuild tiny goldens and compare")
    args = ap.parse_args()
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # see the docstring
    if args.check:
        return check()
    if args.real:
        make_real(args.real, args.names)
        return 0
    make_tiny(TINY_DIR, GOLDEN_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
