"""Qwen3-ForcedAligner vs transformers 5.23 (Qwen3ASRForTokenClassification) and qwen-asr 0.0.6's
pipeline on a tiny random aligner (tests/tiny/qwen3_aligner_tiny_hf, 256 classes of 80 ms;
goldens tests/golden/qwen3_aligner_tiny_jfk.{npz,json} by scripts/make_goldens_qwen3_asr.py),
and its pure-Python parts against qwen-asr's own functions (tests/golden/qwen3_asr_text.json).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import npasr
from npasr.convert import convert
from npasr.models.qwen3_asr.aligner import Qwen3ForcedAligner, fix_timestamps, split_words
from npasr.models.qwen3_asr.asr import Qwen3ASRModel
from npasr.models.qwen3_asr.text import sentences
from npasr.types import Segment, Word

REPO = Path(__file__).resolve().parents[2]
TINY, GOLDEN = REPO / "tests" / "tiny", REPO / "tests" / "golden"
TEXT = json.loads((GOLDEN / "qwen3_asr_text.json").read_text("utf-8"))


@pytest.fixture(scope="module")
def aligner(tmp_path_factory: pytest.TempPathFactory) -> Qwen3ForcedAligner:
    out = tmp_path_factory.mktemp("aligner")
    return npasr.load_model(convert(TINY / "qwen3_aligner_tiny_hf", out / "a.gguf", wtype="f32"))


@pytest.fixture(scope="module")
def golden() -> tuple[dict[str, np.ndarray], dict, np.ndarray]:
    g = dict(np.load(GOLDEN / "qwen3_aligner_tiny_jfk.npz"))
    j = json.loads((GOLDEN / "qwen3_aligner_tiny_jfk.json").read_text("utf-8"))
    audio = np.load(GOLDEN / "qwen3_asr_tiny_jfk.npz")["audio"]  # the same 16 kHz samples
    return g, j, audio


@pytest.mark.parametrize(("text", "words"), TEXT["words"])
def test_word_split_equals_reference(text: str, words: list[str]) -> None:
    assert split_words(text) == words


@pytest.mark.parametrize(("raw", "fixed"), TEXT["fix_timestamps"])
def test_timestamp_repair_equals_reference(raw: list[float], fixed: list[int]) -> None:
    assert fix_timestamps(raw) == fixed


def test_aligner_matches_transformers(aligner, golden) -> None:
    """The input ids, the argmax class at every <timestamp> (the smallest top-1 margin is in
    the golden's margins_ts), the repaired times and the word items, exactly."""
    g, j, audio = golden
    assert isinstance(aligner, Qwen3ForcedAligner)
    assert aligner.config.classify_num == j["classify_num"]
    words = split_words(j["transcript"])
    assert words == j["words"]
    emb = aligner.model.audio(aligner.features(audio))
    assert len(emb) == j["n_audio_tokens"]
    ids = aligner.input_ids(len(emb), words)
    assert ids == g["input_ids"].tolist()
    assert np.flatnonzero(np.asarray(ids) == aligner.timestamp).tolist() == \
        g["timestamp_positions"].tolist()  # fmt: skip
    assert aligner.classes(ids, emb).tolist() == g["argmax_ts"].tolist()
    assert float(g["margins_ts"].min()) > 1e-3  # no near-tie for float32 rounding to flip
    assert fix_timestamps(g["raw_ms"].astype(float).tolist()) == g["fixed_ms"].astype(int).tolist()
    got = [(w.word, w.start, w.end) for w in aligner.align(audio, j["transcript"])]
    assert got == [(i["text"], i["start_time"], i["end_time"]) for i in j["items"]]


def test_aligner_bad_input(aligner) -> None:
    with pytest.raises(ValueError, match="does not\\s+transcribe"):
        aligner.transcribe(np.zeros(16000, np.float32))
    with pytest.raises(ValueError, match="word segmenter"):
        aligner.align(np.zeros(16000, np.float32), "こんにちは", "Japanese")
    with pytest.raises(ValueError, match="at most 180 s"):
        aligner.align(np.zeros(181 * 16000, np.float32), "hello")
    # special tokens cannot be smuggled in: words keep letters, digits and ' only
    assert [w.word for w in aligner.align(np.zeros(16000, np.float32), "a<timestamp>b")] == \
        ["atimestampb"]  # fmt: skip
    assert aligner.align(np.zeros(16000, np.float32), " ... ") == []


def test_transcribe_with_aligner(aligner, tmp_path: Path) -> None:
    """Qwen3-ASR with aligner=: the chunk's words are the aligner's on the ASR text."""
    asr = npasr.load_model(convert(TINY / "qwen3_asr_tiny_hf", tmp_path / "m.gguf", wtype="f32"))
    assert isinstance(asr, Qwen3ASRModel)
    audio = np.load(GOLDEN / "qwen3_asr_tiny_jfk.npz")["audio"]
    r = asr.transcribe(audio, language="English", max_new_tokens=40, aligner=aligner)
    words = [w for s in r.segments for w in s.words]
    want = aligner.align(audio, r.text, "English")
    assert [(w.word, w.start, w.end) for w in words] == [(w.word, w.start, w.end) for w in want]
    assert sum(len(s.tokens) for s in r.segments) == 40


def test_sentence_segments_carry_their_words_and_tokens(aligner, tmp_path: Path) -> None:
    """A chunk's text split after sentence ends: each sentence timed by its words and holding
    the ids that spell it (the language prefix ids with the first)."""
    asr = npasr.load_model(convert(TINY / "qwen3_asr_tiny_hf", tmp_path / "m.gguf", wtype="f32"))
    text = "Hello there. How are you? Fine!"
    tok = asr.tokenizer
    prefix = tok.encode("language English") + [asr.asr_text]
    body = tok.encode(text)
    seg = Segment(id=0, seek=0, start=5.0, end=9.0, text=text, tokens=prefix + body)
    words = [Word(w, 0.5 * i, 0.5 * i + 0.4) for i, w in enumerate(split_words(text))]
    out = asr.sentences(seg, words, 5.0, forced=False)
    assert [s.text for s in out] == sentences(text) == ["Hello there. ", "How are you? ", "Fine!"]
    assert [len(s.words) for s in out] == [2, 3, 1]
    assert out[0].start == 5.0 and out[-1].end == 7.9
    assert [t for s in out for t in s.tokens] == prefix + body
    assert tok.decode(out[1].tokens).strip() == "How are you?"
    # a split that cannot be matched to the words: one segment with all of them
    one = asr.sentences(seg, words[:-1], 5.0, forced=False)
    assert len(one) == 1 and len(one[0].words) == 5
