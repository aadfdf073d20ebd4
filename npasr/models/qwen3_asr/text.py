"""The qwen-asr pipeline's plain-Python parts, as its `inference/utils.py` behaves (facts read
from qwen-asr 0.0.6; our code): audio peak normalisation, long-audio cutting at a quiet point,
language names, parsing `language X<asr_text>text`, and the repetition fix-up."""

from __future__ import annotations

import re

import numpy as np

from npasr.models.whisper.languages import LANGUAGES
from npasr.types import F32

# The languages the model card lists, spelled as the prompt wants them (REFERENCE.md §3.5).
SUPPORTED_LANGUAGES = (
    "Chinese", "English", "Cantonese", "Arabic", "German", "French", "Spanish", "Portuguese",
    "Indonesian", "Italian", "Korean", "Russian", "Thai", "Vietnamese", "Japanese", "Turkish",
    "Hindi", "Malay", "Dutch", "Swedish", "Danish", "Finnish", "Polish", "Czech", "Filipino",
    "Persian", "Greek", "Romanian", "Hungarian", "Macedonian",
)  # fmt: skip
_CODE_OF = {name.lower(): code for code, name in LANGUAGES.items()} | {"filipino": "tl"}
_NAME_OF = {code: name for name, code in _CODE_OF.items()}
REPEAT_THRESHOLD = 20
REPEAT_MAX_PATTERN = 20


def language_name(language: str) -> str:
    """'en' / 'english' / 'English' -> 'English'; ValueError for a language the model does not
    list (the prompt takes English names, never codes)."""
    s = str(language).strip()
    if s.lower() in _NAME_OF and s.lower() not in _CODE_OF:
        s = _NAME_OF[s.lower()]
    name = s[:1].upper() + s[1:].lower()
    if name not in SUPPORTED_LANGUAGES:
        raise ValueError(f"language {language!r} is not one Qwen3-ASR supports: "
                         f"{', '.join(SUPPORTED_LANGUAGES)}")  # fmt: skip
    return name


def language_code(names: str) -> str | None:
    """'English' -> 'en' (Whisper's codes); several chunk languages 'Chinese,English' ->
    'zh,en'; '' -> None."""
    if not names:
        return None
    return ",".join(_CODE_OF.get(n.lower(), n) for n in names.split(","))


def peak_normalize(x: F32) -> F32:
    """Divide by the peak when it exceeds 1, then clip to [-1, 1] (float_range_normalize)."""
    if x.size == 0:
        return x
    peak = float(np.max(np.abs(x)))
    if peak > 1.0:
        x = x / np.float32(peak)
    return np.clip(x, -1.0, 1.0).astype(np.float32, copy=False)


def pad_to(x: F32, n: int) -> F32:
    return x if len(x) >= n else np.pad(x, (0, n - len(x))).astype(np.float32)


def split_audio(x: F32, sr: int, max_seconds: float, search_seconds: float = 5.0,
                window_ms: float = 100.0) -> list[tuple[F32, float]]:  # fmt: skip
    """Cut x into consecutive pieces of at most about max_seconds: each cut lies at the
    quietest sample of the quietest `window_ms` window within +-search_seconds of the limit.
    The pieces concatenate back to x; (piece, offset seconds) each."""
    n = len(x)
    max_len = int(max_seconds * sr)
    if n <= max_len:
        return [(x, 0.0)]
    expand, win = int(search_seconds * sr), max(4, int(window_ms / 1000.0 * sr))
    out: list[tuple[F32, float]] = []
    start = 0
    while n - start > max_len:
        cut = start + max_len
        left, right = max(start, cut - expand), min(n, cut + expand)
        if right - left <= win:
            boundary = cut
        else:
            mag = np.abs(x[left:right])
            sums = np.convolve(mag, np.ones(win, np.float32), mode="valid")
            w0 = int(np.argmin(sums))
            boundary = left + w0 + int(np.argmin(mag[w0 : w0 + win]))
        boundary = min(max(boundary, start + 1), n)
        out.append((x[start:boundary], start / sr))
        start = boundary
    out.append((x[start:], start / sr))
    return out


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")


def sentences(text: str) -> list[str]:
    """text cut after sentence ends (. ! ? followed by space, or 。！？); the parts concatenate
    back to text, each keeping its trailing space."""
    parts, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        if m.end() > start and m.end() < len(text):
            parts.append(text[start : m.end()])
            start = m.end()
    parts.append(text[start:])
    return [p for p in parts if p]


def merge_languages(langs: list[str]) -> str:
    """Chunk languages joined by ',' in order, empty ones and repeats of the previous dropped."""
    out: list[str] = []
    for lang in (s.strip() for s in langs):
        if lang and (not out or out[-1] != lang):
            out.append(lang)
    return ",".join(out)


def fix_repetitions(text: str, threshold: int = REPEAT_THRESHOLD) -> str:
    """A character repeated more than `threshold` times in a row becomes one; then the first
    pattern of 1..20 characters that repeats `threshold` times or more in a row becomes one
    copy, and the rest of the text after its run is fixed the same way."""
    chars: list[str] = []
    i, n = 0, len(text)
    while i < n:
        j = i
        while j < n and text[j] == text[i]:
            j += 1
        chars.append(text[i] if j - i > threshold else text[i:j])
        i = j
    return _fix_patterns("".join(chars), threshold)


def _fix_patterns(s: str, threshold: int) -> str:
    out: list[str] = []
    while True:
        n = len(s)
        if n < 2 * threshold:
            out.append(s)
            return "".join(out)
        found = None
        i = 0
        while i <= n - 2 * threshold and found is None:
            for k in range(1, REPEAT_MAX_PATTERN + 1):
                if i + k * threshold > n:
                    break
                pat = s[i : i + k]
                if all(s[i + r * k : i + (r + 1) * k] == pat for r in range(1, threshold)):
                    end = i + threshold * k
                    while end + k <= n and s[end : end + k] == pat:
                        end += k
                    found = (i, pat, end)
                    break
            if found is None:
                i += 1
        if found is None:
            out.append(s)
            return "".join(out)
        i, pat, end = found
        out.append(s[:i] + pat)
        s = s[end:]


def parse_output(raw: str, forced: str | None) -> tuple[str, str]:
    """(language, text) from the decoded output: with a forced language the whole output is
    text; else `language X<asr_text>text` (`language None`: no speech -> ('', text or ''));
    without the tag the whole output is text of unknown language."""
    s = raw.strip()
    if not s:
        return "", ""
    s = fix_repetitions(s)
    if forced:
        return forced, s
    if "<asr_text>" not in s:
        return "", s.strip()
    meta, text = s.split("<asr_text>", 1)
    if "language none" in meta.lower():
        return "", text.strip()
    lang = ""
    for raw_line in meta.splitlines():
        line = raw_line.strip()
        if not line:
            continue
        if line.lower().startswith("language "):
            val = line[len("language ") :].strip()
            if val:
                lang = val[:1].upper() + val[1:].lower()
            break
    return lang, text.strip()
