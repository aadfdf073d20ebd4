"""`ParakeetModel`: a Parakeet GGUF file turned into a `transcribe()` call.

Decoding as NeMo's defaults: TDT (or RNN-T) greedy through the one transducer loop
(`npasr.decoding.transducer.greedy`: label looping, a blank never stays on its frame, at most
`max_symbols` tokens per frame), or CTC greedy / prefix beam search with an optional n-gram LM
for CTC checkpoints and the CTC head of hybrid ones. Text, token, word and segment times follow
NeMo's `timestamps=True` output (`timestamps.py`); segments end at '.', '?' and '!'.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from npasr.audio.io import load_audio
from npasr.decoding import ctc, transducer
from npasr.decoding.lm import load_arpa
from npasr.io.gguf import GGUFFile, read_gguf
from npasr.models.parakeet import timestamps as ts
from npasr.models.parakeet.config import ParakeetConfig
from npasr.models.parakeet.model import Parakeet
from npasr.models.parakeet.weights import ARCH
from npasr.types import F32, ModelFileError, Segment, TranscriptionResult, Word

LM_BEAM_SIZE = 16  # CTC beam when an LM is given without a beam size
FULL_ATTENTION_MAX_S = 600.0  # "auto" attention: full up to 10 minutes, local beyond
LOCAL_CONTEXT = (128, 128)  # frames (10.24 s each way), what NeMo suggests for long audio
Decoder = Literal["tdt", "rnnt", "ctc"]
Attention = Literal["auto", "full", "local"]


@dataclass
class Decoded:
    tokens: list[int]
    frames: list[int]  # encoder frame of each token
    durations: list[int] | None  # TDT: frames each token covers
    ctc_path: np.ndarray | None = None  # CTC: the per-frame argmax (for token end frames)


class ParakeetModel:
    def __init__(self, model: Parakeet, pieces: list[str], sentencepiece: bytes,
                 name: str = "parakeet") -> None:  # fmt: skip
        import sentencepiece as spm  # noqa: PLC0415

        self.model, self.pieces, self.name = model, pieces, name
        self.sp = spm.SentencePieceProcessor(model_proto=sentencepiece)
        self.punctuation = ts.supported_punctuation(pieces)

    @property
    def config(self) -> ParakeetConfig:
        return self.model.config

    @property
    def is_multilingual(self) -> bool:
        return False  # no language output: the CLI asks this to decide whether to print one

    @classmethod
    def from_gguf(cls, gguf: GGUFFile | str | Path) -> ParakeetModel:
        f = gguf if isinstance(gguf, GGUFFile) else read_gguf(gguf)
        if f.architecture != ARCH:
            raise ModelFileError(f"{f.path}: architecture is {f.architecture!r}, not {ARCH!r}")
        try:
            cfg = ParakeetConfig.from_gguf(f.metadata)
        except KeyError as e:
            raise ModelFileError(f"{f.path}: missing hyper-parameter {e.args[0]}") from None
        tokens = f.get("tokenizer.ggml.tokens")
        sp = f.get("tokenizer.sentencepiece.model")
        if not isinstance(tokens, list) or len(tokens) != cfg.vocab_size or sp is None:
            raise ModelFileError(f"{f.path}: the SentencePiece vocabulary is missing or not "
                                 f"{cfg.vocab_size} pieces")  # fmt: skip
        model = Parakeet.load(f.tensors, cfg, origin=str(f.path))
        f.release_pages()  # the quantized weights were repacked: their file pages are spent
        blob = np.asarray(sp, np.uint8).tobytes()
        return cls(model, tokens, blob, name=str(f.get("general.name", ARCH)))

    # ------------------------------------------------------------------------------ encoder

    def encode(self, audio: F32, *, attention: Attention = "auto",
               attention_context: tuple[int, int] = LOCAL_CONTEXT,
               progress_callback: Callable[[float, float], None] | None = None,
               ) -> F32:  # fmt: skip
        """Encoder frames (T, D) of the whole audio in one pass.

        `attention`: "full" (the model's own, NeMo's default), "local" (every frame attends to
        `attention_context` = (L, R) frames back and ahead, NeMo's rel_pos_local_attn), or
        "auto": full up
        to FULL_ATTENTION_MAX_S of audio, local beyond, where full attention's cost grows with
        the square of the length (an hour would be 45000^2 scores per head and layer)."""
        if attention not in ("auto", "full", "local"):
            raise ValueError(f"attention must be 'auto', 'full' or 'local', not {attention!r}")
        seconds = audio.shape[0] / self.config.sample_rate
        local = attention == "local" or (attention == "auto" and seconds > FULL_ATTENTION_MAX_S)
        context = attention_context
        if local and (len(context) != 2 or min(context) < 0 or max(context) <= 0):
            raise ValueError(f"local attention needs a context (L, R) >= 0, not both 0: {context}")

        def layers_done(done: int, total: int) -> None:  # the bar in seconds of audio; the
            if progress_callback is not None:  # last step of it is left to the decoder
                progress_callback(seconds * done / (total + 1), seconds)

        ctx = tuple(context) if local else None
        return self.model.encode_audio(audio, ctx, progress=layers_done)  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------ decoding

    def decode(self, enc: F32, *, decoder: Decoder | None = None, beam_size: int | None = None,
               lm: ctc.WordLM | None = None) -> Decoded:  # fmt: skip
        """Token ids, their frames and (TDT) durations, with the model's head or `decoder`."""
        kind = decoder or self.config.head
        blank = self.config.blank_id
        if kind == "ctc":
            lp = self.model.log_probs(enc)
            if lm is not None or (beam_size and beam_size > 1):
                r = ctc.prefix_beam_search(lp, blank, beam_size or LM_BEAM_SIZE, lm=lm)
                return Decoded(r.tokens, r.frames, None)
            r = ctc.greedy(lp, blank)
            return Decoded(r.tokens, r.frames, None, ctc_path=lp.argmax(-1))
        if kind != self.config.head:
            raise ValueError(f"this model decodes with {self.config.head!r} or 'ctc' "
                             f"(hybrid models), not {kind!r}")  # fmt: skip
        if lm is not None:
            raise ValueError("an n-gram LM fuses into CTC beam search; use decoder='ctc'")
        net = self.model.transducer
        assert net is not None
        durations = self.config.durations or None
        r = transducer.greedy(net.project(enc), net.predict, net, blank,
                              max_symbols=self.config.max_symbols, durations=durations)  # fmt: skip
        return Decoded(r.tokens, r.frames, r.durations if durations else None)

    def word_lm(self, path: str | Path, alpha: float = 0.5, beta: float = 1.0) -> ctc.WordLM:
        """An ARPA word LM over this model's pieces (a word starts at a '\u2581' piece)."""
        if self.model.ctc is None:
            raise ValueError("an n-gram LM fuses into CTC beam search; this model has no CTC head")
        return ctc.WordLM(load_arpa(str(path)), self.pieces, alpha, beta)

    def transcribe(self, audio: Any, *, language: str | None = None,
                   decoder: Decoder | None = None, ctc_beam_size: int | None = None,
                   lm_path: str | Path | None = None, lm_alpha: float = 0.5,
                   lm_beta: float = 1.0, attention: Attention = "auto",
                   attention_context: tuple[int, int] = LOCAL_CONTEXT,
                   progress_callback: Callable[[float, float], None] | None = None,
                   ) -> TranscriptionResult:  # fmt: skip
        """Transcribe a path, bytes, '-' (stdin) or a 16 kHz float32 array.

        `decoder`: the head to decode with ('ctc' selects the CTC head of a hybrid model);
        `ctc_beam_size` > 1 or `lm_path` (an ARPA word n-gram) use CTC prefix beam search.
        `attention`, `attention_context`: see `encode` (any length runs in one call).
        `language` is accepted for API symmetry and not used: the model needs no language
        (Parakeet v3 detects any of its 25).
        """
        del language
        if lm_path is not None or (ctc_beam_size and ctc_beam_size > 1):
            decoder = decoder or "ctc"
        lm = None if lm_path is None else self.word_lm(lm_path, lm_alpha, lm_beta)  # fail early
        x = audio if isinstance(audio, np.ndarray) and audio.dtype == np.float32 and \
            audio.ndim == 1 else load_audio(audio)  # fmt: skip
        enc = self.encode(x, attention=attention, attention_context=attention_context,
                          progress_callback=progress_callback)  # fmt: skip
        d = self.decode(enc, decoder=decoder, beam_size=ctc_beam_size, lm=lm)
        if progress_callback is not None:
            progress_callback(len(x) / self.config.sample_rate, len(x) / self.config.sample_rate)
        return self.result(d)

    def timestamps(self, d: Decoded) -> ts.Timestamps:
        """NeMo's text and token/word/segment times of decoded tokens."""
        fs = self.config.frame_seconds
        if d.ctc_path is not None:
            return ts.ctc_timestamps(d.ctc_path, self.config.blank_id, self.sp, self.punctuation,
                                     frame_seconds=fs)  # fmt: skip
        # transducers; CTC beam search results take RNN-T's one-frame tokens
        return ts.transducer_timestamps(d.tokens, d.frames, d.durations, self.sp,
                                        self.punctuation, frame_seconds=fs)  # fmt: skip

    def result(self, d: Decoded) -> TranscriptionResult:
        """Text, segments (ending at '.', '?', '!') and their words, timed as NeMo times them;
        each segment carries its token ids in emission order."""
        stamps = self.timestamps(d)
        segments, words, k, w = [], stamps.word, 0, 0
        for i, seg in enumerate(stamps.segment):
            seg_words = []
            while w < len(words) and words[w].last_token <= seg.last_token:
                seg_words.append(Word(words[w].text, round(words[w].start, 3),
                                      round(words[w].end, 3)))  # fmt: skip
                w += 1
            segments.append(Segment(
                id=i, seek=0, start=round(seg.start, 3), end=round(seg.end, 3),
                text=" " + seg.text, tokens=stamps.tokens[k : seg.last_token + 1],
                words=seg_words))  # fmt: skip
            k = seg.last_token + 1
        return TranscriptionResult(stamps.text, segments, None)
