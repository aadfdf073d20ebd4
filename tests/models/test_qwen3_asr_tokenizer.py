"""Qwen2 byte-level BPE (npasr/models/qwen3_asr/tokenizer.py) against transformers' Qwen2Tokenizer.

Goldens: scripts/make_goldens_qwen3_asr_tokenizer.py over the synthetic tests/tiny/
qwen3_asr_tokenizer. The real vocabulary (not committed) is tested when NPASR_QWEN2_VOCAB_DIR
names a folder that script's `real-vocab` command made.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from npasr.io.gguf import read_gguf, write_gguf
from npasr.models.qwen3_asr.tokenizer import (
    CONTROL,
    QWEN2_PATTERN,
    UNUSED,
    USER_DEFINED,
    Qwen2Tokenizer,
    TokenizerData,
    read_hf_tokenizer,
)
from npasr.types import ModelFileError

from ..conftest import REPO

TINY = REPO / "tests" / "tiny" / "qwen3_asr_tokenizer"
GOLDEN = json.loads((REPO / "tests" / "golden" / "qwen3_asr_tokenizer.json").read_text("utf-8"))
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_start|>", "<|audio_end|>",
            "<|audio_pad|>", "<asr_text>", "<timestamp>"]  # fmt: skip
REAL = os.environ.get("NPASR_QWEN2_VOCAB_DIR")
GGUF_NAME = "ggml-vocab-qwen2.gguf"


@pytest.fixture(scope="module")
def tok() -> Qwen2Tokenizer:
    return Qwen2Tokenizer.from_dir(TINY)


def test_goldens_match_the_tiny_folder() -> None:
    for name, digest in GOLDEN["sha256"].items():
        assert hashlib.sha256((TINY / name).read_bytes()).hexdigest() == digest, (
            f"{TINY / name} changed: rerun scripts/make_goldens_qwen3_asr_tokenizer.py goldens"
        )


def _check_cases(tok: Qwen2Tokenizer, golden: dict[str, Any]) -> None:
    for c in golden["cases"]:
        assert tok.encode(c["text"]) == c["ids"], c["text"]
        assert tok.encode(c["text"], special=False) == c["ids_plain"], c["text"]
        assert tok.decode(c["ids"], skip_special=False) == c["decoded"], c["text"]
        assert tok.decode(c["ids"]) == c["decoded_skip"], c["text"]
    for d in golden["decodes"]:
        assert tok.decode(d["ids"], skip_special=False) == d["text"], d["ids"]
        assert tok.decode(d["ids"], skip_special=True) == d["text_skip"], d["ids"]


def test_goldens(tok: Qwen2Tokenizer) -> None:
    assert tok.vocab_size == GOLDEN["vocab_size"]
    _check_cases(tok, GOLDEN)


def test_round_trip(tok: Qwen2Tokenizer) -> None:
    for c in GOLDEN["cases"]:
        nfc = unicodedata.normalize("NFC", c["text"])
        assert tok.decode(tok.encode(c["text"]), skip_special=False) == nfc
        assert tok.decode(tok.encode(c["text"], special=False)) == nfc


def test_special_tokens(tok: Qwen2Tokenizer) -> None:
    ids = [tok.token_id(s) for s in SPECIALS]
    assert ids == list(range(2000, 2008))
    assert all(tok.is_special(i) for i in ids) and not tok.is_special(5) and not tok.is_special(-1)
    ids = tok.encode("<|im_start|>user\n<|audio_pad|>")
    assert (ids[0], ids[-1]) == (2001, 2005) and tok.decode(ids[1:-1]) == "user\n"
    assert tok.token_bytes(2002) == b"<|im_end|>" and tok.token_bytes(10**6) == b""
    assert tok.token_bytes(tok.encode(" ")[0]) == b" "
    assert tok.eos_id == tok.token_id("<|im_end|>") and tok.pad_id == tok.token_id("<|endoftext|>")
    with pytest.raises(ModelFileError, match="no token '<think>'"):
        tok.token_id("<think>")


def test_ids_without_tokens_decode_to_nothing(tok: Qwen2Tokenizer) -> None:
    hello = tok.encode("Hello")
    n = tok.vocab_size
    assert tok.decode([n, *hello, n + 1000, -1]) == "Hello"
    assert tok.decode([*hello, 2000, 2006], skip_special=False) == "Hello<|endoftext|><asr_text>"


def _copy(tmp: Path, *names: str) -> Path:
    for n in names:
        shutil.copy(TINY / n, tmp / n)
    return tmp


@pytest.mark.parametrize(
    "files",
    [
        ("vocab.json", "merges.txt", "tokenizer_config.json"),
        ("tokenizer.json",),
        ("tokenizer.json", "tokenizer_config.json"),
    ],
)
def test_any_file_set_gives_the_same_data(tmp_path: Path, files: tuple[str, ...]) -> None:
    full = read_hf_tokenizer(TINY)
    got = read_hf_tokenizer(_copy(tmp_path, *files))
    assert (got.tokens, got.token_types, got.merges) == (full.tokens, full.token_types, full.merges)
    if "tokenizer_config.json" in files:
        assert got == full
    else:  # eos/pad are named only in tokenizer_config.json
        assert got.eos_id is None


def test_gguf_round_trip_with_unused_ids(tmp_path: Path, tok: Qwen2Tokenizer) -> None:
    data = tok.data
    n = len(data.tokens)
    meta = data.to_gguf(vocab_size=n + 7)
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "qwen2"
    assert meta["tokenizer.ggml.tokens"][n] == f"[PAD{n}]"
    write_gguf(tmp_path / "t.gguf", "qwen3_asr", meta, {})
    back = TokenizerData.from_gguf(read_gguf(tmp_path / "t.gguf"))
    assert back == data.padded(n + 7)
    assert back.token_types[n:] == (UNUSED,) * 7 and back.token_types[2000] == CONTROL
    tok2 = Qwen2Tokenizer(back)
    assert tok2.vocab_size == n + 7
    for c in GOLDEN["cases"]:
        assert tok2.encode(c["text"]) == c["ids"]
        assert tok2.decode([*c["ids"], n + 3], skip_special=False) == c["decoded"]
    # llama.cpp's older converter typed the "[PAD<id>]" fillers as user-defined
    meta["tokenizer.ggml.token_type"][n:] = USER_DEFINED
    assert TokenizerData.from_gguf(meta) == back
    assert Qwen2Tokenizer.from_gguf(meta).decode([n + 1]) == ""


def test_gguf_errors(tok: Qwen2Tokenizer) -> None:
    meta = tok.data.to_gguf()
    with pytest.raises(ModelFileError, match="not a byte-level BPE"):
        TokenizerData.from_gguf({**meta, "tokenizer.ggml.model": "llama"})
    with pytest.raises(ModelFileError, match="unknown pre-tokenizer.*'llama-bpe'"):
        TokenizerData.from_gguf({**meta, "tokenizer.ggml.pre": "llama-bpe"})
    with pytest.raises(ModelFileError, match="token_type"):
        TokenizerData.from_gguf({**meta, "tokenizer.ggml.token_type": [1, 1]})
    with pytest.raises(ModelFileError, match="has type 6"):
        TokenizerData.from_gguf({**meta, "tokenizer.ggml.token_type": [6] * len(tok.data.tokens)})


# ---------------------------------------------------------------------------------------------
# bad folders


def _folder(tmp: Path, edit_vocab: Any = None, edit_merges: Any = None,
            edit_cfg: Any = None, with_json: bool = False) -> Path:  # fmt: skip
    vocab = json.loads((TINY / "vocab.json").read_text("utf-8"))
    merges = (TINY / "merges.txt").read_text("utf-8").splitlines()
    cfg = json.loads((TINY / "tokenizer_config.json").read_text("utf-8"))
    vocab = edit_vocab(vocab) if edit_vocab else vocab
    merges = edit_merges(merges) if edit_merges else merges
    cfg = edit_cfg(cfg) if edit_cfg else cfg
    (tmp / "vocab.json").write_text(json.dumps(vocab), "utf-8")
    (tmp / "merges.txt").write_text("\n".join(merges) + "\n", "utf-8")
    (tmp / "tokenizer_config.json").write_text(json.dumps(cfg), "utf-8")
    if with_json:
        shutil.copy(TINY / "tokenizer.json", tmp / "tokenizer.json")
    return tmp


def _first_merge(v: dict[str, int]) -> str:
    return next(t for t in v if len(t) > 1)


def _set_cfg_token(c: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    c["added_tokens_decoder"]["2003"][key] = value
    return c


BAD_FOLDERS = {
    "merge naming a token not in the vocab": (
        {"edit_merges": lambda m: [*m, "Ġzzz q"]}, "names 'Ġzzz', which is not in the vocab"),
    "merge without a space": ({"edit_merges": lambda m: [*m, "abc"]}, "not two tokens"),
    "duplicate id": (
        {"edit_vocab": lambda v: {**v, "Ġnew": 5}}, "share id 5"),
    "negative id": ({"edit_vocab": lambda v: {**v, "Ġnew": -3}}, "negative id -3"),
    "not byte-level": (
        {"edit_vocab": lambda v: {**v, "with space": 2100}}, "not byte-level"),
    "missing byte token": (
        {"edit_vocab": lambda v: {k: i for k, i in v.items() if k != "Ā"},
         "edit_merges": lambda m: [x for x in m if "Ā" not in x]}, "256 one-byte tokens"),
    "added token clashes with the vocab": (
        {"edit_cfg": lambda c: {**c, "added_tokens_decoder": {
            **c["added_tokens_decoder"], "7": c["added_tokens_decoder"]["2003"]}}},
        "id 7 is .* in the vocab but added token"),
    "lstrip": ({"edit_cfg": lambda c: _set_cfg_token(c, "lstrip", True)}, "lstrip"),
    "eos that is no token": ({"edit_cfg": lambda c: {**c, "eos_token": "<nope>"}}, "eos_token"),
    "vocab.json disagrees with tokenizer.json": (
        {"edit_vocab": lambda v: {**v, "Ġnew": 3000}, "with_json": True}, "different vocab"),
    "merges.txt disagrees with tokenizer.json": (
        {"edit_merges": lambda m: m[:-1], "with_json": True}, "different merges"),
    "added tokens disagree": (
        {"edit_cfg": lambda c: _set_cfg_token(c, "special", False), "with_json": True},
        "added token 2003"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_FOLDERS))
def test_bad_folders(tmp_path: Path, case: str) -> None:
    edits, message = BAD_FOLDERS[case]
    folder = _folder(tmp_path, **edits)
    with pytest.raises(ModelFileError, match=message):
        read_hf_tokenizer(folder)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="missing"):
        read_hf_tokenizer(_copy(tmp_path, "vocab.json", "merges.txt"))
    (tmp_path / "tokenizer_config.json").write_text("{not json", "utf-8")
    with pytest.raises(ModelFileError, match="tokenizer_config.json: not valid JSON"):
        read_hf_tokenizer(tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t["pre_tokenizer"]["pretokenizers"][0]["pattern"].update(Regex=r"\w+|\s+"),
         "unknown pre-tokenizer regex"),
        (lambda t: t.update(pre_tokenizer={"type": "Metaspace"}), "unknown pre-tokenizer"),
        (lambda t: t.update(normalizer=None), "normalizer None"),
        (lambda t: t["model"].update(ignore_merges=True), "ignore_merges"),
        (lambda t: t["model"].update(type="Unigram"), "not BPE"),
    ],
)  # fmt: skip
def test_unknown_pipelines_are_refused(tmp_path: Path, edit: Any, message: str) -> None:
    tj = json.loads((TINY / "tokenizer.json").read_text("utf-8"))
    assert tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] == QWEN2_PATTERN
    edit(tj)
    (tmp_path / "tokenizer.json").write_text(json.dumps(tj), "utf-8")
    with pytest.raises(ModelFileError, match=message):
        read_hf_tokenizer(tmp_path)


# ---------------------------------------------------------------------------------------------
# live comparisons


def _random_texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    pool = "".join(c["text"] for c in GOLDEN["cases"]) + " \n\t\r'sSdDlLmM\u0301\u200d\u00a0"
    out = []
    for k in range(n):
        s = "".join(rng.choice(pool) for _ in range(rng.randrange(1, 40)))
        out.append(s[:9] + SPECIALS[k % 8] + s[9:] if k % 4 == 0 else s)
    return out


def _compare_live(folder: Path, ours: Qwen2Tokenizer, texts: list[str]) -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    for t in texts:
        ids = hf(t, add_special_tokens=False).input_ids
        assert ours.encode(t) == ids, t
        plain = hf(t, add_special_tokens=False, split_special_tokens=True).input_ids
        assert ours.encode(t, special=False) == plain, t
        cut = ids[1:]  # may start inside a character
        for skip in (False, True):
            assert ours.decode(cut, skip) == hf.decode(cut, skip_special_tokens=skip), t


@pytest.mark.reference
def test_live_against_transformers(tok: Qwen2Tokenizer) -> None:
    _compare_live(TINY, tok, [c["text"] for c in GOLDEN["cases"]] + _random_texts(0, 500))


# ---------------------------------------------------------------------------------------------
# the real Qwen2 vocabulary (151643 BPE tokens), when a folder of it is at hand


@pytest.fixture(scope="module")
def real_dir() -> Path:
    if not REAL:
        pytest.skip("NPASR_QWEN2_VOCAB_DIR unset: see scripts/make_goldens_qwen3_asr_tokenizer.py")
    return Path(REAL)


def _llama_cpp_cases(d: Path) -> list[tuple[str, list[int]]]:
    texts = (d / f"{GGUF_NAME}.inp").read_text("utf-8").split("\n__ggml_vocab_test__\n")[:-1]
    ids = [[int(x) for x in ln.split()] for ln in (d / f"{GGUF_NAME}.out").read_text().split("\n")]
    return list(zip(texts, ids, strict=False))


@pytest.mark.parametrize("source", ["hf", "gguf"])
def test_real_vocab(real_dir: Path, source: str) -> None:
    if source == "hf":
        ours = Qwen2Tokenizer.from_dir(real_dir)
    else:
        ours = Qwen2Tokenizer.from_gguf(read_gguf(real_dir / GGUF_NAME))
        assert ours.vocab_size == 151936  # padded to the model's embedding rows
    assert ours.token_id("<|im_end|>") == 151645 and ours.decode([151700, 151935]) == ""
    cases = _llama_cpp_cases(real_dir)
    assert len(cases) > 40
    for text, ids in cases:  # the ids transformers gave llama.cpp's test texts
        assert ours.encode(text) == ids, text
    hf_ids = real_dir / "hf_ids.json"
    if hf_ids.is_file():
        _check_cases(ours, json.loads(hf_ids.read_text("utf-8")))


@pytest.mark.reference
def test_real_vocab_live(real_dir: Path) -> None:
    ours = Qwen2Tokenizer.from_dir(real_dir)
    texts = [c["text"] for c in GOLDEN["cases"]] + [t for t, _ in _llama_cpp_cases(real_dir)]
    _compare_live(real_dir, ours, texts + _random_texts(1, 1000))
