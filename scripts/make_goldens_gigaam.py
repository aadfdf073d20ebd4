"""Build random-weight GigaAM checkpoints with the official code and record its outputs as goldens.

Reference: salute-developers/GigaAM @ 85558932f047bf80d03f2b2e9dc2584c26e8bda6 (HEAD, "Fix batched
encoding by padding convolution results with zeroes (#75)"), installed with `pip install --no-deps`.

Environment the committed goldens were made in (shared/REFERENCE-SETUP.md §3, option B):
    python3 -m venv /work/venv_gigaam
    /work/venv_gigaam/bin/pip install torch==2.13.0
    /work/venv_gigaam/bin/pip install --no-deps torchaudio==2.9.1
    mv /work/venv_gigaam/lib/python3.11/site-packages/torchaudio/lib/_torchaudio.so{,.disabled}
    /work/venv_gigaam/bin/pip install --no-deps <GigaAM checkout at the commit above>
    /work/venv_gigaam/bin/pip install 'hydra-core==1.3.*' 'omegaconf==2.3.*' sentencepiece \
        soundfile tqdm 'numpy==2.*'
    -> Python 3.11.7, torch 2.13.0+cpu, torchaudio 2.9.1 (pure Python), hydra-core 1.3.8,
       omegaconf 2.3.1, sentencepiece 0.2.3, soundfile 0.14.0, numpy 2.4.6
Commands:
    /work/venv_gigaam/bin/python scripts/make_goldens_gigaam.py            # tiny ckpts + goldens
    /work/venv_gigaam/bin/python scripts/make_goldens_gigaam.py --real OUT  # real size
    ... --names A B  (only these models, e.g. --names tiny_v3_e2e_ctc, or with --real v3_e2e_ctc)
    ... --check  (tiny: rebuild into a temp dir and compare with the committed files)

Every checkpoint is saved exactly as the official loader expects ({"cfg": DictConfig,
"state_dict": ...}), loaded back through `gigaam.load_model` (its md5 table is the only thing
patched) and run from there, so the goldens come from the official loading path.

Random weights follow REFERENCE-SETUP §0: every float tensor is redrawn (matrices N(0, 1/fan_in),
1-D weights 1 + 0.1 N, biases and position biases 0.1 N, BN running_var U(0.5, 1.5)), the mel
window/filterbank keep torchaudio's values rounded to bfloat16 like the real v3 checkpoints, the
transducer blank embedding row is re-zeroed, and the last head layer is balanced on the test clip
so that greedy decoding emits varied tokens and blanks instead of one class everywhere.

e2e variants get a SentencePiece BPE model trained here (the real e2e tokenizers are not
available): tiny ones on SP_TEXT, the real-size ones with the real piece counts
(v3_e2e_ctc 256, v3_e2e_rnnt 1024 with byte fallback) on SP_TEXT plus made-up words.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GIGAAM_COMMIT = "85558932f047bf80d03f2b2e9dc2584c26e8bda6"
AUDIO = REPO.parent / "shared" / "data" / "ru_sherpa-qwen3-ru1.wav"  # 4.76 s Russian speech
TINY_DIR = REPO / "tests" / "tiny"
GOLDEN_DIR = REPO / "tests" / "golden"
VOCAB = [" ", *"абвгдежзийклмнопрстуфхцчшщъыьэюя"]  # v3 char vocabulary: 33, no 'ё'; blank = 33

V3_PRE = {"_target_": "gigaam.preprocess.FeatureExtractor", "sample_rate": 16000, "features": 64,
          "win_length": 320, "hop_length": 160, "mel_scale": "htk", "n_fft": 320,
          "mel_norm": None, "center": False}  # fmt: skip
V2_PRE = {"_target_": "gigaam.preprocess.FeatureExtractor", "sample_rate": 16000, "features": 64}
V3_ENC = {"_target_": "gigaam.encoder.ConformerEncoder", "feat_in": 64, "n_layers": 16,
          "d_model": 768, "subsampling_factor": 4, "ff_expansion_factor": 4,
          "self_attention_model": "rotary", "pos_emb_max_len": 5000, "n_heads": 16,
          "conv_kernel_size": 5, "flash_attn": False, "subs_kernel_size": 5,
          "subsampling": "conv1d", "conv_norm_type": "layer_norm"}  # fmt: skip
TINY_ENC = {**V3_ENC, "n_layers": 2, "d_model": 32, "n_heads": 4}
# v2-style tiny: conv2d subsampling + BatchNorm conv module, and rel-pos attention (GigaAM's
# NeMo-style RelPositionMultiHeadAttention) so the shared Conformer's second attention is covered
TINY_V2REL_ENC = {**TINY_ENC, "subsampling": "conv2d", "subs_kernel_size": 3,
                  "conv_norm_type": "batch_norm", "conv_kernel_size": 7,
                  "self_attention_model": "rel_pos"}  # fmt: skip


def ctc_cfg(pre: dict, enc: dict, n_classes: int, vocab: list[str] | None) -> dict:
    return {"model_class": "ctc", "sample_rate": 16000, "preprocessor": pre, "encoder": enc,
            "head": {"_target_": "gigaam.decoder.CTCHead", "feat_in": enc["d_model"],
                     "num_classes": n_classes},
            "decoding": {"_target_": "gigaam.decoding.CTCGreedyDecoding",
                         "vocabulary": vocab}}  # fmt: skip


def rnnt_cfg(pre: dict, enc: dict, n_classes: int, vocab: list[str] | None, pred: int,
             joint: int) -> dict:  # fmt: skip
    return {"model_class": "rnnt", "sample_rate": 16000, "preprocessor": pre, "encoder": enc,
            "head": {"_target_": "gigaam.decoder.RNNTHead",
                     "decoder": {"pred_hidden": pred, "pred_rnn_layers": 1,
                                 "num_classes": n_classes},
                     "joint": {"enc_hidden": enc["d_model"], "pred_hidden": pred,
                               "joint_hidden": joint, "num_classes": n_classes}},
            "decoding": {"_target_": "gigaam.decoding.RNNTGreedyDecoding",
                         "vocabulary": vocab}}  # fmt: skip


# name -> (cfg, seed, blank fraction target); "e2e" in a name means a SentencePiece vocabulary
TINY = {
    "tiny_v3_ctc": (ctc_cfg(V3_PRE, TINY_ENC, 34, VOCAB), 1),
    "tiny_v3_rnnt": (rnnt_cfg(V3_PRE, TINY_ENC, 34, VOCAB, 16, 24), 2),
    "tiny_v3_e2e_rnnt": (rnnt_cfg(V3_PRE, TINY_ENC, 65, None, 16, 24), 3),
    "tiny_v2rel_ctc": (ctc_cfg(V2_PRE, TINY_V2REL_ENC, 34, VOCAB), 4),
    "tiny_v3_e2e_ctc": (ctc_cfg(V3_PRE, TINY_ENC, 49, None), 5),
}
REAL = {
    "v3_ctc": (ctc_cfg(V3_PRE, V3_ENC, 34, VOCAB), 11),
    "v3_rnnt": (rnnt_cfg(V3_PRE, V3_ENC, 34, VOCAB, 320, 320), 12),
    # the real e2e sizes (REFERENCE §1.2): 256 pieces (CTC) and 1024 with byte fallback (RNN-T)
    "v3_e2e_ctc": (ctc_cfg(V3_PRE, V3_ENC, 257, None), 13),
    "v3_e2e_rnnt": (rnnt_cfg(V3_PRE, V3_ENC, 1025, None, 320, 320), 14),
}
# The real e2e tokenizers are not available; a piece list of the real size needs more text than
# SP_TEXT, so real-size tokenizers also see this many made-up lines (`pseudo_text`)
REAL_SP_LINES = 300
BYTE_FALLBACK = {"v3_e2e_rnnt"}
REFINE = {"v3_e2e_rnnt": 2}  # joint rebalancing rounds on the visited states (`build`)
# A tiny SentencePiece model for the e2e checkpoint, trained on text written for this purpose
SP_TEXT = [
    "Барсук убежал из вольера и долго гулял по ночному городу.",
    "Нейронные сети распознают речь, если их хорошо обучить.",
    "Утром в зоопарке сторож нашёл пустую клетку и позвал директора.",
    "Звери в киевском зоопарке любят тёплую погоду и свежую траву.",
    "Мы записали короткий пример русской речи для проверки модели.",
    "Каждый вечер по радио читали новости, сказки и стихи.",
]


def env() -> dict[str, str]:
    import omegaconf
    import sentencepiece
    import torch
    import torchaudio

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchaudio": torchaudio.__version__, "omegaconf": omegaconf.__version__,
            "sentencepiece": sentencepiece.__version__, "numpy": np.__version__,
            "gigaam_commit": GIGAAM_COMMIT}  # fmt: skip


def pseudo_text(n_lines: int, seed: int = 0) -> list[str]:
    """Sentences of made-up Russian-looking words (consonant-vowel syllables, capitalised first
    word, final punctuation): enough distinct subwords for a real-size BPE piece list."""
    rng = np.random.default_rng(seed)
    cons, vows = "бвгджзклмнпрстфхцчшщ", "аеёиоуыэюя"
    lines = []
    for _ in range(n_lines):
        words = ["".join(cons[rng.integers(len(cons))] + vows[rng.integers(len(vows))]
                         for _ in range(rng.integers(1, 5)))
                 for _ in range(rng.integers(4, 11))]  # fmt: skip
        lines.append(" ".join(words).capitalize() + ".?!"[rng.integers(3)])
    return lines


def n_classes(cfg_dict: dict) -> int:
    head = cfg_dict["head"]
    return head["decoder"]["num_classes"] if "decoder" in head else head["num_classes"]


def train_sentencepiece(path: Path, vocab_size: int, extra_lines: int = 0,
                        byte_fallback: bool = False) -> None:  # fmt: skip
    import sentencepiece as spm

    text = path.with_suffix(".txt")
    lines = SP_TEXT * 4 + (pseudo_text(extra_lines) if extra_lines else [])
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(path.with_suffix("")), vocab_size=vocab_size,
        model_type="bpe", character_coverage=1.0, normalization_rule_name="identity",
        bos_id=-1, eos_id=-1, unk_id=0, num_threads=1, minloglevel=2,
        byte_fallback=byte_fallback,
    )  # fmt: skip
    text.unlink()
    path.with_suffix(".vocab").unlink()


def randomize_(model, seed: int) -> None:
    """Redraw every float parameter/buffer except the mel DSP buffers (REFERENCE-SETUP §0)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in sorted(model.state_dict().items()):
            if name.startswith("preprocessor.") or not t.is_floating_point():
                continue
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_var":
                new = 0.5 + torch.rand(t.shape, generator=g)
            elif t.ndim >= 2 and "pos_bias" not in leaf:
                fan_in = t[0].numel()
                new = torch.randn(t.shape, generator=g) / fan_in**0.5
            elif leaf == "weight":
                new = 1.0 + 0.1 * torch.randn(t.shape, generator=g)
            else:  # biases, BN running_mean, pos_bias_u/v
                new = 0.1 * torch.randn(t.shape, generator=g)
            t.copy_(new)
        for k in ("featurizer.0.spectrogram.window", "featurizer.0.mel_scale.fb"):
            # v3 checkpoints store bf16-rounded buffers; v2 (no `center` attribute: always
            # centred) keeps torchaudio's float32 values
            if not getattr(model.preprocessor, "center", True):
                b = model.preprocessor.get_buffer(k)
                b.copy_(b.bfloat16().float())
        if hasattr(model.head, "decoder") and hasattr(model.head.decoder, "embed"):
            model.head.decoder.embed.weight[-1].zero_()  # padding_idx = blank row


def _balance(w, b, h, blank_share: float) -> None:
    """Make the last layer (w (C, H), b (C,)) emit varied classes on features h (N, H)."""
    import torch

    with torch.no_grad():
        w -= w.mean(0, keepdim=True)  # no class wins just because its row sum is largest
        logits = h @ w.T
        b.copy_(-logits.mean(0))  # every class has mean logit 0 over the clip
        logits = logits + b
        # blank wins row i once its bias exceeds need[i]; put the bias halfway between two
        # consecutive needs, so that no row is left at a tie (argmax ties break differently)
        need = torch.sort(logits[:, :-1].max(-1).values - logits[:, -1]).values
        i = min(max(int(blank_share * len(need)), 1), len(need) - 1)
        b[-1] += (need[i - 1] + need[i]) / 2


def _visited_states(model, enc, enc_len):
    """Prediction-net outputs (N, P) along the official greedy RNN-T path, recorded around
    `decoder.predict` while `model.decoding.decode` runs."""
    import torch

    dec, seen = model.head.decoder, []
    predict = dec.predict

    def record(*args, **kwargs):
        g, state = predict(*args, **kwargs)
        seen.append(g[:, 0])
        return g, state

    dec.predict = record
    try:
        model.decoding.decode(model.head, enc, enc_len)
    finally:
        del dec.predict
    return torch.cat(seen).unique(dim=0)


def build(cfg_dict: dict, seed: int, wav, tokenizer: Path | None, refine: int = 0):
    """`refine` (RNN-T): rebalance the joint this many times on the one-step prediction-net
    outputs plus those the greedy path visits (states after many tokens drift from one-step
    ones, and at real size with 1025 classes the path otherwise hits the symbol cap on every
    frame)."""
    import torch
    from gigaam.model import GigaAMASR
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(copy.deepcopy(cfg_dict))
    if tokenizer is not None:
        cfg.decoding.model_path = str(tokenizer)
    torch.manual_seed(seed)
    model = GigaAMASR(cfg).eval()
    randomize_(model, seed)
    with torch.no_grad():
        enc, enc_len = model.forward(wav[None], torch.tensor([wav.shape[0]]))
        x = enc.transpose(1, 2)[0]  # (T, D)
        if cfg.model_class == "ctc":
            w, b = model.head.decoder_layers[0].weight[:, :, 0], model.head.decoder_layers[0].bias
            _balance(w, b, x, 0.5)
        else:
            # prediction-net outputs after the fresh step and after one step on each token
            dec, n_cls = model.head.decoder, model.head.joint.joint_net[1].weight.shape[0]
            g0, state = dec.predict(None, None)
            batch_state = tuple(s.expand(-1, n_cls, -1).contiguous() for s in state)
            gk, _ = dec.predict(torch.arange(n_cls)[:, None], batch_state, n_cls)
            g = torch.cat([g0[0], gk[:, 0]])  # (1 + C, P)
            joint = model.head.joint
            w, b = joint.joint_net[1].weight, joint.joint_net[1].bias
            for i in range(1 + refine):
                g_i = g if i == 0 else torch.cat([g, _visited_states(model, enc, enc_len)])
                h = torch.relu(joint.enc(x)[:, None] + joint.pred(g_i)[None])  # (T, N, J)
                h = h.reshape(-1, joint.pred.out_features)
                _balance(w, b, h, 0.9)
    return cfg, model


def save_official(cfg, model, root: Path, name: str) -> Path:
    """{'cfg', 'state_dict'} exactly as gigaam.load_model reads it; returns the .ckpt path."""
    import torch

    path = root / f"{name}.ckpt"
    cfg = copy.deepcopy(cfg)
    if "model_path" in cfg.decoding:
        cfg.decoding.model_path = None  # load_model fills in <root>/<name>_tokenizer.model
    torch.save({"cfg": cfg, "state_dict": model.state_dict()}, path)
    return path


def load_official(root: Path, name: str):
    import gigaam

    gigaam._MODEL_HASHES[name] = gigaam.hash_path(str(root / f"{name}.ckpt"))  # the only patch
    return gigaam.load_model(name, fp16_encoder=False, device="cpu", download_root=str(root))


def run_reference(model, wav) -> dict[str, np.ndarray]:
    """Features, intermediate activations, head outputs and greedy tokens of one utterance."""
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
        enc, enc_len = model.encoder(feats, feat_len)
        text, ids, frames = model.decoding.decode(model.head, enc, enc_len)[0]
        out = {"mel": feats[0].numpy(), "enc": enc[0].T.numpy(), "enc_len": int(enc_len[0]),
               "tokens": np.asarray(ids, np.int32), "frames": np.asarray(frames, np.int32),
               "text": np.asarray(text)}  # fmt: skip
        if hasattr(model.head, "decoder_layers"):
            out["log_probs"] = model.head(enc)[0].numpy()
        else:
            g, _ = model.head.decoder.predict(None, None)
            out["joint0"] = model.head.joint.joint(enc.transpose(1, 2)[:, :1], g)[0, 0, 0].numpy()
    for h in hooks:
        h.remove()
    return {**out, **acts}


def load_wav():
    import soundfile as sf
    import torch

    audio, sr = sf.read(str(AUDIO), dtype="int16")
    assert sr == 16000 and audio.ndim == 1
    return torch.from_numpy(audio.astype(np.float32) / 32768.0)  # gigaam load_audio scaling


def make_tiny(out_ckpt: Path, out_golden: Path, names: list[str]) -> None:
    import torch

    torch.set_num_threads(1)
    wav = load_wav()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            cfg_dict, seed = TINY[name]
            tok = None
            if "e2e" in name:
                tok = out_ckpt / f"{name}_tokenizer.model"
                train_sentencepiece(tok, n_classes(cfg_dict) - 1)
            cfg, model = build(cfg_dict, seed, wav, tok)
            path = save_official(cfg, model, out_ckpt, name)
            if tok is not None:
                (Path(tmp) / tok.name).write_bytes(tok.read_bytes())
            (Path(tmp) / path.name).write_bytes(path.read_bytes())
            ref = run_reference(load_official(Path(tmp), name), wav)
            np.savez_compressed(out_golden / f"gigaam_{name}.npz", **ref)
            print(f"{name}: {sum(t.numel() for t in model.state_dict().values())} values, "
                  f"{len(ref['tokens'])} tokens: {str(ref['text'])[:60]!r}")  # fmt: skip
    (out_golden / "gigaam_env.json").write_text(json.dumps(env(), indent=1) + "\n")


def make_real(out: Path, names: list[str]) -> None:
    """Real-size (d=768, 16 layers) random checkpoints + a small summary of the reference run."""
    import torch

    torch.set_num_threads(1)
    wav = load_wav()
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        cfg_dict, seed = REAL[name]
        tok = None
        if "e2e" in name:  # next to the ckpt under the official name, where load_model looks
            tok = out / f"{name}_tokenizer.model"
            train_sentencepiece(tok, n_classes(cfg_dict) - 1, REAL_SP_LINES, name in BYTE_FALLBACK)
        cfg, model = build(cfg_dict, seed, wav, tok, REFINE.get(name, 0))
        save_official(cfg, model, out, name)
        del model
        ref = run_reference(load_official(out, name), wav)
        summary = {"mel": ref["mel"], "enc_head": ref["enc"][:, :16], "enc_len": ref["enc_len"],
                   "enc_norm": np.linalg.norm(ref["enc"], axis=1), "tokens": ref["tokens"],
                   "frames": ref["frames"], "text": ref["text"],
                   "layer0_head": ref["layer0"][:, :16]}  # fmt: skip
        summary.update({k: ref[k] for k in ("log_probs", "joint0") if k in ref})
        if "e2e" in name:  # same front end and buffers as v3_ctc: its summary holds the mel
            del summary["mel"]
        np.savez_compressed(out / f"gigaam_real_{name}.npz", **summary)
        print(f"{name}: {len(ref['tokens'])} tokens: {str(ref['text'])[:60]!r}")


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        make_tiny(t, t, list(TINY))
        bad = 0
        for name in TINY:
            new, old = np.load(t / f"gigaam_{name}.npz"), np.load(GOLDEN_DIR / f"gigaam_{name}.npz")
            for k in old.files:
                same = np.array_equal(new[k], old[k])
                bad += not same
                print(f"{name}.{k}: {'same' if same else 'DIFFERENT'}")
    return int(bad > 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--real", type=Path, help="write real-size ckpts + summaries into this dir")
    ap.add_argument("--names", nargs="*", help="models to build (default: all tiny, or all real)")
    ap.add_argument("--check", action="store_true", help="rebuild tiny goldens and compare")
    args = ap.parse_args()
    if args.check:
        return check()
    if args.real:
        make_real(args.real, args.names or list(REAL))
        return 0
    make_tiny(TINY_DIR, GOLDEN_DIR, args.names or list(TINY))
    return 0


if __name__ == "__main__":
    sys.exit(main())
