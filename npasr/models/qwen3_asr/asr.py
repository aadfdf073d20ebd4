"""`Qwen3ASRModel`: a Qwen3-ASR GGUF file turned into a `transcribe()` call.

The pipeline of the qwen-asr package (shared/REFERENCE.md §3.5-3.6): audio peak-normalised,
cut near every `chunk_seconds` (1200 s) at the quietest 100 ms within +-5 s, chunks shorter
than 0.5 s zero-padded; per chunk the 128-mel features, the audio encoder, the ChatML prompt
(system = context, user = the audio, then the assistant turn, with `language X<asr_text>`
prefilled when the language is forced), and greedy decoding until <|im_end|> / <|endoftext|>
or `max_new_tokens`. The output `language X<asr_text>text` is parsed and the repetition
fix-up applied as the reference does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from npasr.audio.features import log_mel_whisper
from npasr.audio.io import load_audio
from npasr.io.gguf import GGUFFile, read_gguf
from npasr.io.weights import Weights
from npasr.models.qwen3_asr import text as qtext
from npasr.models.qwen3_asr.config import Qwen3ASRConfig
from npasr.models.qwen3_asr.model import KVCache, Qwen3ASR
from npasr.models.qwen3_asr.tokenizer import Qwen2Tokenizer
from npasr.models.qwen3_asr.weights import ARCH
from npasr.types import F32, ModelFileError, Segment, TranscriptionResult, Word

SAMPLE_RATE = 16000
CHUNK_SECONDS = 1200.0  # qwen-asr MAX_ASR_INPUT_SECONDS
ENCODER_SHARE, PREFILL_SHARE = 0.25, 0.6  # of a long chunk's time, for the progress bar
SEARCH_SECONDS = 5.0  # a cut lies at the quietest point within this of the limit
MIN_SECONDS = 0.5  # shorter chunks are zero-padded to this
MAX_NEW_TOKENS = 512  # the reference's transformers backend default (its vLLM backend: 4096)
ASR_TEXT = "<asr_text>"
ALIGN_SECONDS = 180.0  # chunk limit with word timestamps (qwen-asr MAX_FORCE_ALIGN_INPUT_SECONDS)
UNTIMED = ("Japanese", "Korean")  # the aligner needs word segmenters for these (aligner.py)


@dataclass
class Generated:
    tokens: list[int]  # every id emitted after the prompt (and prefill), the stop token excluded
    stopped: bool  # ended on an end-of-turn token (False: max_new_tokens reached)


class Thinker:
    """What the speech recognizer and the forced aligner share: the thinker, its tokenizer,
    and the GGUF they are read from (`ALIGNER` says which kind a class loads)."""

    ALIGNER = False

    def __init__(self, model: Qwen3ASR, tokenizer: Qwen2Tokenizer, name: str = ARCH) -> None:
        self.model, self.tokenizer, self.name = model, tokenizer, name

    @property
    def config(self) -> Qwen3ASRConfig:
        return self.model.config

    @property
    def is_multilingual(self) -> bool:
        return True

    @classmethod
    def from_gguf(cls, gguf: GGUFFile | str | Path) -> Any:
        return cls(*open_gguf(gguf, aligner=cls.ALIGNER))


class Qwen3ASRModel(Thinker):
    def __init__(self, model: Qwen3ASR, tokenizer: Qwen2Tokenizer, name: str = ARCH) -> None:
        super().__init__(model, tokenizer, name)
        tok = tokenizer
        self.im_start = tok.token_id("<|im_start|>")
        self.im_end = tok.token_id("<|im_end|>")
        self.audio_start = tok.token_id("<|audio_start|>")
        self.audio_end = tok.token_id("<|audio_end|>")
        self.audio_pad = tok.token_id("<|audio_pad|>")
        self.asr_text = tok.token_id(ASR_TEXT)
        self.stop_ids = frozenset({self.im_end, tok.token_id("<|endoftext|>")})
        if self.audio_pad != model.config.audio_token_id:
            raise ModelFileError(f"the tokenizer's <|audio_pad|> is {self.audio_pad}, the "
                                 f"model's audio token {model.config.audio_token_id}")  # fmt: skip

    # ------------------------------------------------------------------------------ pieces

    def features(self, audio: F32) -> F32:
        """(128, N // 160) log-mel of a 16 kHz chunk (Whisper's, no 30 s padding)."""
        return log_mel_whisper(audio, self.config.num_mel_bins)

    def prompt_ids(self, n_audio: int, context: str = "", language: str | None = None) -> list[int]:
        """The ChatML prompt with n_audio <|audio_pad|> tokens; `language` (a canonical name)
        adds the assistant prefill `language X<asr_text>`."""
        pad = "<|audio_pad|>" * n_audio
        text = (f"<|im_start|>system\n{context}<|im_end|>\n<|im_start|>user\n"
                f"<|audio_start|>{pad}<|audio_end|><|im_end|>\n"
                "<|im_start|>assistant\n")  # fmt: skip
        if language is not None:
            text += f"language {language}{ASR_TEXT}"
        ids = self.tokenizer.encode(text, special=True)
        if ids.count(self.audio_pad) != n_audio:
            raise ValueError("the context text holds <|audio_pad|> tokens; remove them")
        return ids

    def embed_prompt(self, ids: list[int], audio_embeds: F32) -> F32:
        """Token embeddings with the <|audio_pad|> rows replaced by the audio embeddings."""
        a = np.asarray(ids)
        x = self.model.text.embed_ids(a)
        pads = np.flatnonzero(a == self.audio_pad)
        if len(pads) != len(audio_embeds):
            raise ValueError(f"{len(pads)} audio tokens in the prompt, {len(audio_embeds)} "
                             "audio embeddings")  # fmt: skip
        x[pads] = audio_embeds
        return x

    def generate(self, ids: list[int], audio_embeds: F32, max_new_tokens: int,
                 stop: frozenset[int] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Generated:  # fmt: skip
        """Greedy decoding after the prompt `ids` until a token of `stop` (None: <|im_end|>,
        <|endoftext|>; an empty set runs to max_new_tokens, as benches do); progress(done, n)
        after each block of the prompt's prefill."""
        stop = self.stop_ids if stop is None else stop
        cfg = self.config
        need = len(ids) + max_new_tokens
        if need > cfg.max_position_embeddings:
            raise ValueError(f"prompt ({len(ids)} tokens) + max_new_tokens ({max_new_tokens}) "
                             f"exceed the model's {cfg.max_position_embeddings} positions"
                             )  # fmt: skip
        text = self.model.text
        cache = KVCache.empty(cfg, need)
        h = text.prefill(self.embed_prompt(ids, audio_embeds), cache, progress)
        out: list[int] = []
        for _ in range(max_new_tokens):
            tok = int(np.argmax(text.logits(h)[0]))
            if tok in stop:
                return Generated(out, True)
            out.append(tok)
            if len(out) == max_new_tokens:
                break
            h = text(text.embed_ids(np.array([tok])), cache)
        return Generated(out, False)

    # ------------------------------------------------------------------------------ API

    def transcribe(self, audio: Any, *, language: str | None = None, context: str = "",
                   max_new_tokens: int | None = None, chunk_seconds: float = CHUNK_SECONDS,
                   aligner: Any = None,
                   progress_callback: Callable[[float, float], None] | None = None,
                   ) -> TranscriptionResult:  # fmt: skip
        """Transcribe a path, bytes, '-' (stdin) or a 16 kHz float32 array.

        `language`: None (the model names it) or a code / English name of one of the 30
        languages the model card lists ("en", "English", "ru"), forced through the assistant
        prefill. `context`: free text the model may draw on (names, terms). Segments: one per
        chunk (1200 s), carrying every id the decoder emitted after the prompt (and after a
        forced-language prefill), special ones included, the stop token excluded.
        `max_new_tokens`: per chunk (None: 512, the reference's).
        `aligner`: a Qwen3-ForcedAligner (`Qwen3ForcedAligner`, or a path `npasr.load_model`
        opens) that times every word; chunks are then at most 180 s (the reference's limit for
        timestamps) and each chunk is split into sentence segments timed by their words.
        Japanese and Korean chunks get no word times (the reference segments their words with
        tools npasr does not have).
        """
        timer = _aligner(aligner)
        if timer is not None:
            chunk_seconds = min(chunk_seconds, ALIGN_SECONDS)
        forced = qtext.language_name(language) if language else None
        max_new_tokens = MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, not {max_new_tokens}")
        if not chunk_seconds > MIN_SECONDS:
            raise ValueError(f"chunk_seconds must exceed {MIN_SECONDS}, not {chunk_seconds}")
        x = audio if isinstance(audio, np.ndarray) and audio.dtype == np.float32 and \
            audio.ndim == 1 else load_audio(audio)  # fmt: skip
        x = qtext.peak_normalize(x)
        total = len(x) / SAMPLE_RATE
        segments: list[Segment] = []
        langs: list[str] = []
        # the reference searches +-5 s around each 1200 s cut; a short chunk_seconds (tests,
        # low memory) searches a quarter of it, so pieces stay near the length asked for
        search = min(SEARCH_SECONDS, chunk_seconds / 4)
        pieces = qtext.split_audio(x, SAMPLE_RATE, chunk_seconds, search)
        for i, (piece, offset) in enumerate(pieces):
            chunk = qtext.pad_to(piece, int(MIN_SECONDS * SAMPLE_RATE))
            dur = len(piece) / SAMPLE_RATE

            def stage(frac: float, offset: float = offset, dur: float = dur) -> None:
                if progress_callback is not None:  # in seconds of audio, as the other models
                    progress_callback(offset + frac * dur, total)

            emb = self.model.audio(self.features(chunk))
            # the bar moves by the work's share of a long chunk: the audio encoder about a
            # quarter, the prompt's prefill most of the rest (bench/RESULTS.md, 5 min)
            stage(ENCODER_SHARE)
            ids = self.prompt_ids(len(emb), context, forced)
            g = self.generate(ids, emb, max_new_tokens, progress=lambda d, n:
                              stage(ENCODER_SHARE + PREFILL_SHARE * d / n))  # fmt: skip
            lang, text = self.parse(g.tokens, forced)
            langs.append(lang)
            end = min(total, offset + len(chunk) / SAMPLE_RATE)
            seg = Segment(id=i, seek=0, start=round(offset, 3), end=round(end, 3), text=text,
                          tokens=g.tokens)  # fmt: skip
            if timer is not None and text.strip() and (lang or "English") not in UNTIMED:
                words = timer.align(piece, text, lang or "English")
                segments.extend(self.sentences(seg, words, offset, forced is not None))
            else:
                segments.append(seg)
            if progress_callback is not None:
                progress_callback(end, total)
        language_out = qtext.merge_languages(langs)
        text = "".join(s.text for s in segments)
        segments = [s for s in segments if s.text]
        for j, s in enumerate(segments):
            s.id = j
        return TranscriptionResult(text, segments, qtext.language_code(language_out))

    def sentences(self, seg: Segment, words: list[Word], offset: float,
                  forced: bool) -> list[Segment]:  # fmt: skip
        """A chunk's segment split into sentences (after . ! ? and their CJK forms), each timed
        by its aligned words and carrying the ids that spell it (the language prefix goes with
        the first). One timed segment if the split cannot be matched to the words."""
        from npasr.models.qwen3_asr.aligner import split_words  # noqa: PLC0415

        words = [Word(w.word, round(w.start + offset, 3), round(w.end + offset, 3)) for w in words]
        parts = qtext.sentences(seg.text)
        counts = [len(split_words(p)) for p in parts]
        if not words or sum(counts) != len(words):
            if words:
                seg.start, seg.end, seg.words = words[0].start, words[-1].end, words
            return [seg]
        body = seg.tokens if forced or self.asr_text not in seg.tokens else \
            seg.tokens[seg.tokens.index(self.asr_text) + 1 :]  # fmt: skip
        head = seg.tokens[: len(seg.tokens) - len(body)]
        groups = self._token_groups(body, parts)
        out, w = [], 0
        for k, (part, n) in enumerate(zip(parts, counts, strict=True)):
            tokens = (head if k == 0 else []) + groups[k]
            if n == 0:  # punctuation alone: its text joins the previous sentence
                if out:
                    out[-1].text += part
                    out[-1].tokens += tokens
                continue
            ws = words[w : w + n]
            w += n
            out.append(Segment(id=seg.id, seek=0, start=ws[0].start, end=ws[-1].end, text=part,
                               tokens=tokens, words=ws))  # fmt: skip
        return out

    def _token_groups(self, tokens: list[int], parts: list[str]) -> list[list[int]]:
        """`tokens` divided among the sentences `parts` (which concatenate to their decoded,
        stripped text) by where each token's text ends (" How" belongs where "How" is); all
        to the first sentence when the text was changed after decoding (the repetition
        fix-up)."""
        groups: list[list[int]] = [[] for _ in parts]
        full = self.tokenizer.decode(tokens)
        lead = len(full) - len(full.lstrip())
        if full.strip() != "".join(parts):
            groups[0] = list(tokens)
            return groups
        ends = np.cumsum([len(p) for p in parts])
        for i, t in enumerate(tokens):
            last = len(self.tokenizer.decode(tokens[: i + 1])) - lead - 1
            k = min(int(np.searchsorted(ends, max(last, 0), side="right")), len(parts) - 1)
            groups[k].append(t)
        return groups

    def parse(self, tokens: list[int], forced: str | None) -> tuple[str, str]:
        """(language name, text) of the generated ids, as the reference parses its decoded
        string (skip_special_tokens=True, `<asr_text>` kept), with the repetition fix-up."""
        if self.asr_text in tokens:
            k = tokens.index(self.asr_text)
            raw = (self.tokenizer.decode(tokens[:k]) + ASR_TEXT
                   + self.tokenizer.decode(tokens[k + 1 :]))  # fmt: skip
        else:
            raw = self.tokenizer.decode(tokens)
        return qtext.parse_output(raw, forced)


def _aligner(aligner: Any) -> Any:
    """None, a loaded Qwen3ForcedAligner, or a path to one (GGUF or a checkpoint directory)."""
    if aligner is None:
        return None
    from npasr.models.qwen3_asr.aligner import Qwen3ForcedAligner  # noqa: PLC0415

    if isinstance(aligner, Qwen3ForcedAligner):
        return aligner
    key = str(aligner)
    if key not in _ALIGNERS:  # the CLI passes the path once per file: load it once
        import npasr  # noqa: PLC0415

        model = npasr.load_model(aligner)
        if not isinstance(model, Qwen3ForcedAligner):
            raise ModelFileError(f"{aligner}: not a Qwen3 forced aligner")
        _ALIGNERS.clear()
        _ALIGNERS[key] = model
    return _ALIGNERS[key]


_ALIGNERS: dict[str, Any] = {}


def open_gguf(gguf: GGUFFile | str | Path, aligner: bool) -> tuple[Qwen3ASR, Qwen2Tokenizer, str]:
    """The model, its tokenizer and its name from a Qwen3-ASR (aligner=False) or forced aligner
    (aligner=True) GGUF; the other kind is refused by name."""
    f = gguf if isinstance(gguf, GGUFFile) else read_gguf(gguf)
    if f.architecture != ARCH:
        raise ModelFileError(f"{f.path}: architecture is {f.architecture!r}, not {ARCH!r}")
    cfg = Qwen3ASRConfig.from_gguf(f.metadata)
    if cfg.aligner != aligner:
        kinds = ("a Qwen3-ASR speech recognizer", "a Qwen3 forced aligner")
        raise ModelFileError(f"{f.path}: {kinds[cfg.aligner]}, not {kinds[aligner]}")
    tok = Qwen2Tokenizer.from_gguf(f.metadata)
    model = Qwen3ASR.load(Weights(f.tensors, origin=str(f.path)), cfg)
    f.release_pages()  # the weights were copied or repacked: their file pages are spent
    return model, tok, str(f.get("general.name", ARCH))
