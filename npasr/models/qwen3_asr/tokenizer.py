"""Qwen2's byte-level BPE tokenizer (Qwen3-ASR's text side), without `tokenizers` at run time.

Behaviour is that of transformers' `Qwen2Tokenizer` (v5; `Qwen2TokenizerFast` in v4), which
builds its pipeline in code (transformers models/qwen2/tokenization_qwen2.py):

- added tokens (`added_tokens_decoder`) are cut out of the text first, leftmost-longest
  (huggingface/tokenizers added_vocabulary.rs); `special=False` leaves the special ones in the
  text, as `split_special_tokens=True` does;
- the rest is NFC-normalised and split by the Qwen2 regex ("Isolated": the matches and the text
  between them are pre-tokens), then each pre-token's UTF-8 bytes are merged in merges.txt order
  (npasr.text.byte_bpe);
- decoding joins the tokens' bytes (byte-level spelling for BPE tokens; an added token whose
  characters are all in the byte alphabet goes through it too, others are their UTF-8) and
  decodes them once with errors="replace", as the ByteLevel decoder does.

Storage in GGUF follows llama.cpp's gpt2/qwen2 vocabularies (convert_hf_to_gguf.py
`get_vocab_base`): `tokenizer.ggml.model` "gpt2", `tokenizer.ggml.pre` "qwen2",
`tokenizer.ggml.tokens` one string per id, `tokenizer.ggml.token_type` (1 normal, 3 control =
special added token, 4 user-defined = other added token, 5 unused), `tokenizer.ggml.merges`
("a b") and the eos/padding/bos ids. Ids with no token (the model's embedding has 151936 rows for
151665 tokens) are spelled "[PAD<id>]" with type 5 and decode to "", like ids past the table.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import regex

from npasr.text.byte_bpe import BytePairEncoder, is_byte_level, spell_bytes, token_bytes
from npasr.types import ModelFileError

# The Qwen2 pre-tokenizer (transformers PRETOKENIZE_REGEX; llama.cpp LLAMA_VOCAB_PRE_TYPE_QWEN2).
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PRE_TOKENIZERS = {"qwen2": QWEN2_PATTERN}  # tokenizer.ggml.pre -> split regex

NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5  # gguf TokenType values used here


def _pad_name(i: int) -> str:
    return f"[PAD{i}]"  # llama.cpp's spelling of an id without a token


@dataclass(frozen=True)
class TokenizerData:
    """Everything a Qwen2 tokenizer needs; what the GGUF stores."""

    tokens: tuple[str, ...]  # by id: BPE tokens byte-level spelled, added tokens literal
    token_types: tuple[int, ...]  # NORMAL, CONTROL, USER_DEFINED or UNUSED per id
    merges: tuple[str, ...]  # "a b" in rank order (merges.txt without its #version line)
    pre: str = "qwen2"  # key of PRE_TOKENIZERS
    eos_id: int | None = None
    pad_id: int | None = None
    bos_id: int | None = None
    # added tokens matched after NFC normalisation (HF normalized=True; Qwen's are all False).
    # Not stored in GGUF: llama.cpp treats added tokens as pre-normalised.
    normalized: frozenset[int] = frozenset()
    model_name: str = field(default="gpt2", init=False)  # tokenizer.ggml.model

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def added(self) -> dict[str, int]:
        """Added tokens (control and user-defined) by content."""
        return {
            t: i for i, (t, k) in enumerate(zip(self.tokens, self.token_types, strict=True))
            if k in (CONTROL, USER_DEFINED)
        }  # fmt: skip

    # the converter looks model tokens up here; Qwen3-ASR's <asr_text> is not flagged special
    special = added

    def padded(self, vocab_size: int) -> TokenizerData:
        """The table extended to `vocab_size` ids with unused "[PAD<id>]" entries."""
        n = len(self.tokens)
        if vocab_size < n:
            raise ModelFileError(f"the tokenizer has {n} tokens, more than vocab_size {vocab_size}")
        extra = range(n, vocab_size)
        return replace(
            self,
            tokens=(*self.tokens, *map(_pad_name, extra)),
            token_types=(*self.token_types, *[UNUSED] * len(extra)),
        )

    def to_gguf(self, vocab_size: int | None = None) -> dict[str, Any]:
        """GGUF metadata (llama.cpp's keys); `vocab_size` pads the table first."""
        d = self if vocab_size is None else self.padded(vocab_size)
        meta: dict[str, Any] = {
            "tokenizer.ggml.model": d.model_name,
            "tokenizer.ggml.pre": d.pre,
            "tokenizer.ggml.tokens": list(d.tokens),
            "tokenizer.ggml.token_type": np.asarray(d.token_types, np.int32),
            "tokenizer.ggml.merges": list(d.merges),
            "tokenizer.ggml.add_bos_token": False,
        }
        for key, i in (("eos", d.eos_id), ("padding", d.pad_id), ("bos", d.bos_id)):
            if i is not None:
                meta[f"tokenizer.ggml.{key}_token_id"] = i
        return meta

    @classmethod
    def from_gguf(cls, metadata: Mapping[str, Any] | Any) -> TokenizerData:
        """From GGUF metadata (a dict, or a GGUFFile): ours or llama.cpp's gpt2/qwen2 vocab."""
        meta = getattr(metadata, "metadata", metadata)
        model = meta.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise ModelFileError(f"tokenizer.ggml.model is {model!r}, not a byte-level BPE 'gpt2'")
        pre = meta.get("tokenizer.ggml.pre", "default")
        if pre not in PRE_TOKENIZERS:
            known = sorted(PRE_TOKENIZERS)
            raise ModelFileError(f"unknown pre-tokenizer tokenizer.ggml.pre={pre!r} ({known=})")
        tokens, merges = meta.get("tokenizer.ggml.tokens"), meta.get("tokenizer.ggml.merges")
        if not isinstance(tokens, list) or not isinstance(merges, list):
            raise ModelFileError("GGUF has no tokenizer.ggml.tokens or tokenizer.ggml.merges")
        types = meta.get("tokenizer.ggml.token_type")
        if types is None or len(types) != len(tokens):
            raise ModelFileError("tokenizer.ggml.token_type is missing or not one per token")
        types = [int(t) for t in types]
        for i, t in enumerate(tokens):
            # older llama.cpp converters typed the "[PAD<id>]" fillers as user-defined
            if t == _pad_name(i) and types[i] in (USER_DEFINED, UNUSED):
                types[i] = UNUSED
        ids = {}
        for key in ("eos", "padding", "bos"):
            v = meta.get(f"tokenizer.ggml.{key}_token_id")
            ids[key] = None if v is None else int(v)
        return cls(
            tuple(tokens), tuple(types), tuple(merges), pre,
            eos_id=ids["eos"], pad_id=ids["padding"], bos_id=ids["bos"],
        )  # fmt: skip


def _validate(d: TokenizerData) -> None:
    n = len(d.tokens)
    if len(d.token_types) != n:
        raise ModelFileError(f"{len(d.token_types)} token types for {n} tokens")
    if d.pre not in PRE_TOKENIZERS:
        raise ModelFileError(f"unknown pre-tokenizer {d.pre!r} (known: {sorted(PRE_TOKENIZERS)})")
    known = {NORMAL, CONTROL, USER_DEFINED, UNUSED}
    if not set(d.token_types) <= known:
        i = next(i for i, k in enumerate(d.token_types) if k not in known)
        raise ModelFileError(f"token {i} {d.tokens[i]!r} has type {d.token_types[i]}; a Qwen2 "
                             "vocabulary has types 1, 3, 4, 5")  # fmt: skip
    seen = {
        t: i for i, (t, k) in enumerate(zip(d.tokens, d.token_types, strict=True)) if k != UNUSED
    }
    if len(seen) != n - d.token_types.count(UNUSED):
        i = next(i for i, t in enumerate(d.tokens) if d.token_types[i] != UNUSED and seen[t] != i)
        raise ModelFileError(f"token {d.tokens[i]!r} has two ids, {i} and {seen[d.tokens[i]]}")
    normal = [t for t, k in zip(d.tokens, d.token_types, strict=True) if k == NORMAL]
    if not is_byte_level("".join(normal)):  # one check for all, then find the culprit
        t = next(t for t in normal if not is_byte_level(t))
        raise ModelFileError(f"token {seen[t]} {t!r} is not byte-level spelled: not a GPT-2/Qwen2 "
                             "byte-level BPE vocabulary")  # fmt: skip
    bpe = set(normal)
    missing = [b for b in range(256) if spell_bytes(bytes([b])) not in bpe]
    if missing:
        raise ModelFileError(f"the vocabulary lacks {len(missing)} of the 256 one-byte tokens "
                             f"(byte {missing[0]}...): not byte-level BPE")  # fmt: skip
    for r, m in enumerate(d.merges):
        a, sep, b = m.partition(" ")
        if a in bpe and b in bpe and a + b in bpe:
            continue
        if not (a and b and sep) or " " in b:
            raise ModelFileError(f"merge {r} {m!r} is not two tokens separated by one space")
        t = next(t for t in (a, b, a + b) if t not in bpe)
        raise ModelFileError(f"merge {r} {m!r} names {t!r}, which is not in the vocab")
    for name, i in (("eos", d.eos_id), ("pad", d.pad_id), ("bos", d.bos_id)):
        if i is not None and not (0 <= i < n and d.token_types[i] != UNUSED):
            raise ModelFileError(f"{name} token id {i} names no token (vocabulary of {n})")


# ---------------------------------------------------------------------------------------------
# reading a Hugging Face tokenizer folder


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read ({e.strerror or e})") from e
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path}: not valid JSON ({e})") from e


def _read_merges_txt(path: Path) -> list[str]:
    try:
        lines = path.read_text("utf-8").split("\n")
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read ({e.strerror or e})") from e
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    return [ln.removesuffix("\r") for ln in lines if ln.strip()]


def _merge_strings(merges: Any, where: str) -> list[str]:
    """tokenizer.json merges: "a b" strings (tokenizers < 0.20) or [a, b] pairs."""
    if not isinstance(merges, list):
        raise ModelFileError(f"{where}: merges is not a list")
    out = []
    for m in merges:
        if isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m):
            out.append(f"{m[0]} {m[1]}")
        elif isinstance(m, str):
            out.append(m)
        else:
            raise ModelFileError(f"{where}: merge {m!r} is neither 'a b' nor [a, b]")
    return out


def _check_pipeline(tj: dict[str, Any], where: str) -> str:
    """The tokenizer.json pipeline must be Qwen2's; returns the pre-tokenizer's name."""
    model = tj.get("model") or {}
    if model.get("type", "BPE") != "BPE":
        raise ModelFileError(f"{where}: model type {model.get('type')!r}, not BPE")
    odd = {
        k: model.get(k) for k in ("dropout", "continuing_subword_prefix", "end_of_word_suffix")
        if model.get(k) not in (None, "")
    } | {k: True for k in ("byte_fallback", "ignore_merges") if model.get(k)}  # fmt: skip
    if odd:
        raise ModelFileError(f"{where}: unsupported BPE options {odd}")
    norm = tj.get("normalizer") or {}
    if norm.get("type") != "NFC":
        raise ModelFileError(f"{where}: normalizer {norm.get('type')!r}, Qwen2 uses NFC")
    if (tj.get("decoder") or {}).get("type") != "ByteLevel":
        raise ModelFileError(f"{where}: decoder is not ByteLevel")
    pre = tj.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    if (len(steps) == 2 and steps[0].get("type") == "Split"
            and steps[0].get("behavior") == "Isolated" and not steps[0].get("invert")
            and steps[1].get("type") == "ByteLevel" and not steps[1].get("add_prefix_space")
            and not steps[1].get("use_regex", True)):  # fmt: skip
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        for name, known in PRE_TOKENIZERS.items():
            if pattern == known:
                return name
        raise ModelFileError(f"{where}: unknown pre-tokenizer regex {pattern!r}")
    raise ModelFileError(f"{where}: unknown pre-tokenizer {json.dumps(pre)[:200]}")


def _added_from(entries: Iterable[tuple[Any, Any]], where: str) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for key, a in entries:
        try:
            i, content = int(key), a["content"]
        except (KeyError, TypeError, ValueError) as e:
            raise ModelFileError(f"{where}: bad added token {key!r}: {a!r}") from e
        if any(a.get(k) for k in ("lstrip", "rstrip", "single_word")):
            raise ModelFileError(f"{where}: added token {content!r} uses lstrip, rstrip or "
                                 "single_word, which npasr does not implement")  # fmt: skip
        if i in out:
            raise ModelFileError(f"{where}: two added tokens with id {i}")
        out[i] = {"content": content, "special": bool(a.get("special", False)),
                  "normalized": bool(a.get("normalized", not a.get("special", False)))}  # fmt: skip
    return out


def _token_name(v: Any) -> str | None:
    return v.get("content") if isinstance(v, dict) else v


def read_hf_tokenizer(path: str | Path) -> TokenizerData:
    """A Hugging Face Qwen2 tokenizer folder: tokenizer.json when present (checked against
    vocab.json/merges.txt/tokenizer_config.json when those are present too), else vocab.json +
    merges.txt + tokenizer_config.json (added_tokens_decoder, eos_token, pad_token, bos_token)."""
    d = Path(path)
    tj_path, cfg_path = d / "tokenizer.json", d / "tokenizer_config.json"
    vocab_path, merges_path = d / "vocab.json", d / "merges.txt"
    cfg = _read_json(cfg_path) if cfg_path.is_file() else None
    vocab = _read_json(vocab_path) if vocab_path.is_file() else None
    merges = _read_merges_txt(merges_path) if merges_path.is_file() else None
    pre = "qwen2"  # what transformers' Qwen2Tokenizer uses whatever tokenizer.json says
    added: dict[int, dict[str, Any]] = {}
    if tj_path.is_file():
        tj = _read_json(tj_path)
        if not isinstance(tj, dict):
            raise ModelFileError(f"{tj_path}: not a tokenizer.json object")
        pre = _check_pipeline(tj, str(tj_path))
        model = tj.get("model") or {}
        tj_vocab, tj_merges = model.get("vocab"), _merge_strings(model.get("merges"), str(tj_path))
        if vocab is not None and vocab != tj_vocab:
            raise ModelFileError(f"{vocab_path} and {tj_path} hold different vocabularies")
        if merges is not None and merges != tj_merges:
            raise ModelFileError(f"{merges_path} and {tj_path} hold different merges")
        vocab, merges = tj_vocab, tj_merges
        entries = tj.get("added_tokens") or []
        added = _added_from(((a.get("id"), a) for a in entries), str(tj_path))
    elif vocab is None or merges is None or cfg is None:
        raise ModelFileError(f"{d}: no tokenizer.json, and vocab.json, merges.txt or "
                             "tokenizer_config.json is missing")  # fmt: skip
    if cfg is not None:
        if not isinstance(cfg, dict):
            raise ModelFileError(f"{cfg_path}: not a JSON object")
        from_cfg = _added_from((cfg.get("added_tokens_decoder") or {}).items(), str(cfg_path))
        for i, a in from_cfg.items():
            b = added.setdefault(i, a)
            if (b["content"], b["special"]) != (a["content"], a["special"]):
                raise ModelFileError(f"added token {i}: {cfg_path} says {a}, {tj_path} says {b}")
    if not isinstance(vocab, dict) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()
    ):
        raise ModelFileError(f"{d}: the vocabulary is not a {{token: id}} object")
    return _build(vocab, merges or [], added, pre, cfg or {}, d)


def _build(vocab: dict[str, int], merges: list[str], added: dict[int, dict[str, Any]],
           pre: str, cfg: dict[str, Any], d: Path) -> TokenizerData:  # fmt: skip
    by_id: dict[int, str] = {}
    for t, i in vocab.items():
        if i < 0:
            raise ModelFileError(f"{d}: token {t!r} has negative id {i}")
        if i in by_id:
            raise ModelFileError(f"{d}: tokens {by_id[i]!r} and {t!r} share id {i}")
        by_id[i] = t
    for i, a in added.items():
        if i < 0:
            raise ModelFileError(f"{d}: added token {a['content']!r} has negative id {i}")
        if i in by_id and by_id[i] != a["content"]:
            raise ModelFileError(f"{d}: id {i} is {by_id[i]!r} in the vocab but added token "
                                 f"{a['content']!r}")  # fmt: skip
    n = max([*by_id, *added]) + 1
    tokens, types = [_pad_name(i) for i in range(n)], [UNUSED] * n
    for i, t in by_id.items():
        tokens[i], types[i] = t, NORMAL
    for i, a in added.items():
        tokens[i], types[i] = a["content"], CONTROL if a["special"] else USER_DEFINED
    ids = {t: i for i, t in enumerate(tokens) if types[i] != UNUSED}

    def special_id(key: str) -> int | None:
        name = _token_name(cfg.get(key))
        if name is None:
            return None
        if name not in ids:
            raise ModelFileError(f"{d}: {key} {name!r} is not a token")
        return ids[name]

    normalized = frozenset(i for i, a in added.items() if a["normalized"])
    return TokenizerData(
        tuple(tokens), tuple(types), tuple(merges), pre, eos_id=special_id("eos_token"),
        pad_id=special_id("pad_token"), bos_id=special_id("bos_token"), normalized=normalized,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# the tokenizer


def _alternation(names: Iterable[str]) -> regex.Pattern[str] | None:
    """Leftmost-longest match of any name (longest first: the regex takes the first alternative
    that matches at the leftmost position, as tokenizers' aho-corasick LeftmostLongest does)."""
    names = sorted(set(names), key=lambda s: (-len(s), s))
    return regex.compile("|".join(map(regex.escape, names))) if names else None


class Qwen2Tokenizer:
    """Text <-> ids for a Qwen2/Qwen3 byte-level BPE vocabulary (see the module docstring)."""

    def __init__(self, data: TokenizerData) -> None:
        self.data = data
        self.vocab_size = len(data.tokens)
        types = data.token_types
        self._special = np.array([k == CONTROL for k in types], dtype=bool)
        self._bytes: list[bytes] = []
        for t, k in zip(data.tokens, types, strict=True):
            if k == UNUSED:
                self._bytes.append(b"")
            elif k == NORMAL or is_byte_level(t):  # the ByteLevel decoder maps added tokens too
                self._bytes.append(token_bytes(t))
            else:
                self._bytes.append(t.encode("utf-8"))
        self._added = data.added
        bpe = {t: self._bytes[i] for i, (t, k) in enumerate(zip(data.tokens, types, strict=True))
               if k == NORMAL}  # fmt: skip
        ids = {b: i for i, b in enumerate(self._bytes) if types[i] == NORMAL}
        ranks: dict[tuple[bytes, bytes], int] = {}
        for r, m in enumerate(data.merges):  # a repeated merge keeps its last rank (tokenizers)
            a, b = m.split(" ")
            ranks[(bpe[a], bpe[b])] = r
        self._bpe = BytePairEncoder(ids, ranks)
        self._split = regex.compile(PRE_TOKENIZERS[data.pre])
        raw = [i for i in self._added.values() if i not in data.normalized]
        norm = [i for i in self._added.values() if i in data.normalized]
        # (raw-text matchers, NFC-text matchers) with and without the special tokens
        self._matchers = {
            special: tuple(
                _alternation(data.tokens[i] for i in group if special or not self._special[i])
                for group in (raw, norm)
            )
            for special in (True, False)
        }

    @classmethod
    def from_dir(cls, path: str | Path) -> Qwen2Tokenizer:
        return cls(read_hf_tokenizer(path))

    @classmethod
    def from_gguf(cls, metadata: Mapping[str, Any] | Any) -> Qwen2Tokenizer:
        return cls(TokenizerData.from_gguf(metadata))

    @property
    def eos_id(self) -> int | None:
        return self.data.eos_id

    @property
    def pad_id(self) -> int | None:
        return self.data.pad_id

    def token_id(self, name: str) -> int:
        """The id of an added token ("<|im_end|>"); ModelFileError when the vocabulary lacks it."""
        try:
            return self._added[name]
        except KeyError:
            raise ModelFileError(f"the tokenizer has no token {name!r}") from None

    def is_special(self, i: int) -> bool:
        """Whether id i is a special (control) token, which decode(skip_special=True) drops."""
        return 0 <= i < self.vocab_size and bool(self._special[i])

    def token_bytes(self, i: int) -> bytes:
        """The bytes id i decodes to (b"" for an id without a token)."""
        return self._bytes[i] if 0 <= i < self.vocab_size else b""

    # ---- text -> ids
    def encode(self, text: str, special: bool = True) -> list[int]:
        """HF `tok(text, add_special_tokens=False).input_ids`; special=False reads special
        tokens in the text as plain text (HF `split_special_tokens=True`)."""
        raw, norm = self._matchers[special]
        out: list[int] = []
        for piece, is_added in _cut(text, raw):
            if is_added:
                out.append(self._added[piece])
                continue
            for sub, sub_added in _cut(unicodedata.normalize("NFC", piece), norm):
                if sub_added:
                    out.append(self._added[sub])
                else:
                    for word in self._pre_tokens(sub):
                        out.extend(self._bpe.encode(word.encode("utf-8")))
        return out

    def _pre_tokens(self, text: str) -> list[str]:
        """Split "Isolated": every match, and any text between matches, is a pre-token."""
        out, pos = [], 0
        for m in self._split.finditer(text):
            if m.start() > pos:
                out.append(text[pos : m.start()])
            out.append(m.group())
            pos = m.end()
        if pos < len(text):
            out.append(text[pos:])
        return out

    # ---- ids -> text
    def decode(self, ids: Sequence[int] | np.ndarray, skip_special: bool = True) -> str:
        """HF `tok.decode(ids, skip_special_tokens=skip_special)`: ids without a token give ""."""
        n, table, special = self.vocab_size, self._bytes, self._special
        data = b"".join(
            table[i] for i in map(int, ids) if 0 <= i < n and not (skip_special and special[i])
        )
        return data.decode("utf-8", errors="replace")


def _cut(text: str, matcher: regex.Pattern[str] | None) -> list[tuple[str, bool]]:
    """(piece, is_added_token) runs of `text`, empty pieces left out."""
    if matcher is None:
        return [(text, False)] if text else []
    out, pos = [], 0
    for m in matcher.finditer(text):
        if m.start() > pos:
            out.append((text[pos : m.start()], False))
        out.append((m.group(), True))
        pos = m.end()
    if pos < len(text):
        out.append((text[pos:], False))
    return out
