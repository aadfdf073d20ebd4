"""Qwen3-ASR vs transformers 5.23's in-tree qwen3_asr on a tiny random model, both checkpoint
layouts.

tests/tiny/qwen3_asr_tiny_{hf,orig,hf_bf16} hold one random model (with a synthetic Qwen2-style
tokenizer whose special ids differ from the real ones, so nothing may be hard-coded) as
transformers saves it, in the original Qwen/Qwen3-ASR layout (sharded, stored lm_head), and in
bfloat16; tests/golden/qwen3_asr_tiny_{clip}.{npz,json} hold transformers' outputs on three real
clips (scripts/make_goldens_qwen3_asr.py; environment in tests/golden/qwen3_asr_env.json). No
torch here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import npasr
from npasr.convert import convert, detect_family
from npasr.models.qwen3_asr import text as qtext
from npasr.models.qwen3_asr.asr import Qwen3ASRModel
from npasr.models.qwen3_asr.model import KVCache
from npasr.types import ModelFileError

REPO = Path(__file__).resolve().parents[2]
TINY, GOLDEN = REPO / "tests" / "tiny", REPO / "tests" / "golden"
CLIPS = ("austen0890", "jfk", "ru1")
PROMPTS = ("a", "b", "c")  # auto language; forced English; context "Kennedy Boston Moscow"
LAYOUTS = ("hf", "orig")
# Bounds (float32; measured at the time of writing in brackets). The mel's FFT runs in float64
# where transformers' torch.stft is float32 [1.6e-5]; every later stage starts from the
# reference's own input, so errors do not compound across stages [audio 1.5e-7, logits 3e-6].
MEL_ATOL, STAGE_ATOL, LOGIT_ATOL = 2e-4, 2e-5, 1e-4


DATA = REPO.parent / "shared" / "data"
FILES = {"austen0890": "en_psphinx-austen-0890.wav", "jfk": "jfk.flac",
         "ru1": "ru_sherpa-qwen3-ru1.wav"}  # fmt: skip


def _golden(clip: str) -> tuple[dict[str, np.ndarray], dict]:
    """The clip's goldens, with `audio`: the 16 kHz samples the reference was fed (stored for a
    resampled clip; read from the 16 kHz file otherwise, checked by its sha256)."""
    g = dict(np.load(GOLDEN / f"qwen3_asr_tiny_{clip}.npz"))
    if "audio" not in g:
        path = DATA / FILES[clip]
        if not path.is_file():
            pytest.skip(f"speech data not found at {path}")
        x, sr = sf.read(str(path), dtype="float64", always_2d=True)
        assert sr == 16000
        g["audio"] = x.mean(axis=1).astype(np.float32)
        assert hashlib.sha256(g["audio"].tobytes()).hexdigest() == str(g["audio_sha256"])
    return g, json.loads((GOLDEN / f"qwen3_asr_tiny_{clip}.json").read_text("utf-8"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Qwen3ASRModel]:
    out = tmp_path_factory.mktemp("qwen3_asr")
    return {lay: npasr.load_model(convert(TINY / f"qwen3_asr_tiny_{lay}", out / f"{lay}.gguf",
                                          wtype="f32")) for lay in LAYOUTS}  # fmt: skip


def test_detected_as_qwen3_asr() -> None:
    for d in ("qwen3_asr_tiny_hf", "qwen3_asr_tiny_orig", "qwen3_asr_tiny_hf_bf16",
              "qwen3_aligner_tiny_hf"):  # fmt: skip
        assert detect_family(TINY / d) == "qwen3_asr"


@pytest.mark.parametrize("clip", CLIPS)
def test_audio_encoder_matches_transformers(clip: str, models) -> None:
    m = models["hf"].model
    g, j = _golden(clip)
    mel = models["hf"].features(g["audio"])
    assert mel.shape == g["mel"].shape == (128, j["n_mel"])
    np.testing.assert_allclose(mel, g["mel"], rtol=0, atol=MEL_ATOL)
    n = int(g["n_audio_tokens"])
    assert m.config.audio_tokens(mel.shape[1]) == n
    stem = m.audio.stem(g["mel"])
    np.testing.assert_allclose(stem, g["audio_pre_layer0"], rtol=0, atol=STAGE_ATOL)
    layer0 = m.audio.layers[0](g["audio_pre_layer0"], m.config.window_tokens)
    np.testing.assert_allclose(layer0, g["audio_layer0"], rtol=0, atol=STAGE_ATOL)
    np.testing.assert_allclose(m.audio.encode_layers(g["audio_pre_layer0"]), g["audio_ln_post"],
                               rtol=0, atol=STAGE_ATOL)  # fmt: skip
    np.testing.assert_allclose(m.audio.project(g["audio_ln_post"]), g["audio_embeds"],
                               rtol=0, atol=STAGE_ATOL)  # fmt: skip
    np.testing.assert_allclose(m.audio(g["mel"]), g["audio_embeds"], rtol=0, atol=STAGE_ATOL)


@pytest.mark.parametrize("clip", CLIPS)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_prompt_logits_and_greedy_tokens_match_transformers(layout: str, clip: str,
                                                            models) -> None:  # fmt: skip
    """From the reference's audio embeddings: the prompt ids (tokenizer + chat template), the
    first step's logits, and 80 greedy tokens exactly, for the three prompts (the smallest
    top-1 margin over all steps is 2.4e-3, far above float32 error)."""
    qm = models[layout]
    g, j = _golden(clip)
    emb = g["audio_embeds"]
    for p in PROMPTS:
        spec = j["prompts"][p]
        ids = qm.prompt_ids(len(emb), spec["context"], spec["language"])
        assert ids == g[f"prompt_ids_{p}"].tolist()
        text = qm.model.text
        cache = KVCache.empty(qm.config, len(ids) + 1)
        h = text.prefill(qm.embed_prompt(ids, emb), cache)
        np.testing.assert_allclose(text.logits(h)[0], g[f"logits_first_{p}"], rtol=0,
                                   atol=LOGIT_ATOL)  # fmt: skip
        gen = qm.generate(ids, emb, len(g[f"tokens_{p}"]))
        assert gen.tokens == g[f"tokens_{p}"].tolist()
        assert not gen.stopped  # the goldens keep end-of-turn out of the first 80 steps


def test_llm_layer0_matches_transformers(models) -> None:
    qm = models["hf"]
    g, _ = _golden("jfk")
    ids = g["prompt_ids_a"].tolist()
    x = qm.embed_prompt(ids, g["audio_embeds"])
    text = qm.model.text
    layers = text.layers
    text.layers = layers[:1]  # one layer, without the final norm: undo it by comparing pre-norm
    try:
        cache = KVCache.empty(qm.config, len(ids))
        norm = text.norm
        text.norm = np.ones_like(norm)
        h = text(x, cache)
    finally:
        text.layers, text.norm = layers, norm
    ref = g["llm_layer0_a"]
    ref_normed = ref / np.sqrt(np.mean(ref**2, -1, keepdims=True) + qm.config.rms_norm_eps)
    np.testing.assert_allclose(h, ref_normed, rtol=0, atol=STAGE_ATOL)


@pytest.mark.parametrize("clip", CLIPS)
def test_transcribe_end_to_end(clip: str, models) -> None:
    """transcribe() from the waveform: the reference's decoded text (skip_special_tokens) put
    through the reference's parsing (test_qwen3_asr_text.py checks that step on its own), and
    the segment's tokens = every generated id (80: max_new_tokens reached)."""
    qm = models["hf"]
    g, j = _golden(clip)
    for p in PROMPTS:
        spec = j["prompts"][p]
        r = qm.transcribe(g["audio"], language=spec["language"], context=spec["context"],
                          max_new_tokens=80)  # fmt: skip
        assert r.text == qtext.parse_output(spec["text"], spec["language"])[1]
        assert len(r.segments) == 1
        assert r.segments[0].tokens == g[f"tokens_{p}"].tolist()
        assert r.segments[0].start == 0.0
        assert r.segments[0].end == pytest.approx(len(g["audio"]) / 16000, abs=1e-3)
        if spec["language"] == "English":
            assert r.language == "en"


def test_bf16_checkpoint(tmp_path: Path) -> None:
    """The bfloat16 copy of the hf layout converts (widened exactly) and matches transformers'
    bf16-weight goldens (computed in float32 from the rounded weights)."""
    qm = npasr.load_model(convert(TINY / "qwen3_asr_tiny_hf_bf16", tmp_path / "b.gguf",
                                  wtype="f32"))  # fmt: skip
    g16 = np.load(GOLDEN / "qwen3_asr_tiny_bf16.npz")
    for clip in CLIPS:
        g, j = _golden(clip)
        emb = qm.model.audio(qm.features(g["audio"]))
        ids = qm.prompt_ids(len(emb))
        gen = qm.generate(ids, emb, len(g16[f"tokens_a_{clip}"]))
        assert gen.tokens == g16[f"tokens_a_{clip}"].tolist()


@pytest.mark.parametrize("wtype", ["f16", "q8_0", "q4_k"])
def test_stored_types_stay_close(wtype: str, tmp_path: Path, models) -> None:
    """Rounded weights: first-step logits near the reference's (relative RMS over the prompt a
    logits; measured at the time of writing: f16 8.2e-4, q8_0 2.9e-2, q4_k 1.25e-1 on this
    width-64 random model), and f16 / q8_0 keep the first greedy token. (q8_0 keeps 9-66 of
    the 80 tokens, q4_k 1-3: random weights leave close calls everywhere.)"""
    qm = npasr.load_model(convert(TINY / "qwen3_asr_tiny_hf", tmp_path / "m.gguf", wtype=wtype))
    g, _ = _golden("jfk")
    ids = g["prompt_ids_a"].tolist()
    cache = KVCache.empty(qm.config, len(ids))
    lg = qm.model.text.logits(qm.model.text.prefill(qm.embed_prompt(ids, g["audio_embeds"]),
                                                    cache))[0]  # fmt: skip
    ref = g["logits_first_a"]
    rel = float(np.sqrt(np.mean((lg - ref) ** 2) / np.mean(ref**2)))
    assert rel < {"f16": 2e-3, "q8_0": 5e-2, "q4_k": 2.5e-1}[wtype]
    if wtype != "q4_k":
        assert int(np.argmax(lg)) == int(g["tokens_a"][0])


def test_orig_layout_equals_hf_layout(models) -> None:
    """The two layouts are the same model: equal tensors after mapping (the stored lm_head is
    dropped as the tied embedding)."""
    a, b = models["hf"].model.text, models["orig"].model.text
    assert np.array_equal(np.asarray(a.embed), np.asarray(b.embed))
    assert np.array_equal(a.layers[1].down.weight, b.layers[1].down.weight)
    assert models["hf"].config == models["orig"].config


# ---------------------------------------------------------------------------------- bad input


def _copy(src: str, tmp_path: Path) -> Path:
    d = tmp_path / src
    shutil.copytree(TINY / src, d)
    return d


def test_other_architecture_config_is_refused(tmp_path: Path) -> None:
    d = _copy("qwen3_asr_tiny_hf", tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"], cfg["architectures"] = "llama", ["LlamaForCausalLM"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="cannot tell which model"):
        convert(d, tmp_path / "x.gguf")
    from npasr.models.qwen3_asr.weights import load_source

    with pytest.raises(ModelFileError, match="not Qwen3-ASR"):
        load_source(d)
    assert not (tmp_path / "x.gguf").exists()


def test_missing_tokenizer_files_are_named(tmp_path: Path) -> None:
    d = _copy("qwen3_asr_tiny_hf", tmp_path)
    for f in ("tokenizer.json", "merges.txt"):
        (d / f).unlink()
    with pytest.raises(ModelFileError, match="merges.txt"):
        convert(d, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_tokenizer_of_another_model_is_refused(tmp_path: Path) -> None:
    d = _copy("qwen3_asr_tiny_hf", tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["audio_token_id"] = 7  # the model's audio rows no longer name the tokenizer's pad token
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="tokenizer and model do not match"):
        convert(d, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_truncated_shard_is_refused(tmp_path: Path) -> None:
    d = _copy("qwen3_asr_tiny_orig", tmp_path)
    shard = d / "model-00002-of-00002.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="model-00002-of-00002"):
        convert(d, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_prompt_longer_than_the_context_is_refused(models) -> None:
    qm = models["hf"]
    emb = np.zeros((10, qm.config.hidden_size), np.float32)
    ids = qm.prompt_ids(10)
    with pytest.raises(ValueError, match="exceed the model's"):
        qm.generate(ids, emb, qm.config.max_position_embeddings)


def test_bad_arguments(models) -> None:
    qm = models["hf"]
    audio = np.zeros(16000, np.float32)
    with pytest.raises(ValueError, match="not one Qwen3-ASR supports"):
        qm.transcribe(audio, language="Klingon")
    with pytest.raises(ValueError, match="max_new_tokens"):
        qm.transcribe(audio, max_new_tokens=0)
    with pytest.raises(ValueError, match="audio_pad"):
        qm.transcribe(audio, context="<|audio_pad|>", max_new_tokens=2)


def test_empty_and_short_audio(models) -> None:
    """Empty audio and a 0.1 s clip are zero-padded to 0.5 s, as the reference pads short
    chunks: a result, never a crash."""
    qm = models["hf"]
    for n in (0, 1600):
        r = qm.transcribe(np.zeros(n, np.float32), max_new_tokens=3)
        assert isinstance(r.text, str)


def test_long_audio_is_cut_into_chunks(models) -> None:
    """Audio longer than chunk_seconds is cut at a quiet point; each piece is one segment with
    its offset, and the text is the pieces' texts joined."""
    qm = models["hf"]
    g, _ = _golden("jfk")
    r = qm.transcribe(g["audio"], chunk_seconds=4.0, max_new_tokens=5)
    assert len(r.segments) == 3
    assert r.segments[0].start == 0.0 and r.segments[-1].end == pytest.approx(11.0, abs=1e-3)
    assert all(a.end == b.start for a, b in zip(r.segments, r.segments[1:], strict=False))
    assert r.text == "".join(s.text for s in r.segments)


def test_cli_transcribe_with_language_and_context(tmp_path: Path) -> None:
    gguf = convert(TINY / "qwen3_asr_tiny_hf", tmp_path / "m.gguf", wtype="f16")
    clip = REPO.parent / "shared" / "data" / "jfk.flac"
    if not clip.is_file():
        pytest.skip(f"speech data not found at {clip}")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "npasr", "transcribe", str(clip), "--model", str(gguf),
           "--language", "en", "--context", "Kennedy", "--max-new-tokens", "6", "-f", "json",
           "-o", str(out), "--verbose", "False"]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stderr
    doc = json.loads((out / "jfk.json").read_text("utf-8"))
    assert doc["language"] == "en"
    assert len(doc["segments"]) == 1 and len(doc["segments"][0]["tokens"]) == 6


def test_load_model_converts_a_checkpoint_directory_on_first_use(tmp_path: Path,
                                                                 monkeypatch) -> None:  # fmt: skip
    """load_model(<HF directory>) converts it into npasr's cache once, then loads the cached
    GGUF; the aligner's directory loads as the aligner."""
    from npasr.models.qwen3_asr.aligner import Qwen3ForcedAligner

    monkeypatch.setenv("NPASR_CACHE_DIR", str(tmp_path / "cache"))
    m = npasr.load_model(str(TINY / "qwen3_asr_tiny_hf"))
    assert isinstance(m, Qwen3ASRModel) and m.config.vocab_size == 2008
    cached = sorted((tmp_path / "cache").glob("*.gguf"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    npasr.load_model(str(TINY / "qwen3_asr_tiny_hf"))
    assert cached[0].stat().st_mtime_ns == stamp  # not converted again
    assert isinstance(npasr.load_model(str(TINY / "qwen3_aligner_tiny_hf")), Qwen3ForcedAligner)


def test_progress_moves_within_and_across_chunks(models) -> None:
    """The progress callback reports seconds of audio: after the encoder and every prefill
    block of each chunk, and at each chunk's end; never backwards, ending at the total."""
    qm = models["hf"]
    g, _ = _golden("jfk")
    seen: list[tuple[float, float]] = []
    qm.transcribe(g["audio"], chunk_seconds=4.0, max_new_tokens=3,
                  progress_callback=lambda done, total: seen.append((done, total)))  # fmt: skip
    done = [d for d, _ in seen]
    assert done == sorted(done) and len(done) >= 3 * 3  # 3 chunks x (encoder, prefill, end)
    assert seen[-1][0] == pytest.approx(11.0, abs=1e-3) and {t for _, t in seen} == {11.0}
