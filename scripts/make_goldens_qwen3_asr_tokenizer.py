"""Goldens for npasr's Qwen2 tokenizer (npasr/models/qwen3_asr/tokenizer.py), made with
transformers' Qwen2Tokenizer so that CI needs no transformers.

    # tests/golden/qwen3_asr_tokenizer.json from the synthetic tests/tiny/qwen3_asr_tokenizer
    /tmp/venv_ref/bin/python scripts/make_goldens_qwen3_asr_tokenizer.py goldens

The REAL Qwen2 vocabulary (151643 BPE tokens, 151387 merges: Qwen1.5's = Qwen2's = Qwen3's) is
not committed. llama.cpp ships it as models/ggml-vocab-qwen2.gguf (with .inp/.out: texts and
the ids transformers gave them), and the llama-cpp-python sdist on PyPI vendors that folder:

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/lcp
    python scripts/make_goldens_qwen3_asr_tokenizer.py real-vocab \\
        /tmp/lcp/llama_cpp_python-0.3.36.tar.gz /tmp/qwen2_vocab      # project env (numpy)
    /tmp/venv_ref/bin/python scripts/make_goldens_qwen3_asr_tokenizer.py hf-ids /tmp/qwen2_vocab
    NPASR_QWEN2_VOCAB_DIR=/tmp/qwen2_vocab python -m pytest tests/models/test_qwen3_asr_tokenizer.py

`real-vocab` writes vocab.json, merges.txt and tokenizer_config.json (Qwen2's three special
tokens) next to the .gguf/.inp/.out; `hf-ids` adds hf_ids.json (transformers' ids for TEXTS and
the .inp texts) so the test needs no transformers either.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "tiny" / "qwen3_asr_tokenizer"
GOLDEN = REPO / "tests" / "golden" / "qwen3_asr_tokenizer.json"
GGUF_NAME = "ggml-vocab-qwen2.gguf"

# A multilingual set: scripts, combining marks, emoji (ZWJ, flags, skin tones), numbers and
# superscripts, whitespace runs, newlines, tabs, contractions in several cases, special tokens.
TEXTS = [
    "",
    "Hello world",
    " Hello world",
    "Hello, world! How are you?",
    "And so my fellow Americans, ask not what your country can do for you.",
    "Café déjà vu: naïve façade, Ångström, São Paulo, Zürich, Œuvre, ﬁne",
    "Cafe\u0301 (decomposed e + U+0301) and Ω vs \u2126 ohm sign",  # NFC changes these
    "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "Ёжик в тумане; ЁЖИК; ёж",
    "你好，世界！今天天气很好。我们去公园吧。",
    "中华人民共和国成立于1949年10月1日",
    "ひらがなとカタカナ、そして漢字。ｶﾀｶﾅ（半角）",
    "안녕하세요, 세계! 한국어 텍스트입니다.",
    "مرحبا بالعالم! هذا نص عربي ١٢٣٤٥",
    "नमस्ते दुनिया! हिन्दी में क्षत्रिय, द्वार, कृष्ण",
    "ภาษาไทย สวัสดีครับ",
    "Γειά σου Κόσμε; ἀρχή",
    "שלום עולם",
    "emoji 😀😃 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇺🇦🇯🇵 ❤️ 1️⃣",
    "🦙.cpp and 🤗 transformers",
    "12345 678 9 3.14159 1,000,000 -42 +7 1e-5 0x1F",
    "x² + y³ = z⁴; ½ ¾ ⅓; ①②③; Ⅻ; ٣; ๓",
    "a  b   c    d\te\t\tf",
    "   leading and trailing spaces   ",
    "line one\nline two\n\nline four\r\nwindows\rold mac",
    "\n\n\n",
    " \n \n",
    "\t\n\t",
    "tabs\t\tand\u00a0no-break\u3000ideographic\u2003em space\u200bzero-width",
    "control\x1c\x1d\x1e\x1f chars and \x85 NEL",
    "I'm you're he's we've they'll I'd can't won't",
    "I'M YOU'RE HE'S WE'VE THEY'LL I'D CAN'T",
    "I'm You'Re hE's We'vE",
    "’curly’ apostrophes: it’s they’re",
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
    "<|audio_start|><|audio_pad|><|audio_pad|><|audio_end|><|im_end|>",
    "language English<asr_text>Hello there.<|endoftext|>",
    "<timestamp>0.5<timestamp>",
    "<|im_start|<|im_end|>>|im_end|>",
    "not special: <|im_start |> <im_start> <|IM_END|>",
    "code: def f(x):\n    return x**2  # comment\n\treturn {'a': [1, 2]}",
    "URL https://example.com/path?q=1&r=2#frag, e-mail: user@example.org",
    "Punctuation!!! ??? ... --- ___ *** ### $$$ %%% ^^^ &&& ((( ))) [[ ]] {{ }}",
    "mixed: Hello世界123мир!",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "ß ẞ ﬀ ǅ İ ı ſ",
    "\u0000null and \ufffd replacement and \U0001f600",
]


def _qwen2_folder_files(tokens: list[str], types: list[int], merges: list[str]) -> dict[str, str]:
    """vocab.json, merges.txt, tokenizer_config.json of a Qwen2 folder (HF layout)."""
    vocab = {t: i for i, (t, k) in enumerate(zip(tokens, types, strict=True)) if k == 1}
    added = {
        str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": k == 3}
        for i, (t, k) in enumerate(zip(tokens, types, strict=True))
        if k in (3, 4) and not t.startswith("[PAD")
    }  # fmt: skip
    cfg = {
        "add_prefix_space": False, "added_tokens_decoder": added, "bos_token": None,
        "clean_up_tokenization_spaces": False, "eos_token": "<|endoftext|>", "errors": "replace",
        "model_max_length": 32768, "pad_token": "<|endoftext|>", "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer", "unk_token": None,
    }  # fmt: skip
    return {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n",
        "tokenizer_config.json": json.dumps(cfg, ensure_ascii=False, indent=2),
    }


def real_vocab(sdist: Path, out: Path) -> None:
    sys.path.insert(0, str(REPO))
    from npasr.io.gguf import read_gguf

    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as tar:
        for m in tar.getmembers():
            if m.name.endswith(("/models/" + GGUF_NAME, f"/models/{GGUF_NAME}.inp",
                                f"/models/{GGUF_NAME}.out")):  # fmt: skip
                f = tar.extractfile(m)
                assert f is not None
                (out / Path(m.name).name).write_bytes(f.read())
    if not (out / GGUF_NAME).is_file():
        raise SystemExit(f"{sdist}: no models/{GGUF_NAME}")
    meta = read_gguf(out / GGUF_NAME).metadata
    files = _qwen2_folder_files(
        meta["tokenizer.ggml.tokens"], [int(t) for t in meta["tokenizer.ggml.token_type"]],
        meta["tokenizer.ggml.merges"],
    )  # fmt: skip
    for name, text in files.items():
        (out / name).write_text(text, "utf-8")
    print(f"wrote {out}: {sorted(p.name for p in out.iterdir())}")


def llama_cpp_tests(folder: Path) -> list[str]:
    """The texts of llama.cpp's ggml-vocab-qwen2.gguf.inp (separated by __ggml_vocab_test__)."""
    text = (folder / f"{GGUF_NAME}.inp").read_text("utf-8")
    return text.split("\n__ggml_vocab_test__\n")[:-1] if text else []


def _hf_results(folder: Path, texts: list[str]) -> dict[str, object]:
    import tokenizers
    import transformers
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(folder))
    cases = []
    for t in texts:
        ids = hf(t, add_special_tokens=False).input_ids
        plain = hf(t, add_special_tokens=False, split_special_tokens=True).input_ids
        cases.append({
            "text": t, "ids": ids, "ids_plain": plain,
            "decoded": hf.decode(ids, skip_special_tokens=False),
            "decoded_skip": hf.decode(ids, skip_special_tokens=True),
        })  # fmt: skip
    # id sequences that split characters across tokens, hold ids without tokens, or specials
    n = len(hf)
    cjk = cases[9]["ids"]
    rows = [[0], [n - 1], [n], [n + 100], [*cjk[:3], n + 5, *cjk[3:]]]
    for c in cases:
        ids = c["ids"]
        if len(ids) > 3:
            rows.append(ids[1:-1])  # may cut multi-byte characters at both ends
            rows.append(ids[::-1][:12])  # bytes out of order
    decodes = [
        {"ids": r, "text": hf.decode(r, skip_special_tokens=False),
         "text_skip": hf.decode(r, skip_special_tokens=True)}
        for r in rows
    ]  # fmt: skip
    return {
        "tokenizer_class": type(hf).__name__,
        "versions": {
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "vocab_size": n,
        "cases": cases,
        "decodes": decodes,
    }


def _dump(result: dict[str, object]) -> str:
    """JSON with one line per case (reviewable diffs, no line per id)."""
    lines = []
    for k, v in result.items():
        if isinstance(v, list):
            rows = ",\n".join("  " + json.dumps(x, ensure_ascii=False) for x in v)
            lines.append(f" {json.dumps(k)}: [\n{rows}\n ]")
        else:
            lines.append(f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def folder_sha256(folder: Path) -> dict[str, str]:
    """Digests of the tokenizer files the goldens were made from (the test checks them)."""
    names = ("vocab.json", "merges.txt", "tokenizer_config.json", "tokenizer.json")
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in names}


def goldens() -> None:
    result = {
        "folder": str(TINY.relative_to(REPO)), "sha256": folder_sha256(TINY),
        **_hf_results(TINY, TEXTS),
    }  # fmt: skip
    GOLDEN.write_text(_dump(result), "utf-8")
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes) with {result['versions']}")


def hf_ids(folder: Path) -> None:
    texts = TEXTS + llama_cpp_tests(folder)
    result = _hf_results(folder, texts)
    (folder / "hf_ids.json").write_text(json.dumps(result, ensure_ascii=False), "utf-8")
    print(f"wrote {folder / 'hf_ids.json'} with {result['versions']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("goldens", help="tests/golden/qwen3_asr_tokenizer.json (needs transformers)")
    p = sub.add_parser("real-vocab", help="unpack the real Qwen2 vocabulary (needs numpy)")
    p.add_argument("sdist", type=Path, help="llama-cpp-python sdist (.tar.gz)")
    p.add_argument("out", type=Path)
    p = sub.add_parser("hf-ids", help="transformers' ids on a real-vocab folder")
    p.add_argument("folder", type=Path)
    a = ap.parse_args()
    if a.cmd == "goldens":
        goldens()
    elif a.cmd == "real-vocab":
        real_vocab(a.sdist, a.out)
    else:
        hf_ids(a.folder)


if __name__ == "__main__":
    main()
