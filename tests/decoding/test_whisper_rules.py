"""Whisper logit rules and token choosers against openai-whisper's own classes.

The reference tests feed identical random logits and token histories to both implementations;
the always-run tests pin the rules on hand-built cases.
"""

from __future__ import annotations

import numpy as np
import pytest

from npasr.decoding import whisper_rules as rules
from npasr.decoding.autoregressive import BeamSearchDecoder, GreedyDecoder, rank_by_likelihood

V, EOT, NO_TS, TS0 = 120, 100, 101, 102  # toy vocabulary: text < 100, specials, timestamps >= 102


def _ts_rules(sample_begin: int = 2, max_idx: int | None = 5) -> rules.ApplyTimestampRules:
    return rules.ApplyTimestampRules(EOT, NO_TS, TS0, sample_begin, max_idx)


def test_first_token_must_be_an_early_timestamp() -> None:
    logits = np.zeros((1, V), np.float32)
    _ts_rules().apply(logits, np.array([[7, 8]]))
    allowed = np.flatnonzero(np.isfinite(logits[0]))
    assert allowed.tolist() == list(range(TS0, TS0 + 6))


def test_open_timestamp_forbids_text_and_earlier_times() -> None:
    logits = np.zeros((1, V), np.float32)
    logits[0, :TS0] = 5.0  # keep the "timestamp mass wins" rule out of this case
    _ts_rules().apply(logits, np.array([[7, 8, TS0 + 1, 5, TS0 + 4]]))
    allowed = np.flatnonzero(np.isfinite(logits[0]))
    # after text + one timestamp: only eot or a timestamp >= the last one may follow
    assert allowed.tolist() == [EOT] + list(range(TS0 + 4, V))


def test_closed_pair_forbids_timestamps() -> None:
    logits = np.zeros((1, V), np.float32)
    logits[0, :TS0] = 5.0  # text clearly more likely than any timestamp
    _ts_rules().apply(logits, np.array([[7, 8, TS0, 5, TS0 + 3, TS0 + 3]]))
    assert not np.isfinite(logits[0, TS0:]).any()
    assert np.isfinite(logits[0, :EOT]).all()


def test_timestamp_mass_wins_over_text() -> None:
    logits = np.full((1, V), -10.0, np.float32)
    logits[0, 3] = 0.0  # best text token
    logits[0, TS0 + 10 :] = -1.0  # many moderately likely timestamps: their sum wins
    _ts_rules().apply(logits, np.array([[7, 8, TS0, 5]]))
    assert not np.isfinite(logits[0, :TS0]).any()


def test_logsumexp_of_the_timestamp_mass() -> None:
    """The shifted log-sum-exp the timestamp rule compares: NumPy's logaddexp reduction to
    float32 rounding, including -inf entries, all -inf, +inf and NaN."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(1501) * 4 - 20).astype(np.float32)
    x[::7] = -np.inf
    assert rules._logsumexp(x) == pytest.approx(
        float(np.logaddexp.reduce(x.astype(np.float64))), rel=1e-6
    )
    assert rules._logsumexp(np.full(5, -np.inf, np.float32)) == -np.inf
    assert rules._logsumexp(np.array([1, np.inf], np.float32)) == np.inf
    assert np.isnan(rules._logsumexp(np.array([1, np.nan], np.float32)))


def test_suppress_blank_only_at_first_step() -> None:
    f = rules.SuppressBlank([11, EOT], sample_begin=2)
    a = np.zeros((2, V), np.float32)
    f.apply(a, np.zeros((2, 2), np.int64))
    assert np.isinf(a[:, [11, EOT]]).all() and np.isfinite(np.delete(a, [11, EOT], axis=1)).all()
    b = np.zeros((2, V), np.float32)
    f.apply(b, np.zeros((2, 3), np.int64))
    assert np.isfinite(b).all()


def test_compression_ratio_flags_loops() -> None:
    assert rules.compression_ratio("the cat sat on the mat " * 20) > 2.4
    assert (
        rules.compression_ratio("And so my fellow Americans, ask not what your country can do.")
        < 2.4
    )


def test_ranker_length_normalisation() -> None:
    cands = [[1, 2, 3], [1]]
    assert rank_by_likelihood(cands, [-3.0, -1.5], None) == 0  # -1.0 per token beats -1.5
    assert rank_by_likelihood(cands, [-3.0, -1.5], 1.0) == 1  # GNMT penalty favours short here


class _FakeInference:
    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        raise AssertionError

    def reorder(self, rows: np.ndarray) -> None:
        self.rows.append(rows)


def test_greedy_stops_at_eot_and_freezes_logprob() -> None:
    d = GreedyDecoder(0.0, EOT, np.random.default_rng(0))
    tokens = np.array([[1], [2]])
    lp = np.zeros(2, np.float32)
    logits = np.zeros((2, V), np.float32)
    logits[0, EOT] = 10.0
    logits[1, 5] = 10.0
    tokens, done = d.update(tokens, logits, lp, _FakeInference())
    assert tokens[:, -1].tolist() == [EOT, 5] and not done
    before = lp.copy()
    tokens, done = d.update(tokens, logits[::-1].copy(), lp, _FakeInference())
    assert tokens[:, -1].tolist() == [EOT, EOT] and done
    assert lp[0] == before[0]  # finished rows gain no log-probability


@pytest.mark.reference
def test_rules_match_openai_whisper() -> None:
    torch = pytest.importorskip("torch")
    wdec = pytest.importorskip("whisper.decoding")
    from whisper.tokenizer import get_tokenizer

    tok = get_tokenizer(True, num_languages=99, language="en", task="transcribe")
    ts0 = tok.timestamp_begin
    rng = np.random.default_rng(1)
    sample_begin = 3
    ours = rules.ApplyTimestampRules(tok.eot, tok.no_timestamps, ts0, sample_begin, 50)
    ref = wdec.ApplyTimestampRules(tok, sample_begin, 50)
    n_checked = 0
    for trial in range(300):
        n = int(rng.integers(0, 8))
        hist = []
        for _ in range(n):  # mix of text tokens and increasing timestamps
            hist.append(
                int(rng.integers(0, 1000))
                if rng.random() < 0.6
                else ts0 + int(rng.integers(0, 200))
            )
        tokens = np.array([[tok.sot, 50259, 50359, *hist]] * 2, np.int64)
        logits = rng.normal(0, 3, (2, 51865)).astype(np.float32)
        logits[:, ts0:] += rng.normal(-2 + trial % 5, 1)
        a = logits.copy()
        ours.apply(a, tokens)
        b = torch.from_numpy(logits.copy())
        ref.apply(b, torch.from_numpy(tokens))
        np.testing.assert_array_equal(a, b.numpy())
        n_checked += 1
    assert n_checked == 300


@pytest.mark.reference
def test_beam_search_matches_openai_whisper() -> None:
    torch = pytest.importorskip("torch")
    wdec = pytest.importorskip("whisper.decoding")

    class RefInference:
        def rearrange_kv_cache(self, idx: list[int]) -> None:
            self.idx = idx

    rng = np.random.default_rng(2)
    beam, eot, v = 3, 9, 12
    ours = BeamSearchDecoder(beam, eot, patience=1.5)
    ref = wdec.BeamSearchDecoder(beam, eot, RefInference(), patience=1.5)
    tok_a = np.tile(np.array([[1, 2]], np.int64), (beam * 2, 1))
    tok_b = torch.from_numpy(tok_a.copy())
    lp_a = np.zeros(beam * 2, np.float32)
    lp_b = torch.zeros(beam * 2)
    fake = _FakeInference()
    for _step in range(12):
        logits = rng.normal(0, 2, (beam * 2, v)).astype(np.float32)
        logits[:, eot] += 0.5
        tok_a, done_a = ours.update(tok_a, logits, lp_a, fake)
        tok_b, done_b = ref.update(tok_b, torch.from_numpy(logits.copy()), lp_b)
        np.testing.assert_array_equal(tok_a, tok_b.numpy())
        np.testing.assert_allclose(lp_a, lp_b.numpy(), rtol=0, atol=1e-6)
        assert fake.rows[-1].tolist() == list(ref.inference.idx)
        assert done_a == done_b
        if done_a:
            break
    ca, la = ours.finalize(tok_a.reshape(2, beam, -1), lp_a.reshape(2, beam))
    cb, lb = ref.finalize(tok_b.reshape(2, beam, -1), lp_b.reshape(2, beam))
    assert ca == [[t.tolist() for t in s] for s in cb]
    # the same float32 bound as the per-step log-probabilities above (summed in another order
    # by torch: 9.5e-7 apart on an AVX2 CPU, where the default rtol=1e-7 failed)
    np.testing.assert_allclose(
        np.array(la, dtype=object).astype(float), np.array(lb, dtype=object).astype(float),
        rtol=0, atol=1e-6,
    )
