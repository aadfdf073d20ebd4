"""GigaAM vs the official code (salute-developers/GigaAM@8555893) on tiny random checkpoints.

The checkpoints in tests/tiny are in the official format and the goldens in tests/golden were
produced by the official loader and modules (scripts/make_goldens_gigaam.py); no torch here.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

import npasr
from npasr.convert import convert, detect_family
from npasr.models.gigaam.asr import GigaAMModel
from npasr.types import ModelFileError, TranscriptionResult, UnsafeCheckpointError

REPO = Path(__file__).resolve().parents[2]
TINY, GOLDEN = REPO / "tests" / "tiny", REPO / "tests" / "golden"
AUDIO = REPO.parent / "shared" / "data" / "ru_sherpa-qwen3-ru1.wav"
NAMES = ["tiny_v3_ctc", "tiny_v3_rnnt", "tiny_v3_e2e_ctc", "tiny_v3_e2e_rnnt", "tiny_v2rel_ctc"]
# measured: mel 9.6e-5 (v3) / 2.7e-4 (v2, centred STFT): the reference STFT is float32, ours
# float64; subsampling 6.7e-6, layer 0 2.5e-6, encoder 4.0e-6, CTC log-probs 2.4e-6
MEL_TOL = {"tiny_v2rel_ctc": 5e-4}


def _tokenizer(name: str) -> Path | None:
    return TINY / f"{name}_tokenizer.model" if "e2e" in name else None


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, GigaAMModel]:
    out = tmp_path_factory.mktemp("gigaam")
    return {n: GigaAMModel.from_gguf(convert(TINY / f"{n}.ckpt", out / f"{n}.gguf", wtype="f32",
                                             tokenizer=_tokenizer(n))) for n in NAMES}  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_matches_official_reference(name: str, models: dict[str, GigaAMModel],
                                    audio: np.ndarray) -> None:  # fmt: skip
    m, g = models[name], np.load(GOLDEN / f"gigaam_{name}.npz")
    mel = m.model.features(audio)
    np.testing.assert_allclose(mel, g["mel"], rtol=0, atol=MEL_TOL.get(name, 1e-4))
    # from the reference mel on, so each stage is compared on equal inputs
    pre = m.model.pre_encode(g["mel"])
    np.testing.assert_allclose(pre, g["pre_encode"], rtol=0, atol=1e-4)
    layer0 = m.model.layers.layers[0](pre, m.model.layers.positions(pre.shape[0]))
    np.testing.assert_allclose(layer0, g["layer0"], rtol=0, atol=1e-4)
    enc = m.model.encode(mel)
    assert enc.shape[0] == int(g["enc_len"])
    np.testing.assert_allclose(enc, g["enc"], rtol=0, atol=1e-4)
    if m.config.head == "ctc":
        np.testing.assert_allclose(m.model.log_probs(enc), g["log_probs"], rtol=0, atol=1e-4)
    else:
        g0, _ = m.model.predict(None, None)
        logits = m.model.joint(m.model.joint_enc(enc[:1])[0], g0)
        lp = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
        np.testing.assert_allclose(lp, g["joint0"], rtol=0, atol=1e-4)
    tokens, frames = m.decode(enc)
    assert tokens == g["tokens"].tolist()  # greedy tokens: exact
    assert frames == g["frames"].tolist()
    assert m.tokenizer.decode(tokens) == str(g["text"])


def test_rnnt_goldens_exercise_the_symbol_cap() -> None:
    frames = np.load(GOLDEN / "gigaam_tiny_v3_rnnt.npz")["frames"]
    assert np.bincount(frames).max() == 10  # some frame hit max_symbols_per_step
    assert (np.bincount(frames) == 0).any()  # and some emitted nothing


def test_transcribe_api_and_segments(tmp_path: Path) -> None:
    gguf = convert(TINY / "tiny_v3_ctc.ckpt", tmp_path / "m.gguf", wtype="f16")
    model = npasr.load_model(gguf)
    assert isinstance(model, GigaAMModel)
    if not AUDIO.is_file():
        pytest.skip("speech data not found")
    res = model.transcribe(str(AUDIO))
    assert isinstance(res, TranscriptionResult)
    assert res.language == "ru" and res.segments
    assert "".join(res.text.split()) == "".join("".join(s.text.split()) for s in res.segments)
    ends = [(s.start, s.end) for s in res.segments]
    assert all(a < b for a, b in ends) and ends[-1][1] <= 4.76 + 0.04
    assert all(ends[i][1] <= ends[i + 1][0] for i in range(len(ends) - 1))


def test_f16_gguf_stays_close_to_f32(tmp_path: Path, audio: np.ndarray,
                                     models: dict[str, GigaAMModel]) -> None:  # fmt: skip
    m16 = GigaAMModel.from_gguf(convert(TINY / "tiny_v3_ctc.ckpt", tmp_path / "h.gguf"))
    mel = models["tiny_v3_ctc"].model.features(audio)
    np.testing.assert_array_equal(m16.model.features(audio), mel)  # mel buffers stay f32
    enc16, enc32 = m16.model.encode(mel), models["tiny_v3_ctc"].model.encode(mel)
    assert np.abs(enc16 - enc32).max() < 3e-2


def test_long_audio_is_chunked_on_one_frame_grid(models: dict[str, GigaAMModel],
                                                 audio: np.ndarray) -> None:  # fmt: skip
    m = models["tiny_v3_rnnt"]
    long = np.concatenate([audio] * 3)  # 14.3 s; windows of 6 s overlapping by 2 s
    kw = {"single_pass_s": 5.0, "chunk_s": 6.0, "overlap_s": 2.0}
    enc = m.encode(long, **kw)
    assert enc.shape[0] == m.encode(long).shape[0]  # as many frames as one pass
    first = m.model.encode(m.model.features(long[: 6 * 16000]))
    np.testing.assert_array_equal(enc[:125], first[:125])  # window 0 keeps frames [0, 100 + 25)
    start = 3 * 4 * 16000  # window 3 starts at 12 s = frame 300 and runs to the end
    last = m.model.encode(m.model.features(long[start:]))
    np.testing.assert_array_equal(enc[325:], last[25:])
    res = m.transcribe(long, chunk_s=6.0, overlap_s=2.0)
    assert res.text and res.segments[-1].end <= len(long) / 16000 + 0.04


def test_ctc_beam_search_path(models: dict[str, GigaAMModel], audio: np.ndarray) -> None:
    m = models["tiny_v3_ctc"]
    enc = m.model.encode(m.model.features(audio))
    greedy, _ = m.decode(enc)
    beam, frames = m.decode(enc, beam_size=4)
    assert len(beam) == len(frames) and abs(len(beam) - len(greedy)) <= 5


def test_family_detection_and_missing_tokenizer(tmp_path: Path) -> None:
    assert detect_family(TINY / "tiny_v3_ctc.ckpt") == "gigaam"
    ckpt = tmp_path / "v3_e2e_rnnt.ckpt"  # no <stem>_tokenizer.model beside it
    ckpt.write_bytes((TINY / "tiny_v3_e2e_rnnt.ckpt").read_bytes())
    with pytest.raises(ModelFileError, match="SentencePiece"):
        convert(ckpt, tmp_path / "x.gguf")


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE


def _hostile_checkpoint(path: Path, marker: Path) -> None:
    """The official zip layout; `cfg` looks like GigaAM's but runs os.system when unpickled:
    {"cfg": {"_target_": "gigaam...", "encoder": posix.system("touch marker")}, "state_dict": {}}"""
    pkl = (b"\x80\x02}(" + _str("cfg") + b"}(" + _str("_target_") + _str("gigaam.model.GigaAMASR")
           + _str("encoder") + b"cposix\nsystem\n" + _str(f"touch {marker}") + b"\x85Ru"
           + _str("state_dict") + b"}u.")  # fmt: skip
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")


def test_hostile_pickle_in_the_cfg_slot_is_refused(tmp_path: Path) -> None:
    bad, marker = tmp_path / "v3_ctc.ckpt", tmp_path / "pwned"
    _hostile_checkpoint(bad, marker)
    assert detect_family(bad) == "gigaam"  # routed to the GigaAM loader, OmegaConf allow-list on
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        convert(bad, tmp_path / "x.gguf")
    assert not marker.exists()


def _arpa(path: Path, words: list[str]) -> Path:
    """A unigram ARPA over `words` (uniform), plus the specials."""
    lines = ["\\data\\", f"ngram 1={len(words) + 3}", "", "\\1-grams:", "-99\t<s>\t0",
             "-1\t</s>", "-3\t<unk>", *[f"-1\t{w}" for w in words], "", "\\end\\"]  # fmt: skip
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_ctc_lm_fusion_through_transcribe(models: dict[str, GigaAMModel], audio: np.ndarray,
                                          tmp_path: Path) -> None:  # fmt: skip
    m = models["tiny_v3_ctc"]
    enc = m.model.encode(m.model.features(audio))
    greedy_text = m.tokenizer.decode(m.decode(enc)[0])
    lm_path = _arpa(tmp_path / "lm.arpa", sorted(set(greedy_text.split()))[:5])
    # alpha = beta = 0: the LM changes nothing
    plain = m.decode(enc, beam_size=4)
    assert m.decode(enc, beam_size=4, lm=m.word_lm(lm_path, 0.0, 0.0)) == plain
    # a strong word bonus makes more words (spaces) than the plain beam, a penalty fewer
    space = m.tokenizer.tokens.index(" ")
    more = m.decode(enc, beam_size=4, lm=m.word_lm(lm_path, 0.0, 20.0))[0]
    fewer = m.decode(enc, beam_size=4, lm=m.word_lm(lm_path, 0.0, -20.0))[0]
    assert more.count(space) >= plain[0].count(space) >= fewer.count(space)
    assert more.count(space) > fewer.count(space)
    res = m.transcribe(audio, lm_path=str(lm_path), lm_alpha=0.5, lm_beta=1.0)
    assert res.text and res.segments
    with pytest.raises(ValueError, match="RNN-T"):
        models["tiny_v3_rnnt"].transcribe(audio, lm_path=str(lm_path))
    with pytest.raises(ModelFileError, match="no such"):
        m.transcribe(audio, lm_path=str(tmp_path / "absent.arpa"))
