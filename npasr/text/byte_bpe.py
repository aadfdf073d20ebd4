"""Byte-level BPE shared by Whisper (tiktoken format) and Qwen2/Qwen3 (Hugging Face format).

Both vocabularies spell a token's bytes in GPT-2's byte-to-unicode alphabet ("Ġthe" is b" the")
and both encode one pre-token by merging adjacent parts, lowest rank first, until no ranked pair
is left. They differ only in how a pair is ranked:

- tiktoken (Whisper): the rank of (a, b) is the id of the token a+b; ids are BPE ranks
  (tiktoken `_byte_pair_merge`, openai/tiktoken src/lib.rs).
- Hugging Face (Qwen2): the rank of (a, b) is the line of "a b" in merges.txt, and the parts are
  then looked up in vocab.json (huggingface/tokenizers `Word::merge_all`, models/bpe/word.rs: a
  heap popping the lowest rank, ties to the leftmost position; the linear scan below picks the
  same pair at every step).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from npasr.types import ModelFileError


@functools.cache
def _byte_alphabet() -> tuple[dict[int, str], dict[str, int]]:
    """GPT-2's reversible byte -> printable character map (Radford et al. 2019, encoder.py idea).

    Printable Latin-1 bytes map to themselves; the other 68 bytes are shifted to U+0100 and up in
    byte order, so every byte sequence becomes a visible, whitespace-free string.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    to_char: dict[int, str] = {}
    shifted = 0
    for b in range(256):
        if b in keep:
            to_char[b] = chr(b)
        else:
            to_char[b] = chr(256 + shifted)
            shifted += 1
    return to_char, {c: b for b, c in to_char.items()}


@functools.cache
def _to_latin1() -> dict[int, int]:
    """str.translate table: alphabet character -> the code point of its byte; the 68 Latin-1
    characters outside the alphabet -> U+FFFF, which no Latin-1 encode accepts."""
    to_byte = _byte_alphabet()[1]
    table = {ord(c): b for c, b in to_byte.items()}
    return {c: 0xFFFF for c in range(256) if c not in table} | table


def is_byte_level(spelling: str) -> bool:
    """Whether every character of `spelling` is in the byte-level alphabet."""
    try:
        spelling.translate(_to_latin1()).encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def token_bytes(spelling: str) -> bytes:
    """'Ġthe' -> b' the'."""
    try:
        return spelling.translate(_to_latin1()).encode("latin-1")
    except UnicodeEncodeError as e:
        raise ModelFileError(f"token {spelling!r} is not in the byte-level alphabet") from e


def spell_bytes(data: bytes) -> str:
    """b' the' -> 'Ġthe' (inverse of token_bytes)."""
    to_char = _byte_alphabet()[0]
    return "".join(to_char[b] for b in data)


class BytePairEncoder:
    """Bytes of one pre-token -> token ids, with an LRU cache per pre-token.

    `ids` maps a token's bytes to its id. `pair_ranks` ranks the pair (a, b) (Hugging Face
    merges.txt order); without it a pair ranks as the id of a+b (tiktoken). `whole_first`
    returns a pre-token that is itself a token without merging (tiktoken does; Hugging Face
    does only with `ignore_merges`).
    """

    def __init__(
        self,
        ids: Mapping[bytes, int],
        pair_ranks: Mapping[tuple[bytes, bytes], int] | None = None,
        *,
        whole_first: bool = False,
        cache_size: int = 65536,
    ) -> None:
        self.ids, self.pair_ranks, self.whole_first = ids, pair_ranks, whole_first
        # a cache per encoder (functools.lru_cache on the method would keep every encoder alive)
        self._cached = functools.lru_cache(maxsize=cache_size)(self._encode)

    def encode(self, piece: bytes) -> tuple[int, ...]:
        if self.whole_first and (i := self.ids.get(piece)) is not None:
            return (i,)
        return self._cached(piece)

    def merge(self, piece: bytes) -> list[bytes]:
        """The parts of `piece` after every ranked merge (uncached)."""
        parts = [piece[i : i + 1] for i in range(len(piece))]
        by_pair, ranks = self.pair_ranks is not None, self.pair_ranks or self.ids
        while len(parts) > 1:
            best, best_rank = -1, None
            for i in range(len(parts) - 1):
                key = (parts[i], parts[i + 1]) if by_pair else parts[i] + parts[i + 1]
                r = ranks.get(key)  # type: ignore[call-overload]
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = i, r
            if best < 0:
                break
            parts[best : best + 2] = [parts[best] + parts[best + 1]]
        return parts

    def _encode(self, piece: bytes) -> tuple[int, ...]:
        parts = self.merge(piece)
        try:
            return tuple(self.ids[p] for p in parts)
        except KeyError as e:
            raise ModelFileError(f"bytes {e.args[0]!r} have no token: incomplete vocabulary") from e
