"""The greedy transducer loop with a scripted prediction net and joint."""

from __future__ import annotations

import numpy as np

from npasr.decoding import transducer

V, BLANK = 4, 3  # tokens 0..2, blank 3


def _scripted(choices: dict[tuple[int, int], int], dur: dict[tuple[int, int], int] | None = None):
    """joint picks choices[(frame, n_emitted_so_far)] (blank if absent); state = tokens so far."""
    calls: list[tuple[int | None, int]] = []

    def predict(token, state):
        hist = () if state is None else state
        hist = hist if token is None else (*hist, token)
        calls.append((token, len(hist)))
        return np.array([len(hist)], np.float32), hist

    def joint(enc_t, g):
        k = choices.get((int(enc_t[0]), int(g[0])), BLANK)
        logits = np.zeros(V + (5 if dur is not None else 0), np.float32)
        logits[k] = 1.0
        if dur is not None:
            logits[V + dur.get((int(enc_t[0]), int(g[0])), 1)] = 1.0
        return logits

    return predict, joint, calls


def test_rnnt_greedy_emits_several_per_frame_and_keeps_state_on_blank() -> None:
    enc = np.arange(4, dtype=np.float32)[:, None]  # frame index as the feature
    predict, joint, calls = _scripted({(0, 0): 1, (0, 1): 2, (2, 2): 0})
    r = transducer.greedy(enc, predict, joint, BLANK)
    assert r.tokens == [1, 2, 0]
    assert r.frames == [0, 0, 2]
    assert [c[0] for c in calls] == [None, 1, 2, 0]  # one prediction per emitted token only


def test_rnnt_greedy_caps_symbols_per_frame() -> None:
    enc = np.arange(2, dtype=np.float32)[:, None]
    predict, joint, _ = _scripted({(0, n): 0 for n in range(100)})
    r = transducer.greedy(enc, predict, joint, BLANK, max_symbols=3)
    assert r.frames == [0, 0, 0]


def test_tdt_durations_skip_frames_and_blank_zero_advances() -> None:
    enc = np.arange(6, dtype=np.float32)[:, None]
    durations = [0, 1, 2, 3, 4]
    # frame 0: token 1 with duration 2 -> frame 2: blank with duration 0 (forced to 1) ->
    # frame 3: token 2 with duration 0, then blank with duration 3 -> frame 6: end
    predict, joint, _ = _scripted({(0, 0): 1, (3, 1): 2}, dur={(0, 0): 2, (2, 1): 0, (3, 1): 0,
                                                              (3, 2): 3})  # fmt: skip
    r = transducer.greedy(enc, predict, joint, BLANK, durations=durations)
    assert r.tokens == [1, 2]
    assert r.frames == [0, 3]
    assert r.durations == [2, 0]
