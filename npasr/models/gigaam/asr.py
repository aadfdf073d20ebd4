"""`GigaAMModel`: a GigaAM GGUF file turned into a `transcribe()` call.

Long audio: the official `transcribe` refuses more than 25 s (GigaAM model.py LONGFORM_THRESHOLD)
and `transcribe_longform` needs a pyannote VAD. Here audio up to `single_pass_s` runs in one pass
(identical to the reference); longer audio is cut into windows of `chunk_s` that overlap by
`overlap_s`, each window is encoded alone, and the encoder frames are stitched: every frame is
taken from the window where it lies furthest from an edge (the overlap is split in the middle).
Window starts are multiples of 640 samples, so all windows share one 40 ms frame grid. The head
and the decoder then run once over the stitched frames (a transducer keeps its state across).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from npasr.audio.io import load_audio
from npasr.decoding import ctc, transducer
from npasr.decoding.lm import load_arpa
from npasr.io.gguf import GGUFFile, read_gguf
from npasr.models.gigaam.config import GigaAMConfig
from npasr.models.gigaam.model import GigaAM
from npasr.types import F32, ModelFileError, Segment, TranscriptionResult

SEGMENT_GAP_S = 1.0  # a pause this long between words starts a new segment
SEGMENT_MAX_S = 15.0  # ... and so does a segment growing longer than this
LM_BEAM_SIZE = 16  # CTC beam when an LM is given without a beam size


class Tokenizer:
    """Character vocabulary (v2/v3 ctc/rnnt) or SentencePiece (e2e); the blank is not in it."""

    def __init__(self, tokens: list[str], sentencepiece: bytes | None = None) -> None:
        self.tokens, self._sp = tokens, None
        if sentencepiece is not None:
            import sentencepiece as spm  # noqa: PLC0415

            self._sp = spm.SentencePieceProcessor(model_proto=sentencepiece)

    def decode(self, ids: list[int]) -> str:
        if self._sp is not None:
            return str(self._sp.decode(ids))
        return "".join(self.tokens[i] for i in ids)

    def starts_word(self, token: int) -> bool:
        """A word begins at a piece marked with '▁' (SentencePiece) or after a ' ' character."""
        return self.tokens[token].startswith("\u2581")

    def is_space(self, token: int) -> bool:
        return self._sp is None and self.tokens[token] == " "


class GigaAMModel:
    def __init__(self, model: GigaAM, tokenizer: Tokenizer, name: str = "gigaam") -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name

    @property
    def config(self) -> GigaAMConfig:
        return self.model.config

    @property
    def is_multilingual(self) -> bool:
        return False  # Russian only; the CLI asks this to decide whether to print a language

    @classmethod
    def from_gguf(cls, gguf: GGUFFile | str | Path) -> GigaAMModel:
        f = gguf if isinstance(gguf, GGUFFile) else read_gguf(gguf)
        if f.architecture != "gigaam":
            raise ModelFileError(f"{f.path}: architecture is {f.architecture!r}, not 'gigaam'")
        try:
            cfg = GigaAMConfig.from_gguf(f.metadata)
        except KeyError as e:
            raise ModelFileError(f"{f.path}: missing hyper-parameter {e.args[0]}") from None
        tokens = f.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, list) or len(tokens) + 1 != cfg.num_classes:
            raise ModelFileError(f"{f.path}: vocabulary does not have num_classes - 1 tokens")
        sp = f.get("tokenizer.sentencepiece.model")
        blob = None if sp is None else np.asarray(sp, np.uint8).tobytes()
        model = GigaAM.load(f.tensors, cfg, origin=str(f.path))  # quantized matrices stay so
        f.release_pages()  # the quantized weights were repacked: their file pages are spent
        return cls(model, Tokenizer(tokens, blob), name=str(f.get("general.name", "gigaam")))

    # ------------------------------------------------------------------ encoder over any length

    def encode(
        self,
        audio: F32,
        *,
        single_pass_s: float = 25.0,
        chunk_s: float = 24.0,
        overlap_s: float = 4.0,
        progress_callback: Callable[[float, float], None] | None = None,
    ) -> F32:
        """Encoder frames (T, D) of the whole audio, in windows when it is long (module doc)."""
        sr, fs = self.config.sample_rate, self.config.frame_samples
        n = audio.shape[0]
        if n <= single_pass_s * sr:
            return self.model.encode(self.model.features(audio))
        step_f = int(round((chunk_s - overlap_s) * sr / fs))  # frames per window step
        ov_f, win = int(round(overlap_s * sr / fs)), int(round(chunk_s * sr))
        if not 0 < ov_f < step_f:
            raise ValueError("need 0 < overlap_s < chunk_s - overlap_s")
        parts, c = [], 0
        while True:
            start = c * step_f * fs  # samples; a multiple of fs keeps the frame grid
            enc = self.model.encode(self.model.features(audio[start : start + win]))
            last = start + win >= n or (c + 1) * step_f * fs + ov_f * fs >= n
            lo = 0 if c == 0 else ov_f // 2  # frames of this window that we keep
            hi = enc.shape[0] if last else step_f + ov_f // 2
            parts.append(enc[lo:hi])
            if progress_callback is not None:
                progress_callback(min(start + win, n) / sr, n / sr)
            if last:
                return np.concatenate(parts)
            c += 1

    # ------------------------------------------------------------------------------ decoding

    def decode(self, enc: F32, *, beam_size: int | None = None, max_symbols: int = 10,
               lm: ctc.WordLM | None = None) -> tuple[list[int], list[int]]:  # fmt: skip
        """Token ids and their frames. CTC: greedy, or prefix beam search when beam_size > 1 or
        an LM is given (shallow fusion). RNN-T: greedy (beam_size is ignored, lm refused)."""
        blank = self.config.blank_id
        if self.config.head == "ctc":
            lp = self.model.log_probs(enc)
            if lm is not None or (beam_size and beam_size > 1):
                r = ctc.prefix_beam_search(lp, blank, beam_size or LM_BEAM_SIZE, lm=lm)
            else:
                r = ctc.greedy(lp, blank)
            return r.tokens, r.frames
        if lm is not None:
            raise ValueError("an n-gram LM fuses into CTC beam search; this is an RNN-T model")
        proj = self.model.joint_enc(enc)  # (T, J): the encoder half of the joint, once
        t = transducer.greedy(proj, self.model.predict, self.model.joint, blank,
                              max_symbols=max_symbols)  # fmt: skip
        return t.tokens, t.frames

    def word_lm(self, path: str | Path, alpha: float = 0.5, beta: float = 1.0) -> ctc.WordLM:
        """An ARPA word LM over this model's vocabulary (words end at ' ' or start at '\u2581')."""
        if self.config.head != "ctc":
            raise ValueError("an n-gram LM fuses into CTC beam search; this is an RNN-T model")
        return ctc.WordLM(load_arpa(str(path)), self.tokenizer.tokens, alpha, beta)

    def transcribe(self, audio: Any, *, language: str | None = None,
                   ctc_beam_size: int | None = None, lm_path: str | Path | None = None,
                   lm_alpha: float = 0.5, lm_beta: float = 1.0,
                   chunk_s: float = 24.0, overlap_s: float = 4.0,
                   progress_callback: Callable[[float, float], None] | None = None,
                   ) -> TranscriptionResult:  # fmt: skip
        """Transcribe a path, bytes, '-' (stdin) or a 16 kHz float32 array; Russian only.

        Greedy decoding as the official code, unless `ctc_beam_size` > 1 (CTC prefix beam
        search; named apart from whisper's `beam_size` so the CLI default of 5 stays greedy here).
        `lm_path` (an ARPA word n-gram, CTC models only) adds shallow fusion: a prefix ranks by
        its CTC log-prob + `lm_alpha` * ln P_lm(words) + `lm_beta` * word count; the beam is
        `ctc_beam_size` or LM_BEAM_SIZE.

        Segments split at pauses of SEGMENT_GAP_S or when longer than SEGMENT_MAX_S; times come
        from the frames where tokens were emitted (40 ms grid).
        """
        if language not in (None, "ru", "russian", "Russian"):
            raise ValueError(f"GigaAM transcribes Russian only, not {language!r}")
        lm = None if lm_path is None else self.word_lm(lm_path, lm_alpha, lm_beta)  # fail early
        x = audio if isinstance(audio, np.ndarray) and audio.dtype == np.float32 and \
            audio.ndim == 1 else load_audio(audio)  # fmt: skip
        enc = self.encode(x, chunk_s=chunk_s, overlap_s=overlap_s,
                          progress_callback=progress_callback)  # fmt: skip
        tokens, frames = self.decode(enc, beam_size=ctc_beam_size, lm=lm)
        segments = self._segments(tokens, frames)
        return TranscriptionResult(self.tokenizer.decode(tokens).strip(), segments, "ru")

    def _segments(self, tokens: list[int], frames: list[int]) -> list[Segment]:
        shift = self.config.frame_samples / self.config.sample_rate  # 0.04 s
        words: list[tuple[list[int], int, int]] = []  # (ids, first frame, last frame)
        for tok, fr in zip(tokens, frames, strict=True):
            if self.tokenizer.is_space(tok):
                words.append(([tok], -1, -1))  # a separator; starts the next word
                continue
            if not words or words[-1][1] < 0 or self.tokenizer.starts_word(tok):
                words.append(([tok], fr, fr))
            else:
                ids, first, _ = words[-1]
                words[-1] = ([*ids, tok], first, fr)
        groups: list[list[tuple[list[int], int, int]]] = []
        for word in (w for w in words if w[1] >= 0):
            prev = groups[-1] if groups else None
            if prev is None or (word[1] - prev[-1][2]) * shift >= SEGMENT_GAP_S \
                    or (word[2] + 1 - prev[0][1]) * shift > SEGMENT_MAX_S:  # fmt: skip
                groups.append([word])
            else:
                prev.append(word)
        out = []
        for i, g in enumerate(groups):
            ids = [t for w in g for t in w[0]]
            text = " ".join(self.tokenizer.decode(w[0]).strip() for w in g) \
                if self.tokenizer._sp is None else self.tokenizer.decode(ids)  # fmt: skip
            first, last = g[0][1], g[-1][2]
            out.append(Segment(id=i, seek=first * self.config.subsampling_factor,
                               start=round(first * shift, 3), end=round((last + 1) * shift, 3),
                               text=" " + text.strip(), tokens=ids))  # fmt: skip
        return out
