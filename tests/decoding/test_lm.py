"""ARPA reader and back-off scoring against probabilities worked out by hand."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from npasr.decoding.lm import NgramLM, read_arpa
from npasr.types import ModelFileError

# A trigram model small enough to score by hand. Columns: log10 p, words, log10 back-off.
ARPA = """Preamble text that readers must skip.

\\data\\
ngram 1=5
ngram 2=4
ngram 3=1

\\1-grams:
-1.0\t<unk>
-99\t<s>\t-0.5
-0.7\t</s>
-0.4\ta\t-0.3
-0.6\tb\t-0.2

\\2-grams:
-0.2\t<s> a\t-0.1
-0.3\ta b\t-0.25
-0.5\tb </s>
-0.35\tb a

\\3-grams:
-0.1\t<s> a b

\\end\\
"""


@pytest.fixture()
def lm(tmp_path: Path) -> NgramLM:
    p = tmp_path / "lm.arpa"
    p.write_text(ARPA, encoding="utf-8")
    return read_arpa(p)


def test_counts_and_entries(lm: NgramLM) -> None:
    assert lm.order == 3
    assert [len(d) for d in lm.ngrams] == [5, 4, 1]
    assert lm.ngrams[0][("<s>",)] == (-99.0, -0.5)
    assert lm.ngrams[2][("<s>", "a", "b")] == (-0.1, 0.0)  # no back-off column on the top order
    assert "a" in lm and "zzz" not in lm


@pytest.mark.parametrize(
    ("context", "word", "expected"),
    [
        (("<s>",), "a", -0.2),  # stored bigram
        (("<s>", "a"), "b", -0.1),  # stored trigram
        (("a",), "a", -0.3 + -0.4),  # bow(a) + p(a)
        (("b", "a"), "b", 0.0 + -0.3),  # (b a b) unseen, bow(b a) = 0 (stored, no column) + p(b|a)
        # (a b a) unseen: bow(a b) = -0.25; (b a) is stored: -0.35
        (("a", "b"), "a", -0.25 + -0.35),
        # (a b </s>) unseen: bow(a b) + p(</s> | b) = -0.25 - 0.5
        (("a", "b"), "</s>", -0.75),
        # (<s> a a) unseen, bow(<s> a) = -0.1; (a a) unseen, bow(a) = -0.3; p(a) = -0.4
        (("<s>", "a"), "a", -0.1 - 0.3 - 0.4),
        # (b b) unseen: bow(b) + p(b); the trigram context (x b) is unknown: its bow is 0
        (("x", "b"), "b", -0.2 - 0.6),
        (("<s>",), "zzz", -0.5 + -1.0),  # out of vocabulary -> <unk>, after bow(<s>)
        ((), "b", -0.6),
    ],
)
def test_backoff_chains(lm: NgramLM, context: tuple[str, ...], word: str, expected: float) -> None:
    assert lm.log10_prob(context, word) == pytest.approx(expected, abs=1e-12)


def test_sentence_score(lm: NgramLM) -> None:
    # <s> a b </s>: p(a|<s>) + p(b|<s> a) + p(</s>|a b) = -0.2 - 0.1 - 0.75
    assert lm.sentence_log10(["a", "b"]) == pytest.approx(-1.05)
    assert lm.sentence_log10(["a", "b"], eos=False) == pytest.approx(-0.3)


def test_crlf_blank_lines_and_gzip(tmp_path: Path, lm: NgramLM) -> None:
    crlf = ARPA.replace("\n", "\r\n").replace("\\2-grams:", "\r\n\r\n\\2-grams:")
    p = tmp_path / "crlf.arpa"
    p.write_bytes(crlf.encode())
    assert read_arpa(p).ngrams == lm.ngrams
    gz = tmp_path / "lm.arpa.gz"
    gz.write_bytes(gzip.compress(ARPA.encode()))
    assert read_arpa(gz).ngrams == lm.ngrams


def test_missing_unk_uses_a_floor(tmp_path: Path) -> None:
    text = ARPA.replace("ngram 1=5", "ngram 1=4").replace("-1.0\t<unk>\n", "")
    p = tmp_path / "nounk.arpa"
    p.write_text(text)
    m = read_arpa(p)
    assert m.log10_prob((), "zzz") == pytest.approx(-10.0)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.replace("\\data\\", "data"), "no \\\\data"),
        (lambda s: s.replace("ngram 2=4", "ngram 2=5"), "says 5 2-grams, found 4"),
        (lambda s: s.replace("-0.3\ta b", "x\ta b"), ":17: not a number"),
        (lambda s: s.replace("-0.5\tb </s>", "-0.5\tb"), ":18: a 2-gram line needs"),
        (lambda s: s.replace("\\end\\\n", ""), "missing \\\\end"),
        (lambda s: s.replace("ngram 3=1", "ngram 4=1"), "ngram 1..N"),
        (lambda s: s.replace("\\3-grams:", "\\5-grams:"), "lists no ngram 5"),
    ],
)
def test_malformed_files_say_what_and_where(tmp_path: Path, edit, message: str) -> None:
    p = tmp_path / "bad.arpa"
    p.write_text(edit(ARPA))
    with pytest.raises(ModelFileError, match=message):
        read_arpa(p)
    with pytest.raises(ModelFileError, match="no such"):
        read_arpa(tmp_path / "absent.arpa")
