"""Qwen3-ForcedAligner: word times for a known transcript in one forward pass (REFERENCE.md §3.7;
facts from qwen-asr 0.0.6 `inference/qwen3_forced_aligner.py`, our code).

The thinker is Qwen3-ASR's; its head classifies every position into `classify_num` classes of
`timestamp_segment_time` ms (80 ms). The input, without a chat template, is

    <|audio_start|> <|audio_pad|> x N <|audio_end|> word1 <timestamp><timestamp> word2 ...

and the argmax at the two <timestamp> positions after a word are its start and end. The times
are repaired to be monotonic as the reference does (`fix_timestamps`).
"""

from __future__ import annotations

import unicodedata
from typing import Any

import numpy as np

from npasr.audio.io import load_audio
from npasr.models.qwen3_asr import text as qtext
from npasr.models.qwen3_asr.asr import Thinker
from npasr.models.qwen3_asr.model import KVCache, Qwen3ASR
from npasr.models.qwen3_asr.tokenizer import Qwen2Tokenizer
from npasr.models.qwen3_asr.weights import ARCH
from npasr.types import F32, ModelFileError, Word

MAX_SECONDS = 180.0  # the reference aligns at most this much audio per call
SAMPLE_RATE = 16000
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF))  # fmt: skip


def is_cjk(ch: str) -> bool:
    """A CJK ideograph (the reference's ranges: unified, extensions A-E, compatibility)."""
    c = ord(ch)
    return any(lo <= c <= hi for lo, hi in _CJK)


def _kept(ch: str) -> bool:
    return ch == "'" or unicodedata.category(ch)[0] in "LN"


def split_words(text: str, language: str = "English") -> list[str]:
    """The words the aligner times: whitespace-separated tokens with everything but letters,
    digits and ' removed, each CJK ideograph a word of its own. Japanese and Korean need the
    reference's word segmenters (nagisa, soynlp), which npasr does not have."""
    if language.lower() in ("japanese", "korean"):
        raise ValueError(f"aligning {language} needs a word segmenter (the reference uses "
                         "nagisa / soynlp); npasr aligns the other languages")  # fmt: skip
    words: list[str] = []
    for token in text.split():
        cleaned = "".join(ch for ch in token if _kept(ch))
        buf = ""
        for ch in cleaned:
            if is_cjk(ch):
                if buf:
                    words.append(buf)
                    buf = ""
                words.append(ch)
            else:
                buf += ch
        if buf:
            words.append(buf)
    return words


def fix_timestamps(values: list[float]) -> list[int]:
    """The reference's repair: keep a longest non-decreasing subsequence (the first one its
    O(n^2) search finds); a run of at most 2 values off it takes the nearer kept neighbour (the
    left one on a tie), a longer run is interpolated linearly between its kept neighbours (or
    copies the one that exists); the results are truncated to integers."""
    n = len(values)
    if n == 0:
        return []
    best, parent = [1] * n, [-1] * n
    for i in range(1, n):
        for j in range(i):
            if values[j] <= values[i] and best[j] + 1 > best[i]:
                best[i], parent[i] = best[j] + 1, j
    keep = [False] * n
    k = best.index(max(best))
    while k != -1:
        keep[k] = True
        k = parent[k]
    out = list(values)
    i = 0
    while i < n:
        if keep[i]:
            i += 1
            continue
        j = i
        while j < n and not keep[j]:
            j += 1
        left = next((out[m] for m in range(i - 1, -1, -1) if keep[m]), None)
        right = next((out[m] for m in range(j, n) if keep[m]), None)
        for m in range(i, j):
            if left is None or right is None:
                out[m] = right if left is None else left
            elif j - i <= 2:
                out[m] = left if m - (i - 1) <= j - m else right
            else:
                out[m] = left + (right - left) / (j - i + 1) * (m - i + 1)
        i = j
    return [int(v) for v in out]  # type: ignore[arg-type]


class Qwen3ForcedAligner(Thinker):
    ALIGNER = True

    def __init__(self, model: Qwen3ASR, tokenizer: Qwen2Tokenizer, name: str = ARCH) -> None:
        if not model.config.aligner:
            raise ModelFileError("not a forced aligner: its config has no classify_num")
        super().__init__(model, tokenizer, name)
        self.timestamp = tokenizer.token_id("<timestamp>")
        self.audio_pad = tokenizer.token_id("<|audio_pad|>")
        if self.timestamp != model.config.timestamp_token_id:
            raise ModelFileError(f"the tokenizer's <timestamp> is {self.timestamp}, the model's "
                                 f"{model.config.timestamp_token_id}")  # fmt: skip

    def transcribe(self, audio: Any, **_: Any) -> Any:
        raise ValueError("this is a Qwen3 forced aligner: it times a transcript "
                         "(align(audio, text), or aligner= of a Qwen3-ASR model), it does not "
                         "transcribe")  # fmt: skip

    def input_ids(self, n_audio: int, words: list[str]) -> list[int]:
        ts = "<timestamp><timestamp>"
        text = "<|audio_start|>" + "<|audio_pad|>" * n_audio + "<|audio_end|>"
        text += ts.join(words) + ts
        ids = self.tokenizer.encode(text, special=True)
        if ids.count(self.timestamp) != 2 * len(words) or ids.count(self.audio_pad) != n_audio:
            raise ValueError("the transcript holds <timestamp> or <|audio_pad|> tokens")
        return ids

    def classes(self, ids: list[int], audio_embeds: F32) -> np.ndarray:
        """The argmax class at every <timestamp> position (one forward pass)."""
        a = np.asarray(ids)
        x = self.model.text.embed_ids(a)
        pads = np.flatnonzero(a == self.audio_pad)
        x[pads] = audio_embeds
        where = np.flatnonzero(a == self.timestamp)
        text = self.model.text
        cache = KVCache.empty(self.config, len(ids))
        h = text.hidden_at(x, cache, where)
        return np.argmax(text.logits(h), axis=-1)

    def align(self, audio: Any, text: str, language: str = "English") -> list[Word]:
        """Words of `text` with start and end seconds in `audio` (a path, bytes or a 16 kHz
        float32 array; at most MAX_SECONDS, as the reference aligns). Words are the
        transcript's whitespace tokens without punctuation, CJK ideographs one each."""
        x = audio if isinstance(audio, np.ndarray) and audio.dtype == np.float32 and \
            audio.ndim == 1 else load_audio(audio)  # fmt: skip
        if len(x) > MAX_SECONDS * SAMPLE_RATE + 1:
            raise ValueError(f"{len(x) / SAMPLE_RATE:.1f} s of audio: the aligner times at most "
                             f"{MAX_SECONDS:.0f} s per call")  # fmt: skip
        words = split_words(text, qtext.language_name(language))
        if not words:
            return []
        x = qtext.pad_to(qtext.peak_normalize(x), int(0.5 * SAMPLE_RATE))
        emb = self.model.audio(self.features(x))
        cls = self.classes(self.input_ids(len(emb), words), emb)
        ms = fix_timestamps([float(c) * self.config.timestamp_segment_time for c in cls])
        return [Word(w, round(ms[2 * i] / 1000.0, 3), round(ms[2 * i + 1] / 1000.0, 3))
                for i, w in enumerate(words)]  # fmt: skip

    def features(self, audio: F32) -> F32:
        from npasr.audio.features import log_mel_whisper  # noqa: PLC0415

        return log_mel_whisper(audio, self.config.num_mel_bins)
