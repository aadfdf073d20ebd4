"""Token, word and segment timestamps as NeMo 3.0.0 returns them from `transcribe(timestamps=True)`.

Reproduces, for SentencePiece ('bpe') tokenizers, the lists `hyp.timestamp['char'|'word'|'segment']`
and the final `hyp.text` of:

- TDT and plain RNN-T models (EncDecRNNTBPEModel):
  nemo/collections/asr/parts/submodules/rnnt_decoding.py (`compute_rnnt_timestamps`,
  `_compute_offsets`, `_compute_offsets_tdt`, `_refine_timestamps_tdt`,
  `decode_tokens_to_str_with_strip_punctuation`);
- CTC models (EncDecCTCModelBPE): nemo/collections/asr/parts/submodules/ctc_decoding.py
  (`decode_hypothesis` with fold_consecutive, `_compute_offsets`, `_refine_timestamps`) and the
  greedy decoder's `hyp.timestamp` (ctc_greedy_decoding.py: frames whose argmax is not blank);
- words and segments: nemo/collections/asr/parts/utils/timestamp_utils.py (`get_words_offsets`,
  `get_segment_offsets`, `process_timestamp_outputs` for seconds);
- punctuation set: nemo/collections/asr/parts/utils/tokenizer_utils.py
  (`extract_punctuation_from_vocab`).

Offsets are encoder frames. Seconds are `offset * window_stride * subsampling_factor`, not rounded;
with a power-of-two subsampling factor that equals `offset * frame_seconds` bit for bit
(frame_seconds = 0.01 * 8 = 0.08 for Parakeet).

The quirks below are NeMo's and are kept on purpose, so that output matches it:
- TDT: a token spans [frame, frame + duration]; a punctuation token (its whole text in the set)
  after the first is moved to [end of previous token, same]. Plain RNN-T: [frame, frame + 1], no
  refinement.
- CTC: token k spans [first frame of token k-1, first frame of token k]; token 0 starts one frame
  before its first frame (not below 0). A token whose text *starts* with punctuation, after the
  first, gets end = start.
- A word starts at a token whose piece differs from its decoded text (a '▁' piece, also '<unk>');
  punctuation never starts a word, it joins the word being built or the previous one.
- With a gap threshold, a word that follows the current segment's words is never checked for a
  delimiter (NeMo's `elif`); segments then split on gaps only.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

SEGMENT_DELIMITERS = (".", "?", "!")  # RNNTDecodingConfig / CTCDecodingConfig segment_seperators
WORD_DELIMITER = " "  # word_seperator


@dataclass
class Stamp:
    """One token ('char' in NeMo), word or segment; offsets in encoder frames, times in seconds."""

    text: str
    start_offset: int
    end_offset: int
    start: float = 0.0
    end: float = 0.0
    last_token: int = -1  # words, segments: index of the last token they cover (npasr's own)


@dataclass
class Timestamps:
    """What NeMo attaches to one hypothesis: the final text and the three lists."""

    text: str
    tokens: list[int] = field(default_factory=list)  # non-blank token ids, in order
    char: list[Stamp] = field(default_factory=list)
    word: list[Stamp] = field(default_factory=list)
    segment: list[Stamp] = field(default_factory=list)


# Pieces that are not text (NeMo's special-token patterns): their characters are not punctuation.
_SPECIAL_PIECE = [re.compile(p) for p in (r"^\[.*\]$", r"^<.*>$", r"^##", r"^▁", r"^\s*$")]


def supported_punctuation(pieces: Iterable[str]) -> set[str]:
    """Every Unicode punctuation character (category P*) found in a non-special piece."""
    found: set[str] = set()
    for piece in pieces:
        if any(p.match(piece) for p in _SPECIAL_PIECE):
            continue
        found.update(c for c in piece if unicodedata.category(c).startswith("P"))
    return found


def vocab_punctuation(sp) -> set[str]:
    """`supported_punctuation` over all pieces of a SentencePieceProcessor."""
    return supported_punctuation(sp.id_to_piece(i) for i in range(sp.get_piece_size()))


def _punct(sp, punctuation: set[str] | None) -> set[str]:
    return vocab_punctuation(sp) if punctuation is None else punctuation


def _piece_text(sp, piece: str) -> str:
    # NeMo decodes each token alone through tokens_to_text -> decode_pieces: '▁H' -> 'H',
    # '▁' -> '', '<unk>' -> ' ⁇ '.
    return sp.decode_pieces([piece])


def transcript_text(tokens: Sequence[int], sp, punctuation: set[str] | None = None) -> str:
    """NeMo's `hyp.text`: the decoded pieces with ONE whitespace removed before each punctuation
    character (decode_tokens_to_str_with_strip_punctuation); 'a - b' becomes 'a- b'."""
    text = sp.decode_pieces([sp.id_to_piece(int(t)) for t in tokens])
    punctuation = _punct(sp, punctuation)
    if punctuation:
        pattern = "|".join(re.escape(p) for p in sorted(punctuation))
        text = re.sub(r"(\s)(" + pattern + ")", r"\2", text)
    return text


def _with_seconds(stamps: list[Stamp], frame_seconds: float) -> list[Stamp]:
    # process_timestamp_outputs: offset * window_stride * subsampling_factor, unrounded.
    for s in stamps:
        s.start = s.start_offset * frame_seconds
        s.end = s.end_offset * frame_seconds
    return stamps


def token_stamps(
    tokens: Sequence[int],
    frames: Sequence[int],
    durations: Sequence[int] | None,
    sp,
    punctuation: set[str] | None = None,
    *,
    frame_seconds: float = 0.08,
) -> list[Stamp]:
    """Transducer token stamps ('char' list). `tokens` are the emitted non-blank ids and `frames`
    the encoder frame of each; `durations` are TDT's predicted durations in frames (the values,
    not their indices), or None for a plain RNN-T model."""
    if len(frames) != len(tokens) or (durations is not None and len(durations) != len(tokens)):
        raise ValueError("tokens, frames and durations must have the same length")
    stamps = []
    for i, tok in enumerate(tokens):
        start = int(frames[i])
        end = start + (1 if durations is None else int(durations[i]))
        stamps.append(Stamp(_piece_text(sp, sp.id_to_piece(int(tok))), start, end))
    punctuation = _punct(sp, punctuation)
    if durations is not None and punctuation:
        # TDT may emit punctuation long after the word (after a silence): pin it, zero-length, to
        # the end of the previous token (already refined itself when it was punctuation too).
        for i in range(1, len(stamps)):
            if stamps[i].text in punctuation:
                stamps[i].start_offset = stamps[i].end_offset = stamps[i - 1].end_offset
    return _with_seconds(stamps, frame_seconds)


def ctc_token_stamps(
    path: Sequence[int],
    blank_id: int,
    sp,
    punctuation: set[str] | None = None,
    *,
    frame_seconds: float = 0.08,
) -> tuple[list[int], list[Stamp]]:
    """CTC token stamps from the greedy per-frame argmax `path` (cut to the valid length).
    Returns the collapsed token ids and their stamps."""
    tokens: list[int] = []
    first_frames: list[int] = []  # frame where each collapsed token begins
    previous = blank_id
    for t, p in enumerate(int(x) for x in path):
        # a new token: not blank, and not a repeat of the token just before (a blank in between
        # makes a repeat a new token)
        if p != blank_id and (p != previous or previous == blank_id):
            tokens.append(p)
            first_frames.append(t)
        previous = p
    # NeMo stores each token's distance to the previous token's first frame and cumsums it, so a
    # token ends where it begins and starts where the previous token began; the first starts one
    # frame before its first non-blank frame.
    stamps = []
    for k, tok in enumerate(tokens):
        start = first_frames[k - 1] if k else max(0, first_frames[0] - 1)
        stamps.append(Stamp(_piece_text(sp, sp.id_to_piece(tok)), start, first_frames[k]))
    punctuation = _punct(sp, punctuation)
    if punctuation:
        # CTC may hold punctuation for many frames: make it zero-length at its start. Only the
        # first character of the token text is looked at (unlike the TDT rule).
        for i in range(1, len(stamps)):
            if stamps[i].text and stamps[i].text[0] in punctuation:
                stamps[i].end_offset = stamps[i].start_offset
    return tokens, _with_seconds(stamps, frame_seconds)


def word_stamps(
    tokens: Sequence[int],
    stamps: Sequence[Stamp],
    sp,
    punctuation: set[str] | None = None,
    *,
    frame_seconds: float = 0.08,
) -> list[Stamp]:
    """Words from token stamps (after refinement), as NeMo's get_words_offsets for 'bpe'."""
    punctuation = _punct(sp, punctuation)
    pieces = [sp.id_to_piece(int(t)) for t in tokens]
    texts = [s.text for s in stamps]
    words: list[Stamp] = []
    built: list[str] = []  # pieces of the word being built
    first = 0  # index of the token that started it

    def next_text(i: int) -> str | None:
        # the next token text that is neither empty nor the word delimiter
        for t in texts[i + 1 :]:
            if t and t != WORD_DELIMITER:
                return t
        return None

    for i, (piece, text) in enumerate(zip(pieces, texts, strict=True)):
        is_punct = text in punctuation and text != WORD_DELIMITER
        starts_word = piece != text or (text == WORD_DELIMITER and next_text(i) not in punctuation)
        if starts_word and not is_punct:
            if built:
                words.append(
                    Stamp(
                        sp.decode_pieces(built),
                        stamps[first].start_offset,
                        stamps[i - 1].end_offset,
                        last_token=i - 1,
                    )
                )
            built = []
            if text != WORD_DELIMITER:
                built.append(piece)
                first = i
        elif is_punct and not built and words:
            # punctuation after a finished word: glue it to that word
            last = words[-1]
            last.end_offset = stamps[i].end_offset
            last.last_token = i
            if last.text.endswith(" "):
                last.text = last.text[:-1]
            last.text += text
        elif is_punct and built:
            # punctuation inside the word being built; a bare delimiter piece ('▁') built just
            # before it is dropped, so no space comes before the punctuation
            if built[-1] in (" ", "_", "▁"):
                built.pop()
            built.append(piece)
        else:
            if not built:
                first = i
            built.append(piece)

    if not words:
        if built:  # one word: it spans all tokens, whatever token started it
            words.append(Stamp(sp.decode_pieces(built), stamps[0].start_offset,
                               stamps[-1].end_offset, last_token=len(stamps) - 1))  # fmt: skip
    else:
        words[0].start_offset = stamps[0].start_offset
        if built:
            words.append(Stamp(sp.decode_pieces(built), stamps[first].start_offset,
                               stamps[-1].end_offset, last_token=len(stamps) - 1))  # fmt: skip
    return _with_seconds(words, frame_seconds)


def segment_stamps(
    words: Sequence[Stamp],
    delimiters: Sequence[str] = SEGMENT_DELIMITERS,
    gap_threshold: int | None = None,
    *,
    frame_seconds: float = 0.08,
) -> list[Stamp]:
    """Segments from word stamps, as NeMo's get_segment_offsets: a segment ends with a word whose
    last character (or whole text) is a delimiter, or, with `gap_threshold` (frames), before a
    word that starts at least that many frames after the previous word ends. Text: words joined
    by single spaces."""
    segments: list[Stamp] = []
    current: list[str] = []
    first = 0
    for i, w in enumerate(words):
        if gap_threshold and current:
            if w.start_offset - words[i - 1].end_offset >= gap_threshold:
                prev = words[i - 1]
                segments.append(Stamp(" ".join(current), words[first].start_offset,
                                      prev.end_offset, last_token=prev.last_token))  # fmt: skip
                current = [w.text]
                first = i
                continue
        elif w.text and (w.text[-1] in delimiters or w.text in delimiters):
            current.append(w.text)
            segments.append(Stamp(" ".join(current), words[first].start_offset, w.end_offset,
                                  last_token=w.last_token))  # fmt: skip
            current = []
            first = i + 1
            continue
        current.append(w.text)
    if current:
        segments.append(Stamp(" ".join(current), words[first].start_offset,
                              words[-1].end_offset, last_token=words[-1].last_token))  # fmt: skip
    return _with_seconds(segments, frame_seconds)


def transducer_timestamps(
    tokens: Sequence[int],
    frames: Sequence[int],
    durations: Sequence[int] | None,
    sp,
    punctuation: set[str] | None = None,
    *,
    frame_seconds: float = 0.08,
    delimiters: Sequence[str] = SEGMENT_DELIMITERS,
    gap_threshold: int | None = None,
) -> Timestamps:
    """Text and all three lists for a TDT (durations given) or RNN-T (durations None) result."""
    punctuation = _punct(sp, punctuation)
    tokens = [int(t) for t in tokens]
    chars = token_stamps(tokens, frames, durations, sp, punctuation, frame_seconds=frame_seconds)
    return _assemble(tokens, chars, sp, punctuation, frame_seconds, delimiters, gap_threshold)


def ctc_timestamps(
    path: Sequence[int],
    blank_id: int,
    sp,
    punctuation: set[str] | None = None,
    *,
    frame_seconds: float = 0.08,
    delimiters: Sequence[str] = SEGMENT_DELIMITERS,
    gap_threshold: int | None = None,
) -> Timestamps:
    """Text and all three lists for a greedy CTC path (per-frame argmax ids, valid frames only)."""
    punctuation = _punct(sp, punctuation)
    tokens, chars = ctc_token_stamps(path, blank_id, sp, punctuation, frame_seconds=frame_seconds)
    return _assemble(tokens, chars, sp, punctuation, frame_seconds, delimiters, gap_threshold)


def _assemble(tokens: list[int], chars: list[Stamp], sp, punctuation: set[str],
              frame_seconds: float, delimiters: Sequence[str], gap_threshold: int | None,
              ) -> Timestamps:  # fmt: skip
    """Words, segments and text from token stamps: the same for every head."""
    words = word_stamps(tokens, chars, sp, punctuation, frame_seconds=frame_seconds)
    segments = segment_stamps(words, delimiters, gap_threshold, frame_seconds=frame_seconds)
    return Timestamps(transcript_text(tokens, sp, punctuation), tokens, chars, words, segments)
