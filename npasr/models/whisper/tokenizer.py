"""Whisper's byte-level BPE tokenizer, built from the token table stored in the GGUF file.

The table (`tokenizer.ggml.tokens`) spells regular tokens in the GPT-2 byte-to-unicode alphabet
("Ġthe" is b" the") and special tokens literally ("<|en|>"). Encoding follows tiktoken's rule:
split text with the GPT-2 pre-tokenizer pattern, then repeatedly merge the adjacent pair whose
joined bytes have the lowest token id (Whisper's token ids are BPE ranks).

Known approximation: Python's `re` has no \\p{L}/\\p{N}; letters are `[^\\W\\d_]` and numbers `\\d`,
so rare numerals such as "²" are grouped with letters. Only prompt encoding is affected.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from npasr.models.whisper.languages import LANGUAGES
from npasr.text.byte_bpe import BytePairEncoder, spell_bytes, token_bytes
from npasr.types import ModelFileError

__all__ = ["WhisperTokenizer", "spell_bytes", "token_bytes"]  # the alphabet lives in npasr.text

# tiktoken's GPT-2 pattern with \p{L} -> [^\W\d_], \p{N} -> \d, "other" = not space/letter/digit
_PRETOKENIZE = re.compile(
    r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"
)


class WhisperTokenizer:
    """Token ids and text for one (multilingual?, language, task) setting."""

    def __init__(
        self,
        tokens: Sequence[str],
        *,
        multilingual: bool,
        num_languages: int,
        language: str | None = None,
        task: str | None = None,
    ) -> None:
        ids = {t: i for i, t in enumerate(tokens)}
        try:
            self.eot = ids["<|endoftext|>"]
            self.sot = ids["<|startoftranscript|>"]
            self.translate = ids["<|translate|>"]
            self.transcribe = ids["<|transcribe|>"]
            self.sot_lm = ids["<|startoflm|>"]
            self.sot_prev = ids["<|startofprev|>"]
            # HF and CTranslate2 vocabularies spell it by its older name
            self.no_speech = ids.get("<|nospeech|>", ids.get("<|nocaptions|>", -1))
            if self.no_speech < 0:
                raise KeyError("<|nospeech|>")
            self.no_timestamps = ids["<|notimestamps|>"]
            self.timestamp_begin = ids["<|0.00|>"]
        except KeyError as e:
            raise ModelFileError(
                f"tokenizer has no special token {e.args[0]}: not a Whisper vocabulary"
            ) from e
        codes = list(LANGUAGES)[:num_languages]
        # language tokens follow <|startoftranscript|> in LANGUAGES order (spellings vary: the
        # English-only HF vocabulary writes Hebrew as <|iw|>)
        self.language_tokens: dict[str, int] = {c: self.sot + 1 + i for i, c in enumerate(codes)}
        if self.sot + num_languages >= self.translate:
            raise ModelFileError(f"vocabulary has fewer than {num_languages} language tokens")
        self.multilingual = multilingual
        if multilingual:
            language, task = language or "en", task or "transcribe"
            if language not in self.language_tokens:
                raise ValueError(f"language {language!r} is not supported by this model")
        else:
            language, task = None, None
        self.language, self.task = language, task
        self._bytes = [token_bytes(t) for t in tokens[: self.eot]]
        # tiktoken ranking: a pair ranks as the id of the merged token
        self._bpe = BytePairEncoder({b: i for i, b in enumerate(self._bytes)}, whole_first=True)
        self._specials = list(tokens[self.eot :])

    def with_options(self, language: str | None, task: str | None) -> WhisperTokenizer:
        new = object.__new__(WhisperTokenizer)
        new.__dict__.update(self.__dict__)
        if self.multilingual:
            if language is not None and language not in self.language_tokens:
                raise ValueError(f"language {language!r} is not supported by this model")
            new.language, new.task = language or "en", task or "transcribe"
        return new

    # ---- special sequences (openai/whisper tokenizer.py semantics) ----
    @property
    def sot_sequence(self) -> tuple[int, ...]:
        seq = [self.sot]
        if self.language is not None:
            seq.append(self.language_tokens[self.language])
        if self.task is not None:
            seq.append(self.transcribe if self.task == "transcribe" else self.translate)
        return tuple(seq)

    @property
    def sot_sequence_including_notimestamps(self) -> tuple[int, ...]:
        return (*self.sot_sequence, self.no_timestamps)

    @functools.cached_property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """Tokens for symbols that are not speech (music notes, brackets...), suppressed by default.

        A symbol's token is taken when the symbol (bare or after a space) is a single token; for
        the music symbols U+2640..U+267F the first token is taken even when it takes several.
        """
        symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
        symbols += ["<<", ">>", "<<<", ">>>", "--", "---", "-(", "-[", "('", '("', "((", "))"]
        symbols += ["(((", ")))", "[[", "]]", "{{", "}}", "♪♪", "♪♪♪"]
        music = set("♩♪♫♬♭♮♯")
        result = {self.encode(" -")[0], self.encode(" '")[0]}
        for sym in symbols + sorted(music):
            for toks in (self.encode(sym), self.encode(" " + sym)):
                if len(toks) == 1 or sym in music:
                    result.add(toks[0])
        return tuple(sorted(result))

    # ---- text <-> ids ----
    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        for piece in _PRETOKENIZE.findall(text):
            out.extend(self._bpe.encode(piece.encode("utf-8")))
        return out

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the regular tokens; special and timestamp tokens are dropped."""
        n = len(self._bytes)
        return b"".join(self._bytes[i] for i in ids if i < n).decode("utf-8", errors="replace")

    def decode_with_timestamps(self, ids: Sequence[int]) -> str:
        """Like decode, but timestamp tokens appear as <|1.08|>."""
        out: list[str] = []
        run: list[bytes] = []
        for i in ids:
            if i < self.eot:
                run.append(self._bytes[i])
                continue
            if i >= self.timestamp_begin:
                out.append(b"".join(run).decode("utf-8", errors="replace"))
                run = []
                out.append(f"<|{(i - self.timestamp_begin) * 0.02:.2f}|>")
        out.append(b"".join(run).decode("utf-8", errors="replace"))
        return "".join(out)

    def token_text(self, i: int) -> str:
        return (
            self._bytes[i].decode("utf-8", errors="replace")
            if i < self.eot
            else self._specials[i - self.eot]
        )
