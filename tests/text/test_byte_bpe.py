"""The byte-level alphabet and the BPE merge loop shared by Whisper and Qwen2."""

from __future__ import annotations

import pytest

from npasr.text.byte_bpe import (
    BytePairEncoder,
    _byte_alphabet,
    is_byte_level,
    spell_bytes,
    token_bytes,
)
from npasr.types import ModelFileError


def test_alphabet_is_gpt2s() -> None:
    to_char, to_byte = _byte_alphabet()
    assert len(set(to_char.values())) == 256 and len(to_byte) == 256
    # GPT-2 encoder.py: printable Latin-1 maps to itself, the rest to U+0100.. in byte order
    assert to_char[ord("A")] == "A" and to_char[0xE9] == "é"
    assert to_char[0] == "Ā" and to_char[ord(" ")] == "Ġ" and to_char[ord("\n")] == "Ċ"
    assert to_char[0xAD] == "Ń"  # soft hyphen, the last shifted byte (0x100 + 67)
    everything = bytes(range(256))
    assert token_bytes(spell_bytes(everything)) == everything
    assert spell_bytes(b" the") == "Ġthe"
    assert token_bytes("ĠÐ¼Ð¸ÑĢ") == " мир".encode()


def test_not_byte_level() -> None:
    assert is_byte_level("Ġhello") and not is_byte_level("<| x|>") and not is_byte_level("щ")
    with pytest.raises(ModelFileError, match="not in the byte-level alphabet"):
        token_bytes("a b")


def _ids(*tokens: bytes) -> dict[bytes, int]:
    return {t: i for i, t in enumerate(tokens)}


def test_tiktoken_and_merges_rankings_differ() -> None:
    ids = _ids(b"a", b"b", b"c", b"ab", b"bc")
    # tiktoken: (a, b) ranks 3 (the id of "ab"), (b, c) ranks 4
    assert BytePairEncoder(ids).encode(b"abc") == (3, 2)
    # merges.txt: "b c" is line 0, "a b" line 1
    ranks = {(b"b", b"c"): 0, (b"a", b"b"): 1}
    assert BytePairEncoder(ids, ranks).encode(b"abc") == (0, 4)


def test_ties_go_left_and_merges_repeat() -> None:
    ids = _ids(b"a", b"aa", b"aaaa")
    for ranks in (None, {(b"a", b"a"): 0, (b"aa", b"aa"): 1}):
        bpe = BytePairEncoder(ids, ranks)
        assert bpe.merge(b"aaa") == [b"aa", b"a"]
        assert bpe.merge(b"aaaaa") == [b"aaaa", b"a"]
        assert bpe.encode(b"aaaaaaa") == (2, 1, 0)


def test_whole_first_skips_merging() -> None:
    ids = _ids(b"x", b"y", b"z", b"xyz")  # "xyz" has no merge path
    assert BytePairEncoder(ids, whole_first=True).encode(b"xyz") == (3,)
    assert BytePairEncoder(ids, {}).encode(b"xyz") == (0, 1, 2)


def test_cache_and_missing_bytes() -> None:
    bpe = BytePairEncoder(_ids(b"a", b"b", b"ab"))
    assert bpe.encode(b"abab") == bpe.encode(b"abab") == (2, 2)
    assert bpe._cached.cache_info().hits == 1
    with pytest.raises(ModelFileError, match="incomplete vocabulary"):
        bpe.encode(b"abc")
