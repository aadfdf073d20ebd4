"""Goldens for the qwen-asr pipeline's plain-Python parts that npasr re-implements
(npasr/models/qwen3_asr/text.py, aligner.py): the repetition fix-up, output parsing,
language-name normalisation, long-audio cutting, language merging, and the forced aligner's
word splitting and timestamp repair.

Reference: qwen-asr 0.0.6 from PyPI (`pip download --no-deps qwen-asr==0.0.6`, unzip). Its
`qwen_asr/inference/utils.py` imports librosa and soundfile at the top, which this needs not:
the functions are taken from the module's syntax tree (ast) and run on their own, with numpy.
    python scripts/make_goldens_qwen3_asr_text.py /path/to/qwen_asr/inference/utils.py
writes tests/golden/qwen3_asr_text.json (the cases and the reference's outputs). The aligner's
`Qwen3ForceAlignProcessor` (qwen3_forced_aligner.py, next to utils.py) is taken the same way and
instantiated without its __init__ (which loads a Korean dictionary); only its space-language
word splitting and `fix_timestamp` are used.
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import numpy as np

WANTED = ("detect_and_fix_repetitions", "parse_asr_output", "normalize_language_name",
          "split_audio_into_chunks", "merge_languages")  # fmt: skip
OUT = Path(__file__).resolve().parent.parent / "tests" / "golden" / "qwen3_asr_text.json"


def load_reference(utils_py: Path) -> dict:
    tree = ast.parse(utils_py.read_text("utf-8"))
    def wanted(n: ast.stmt) -> bool:
        if isinstance(n, ast.FunctionDef):
            return n.name in WANTED
        names = [t.id for t in getattr(n, "targets", []) if isinstance(t, ast.Name)]
        return isinstance(n, ast.Assign) and any(x.isupper() or x.startswith("_") for x in names)

    keep = [n for n in tree.body if wanted(n)]
    ns: dict = {"np": np, "List": list, "Tuple": tuple, "Optional": lambda *a: None}
    from typing import Optional  # noqa: PLC0415, UP035

    ns.update(List=list, Optional=Optional, Tuple=tuple)
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(utils_py), "exec"), ns)  # noqa: S102
    return ns


REPEAT_CASES = [
    "", "a", "hello world", "a" * 20, "a" * 21, "a" * 45 + "b", "ha" * 19, "ha" * 20,
    "ha" * 25 + "!", "x" + "abc" * 20 + "yz" + "q" * 30, "the cat " * 25,
    "ok " + "12345678901234567890" * 21 + " end",
    "я" * 22 + "да" * 21, "哈" * 30 + "好的" * 20 + "。", "ab" * 9 + "c" * 21 + "ab" * 30,
    "language English<asr_text>" + "so " * 40, "no repeat at all, just text.",
    "aab" * 20 + "aab", "abcdefghijklmnopqrstu" * 21, "w " * 19 + "w",
]  # fmt: skip
PARSE_CASES = [
    ("language English<asr_text>Hello there.", None), ("language None<asr_text>", None),
    ("language none<asr_text> stray", None), ("Hello, no tag", None),
    ("language chinese\n<asr_text>你好", None), ("  language English<asr_text>  padded  ", None),
    ("plain text", "English"), ("", None), ("language <asr_text>text", None),
    ("language English<asr_text>" + "ha" * 30, None),
    ("meta\nlanguage German\n<asr_text>Hallo", None),
]  # fmt: skip
LANG_CASES = ["english", "ENGLISH", "English", " russian ", "cHINese"]
MERGE_CASES = [["Chinese", "English", "English"], ["", "English", "", "English", "German"], []]


def load_aligner_processor(utils_py: Path) -> object:
    import os  # noqa: PLC0415
    import unicodedata  # noqa: PLC0415

    tree = ast.parse((utils_py.parent / "qwen3_forced_aligner.py").read_text("utf-8"))
    cls = [n for n in tree.body if isinstance(n, ast.ClassDef)
           and n.name == "Qwen3ForceAlignProcessor"]  # fmt: skip
    ns = {"os": os, "unicodedata": unicodedata, "List": list, "np": np}
    exec(compile(ast.Module(body=cls, type_ignores=[]), "aligner", "exec"), ns)  # noqa: S102
    return object.__new__(ns["Qwen3ForceAlignProcessor"])


WORD_CASES = [
    "And so, my fellow Americans: ask not what your country can do for you!",
    "Don't stop — it's 3.14 or 42%.", "你好，世界。我很好", "Hello世界 mixed中文text",
    "Привет, мир! Как дела?", "  spaces   and\ttabs\n", "...", "", "l'été à Paris",
    "𠀀 rare ideograph", "١٢٣ arabic digits",
]  # fmt: skip


def fix_cases(rng: np.random.Generator) -> list[list[float]]:
    cases = [[0, 80, 160, 240], [320, 640, 80, 0, 960], [400, 400, 300, 500], [100],
             [500, 400, 300, 200, 100], [0, 800, 160, 240, 320, 1200, 1280]]  # fmt: skip
    for n in (10, 25, 40):
        v = np.sort(rng.integers(0, 300, n)) * 80
        v[rng.integers(0, n, n // 4)] = rng.integers(0, 300, n // 4) * 80  # outliers
        cases.append([float(x) for x in v])
    return cases


def main() -> None:
    ref = load_reference(Path(sys.argv[1]))
    proc = load_aligner_processor(Path(sys.argv[1]))
    rng = np.random.default_rng(0)
    split_cases = []
    for n_sec, max_sec in ((3.0, 2.0), (10.0, 2.5), (7.3, 1.0), (1.0, 1.0), (5.0, 0.6)):
        x = (rng.standard_normal(int(n_sec * 16000)) * 0.1).astype(np.float32)
        x[rng.integers(0, len(x), 5)] = 0.0
        chunks = ref["split_audio_into_chunks"](x, 16000, max_sec, search_expand_sec=0.3)
        split_cases.append({"seconds": n_sec, "max_seconds": max_sec, "search_seconds": 0.3,
                            "lengths": [len(c) for c, _ in chunks],
                            "offsets": [o for _, o in chunks]})  # fmt: skip
    out = {
        "reference": "qwen-asr 0.0.6 qwen_asr/inference/utils.py",
        "repetitions": [[s, ref["detect_and_fix_repetitions"](s)] for s in REPEAT_CASES],
        "parse": [
            [raw, lang, list(ref["parse_asr_output"](raw, user_language=lang))]
            for raw, lang in PARSE_CASES
        ],  # fmt: skip
        "language_names": [[s, ref["normalize_language_name"](s)] for s in LANG_CASES],
        "merge": [[c, ref["merge_languages"](c)] for c in MERGE_CASES],
        "split": split_cases,
        "words": [[t, proc.tokenize_space_lang(t)] for t in WORD_CASES],
        "fix_timestamps": [[c, proc.fix_timestamp(np.asarray(c))]
                           for c in fix_cases(np.random.default_rng(1))],  # fmt: skip
        "split_rng": "numpy default_rng(0): per case standard_normal(n) * 0.1 float32, 5 samples "
        "at integers(0, n, 5) zeroed, cases drawn in order",
    }
    OUT.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", "utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
