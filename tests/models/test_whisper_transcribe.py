"""The long-form loop's logic (segment splitting, seek, fallback) on hand-made decoder results."""

from __future__ import annotations

import numpy as np
import pytest

from npasr.models.whisper import transcribe as tr
from npasr.models.whisper.decode import DecodingOptions, DecodingResult


class _Tok:
    eot, timestamp_begin = 100, 200

    def decode(self, ids):
        return "".join(f" w{i}" for i in ids)


TS = _Tok.timestamp_begin


def _result(tokens, temperature=0.0):
    return DecodingResult(
        language="en",
        tokens=tokens,
        text="",
        avg_logprob=-0.2,
        no_speech_prob=0.01,
        temperature=temperature,
        compression_ratio=1.0,
    )


def test_pairs_split_segments_and_seek_to_last_closing_timestamp() -> None:
    # <|0.00|> a b <|1.00|><|1.00|> c <|2.50|> <|2.50|> d   (no closing timestamp: cut-off text)
    toks = [TS, 1, 2, TS + 50, TS + 50, 3, TS + 125, TS + 125, 4]
    segs, seek = tr._split_segments(_Tok(), _result(toks), 3000, 3000, 60.0, 0.02, 2)
    assert [(s.start, s.end, s.text) for s in segs] == [(60.0, 61.0, " w1 w2"), (61.0, 62.5, " w3")]
    assert seek == 3000 + 125 * 2  # resume at the last closing timestamp, in mel frames


def test_single_timestamp_ending_consumes_the_window() -> None:
    toks = [TS, 1, TS + 40, TS + 40, 2, TS + 90]
    segs, seek = tr._split_segments(_Tok(), _result(toks), 0, 2500, 0.0, 0.02, 2)
    assert [(s.start, s.end) for s in segs] == [(0.0, 0.8), (0.8, 1.8)]
    assert seek == 2500


def test_no_pairs_gives_one_segment_to_last_timestamp() -> None:
    segs, seek = tr._split_segments(_Tok(), _result([TS, 5, 6, TS + 150]), 0, 3000, 0.0, 0.02, 2)
    assert [(s.start, s.end, s.text) for s in segs] == [(0.0, 3.0, " w5 w6")]
    assert seek == 3000
    segs, _ = tr._split_segments(_Tok(), _result([5, 6]), 0, 1000, 0.0, 0.02, 2)
    assert segs[0].end == pytest.approx(10.0)  # no timestamps: the whole (short) window


def test_fallback_raises_temperature_until_thresholds_pass(monkeypatch) -> None:
    seen = []

    def fake_decode(model, tok, cross, opts):
        seen.append((opts.temperature, opts.beam_size, opts.best_of))
        bad = opts.temperature < 0.4
        return DecodingResult(
            language="en",
            tokens=[1],
            text="x",
            avg_logprob=-2.0 if bad else -0.1,
            no_speech_prob=0.0,
            temperature=opts.temperature,
            compression_ratio=1.0,
        )

    monkeypatch.setattr(tr, "decode_window", fake_decode)
    base = DecodingOptions(beam_size=5, best_of=3)
    r = tr._fallback_loop(None, None, None, base, (0.0, 0.2, 0.4, 0.6), 2.4, -1.0, 0.6)
    assert r.temperature == 0.4
    # beam search only at t=0; best_of only when sampling (openai-whisper's rule)
    assert seen == [(0.0, 5, None), (0.2, None, 3), (0.4, None, 3)]


def test_silence_stops_fallback_when_no_speech_is_likely(monkeypatch) -> None:
    def fake_decode(model, tok, cross, opts):
        return DecodingResult(
            language="en",
            tokens=[],
            text="",
            avg_logprob=-3.0,
            no_speech_prob=0.9,
            temperature=opts.temperature,
            compression_ratio=0.5,
        )

    monkeypatch.setattr(tr, "decode_window", fake_decode)
    r = tr._fallback_loop(None, None, None, DecodingOptions(), (0.0, 0.2, 0.4), 2.4, -1.0, 0.6)
    assert r.temperature == 0.0


@pytest.mark.weights
def test_empty_silent_and_noise_audio(tiny_en_gguf) -> None:
    from npasr.models.whisper.asr import WhisperModel

    m = WhisperModel.from_gguf(tiny_en_gguf)
    empty = m.transcribe(np.zeros(0, np.float32))
    assert empty.text == "" and empty.segments == []
    silent = m.transcribe(np.zeros(16000 * 3, np.float32), temperature=0.0)
    assert silent.text.strip() == ""


@pytest.mark.weights
def test_segment_callback_streams_the_result_segments(tiny_en_gguf) -> None:
    from npasr.models.whisper.asr import WhisperModel

    from ..conftest import JFK

    got = []
    r = WhisperModel.from_gguf(tiny_en_gguf).transcribe(
        JFK, temperature=0.0, segment_callback=got.append
    )
    assert got == r.segments and len(got) >= 2


@pytest.mark.parametrize(
    "rows", [[0, 1, 2, 3, 4], [0, 0, 2, 3, 1], [1, 0, 2, 4, 3], [4, 4, 4, 4, 4], [2, 3, 4, 0, 1]]
)
def test_kv_cache_follow_keeps_each_rows_history(rows: list[int]) -> None:
    """KVCache.follow over two beam-search steps: every decoding row ends in a cache row that
    holds the first `length` positions of the row it continues (duplicates get copies, into
    rows nobody continues), distinct rows for distinct decoding rows, and only duplicated
    histories are copied."""
    from npasr.models.whisper.model import KVCache

    rng = np.random.default_rng(1)
    k = [rng.standard_normal((5, 2, 3, 8)).astype(np.float32) for _ in range(2)]
    v = [rng.standard_normal((5, 2, 3, 8)).astype(np.float32) for _ in range(2)]
    cache = KVCache([a.copy() for a in k], [a.copy() for a in v], length=6)
    slots = np.array([3, 0, 4, 1, 2])  # decoding row j in cache row slots[j]
    new = cache.follow(slots, np.array(rows))
    assert sorted(new.tolist()) == list(range(5))
    for got, old in zip((*cache.k, *cache.v), (*k, *v), strict=True):
        for i, r in enumerate(rows):
            np.testing.assert_array_equal(got[new[i], ..., :6], old[slots[r], ..., :6])
        np.testing.assert_array_equal(got[..., 6:], old[..., 6:])  # later positions untouched
    kept = sum(1 for i, r in enumerate(rows) if new[i] == slots[r])
    assert kept == len(set(rows))  # one cache row per distinct history stays in place


def test_kv_cache_follow_copies_only_the_positions_after_the_shared_ones() -> None:
    from npasr.models.whisper.model import KVCache

    rng = np.random.default_rng(2)
    own = [rng.standard_normal((3, 2, 4, 10)).astype(np.float32) for _ in range(2)]
    prompt = [rng.standard_normal((2, 4, 7)).astype(np.float32) for _ in range(2)]
    cache = KVCache([a.copy() for a in own[:1]], [a.copy() for a in own[1:]], 7 + 4,
                    [prompt[0]], [prompt[1]], 7)  # fmt: skip
    new = cache.follow(np.arange(3), np.array([2, 2, 0]))
    assert new.tolist() == [2, 1, 0]
    for got, old in ((cache.k[0], own[0]), (cache.v[0], own[1])):
        np.testing.assert_array_equal(got[1, ..., :4], old[2, ..., :4])  # 4 own positions
        np.testing.assert_array_equal(got[1, ..., 4:], old[1, ..., 4:])  # nothing beyond
        np.testing.assert_array_equal(got[[0, 2]], old[[0, 2]])


@pytest.mark.weights
def test_branched_cache_decodes_as_each_row_alone(tiny_en_gguf) -> None:
    """Beams over one prompt (`KVCache.branch`: the prompt's keys held once, each row its own
    tokens after it, `follow` between steps) give every row the hidden states that decoding its
    whole token sequence alone in a one-row cache gives."""
    from npasr.models.whisper.asr import WhisperModel
    from npasr.models.whisper.model import KVCache

    m = WhisperModel.from_gguf(tiny_en_gguf)
    cfg, dec = m.config, m.model.decoder
    cross = dec.cross_kv(np.random.default_rng(0).standard_normal((1500, 384)).astype(np.float32))
    prompt = [50257, 50362, 843, 523, 1110, 13]
    cache = KVCache.empty(cfg, 1)
    dec(np.array([prompt]), cross, cache)
    cache = cache.branch(4)
    assert cache.shared == cache.length == len(prompt)
    seqs = [list(prompt) for _ in range(4)]
    slots = np.arange(4)
    steps = [([11, 12, 13, 14], None), ([21, 22, 23, 24], [1, 1, 3, 0])]
    steps.append(([31, 32, 33, 34], [2, 0, 0, 2]))
    for new_tokens, rows in steps:
        if rows is not None:  # row i continues old row rows[i]
            slots = cache.follow(slots, np.array(rows))
            seqs = [list(seqs[r]) for r in rows]
        tokens = np.empty((4, 1), np.int64)
        tokens[slots, 0] = new_tokens  # in cache-row order
        h = dec(tokens, cross, cache)[slots, -1]
        for i, t in enumerate(new_tokens):
            seqs[i].append(t)
            alone = dec(np.array([seqs[i]]), cross, KVCache.empty(cfg, 1))[0, -1]
            # float32 summation order only (measured up to 1.3e-6 of the largest value)
            assert np.abs(h[i] - alone).max() <= 4e-6 * np.abs(alone).max()
    with pytest.raises(ValueError, match="branch"):
        cache.branch(2)
