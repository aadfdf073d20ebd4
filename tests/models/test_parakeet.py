"""Parakeet (NeMo FastConformer TDT / CTC / hybrid) vs NVIDIA NeMo 3.0.0 on tiny random models.

tests/tiny/parakeet_tiny_{tdt,ctc,hybrid}.nemo were built, saved (`save_to`) and reloaded
(`restore_from`) by NeMo itself, with the real parakeet-tdt-0.6b-v3 tokenizer (8192 pieces);
tests/golden/parakeet_tiny_*_{clip}.{npz,json} hold NeMo's outputs on three real clips
(scripts/make_goldens_parakeet.py; environment in tests/golden/parakeet_env.json). No torch here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import npasr
from npasr.audio.io import load_audio
from npasr.convert import convert, detect_family
from npasr.models.parakeet.asr import ParakeetModel
from npasr.types import ModelFileError

REPO = Path(__file__).resolve().parents[2]
TINY, GOLDEN = REPO / "tests" / "tiny", REPO / "tests" / "golden"
DATA = REPO.parent / "shared" / "data"
CLIPS = {"austen0870": "en_psphinx-austen-0870.wav", "austen0890": "en_psphinx-austen-0890.wav",
         "ru1": "ru_sherpa-qwen3-ru1.wav"}  # fmt: skip
MODELS = ["tdt", "ctc", "hybrid"]
# Bounds (float32, measured on these goldens at the time of writing in brackets): the mel front
# end runs its FFT in float64 where NeMo's torch.stft is float32 [3.7e-5]; every later stage is
# compared from NeMo's own input to it, so errors do not compound across stages [1.2e-6].
MEL_ATOL, STAGE_ATOL = 2e-4, 1e-4


def _golden(model: str, clip: str) -> dict[str, np.ndarray]:
    return dict(np.load(GOLDEN / f"parakeet_tiny_{model}_{clip}.npz"))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ParakeetModel]:
    out = tmp_path_factory.mktemp("parakeet")
    return {m: npasr.load_model(convert(TINY / f"parakeet_tiny_{m}.nemo", out / f"{m}.gguf",
                                        wtype="f32")) for m in MODELS}  # fmt: skip


@pytest.fixture(scope="module")
def clips() -> dict[str, np.ndarray]:
    if not DATA.is_dir():
        pytest.skip(f"speech data not found at {DATA}")
    return {c: load_audio(str(DATA / f)) for c, f in CLIPS.items()}


def test_detected_as_parakeet() -> None:
    for m in MODELS:
        assert detect_family(TINY / f"parakeet_tiny_{m}.nemo") == "parakeet"


@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize("model", MODELS)
def test_encoder_matches_nemo(model: str, clip: str, models, clips) -> None:
    m, g = models[model].model, _golden(model, clip)
    audio = clips[clip]
    mel = m.features(audio)
    assert mel.shape == g["mel"].shape and m.feature_length(len(audio)) == int(g["mel_len"])
    np.testing.assert_allclose(mel, g["mel"], rtol=0, atol=MEL_ATOL)
    n = int(g["enc_len"])
    pre, length = m.pre_encode(g["mel"], int(g["mel_len"]))
    assert length == n
    np.testing.assert_allclose(pre, g["pre_encode"][:n], rtol=0, atol=STAGE_ATOL)
    layer0 = m.layers.layers[0](g["pre_encode"][:n], m.layers.positions(n))
    np.testing.assert_allclose(layer0, g["layer0"][:n], rtol=0, atol=STAGE_ATOL)
    enc = m.encode(g["mel"], int(g["mel_len"]))
    np.testing.assert_allclose(enc, g["enc"][:n], rtol=0, atol=STAGE_ATOL)


@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize("model", ["tdt", "hybrid"])
def test_tdt_decoding_matches_nemo(model: str, clip: str, models) -> None:
    """From NeMo's encoder output: the first joint step, then greedy TDT tokens, frames and
    durations, exactly (NeMo's default label-looping greedy_batch decoder)."""
    pm, g = models[model], _golden(model, clip)
    net = pm.model.transducer
    enc = g["enc"][: int(g["enc_len"])]
    g0, _ = net.predict(None, None)
    np.testing.assert_allclose(net(net.project(enc[:1])[0], g0), g["joint0_raw"], rtol=0,
                               atol=STAGE_ATOL)  # fmt: skip
    d = pm.decode(enc)
    assert d.tokens == g["tokens"].tolist()
    assert d.frames == g["frames"].tolist()
    assert d.durations == g["durations"].tolist()


@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize("model", ["ctc", "hybrid"])
def test_ctc_decoding_matches_nemo(model: str, clip: str, models) -> None:
    pm, g = models[model], _golden(model, clip)
    enc = g["enc"][: int(g["enc_len"])]
    lp = pm.model.log_probs(enc)
    cols = g["log_probs_cols"]  # every frame's 8 best classes and every 64th
    np.testing.assert_allclose(lp[:, cols], g["log_probs_sel"][: len(enc)], rtol=0,
                               atol=STAGE_ATOL)  # fmt: skip
    d = pm.decode(enc, decoder="ctc")
    assert d.tokens == g["ctc_tokens"].tolist()
    assert d.frames == g["ctc_frames"].tolist()


@pytest.mark.parametrize("clip", list(CLIPS))
@pytest.mark.parametrize("model", MODELS)
def test_transcribe_text_and_timestamps_match_nemo(model: str, clip: str, models, clips) -> None:
    """End to end from the audio: NeMo's transcribe(timestamps=True) text, word and segment
    lists (offsets in frames, seconds), for the model's own head and a hybrid's CTC head."""
    pm = models[model]
    ref = json.loads((GOLDEN / f"parakeet_tiny_{model}_{clip}.json").read_text("utf-8"))
    for head, want in ref["transcribe"].items():
        decoder = "ctc" if head == "ctc" else None
        res = pm.transcribe(clips[clip], decoder=decoder)
        assert res.text == want["text"]
        stamps = pm.timestamps(pm.decode(pm.encode(clips[clip]), decoder=decoder))
        nemo = want["timestamp"]
        for kind in ("char", "word", "segment"):
            got = [(s.text, s.start_offset, s.end_offset, s.start, s.end)
                   for s in getattr(stamps, kind)]  # fmt: skip
            exp = [("".join(w[kind]) if kind == "char" else w[kind], w["start_offset"],
                    w["end_offset"], w["start"], w["end"]) for w in nemo[kind]]  # fmt: skip
            assert got == exp, kind
        words = [w for s in res.segments for w in s.words]
        assert [w.word for w in words] == [w["word"] for w in nemo["word"]]
        assert [w.start for w in words] == [round(w["start"], 3) for w in nemo["word"]]
        assert [w.end for w in words] == [round(w["end"], 3) for w in nemo["word"]]
        assert [s.text.strip() for s in res.segments] == [s["segment"] for s in nemo["segment"]]
        g = _golden(model, clip)
        ids = g["ctc_tokens"] if head == "ctc" else g["tokens"]  # NeMo's hypothesis ids
        assert [t for s in res.segments for t in s.tokens] == stamps.tokens == ids.tolist()


def test_goldens_exercise_the_decoder() -> None:
    """The balanced random heads give varied output: every TDT duration, the 10-symbol cap,
    blanks and tokens; CTC blanks and tokens."""
    durs, caps = set(), 0
    for clip in CLIPS:
        g = _golden("tdt", clip)
        durs |= set(g["durations"].tolist())
        caps += int(np.bincount(g["frames"]).max() == 10)
        assert len(set(g["tokens"].tolist())) > 5
        c = _golden("ctc", clip)
        assert 0 < len(c["ctc_tokens"]) < int(c["enc_len"])
    assert caps >= 1
    assert durs >= {0, 1, 2, 3}  # a token with duration 4 is rare; blanks take 4 too


def test_quantized_files_stay_close(tmp_path, models, clips) -> None:
    """Q8_0 changes the encoder a little; its greedy tokens may differ from f32 only where the
    random model has near-ties, so the encoder output is compared, not the text."""
    g = _golden("tdt", "austen0870")
    f32 = models["tdt"].model.encode(g["mel"], int(g["mel_len"]))
    for wtype, bound in (("f16", 0.01), ("q8_0", 0.05), ("q4_k", 0.25)):
        q = npasr.load_model(convert(TINY / "parakeet_tiny_tdt.nemo", tmp_path / f"{wtype}.gguf",
                                     wtype=wtype))  # fmt: skip
        enc = q.model.encode(g["mel"], int(g["mel_len"]))
        rel = np.linalg.norm(enc - f32) / np.linalg.norm(f32)
        assert rel < bound, (wtype, rel)


def test_wrong_tokenizer_is_refused(tmp_path) -> None:
    """A SentencePiece model of another size would decode to wrong text: an error instead."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["a small text to train a tiny tokenizer on"] * 50),
        model_prefix=str(tmp_path / "sp"), vocab_size=30, model_type="bpe",
    )  # fmt: skip
    with pytest.raises(ModelFileError, match="wrong tokenizer"):
        convert(TINY / "parakeet_tiny_tdt.nemo", tmp_path / "x.gguf",
                tokenizer=tmp_path / "sp.model")  # fmt: skip
    assert not (tmp_path / "x.gguf").exists()  # nothing written half


def test_cli_transcribes_a_nemo_file_in_every_format(tmp_path, capsys, monkeypatch) -> None:
    """`npasr transcribe x.wav --model x.nemo` converts on first use (into the cache) and
    writes every output format; the JSON segments carry their words."""
    from npasr import cli

    monkeypatch.setenv("NPASR_CACHE_DIR", str(tmp_path / "cache"))
    if not DATA.is_dir():
        pytest.skip("speech data not found")
    audio = str(DATA / CLIPS["austen0870"])
    rc = cli.main(["transcribe", audio, "--model", str(TINY / "parakeet_tiny_tdt.nemo"),
                   "-o", str(tmp_path), "--threads", "2"])  # fmt: skip
    assert rc == 0
    assert len(list((tmp_path / "cache").glob("local-parakeet_tiny_tdt-*.gguf"))) == 1
    stem = Path(audio).stem
    for ext in ("txt", "srt", "vtt", "tsv", "json"):
        assert (tmp_path / f"{stem}.{ext}").stat().st_size > 0
    out = json.loads((tmp_path / f"{stem}.json").read_text("utf-8"))
    nemo = json.loads((GOLDEN / "parakeet_tiny_tdt_austen0870.json").read_text("utf-8"))
    want = nemo["transcribe"]["rnnt"]
    assert out["text"] == want["text"]
    assert [w["word"] for s in out["segments"] for w in s["words"]] == \
        [w["word"] for w in want["timestamp"]["word"]]  # fmt: skip
    assert "-->" in capsys.readouterr().out
    rc = cli.main(["transcribe", audio, "--model", str(TINY / "parakeet_tiny_tdt.nemo"),
                   "-o", str(tmp_path), "-f", "txt", "--attention", "local",
                   "--context", "8,8"])  # fmt: skip
    assert rc == 0


def test_bad_inputs_give_clear_errors(tmp_path, models) -> None:
    m = models["tdt"]
    with pytest.raises(ValueError, match="attention"):
        m.transcribe(np.zeros(16000, np.float32), attention="sparse")
    with pytest.raises(ValueError, match="context"):
        m.transcribe(np.zeros(16000, np.float32), attention="local", attention_context=(0, 0))
    with pytest.raises(ValueError, match="decodes with"):
        m.transcribe(np.zeros(16000, np.float32), decoder="rnnt")
    with pytest.raises(ValueError, match="no CTC head"):
        m.transcribe(np.zeros(16000, np.float32), decoder="ctc")
    silence = m.transcribe(np.zeros(16000, np.float32))
    assert isinstance(silence.text, str)
    blip = m.transcribe(np.zeros(200, np.float32))  # under 20 ms: nothing to encode
    assert blip.text == "" and blip.segments == []
    not_nemo = tmp_path / "x.nemo"
    not_nemo.write_bytes(b"PK\x03\x04 definitely not a tar archive" * 50)
    with pytest.raises(ModelFileError):
        convert(not_nemo, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def _hf_directory(tmp_path: Path, model: str) -> Path:
    """The tiny NeMo model in transformers' ParakeetFor{TDT,CTC} layout (names, config.json as
    transformers 5.23 writes it, safetensors), made here from the .nemo's own tensors."""
    from safetensors.numpy import save_file

    from npasr.io.nemo import open_nemo

    arch = open_nemo(TINY / f"parakeet_tiny_{model}.nemo")
    cfg, sd = arch.config, arch.state_dict()
    renames = [("encoder.pre_encode.conv.", "encoder.subsampling.layers."),
               ("encoder.pre_encode.out.", "encoder.subsampling.linear."),
               (".self_attn.linear_q.", ".self_attn.q_proj."),
               (".self_attn.linear_k.", ".self_attn.k_proj."),
               (".self_attn.linear_v.", ".self_attn.v_proj."),
               (".self_attn.linear_out.", ".self_attn.o_proj."),
               (".self_attn.linear_pos.", ".self_attn.relative_k_proj."),
               (".self_attn.pos_bias_", ".self_attn.bias_"), (".conv.batch_norm.", ".conv.norm."),
               ("joint.enc.", "encoder_projector."),
               ("decoder.prediction.embed.", "decoder.embedding."),
               ("decoder.prediction.dec_rnn.lstm.", "decoder.lstm."),
               ("joint.pred.", "decoder.decoder_projector."), ("joint.joint_net.2.", "joint.head."),
               ("decoder.decoder_layers.0.", "ctc_head.")]  # fmt: skip
    out = {}
    for name, v in sd.items():
        if name.startswith("preprocessor."):
            continue  # transformers computes the window and filterbank
        hf_name = name
        for a, b in renames:
            hf_name = hf_name.replace(a, b)
        out[hf_name] = np.ascontiguousarray(v)
    d = tmp_path / f"hf-{model}"
    d.mkdir()
    save_file(out, str(d / "model.safetensors"))
    enc, dec = cfg["encoder"], cfg["decoder"]
    encoder_config = {
        "hidden_size": enc["d_model"], "num_hidden_layers": enc["n_layers"],
        "num_attention_heads": enc["n_heads"],
        "intermediate_size": enc["d_model"] * enc["ff_expansion_factor"],
        "attention_bias": enc["use_bias"], "convolution_bias": enc["use_bias"],
        "conv_kernel_size": enc["conv_kernel_size"], "subsampling_factor": 8,
        "subsampling_conv_channels": enc["subsampling_conv_channels"], "num_mel_bins": 128,
        "subsampling_conv_kernel_size": 3, "subsampling_conv_stride": 2,
        "scale_input": enc["xscaling"], "max_position_embeddings": 5000,
    }  # fmt: skip
    if model == "ctc":
        hf = {"model_type": "parakeet_ctc", "vocab_size": 8193, "pad_token_id": 8192}
    else:
        hf = {"model_type": "parakeet_tdt", "vocab_size": 8193, "blank_token_id": 8192,
              "decoder_hidden_size": dec["prednet"]["pred_hidden"],
              "num_decoder_layers": dec["prednet"]["pred_rnn_layers"],
              "durations": [0, 1, 2, 3, 4], "max_symbols_per_step": 10}  # fmt: skip
    (d / "config.json").write_text(json.dumps(hf | {"encoder_config": encoder_config}))
    return d


@pytest.mark.parametrize("model", ["tdt", "ctc"])
def test_transformers_layout_converts_to_the_same_model(model, tmp_path, models, clips) -> None:
    d = _hf_directory(tmp_path, model)
    assert detect_family(d) == "parakeet"
    with pytest.raises(ModelFileError, match="tokenizer"):
        convert(d, tmp_path / "no-tok.gguf")
    hf = npasr.load_model(convert(d, tmp_path / "hf.gguf", wtype="f32",
                                  tokenizer=TINY / "parakeet_v3_tokenizer.model"))  # fmt: skip
    nemo = models[model]
    # transformers computes the window and the Slaney filterbank that NeMo stores (float32)
    audio = clips["austen0870"]
    np.testing.assert_allclose(hf.model.features(audio), nemo.model.features(audio), rtol=0,
                               atol=1e-4)  # fmt: skip
    g = _golden(model, "austen0870")
    want = nemo.model.encode(g["mel"], int(g["mel_len"]))
    np.testing.assert_allclose(hf.model.encode(g["mel"], int(g["mel_len"])), want, rtol=0,
                               atol=1e-5)  # fmt: skip
    assert hf.decode(want).tokens == nemo.decode(want).tokens


@pytest.mark.parametrize("context", [(8, 8), (12, 4), (3, 9)])
def test_local_attention_matches_nemo(context, models, monkeypatch) -> None:
    """NeMo's change_attention_model("rel_pos_local_attn", [L, R]) on the tiny TDT model (see
    make_goldens_parakeet.make_local for the biases NeMo 3.0.0 adds there), from NeMo's mel:
    the encoder output [measured 1.3e-6], also through the row-sliced long-input path."""
    from npasr.models import conformer

    g = np.load(GOLDEN / "parakeet_tiny_tdt_local.npz")
    want = g[f"enc_{context[0]}_{context[1]}"]
    m = models["tdt"].model
    got = m.encode(g["mel"], int(g["mel_len"].reshape(-1)[0]), context=context)
    np.testing.assert_allclose(got, want, rtol=0, atol=STAGE_ATOL)
    monkeypatch.setattr(conformer, "LAYER_ROWS", 16)
    monkeypatch.setattr(conformer, "ATTENTION_BLOCK", 8)
    got = m.encode(g["mel"], int(g["mel_len"].reshape(-1)[0]), context=context)
    np.testing.assert_allclose(got, want, rtol=0, atol=STAGE_ATOL)
    full = m.encode(g["mel"], int(g["mel_len"].reshape(-1)[0]))
    assert np.abs(full - want).max() > 100 * STAGE_ATOL  # the window does change the result


def test_progress_reaches_the_end_in_order(models, clips) -> None:
    seen: list[tuple[float, float]] = []
    models["tdt"].transcribe(clips["ru1"], progress_callback=lambda d, t: seen.append((d, t)))
    done = [d for d, _ in seen]
    assert len(seen) == 2 + 1 and done == sorted(done)  # after each of 2 layers, then decoding
    assert seen[-1][0] == seen[-1][1] == pytest.approx(len(clips["ru1"]) / 16000)


@pytest.mark.parametrize("length_cut", [0, 5, 6, 7])
def test_chunked_subsampling_equals_one_pass(length_cut, models) -> None:
    """Long inputs run the subsampling a chunk of output frames at a time, with a margin: the
    result equals one pass, at chunk sizes down to one frame and every parity of the length."""
    m = models["tdt"].model
    g = _golden("tdt", "austen0870")
    length = int(g["mel_len"]) - length_cut
    mel = g["mel"][:, : length + 1].copy()
    want, n = m.pre_encode(mel, length, chunk=10**6)
    for chunk in (1, 3, 7, 64):
        got, n2 = m.pre_encode(mel, length, chunk=chunk)
        assert n2 == n
        # equal up to float32 summation order: BLAS picks its kernel by the matrix shape, which
        # the chunk changes (4 ulp, 1.9e-6 at 3.24, on an AVX2 machine; 0 on AVX-512 Zen 4)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
