"""Word n-gram language model from an ARPA file, for shallow fusion in CTC beam search.

ARPA is the text format of SRILM/KenLM back-off models (documented in the SRILM manual page
`ngram-format(5)`): an optional preamble, a `\\data\\` section with one `ngram N=count` line per
order, then one `\\N-grams:` section per order whose lines are

    log10 P(w_N | w_1 .. w_N-1) <whitespace> w_1 .. w_N [<whitespace> log10 back-off weight]

and a final `\\end\\`. The back-off weight is absent on the highest order (and means 0). `<s>`
starts a sentence (its own probability is a placeholder, usually -99, never used), `</s>` ends
it, `<unk>` stands for every word not in the vocabulary.

Scoring is the standard Katz back-off recursion: P(w | h) is the stored n-gram when `h w` was
seen; otherwise it is backoff(h) * P(w | h minus its oldest word), down to the unigram.
Nothing here depends on kenlm.
"""

from __future__ import annotations

import gzip
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from npasr.types import ModelFileError

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
UNK_LOG10 = -10.0  # log10 P(word) for a word outside the vocabulary when the file has no <unk>
LN10 = math.log(10.0)

_COUNT = re.compile(r"^ngram\s+(\d+)\s*=\s*(\d+)$")
_SECTION = re.compile(r"^\\(\d+)-grams:$")


@dataclass
class NgramLM:
    """A back-off n-gram model; `ngrams[n - 1]` maps an n-word tuple to (log10 p, log10 bow)."""

    ngrams: list[dict[tuple[str, ...], tuple[float, float]]]
    unk_log10: float = UNK_LOG10
    _cache: dict[tuple[tuple[str, ...], str], float] = field(default_factory=dict, repr=False)

    @property
    def order(self) -> int:
        return len(self.ngrams)

    def __contains__(self, word: str) -> bool:
        return (word,) in self.ngrams[0]

    def log10_prob(self, context: Iterable[str], word: str) -> float:
        """log10 P(word | context); only the last `order - 1` context words matter."""
        ctx = tuple(context)[-(self.order - 1) :] if self.order > 1 else ()
        key = (ctx, word)
        if key not in self._cache:
            w = word if (word,) in self.ngrams[0] else UNK
            self._cache[key] = self._backoff(ctx, w)
        return self._cache[key]

    def _backoff(self, ctx: tuple[str, ...], w: str) -> float:
        bow = 0.0
        while True:
            hit = self.ngrams[len(ctx)].get((*ctx, w))
            if hit is not None:
                return bow + hit[0]
            if not ctx:  # an unseen unigram: only <unk> itself gets here
                return bow + self.unk_log10
            bow += self.ngrams[len(ctx) - 1].get(ctx, (0.0, 0.0))[1]  # a missing h has bow 0
            ctx = ctx[1:]

    def state(self, context: tuple[str, ...], word: str) -> tuple[str, ...]:
        """The context after `word`: the last `order - 1` words."""
        return (*context, word)[-(self.order - 1) :] if self.order > 1 else ()

    def sentence_log10(self, words: Iterable[str], eos: bool = True) -> float:
        """log10 P(<s> words [</s>])."""
        ctx, total = (BOS,), 0.0
        for w in [*words, *([EOS] if eos else [])]:
            total += self.log10_prob(ctx, w)
            ctx = self.state(ctx, w)
        return total


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline=None) as f:  # newline=None: CRLF -> \n
        for i, line in enumerate(f, 1):
            yield i, line.strip()


def read_arpa(path: str | os.PathLike[str]) -> NgramLM:
    """Parse an ARPA (or .arpa.gz) file; malformed input raises ModelFileError with the line."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such language model file")
    lines = _lines(path)

    def fail(n: int, msg: str) -> ModelFileError:
        return ModelFileError(f"{path}:{n}: {msg}")

    counts: dict[int, int] = {}
    n = 0
    for n, line in lines:  # noqa: B007 (n names the line in errors) preamble up to \data\
        if line == "\\data\\":
            break
    else:
        raise fail(n, "no \\data\\ section: not an ARPA file")
    section = None
    for n, line in lines:
        if not line:
            continue
        if m := _COUNT.match(line):
            counts[int(m[1])] = int(m[2])
            continue
        section = _SECTION.match(line)
        if section is None:
            raise fail(n, f"expected 'ngram N=count' or '\\1-grams:', got {line[:60]!r}")
        break
    if not counts or sorted(counts) != list(range(1, len(counts) + 1)):
        raise fail(n, f"\\data\\ must list ngram 1..N counts, got orders {sorted(counts)}")
    ngrams: list[dict[tuple[str, ...], tuple[float, float]]] = [{} for _ in counts]
    order = int(section[1]) if section else 0
    ended = False
    for n, line in lines:
        if not line:
            continue
        if line == "\\end\\":
            ended = True
            break
        if m := _SECTION.match(line):
            order = int(m[1])
            if order not in counts:
                raise fail(n, f"section \\{order}-grams: but \\data\\ lists no ngram {order}")
            continue
        parts = line.split()
        if len(parts) not in (order + 1, order + 2):
            raise fail(n, f"a {order}-gram line needs log10 p, {order} words, [back-off]")
        try:
            lp = float(parts[0])
            bow = float(parts[order + 1]) if len(parts) == order + 2 else 0.0
        except ValueError:
            raise fail(n, f"not a number in {line[:60]!r}") from None
        ngrams[order - 1][tuple(parts[1 : order + 1])] = (lp, bow)
    lines.close()
    if not ended:
        raise fail(n, "missing \\end\\ (truncated file?)")
    for k, c in counts.items():
        if len(ngrams[k - 1]) != c:
            raise ModelFileError(f"{path}: \\data\\ says {c} {k}-grams, found {len(ngrams[k - 1])}")
    unk = ngrams[0].get((UNK,))
    return NgramLM(ngrams, unk[0] if unk else UNK_LOG10)


@lru_cache(maxsize=4)
def load_arpa(path: str) -> NgramLM:
    """`read_arpa`, cached per path (a model's repeated `transcribe` calls share one LM)."""
    return read_arpa(path)
