"""Whisper name mapping: CT2/HF/openai sources -> openai state_dict names, GGUF, and parity of
the converted weights with faster-whisper's own runtime (CTranslate2) on the same features."""

from __future__ import annotations

import time

import numpy as np
import pytest

from npasr.io.gguf import read_gguf
from npasr.io.weights import apply_name_table, check_names_and_shapes
from npasr.models.whisper.config import WhisperConfig
from npasr.models.whisper.weights import (
    CT2_TO_OPENAI,
    HF_TO_OPENAI,
    complete_vocab,
    load_source,
    openai_shapes,
    read_vocab,
    save_gguf,
    whisper_specials,
)
from npasr.types import ModelFileError, ModelNotFoundError

from ..conftest import JFK

TINY = WhisperConfig(n_mels=8, n_audio_ctx=6, n_audio_state=8, n_audio_head=2, n_audio_layer=2,
                     n_vocab=51864, n_text_ctx=5, n_text_state=8, n_text_head=2,
                     n_text_layer=2)  # fmt: skip
TINY_EN = WhisperConfig(80, 1500, 384, 6, 4, 51864, 448, 384, 6, 4)


def _random_openai(cfg: WhisperConfig) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in openai_shapes(cfg).items()}


def _to_ct2(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """openai -> CTranslate2 names, written independently of CT2_TO_OPENAI (ctranslate2
    converters/transformers.py WhisperLoader: fused qkv, zero key bias, fused cross k/v)."""
    out: dict[str, np.ndarray] = {}
    ln = {"attn_ln": "self_attention/layer_norm", "cross_attn_ln": "attention/layer_norm",
          "mlp_ln": "ffn/layer_norm"}  # fmt: skip
    for side in ("encoder", "decoder"):
        n = len({k.split(".")[2] for k in sd if k.startswith(f"{side}.blocks.")})
        for i in range(n):
            p, q = f"{side}.blocks.{i}", f"{side}/layer_{i}"
            a = f"{p}.attn"
            out[f"{q}/self_attention/linear_0/weight"] = np.concatenate(
                [sd[f"{a}.query.weight"], sd[f"{a}.key.weight"], sd[f"{a}.value.weight"]]
            )
            zeros = np.zeros_like(sd[f"{a}.query.bias"])
            out[f"{q}/self_attention/linear_0/bias"] = np.concatenate(
                [sd[f"{a}.query.bias"], zeros, sd[f"{a}.value.bias"]]
            )
            out[f"{q}/self_attention/linear_1/weight"] = sd[f"{a}.out.weight"]
            out[f"{q}/self_attention/linear_1/bias"] = sd[f"{a}.out.bias"]
            if side == "decoder":
                c = f"{p}.cross_attn"
                out[f"{q}/attention/linear_0/weight"] = sd[f"{c}.query.weight"]
                out[f"{q}/attention/linear_0/bias"] = sd[f"{c}.query.bias"]
                out[f"{q}/attention/linear_1/weight"] = np.concatenate(
                    [sd[f"{c}.key.weight"], sd[f"{c}.value.weight"]]
                )
                out[f"{q}/attention/linear_1/bias"] = np.concatenate([zeros, sd[f"{c}.value.bias"]])
                out[f"{q}/attention/linear_2/weight"] = sd[f"{c}.out.weight"]
                out[f"{q}/attention/linear_2/bias"] = sd[f"{c}.out.bias"]
            for j, k in ((0, 0), (2, 1)):
                for wb in ("weight", "bias"):
                    out[f"{q}/ffn/linear_{k}/{wb}"] = sd[f"{p}.mlp.{j}.{wb}"]
            for o, c2 in ln.items():
                if f"{p}.{o}.weight" in sd:
                    out[f"{q}/{c2}/gamma"] = sd[f"{p}.{o}.weight"]
                    out[f"{q}/{c2}/beta"] = sd[f"{p}.{o}.bias"]
    out["encoder/conv1/weight"], out["encoder/conv1/bias"] = (
        sd["encoder.conv1.weight"],
        sd["encoder.conv1.bias"],
    )
    out["encoder/conv2/weight"], out["encoder/conv2/bias"] = (
        sd["encoder.conv2.weight"],
        sd["encoder.conv2.bias"],
    )
    out["encoder/position_encodings/encodings"] = sd["encoder.positional_embedding"]
    out["encoder/layer_norm/gamma"], out["encoder/layer_norm/beta"] = (
        sd["encoder.ln_post.weight"],
        sd["encoder.ln_post.bias"],
    )
    out["decoder/layer_norm/gamma"], out["decoder/layer_norm/beta"] = (
        sd["decoder.ln.weight"],
        sd["decoder.ln.bias"],
    )
    out["decoder/embeddings/weight"] = sd["decoder.token_embedding.weight"]
    out["decoder/projection/weight"] = sd["decoder.token_embedding.weight"]
    out["decoder/position_encodings/encodings"] = sd["decoder.positional_embedding"]
    return out  # fmt: skip


def _to_hf(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """openai -> transformers names by plain string replacement (independent of HF_TO_OPENAI)."""
    reps = [(".blocks.", ".layers."), (".cross_attn_ln.", ".encoder_attn_layer_norm."),
            (".cross_attn.", ".encoder_attn."), (".attn_ln.", ".self_attn_layer_norm."),
            (".attn.", ".self_attn."), (".query.", ".q_proj."), (".key.", ".k_proj."),
            (".value.", ".v_proj."), (".out.", ".out_proj."), (".mlp.0.", ".fc1."),
            (".mlp.2.", ".fc2."), (".mlp_ln.", ".final_layer_norm."),
            ("encoder.ln_post.", "encoder.layer_norm."), ("decoder.ln.", "decoder.layer_norm."),
            ("token_embedding", "embed_tokens"), ("encoder.positional_embedding",
             "encoder.embed_positions.weight"), ("decoder.positional_embedding",
             "decoder.embed_positions.weight")]  # fmt: skip
    out = {}
    for k, v in sd.items():
        name = k
        for a, b in reps:
            name = name.replace(a, b)
        out["model." + name] = v
    out["proj_out.weight"] = sd["decoder.token_embedding.weight"]
    return out


# ------------------------------------------------------------------- torch-free, no weights


@pytest.mark.parametrize(
    ("table", "to_foreign"), [(CT2_TO_OPENAI, _to_ct2), (HF_TO_OPENAI, _to_hf)]
)
def test_tables_invert_the_foreign_layouts(table, to_foreign):
    sd = _random_openai(TINY)
    back = apply_name_table(to_foreign(sd), table, source="t")
    check_names_and_shapes(back, openai_shapes(TINY), source="t")
    assert set(back) == set(sd)
    for k, v in sd.items():
        np.testing.assert_array_equal(back[k], v, err_msg=k)


def test_mapping_is_strict():
    ct2 = _to_ct2(_random_openai(TINY))
    ct2["encoder/extra/weight"] = np.zeros(3, np.float32)
    with pytest.raises(ModelFileError, match="encoder/extra/weight"):
        apply_name_table(ct2, CT2_TO_OPENAI, source="t")
    del ct2["encoder/extra/weight"]
    ct2["encoder/layer_0/self_attention/linear_0/bias"][10] = 1.0  # a key bias openai lacks
    with pytest.raises(ModelFileError, match="must be zero"):
        apply_name_table(ct2, CT2_TO_OPENAI, source="t")
    ct2 = _to_ct2(_random_openai(TINY))
    ct2["decoder/projection/weight"] = ct2["decoder/projection/weight"] + 1  # untied head
    with pytest.raises(ModelFileError, match="tied"):
        apply_name_table(ct2, CT2_TO_OPENAI, source="t")
    sd = _random_openai(TINY)
    del sd["decoder.ln.bias"]
    sd["encoder.conv1.weight"] = sd["encoder.conv1.weight"][:, :, :2]
    with pytest.raises(ModelFileError, match=r"missing 1: decoder\.ln\.bias.*wrong shape"):
        check_names_and_shapes(sd, openai_shapes(TINY), source="t")


def test_specials_layout():
    en = whisper_specials(TINY_EN)
    multi = whisper_specials(WhisperConfig(80, 1500, 512, 8, 6, 51865, 448, 512, 8, 6))
    assert len(en) == len(multi) == 1608 and en == multi  # both keep the 99 language tokens
    assert 51864 - len(en) == 50256  # tiny.en: <|endoftext|> is id 50256
    assert en[-1] == "<|30.00|>" and en[-1501] == "<|0.00|>" and en[2] == "<|en|>"
    v3 = whisper_specials(WhisperConfig(128, 1500, 1280, 20, 32, 51866, 448, 1280, 20, 32))
    assert "<|yue|>" in v3 and len(v3) == 1609


def test_complete_vocab_appends_and_checks():
    regular = [f"t{i}" for i in range(50256)]
    tokens, types = complete_vocab(
        regular + ["<|endoftext|>", "<|startoftranscript|>"], TINY_EN, "t"
    )
    assert len(tokens) == 51864 and tokens[50256] == "<|endoftext|>" and tokens[-1] == "<|30.00|>"
    assert types[:50256] == [1] * 50256 and set(types[50256:]) == {3}
    with pytest.raises(ModelFileError, match="does not fit this English-only model"):
        complete_vocab(regular + ["extra"], TINY_EN, "t")  # a multilingual-sized BPE table
    with pytest.raises(ModelFileError, match="does not fit"):
        complete_vocab(regular[:-1], TINY_EN, "t")
    renamed = regular + whisper_specials(TINY_EN)
    renamed[50256 + 22] = "<|iw|>"  # HF's English-only spelling of Hebrew
    assert complete_vocab(renamed, TINY_EN, "t")[0][50278] == "<|he|>"


# ------------------------------------------------------------------------- real weights


def _src_dirs(name: str):
    from npasr import hub  # noqa: PLC0415

    try:
        return hub.source_dirs(name)
    except ModelNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def tiny_en_gguf(tmp_path_factory):
    (d,) = _src_dirs("whisper-tiny.en")
    out = tmp_path_factory.mktemp("w") / "tiny.en-f16.gguf"
    t0 = time.perf_counter()
    save_gguf(load_source(d), out, "f16")
    print(f"tiny.en CT2 -> f16 GGUF in {time.perf_counter() - t0:.2f} s")
    return out


@pytest.mark.weights
def test_ct2_tiny_en_structure(tiny_en_gguf):
    (d,) = _src_dirs("whisper-tiny.en")
    src = load_source(d)
    assert src.config == TINY_EN
    assert {k: v.shape for k, v in src.tensors.items()} == openai_shapes(TINY_EN)
    assert src.tokens[50256] == "<|endoftext|>" and src.tokens[50361] == "<|nospeech|>"
    assert src.tokens[220] == "Ġ" and len(src.tokens) == 51864
    assert src.alignment_heads == [(1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)]
    g = read_gguf(tiny_en_gguf)
    assert g.architecture == "whisper" and g.get("general.file_type") == 1
    assert WhisperConfig.from_gguf(g.metadata) == TINY_EN
    assert g.get("tokenizer.ggml.tokens") == src.tokens
    assert g.get("whisper.alignment_heads") == [1, 0, 2, 0, 2, 5, 3, 0, 3, 1, 3, 2, 3, 3, 3, 4]
    for k, a in g.tensors.items():
        half = a.ndim >= 2 and "positional" not in k
        assert a.dtype == (np.float16 if half else np.float32), k
        np.testing.assert_array_equal(a, src.tensors[k].astype(a.dtype))
        assert len(k.encode()) <= 63


@pytest.mark.weights
def test_ct2_base_split_across_two_packages(tmp_path):
    dirs = _src_dirs("whisper-base")
    src = load_source(dirs)
    assert src.config == WhisperConfig(80, 1500, 512, 8, 6, 51865, 448, 512, 8, 6)
    assert (
        src.tokens[50257] == "<|endoftext|>" and src.tokens[50256] == ""
    )  # as multilingual.tiktoken
    assert src.tokens[50259] == "<|en|>" and src.tokens[50260] == "<|zh|>"


@pytest.mark.weights
def test_vocabulary_sources_agree():
    (d,) = _src_dirs("whisper-tiny.en")
    a = complete_vocab(read_vocab(d / "vocabulary.txt"), TINY_EN, "t")
    b = complete_vocab(read_vocab(d / "tokenizer.json"), TINY_EN, "t")  # no timestamp tokens
    assert a == b
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.find_spec("whisper")
    if spec is None:
        pytest.skip("openai-whisper not installed")
    from pathlib import Path  # noqa: PLC0415

    tk = Path(spec.submodule_search_locations[0]) / "assets" / "gpt2.tiktoken"
    assert complete_vocab(read_vocab(tk), TINY_EN, "t") == a
    with pytest.raises(ModelFileError, match="English-only"):
        complete_vocab(read_vocab(tk.with_name("multilingual.tiktoken")), TINY_EN, "t")


# --------------------------------------------------------------------------- vs references


@pytest.mark.reference
def test_openai_shapes_equal_the_reference_state_dict():
    pytest.importorskip("torch")
    whisper_model = pytest.importorskip("whisper.model")
    for cfg in (TINY, TINY_EN):
        m = whisper_model.Whisper(whisper_model.ModelDimensions(**cfg.__dict__))
        ref = {k: tuple(v.shape) for k, v in m.state_dict().items()}
        assert list(ref.items()) == list(openai_shapes(cfg).items())


@pytest.mark.weights
@pytest.mark.reference
def test_openai_pt_round_trip(tiny_en_gguf, tmp_path):
    pytest.importorskip("torch")
    from .whisper_ref import whisper_pt_from_gguf  # noqa: PLC0415

    pt = whisper_pt_from_gguf(tiny_en_gguf, tmp_path / "tiny.en.pt")
    src = load_source(pt)  # tokenizer: openai-whisper's gpt2.tiktoken, located as a file
    g = read_gguf(tiny_en_gguf)
    assert src.config == TINY_EN and src.tokens == g.get("tokenizer.ggml.tokens")
    assert src.alignment_heads == [(1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)]
    for k, a in g.tensors.items():
        np.testing.assert_array_equal(src.tensors[k], a)


@pytest.fixture(scope="module")
def jfk_mel():
    pytest.importorskip("torch")
    whisper = pytest.importorskip("whisper")
    import soundfile  # noqa: PLC0415
    from scipy.signal import resample_poly  # noqa: PLC0415

    audio, sr = soundfile.read(JFK, dtype="float32", always_2d=True)
    audio = resample_poly(audio.mean(axis=1), 16000, sr).astype(np.float32)  # 44.1 -> 16 kHz
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio))  # (80, 3000)
    return mel.numpy()


@pytest.mark.weights
@pytest.mark.reference
def test_parity_with_ctranslate2(tiny_en_gguf, jfk_mel, tmp_path):
    """Same features into openai-whisper (our converted weights) and CTranslate2 (its own
    model.bin): encoder states and greedy tokens must agree, proving the q/k/v split."""
    torch = pytest.importorskip("torch")
    whisper = pytest.importorskip("whisper")
    ctranslate2 = pytest.importorskip("ctranslate2")
    from .whisper_ref import whisper_pt_from_gguf  # noqa: PLC0415

    model = whisper.load_model(str(whisper_pt_from_gguf(tiny_en_gguf, tmp_path / "m.pt")), "cpu")
    (d,) = _src_dirs("whisper-tiny.en")
    ct2 = ctranslate2.models.Whisper(str(d), device="cpu", compute_type="float32")
    feats = ctranslate2.StorageView.from_array(np.ascontiguousarray(jfk_mel[None]))
    with torch.no_grad():
        ours = model.embed_audio(torch.from_numpy(jfk_mel)[None]).numpy()
    theirs = np.array(ct2.encode(feats, to_cpu=True))
    diff = np.abs(ours - theirs).max()
    print(f"encoder max |openai(converted) - ctranslate2| = {diff:.2e}")
    assert diff <= 1e-2

    sot = [50257, 50362]  # <|startoftranscript|> <|notimestamps|> (English-only ids)
    res = ct2.generate(feats, [sot], beam_size=1, max_length=100, suppress_blank=False,
                       suppress_tokens=[])  # fmt: skip
    options = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False,
                                      suppress_blank=False, suppress_tokens="")  # fmt: skip
    result = whisper.decode(model, torch.from_numpy(jfk_mel), options)
    assert result.tokens == [t for t in res[0].sequences_ids[0] if t < 50256]
    assert "ask not what your country can do for you" in result.text


def test_hf_directory_end_to_end(tmp_path):
    """A transformers-layout directory (config.json, model.safetensors, vocab.json +
    added_tokens.json) converts to the same tensors and a completed vocabulary."""
    st = pytest.importorskip("safetensors.numpy")
    import json  # noqa: PLC0415

    from npasr.convert import convert  # noqa: PLC0415

    sd = _random_openai(TINY)
    st.save_file(_to_hf(sd), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "whisper", "num_mel_bins": 8, "max_source_positions": 6, "d_model": 8,
        "encoder_attention_heads": 2, "encoder_layers": 2, "vocab_size": 51864,
        "max_target_positions": 5, "decoder_attention_heads": 2, "decoder_layers": 2,
    }))  # fmt: skip
    (tmp_path / "vocab.json").write_text(json.dumps({f"t{i}": i for i in range(50256)}))
    (tmp_path / "added_tokens.json").write_text(json.dumps({"<|endoftext|>": 50256}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"alignment_heads": [[1, 0]]}))
    g = read_gguf(convert(tmp_path, tmp_path / "out.gguf", wtype="f32"))
    assert WhisperConfig.from_gguf(g.metadata) == TINY
    assert g.get("npasr.source") == f"hf:{tmp_path.name}"
    assert g.get("whisper.alignment_heads") == [1, 0]
    tokens = g.get("tokenizer.ggml.tokens")
    assert tokens[:2] == ["t0", "t1"] and tokens[50256] == "<|endoftext|>" and len(tokens) == 51864
    for k, v in sd.items():
        np.testing.assert_array_equal(g.tensors[k], v, err_msg=k)
