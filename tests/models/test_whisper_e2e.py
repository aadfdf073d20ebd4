"""Whisper end to end on real weights and real speech, against openai-whisper.

Goldens (tests/golden/whisper_*; made by scripts/make_goldens_whisper.py) let CI check parity
without torch; the `reference` tests run openai-whisper live on the same weights.
Tolerances: logits 1e-3 absolute (fp32 compute from the same f16 weights); segment times 0.5 s;
texts and tokens exact.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from npasr.audio.features import log_mel_whisper
from npasr.audio.io import load_audio, pad_or_trim
from npasr.models.whisper.asr import WhisperModel
from npasr.models.whisper.model import KVCache

from ..conftest import JFK, JFK_TEXT, REPO

GOLDEN = REPO / "tests" / "golden"
LOGIT_ATOL = 1e-3
TIME_TOL = 0.5


def normalize(text: str) -> list[str]:
    """Lowercase words without punctuation (the comparison normalizer of these tests)."""
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def wer(ref: list[str], hyp: list[str]) -> float:
    d = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, 1):
        prev, d[0] = d.copy(), i
        for j, h in enumerate(hyp, 1):
            d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r != h))
    return d[-1] / max(1, len(ref))


_MODELS: dict[Path, WhisperModel] = {}


def _load(path: Path) -> WhisperModel:
    if path not in _MODELS:
        _MODELS[path] = WhisperModel.from_gguf(path)
    return _MODELS[path]


@pytest.fixture(params=["tiny.en", "base"])
def model_and_short(request, tiny_en_gguf, base_gguf) -> tuple[WhisperModel, str]:
    path = tiny_en_gguf if request.param == "tiny.en" else base_gguf
    return _load(path), request.param


def _lang(m: WhisperModel) -> dict:
    return {"language": "en"} if m.is_multilingual else {}


def our_first_steps(
    m: WhisperModel, sot_sequence: list[int], n: int
) -> tuple[list[int], np.ndarray]:
    audio = load_audio(JFK)
    mel = pad_or_trim(log_mel_whisper(audio, m.config.n_mels, padding=480000), 3000)
    cross = m.model.decoder.cross_kv(m.model.encoder(mel))
    cache = KVCache.empty(m.config, 1)
    new = np.array([sot_sequence])
    out, rows = [], []
    for _ in range(n):
        logits = m.model.decoder.logits(m.model.decoder(new, cross, cache)[0, -1])
        rows.append(logits)
        out.append(int(logits.argmax()))
        new = np.array([[out[-1]]])
    return out, np.stack(rows)


@pytest.mark.weights
def test_jfk_text_and_segments_match_openai_golden(model_and_short) -> None:
    m, short = model_and_short
    gold = json.loads((GOLDEN / f"whisper_{short}_jfk.json").read_text())
    for mode, kw in (("greedy", {}), ("beam5", {"beam_size": 5})):
        r = m.transcribe(JFK, temperature=0.0, **kw, **_lang(m))
        g = gold[mode]
        assert normalize(r.text) == normalize(JFK_TEXT), (mode, r.text)
        assert r.text == g["text"], mode  # punctuation included
        assert [s.tokens for s in r.segments] == [s["tokens"] for s in g["segments"]], mode
        for s, gs in zip(r.segments, g["segments"], strict=True):
            assert abs(s.start - gs["start"]) <= TIME_TOL and abs(s.end - gs["end"]) <= TIME_TOL


@pytest.mark.weights
def test_first_greedy_logits_match_openai_golden(model_and_short) -> None:
    m, short = model_and_short
    g = np.load(GOLDEN / f"whisper_{short}_jfk_logits.npz")
    tokens, logits = our_first_steps(m, g["sot_sequence"].tolist(), len(g["tokens"]))
    assert tokens == g["tokens"].tolist()
    ours = np.take_along_axis(logits, g["ids"], axis=1)
    assert np.abs(ours - g["logits"]).max() <= LOGIT_ATOL


@pytest.mark.weights
def test_language_detection_on_english(base_gguf) -> None:
    m = _load(base_gguf)
    probs = m.detect_language(JFK)
    assert max(probs, key=probs.get) == "en" and probs["en"] > 0.9
    assert m.transcribe(JFK).language == "en"


@pytest.mark.weights
@pytest.mark.slow
def test_long_file_matches_openai_golden(model_and_short) -> None:
    """5 minutes of real speech (bench/make_long_audio.py): WER between us and openai <= 1%."""
    m, short = model_and_short
    gold = json.loads((GOLDEN / f"whisper_{short}_long.json").read_text())
    sys.path.insert(0, str(REPO / "bench"))
    from make_long_audio import build  # noqa: PLC0415

    audio = load_audio(build(300.0)[0])  # int16 -> float32 as the golden script does
    r = m.transcribe(audio, temperature=0.0, **_lang(m))
    assert wer(normalize(gold["greedy"]["text"]), normalize(r.text)) <= 0.01
    rb = m.transcribe(audio, temperature=0.0, beam_size=5, **_lang(m))
    assert (
        wer(normalize(gold["greedy"]["text"]), normalize(rb.text)) <= 0.10
    )  # beam runs and is sane


@pytest.mark.weights
@pytest.mark.reference
def test_live_parity_with_openai_whisper(model_and_short, tmp_path, data_dir) -> None:
    """Same weights written to a .pt here, openai-whisper run live: full logits and transcripts."""
    torch = pytest.importorskip("torch")
    whisper = pytest.importorskip("whisper")
    from .whisper_ref import whisper_pt_from_gguf

    m, short = model_and_short
    pt = tmp_path / "m.pt"
    whisper_pt_from_gguf(Path(m.name if Path(m.name).exists() else _path_of(m)), pt)
    ref = whisper.load_model(str(pt), device="cpu")
    tok = whisper.tokenizer.get_tokenizer(
        ref.is_multilingual, num_languages=ref.num_languages, language="en", task="transcribe"
    )
    audio = load_audio(JFK)
    mel = pad_or_trim(log_mel_whisper(audio, ref.dims.n_mels, padding=480000), 3000)
    with torch.no_grad():
        feats = ref.embed_audio(torch.from_numpy(mel)[None])
        toks = list(tok.sot_sequence)
        ref_rows = []
        for _ in range(10):
            lg = ref.logits(torch.tensor([toks]), feats)[0, -1].numpy()
            ref_rows.append(lg)
            toks.append(int(lg.argmax()))
    ours_tokens, ours = our_first_steps(m, list(tok.sot_sequence), 10)
    assert ours_tokens == toks[len(tok.sot_sequence) :]
    assert np.abs(ours - np.stack(ref_rows)).max() <= LOGIT_ATOL
    cases = [{}, {"initial_prompt": "President Kennedy's inaugural address, 1961."}]
    for kw in cases:
        r = ref.transcribe(audio, fp16=False, temperature=0.0, verbose=None, **_lang(m), **kw)
        o = m.transcribe(audio, temperature=0.0, **_lang(m), **kw)
        assert o.text == r["text"], kw
        assert [s.tokens for s in o.segments] == [s["tokens"] for s in r["segments"]], kw
    if m.is_multilingual:  # language detection and translation on Russian speech
        ru = load_audio(data_dir / "ru_sherpa-qwen3-ru1.wav")
        ru_mel = pad_or_trim(log_mel_whisper(ru, ref.dims.n_mels), 3000)
        with torch.no_grad():
            _, ref_probs = ref.detect_language(torch.from_numpy(ru_mel))
        ours_probs = m.detect_language(ru)
        assert max(ours_probs, key=ours_probs.get) == max(ref_probs, key=ref_probs.get) == "ru"
        assert max(abs(ours_probs[c] - ref_probs[c]) for c in ours_probs) <= 1e-3
        for task in ("transcribe", "translate"):
            r = ref.transcribe(ru, fp16=False, temperature=0.0, verbose=None, task=task)
            o = m.transcribe(ru, temperature=0.0, task=task)
            assert (o.language, o.text) == (r["language"], r["text"]), task


def _path_of(m: WhisperModel) -> Path:
    for p, mm in _MODELS.items():
        if mm is m:
            return p
    raise AssertionError("model not loaded through _load")
