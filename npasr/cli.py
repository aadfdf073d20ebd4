"""Command-line front end: `npasr transcribe | models | convert | warmup`.

Argument parsing and printing only; the work is done by npasr.load_model, npasr.hub,
npasr.convert and npasr.output. `transcribe` takes the openai-whisper CLI's option names and
meanings, so whisper command lines carry over.

Heavier modules (audio, convert, tqdm) are imported inside their handlers on purpose:
`npasr models list` should not pay for, or fail on, the audio stack, and vice versa.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import npasr
import npasr.hub
from npasr.io.weights import FILE_TYPES
from npasr.models.whisper.languages import LANGUAGES, language_code
from npasr.output import FORMATS, format_timestamp, write_result
from npasr.types import AudioError, NpasrError

SAMPLE_RATE = 16_000  # Hz, what load_audio returns and Whisper expects
PROGRESS_MIN_SECONDS = 30.0  # one Whisper window; shorter files finish before a bar helps


def _bool(s: str) -> bool:
    table = {"true": True, "false": False}
    if s.lower() not in table:
        raise argparse.ArgumentTypeError(f"expected True or False, got {s!r}")
    return table[s.lower()]


def _positive_int(s: str) -> int:
    if not s.isdigit() or int(s) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {s!r}")
    return int(s)


def _optional(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """`kind`, or None for the text "None" (whisper's spelling for "unset")."""

    def parse(s: str) -> Any:
        return None if s == "None" else kind(s)

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def _increment(s: str) -> float:
    if float(s) < 0:
        raise argparse.ArgumentTypeError(f"expected a step >= 0 (0: no fallback), got {s}")
    return float(s)


def _language(s: str) -> str:
    try:
        return language_code(s)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def temperatures(start: float, increment: float | None) -> tuple[float, ...]:
    """The fallback schedule, as whisper builds it: start, start+inc, ... up to 1.0 inclusive."""
    if not increment:  # None or 0: no fallback
        return (start,)
    if increment < 0:
        raise ValueError(f"temperature increment must be positive, got {increment}")
    # whisper: np.arange(t, 1.0 + 1e-6, inc); a start above 1.0 would give an empty schedule
    return tuple(float(t) for t in np.arange(start, 1.0 + 1e-6, increment)) or (start,)


_INT, _FLOAT = _optional(_positive_int), _optional(float)

# Options passed to model.transcribe by dest name: (flag, argparse keywords). Names and meanings
def _frames_pair(text: str) -> tuple[int, int]:
    try:
        left, right = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected L,R (two frame counts), got {text!r}") from None
    if left < 0 or right < 0 or max(left, right) == 0:
        raise argparse.ArgumentTypeError(f"context {text!r}: counts >= 0, not both 0")
    return left, right


# follow the openai-whisper CLI, whose underscore spellings (--beam_size) also work, unlisted.
_DECODE_FLAGS: list[tuple[str, dict[str, Any]]] = [
    ("language", dict(type=_optional(_language), default=None, metavar="LANG",
                      help="code or name: en, English, ...; unset: detect it")),
    ("task", dict(default="transcribe", choices=["transcribe", "translate"],
                  help="translate: X -> English")),
    ("temperature", dict(type=float, default=0.0, metavar="T", help="of the first attempt")),
    ("temperature-increment-on-fallback", dict(type=_optional(_increment), default=0.2,
        metavar="DT", help="step up to 1.0 when a decode fails a threshold; 0/None: no fallback")),
    ("best-of", dict(type=_INT, default=5, metavar="N", help="samples at temperature > 0")),
    ("beam-size", dict(type=_INT, default=5, metavar="N", help="beams at T=0; None: greedy")),
    ("patience", dict(type=_FLOAT, default=None, metavar="F", help="beam search patience")),
    ("length-penalty", dict(type=_FLOAT, default=None, metavar="F",
                            help="length normalisation alpha; unset: divide by length")),
    ("suppress-tokens", dict(default="-1", metavar="IDS",
                             help="comma-separated token ids; -1: most special symbols")),
    ("initial-prompt", dict(default=None, metavar="TEXT", help="text before the first window")),
    ("condition-on-previous-text", dict(type=_bool, default=True, metavar="BOOL",
                                        help="prompt each window with the previous text")),
    ("compression-ratio-threshold", dict(type=_FLOAT, default=2.4, metavar="F",
                                         help="gzip ratio above which a decode has failed")),
    ("logprob-threshold", dict(type=_FLOAT, default=-1.0, metavar="F",
                               help="mean log-probability below which a decode has failed")),
    ("no-speech-threshold", dict(type=_FLOAT, default=0.6, metavar="F",
                                 help="P(no speech) above which a failed window is silent")),
    ("without-timestamps", dict(action="store_true", help="text only, no segment timestamps")),
    # CTC models: prefix beam search and an ARPA word n-gram by shallow fusion
    ("ctc-beam-size", dict(type=_INT, default=None, metavar="N",
                           help="CTC prefix beam search width; unset: greedy (16 with --lm)")),
    ("lm", dict(dest="lm_path", default=None, metavar="PATH", help="ARPA n-gram (CTC models)")),
    ("lm-alpha", dict(type=float, default=0.5, metavar="F", help="LM weight (ln P per word)")),
    ("lm-beta", dict(type=float, default=1.0, metavar="F", help="bonus per word with --lm")),
    # models with several heads or a choice of attention span (Parakeet)
    ("decoder", dict(default=None, choices=["tdt", "rnnt", "ctc"],
                     help="which head decodes; unset: the model's own (ctc: a hybrid's CTC head)")),
    ("attention", dict(default="auto", choices=["auto", "full", "local"],
                       help="full: all frames (the model's own); local: --attention-context "
                            "frames each way, for any length; auto: full up to 10 min, local "
                            "beyond")),
    ("attention-context", dict(type=_frames_pair, default=(128, 128), metavar="L,R",
                               help="local attention: encoder frames looked at back, ahead")),
    # LLM-based models (Qwen3-ASR)
    ("context", dict(default="", metavar="TEXT",
                     help="text the model may draw on: names, terms, the topic (Qwen3-ASR)")),
    ("max-new-tokens", dict(type=_positive_int, default=None, metavar="N",
                            help="tokens generated per chunk at most (Qwen3-ASR: 512)")),
    ("aligner", dict(default=None, metavar="PATH",
                     help="Qwen3-ForcedAligner model (.gguf or checkpoint): word timestamps "
                          "for Qwen3-ASR")),
]  # fmt: skip


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    # argparse's own defaults formatter, minus the "(default: None)" / "(default: False)" noise
    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _add_transcribe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("transcribe", help="transcribe audio files", formatter_class=_HelpFormatter,
                       description="Transcribe audio files; FILE may be - for stdin.")  # fmt: skip

    def opt(name: str, *short: str, **kw: Any) -> None:
        p.add_argument(*short, f"--{name}", **kw)
        if "-" in name:  # whisper's spelling: same dest, not shown in --help
            hidden = kw | {"help": argparse.SUPPRESS, "default": argparse.SUPPRESS}
            p.add_argument(f"--{name.replace('-', '_')}", **hidden)

    # fmt: off
    p.add_argument("files", nargs="+", metavar="FILE", help="audio file(s), or - for stdin")
    opt("model", "-m", default=npasr.hub.DEFAULT_MODEL, metavar="NAME|PATH",
        help="model name (npasr models list), .gguf file, or a checkpoint to convert")
    for name, kw in _DECODE_FLAGS:
        opt(name, **kw)
    opt("output-format", "-f", default="all", choices=[*FORMATS, "all"], help="file type(s)")
    opt("output-dir", "-o", default=".", metavar="DIR", help="where <stem>.<format> goes")
    opt("threads", "-t", type=_positive_int, default=None, metavar="N",
        help="for Numba and BLAS; unset: every CPU available")
    opt("device", default="cpu", choices=["cpu", "cuda"],
        help="cuda: the encoder on a CUDA GPU, for models that have one (Whisper; "
             "experimental; decoding stays on the CPU)")
    opt("verbose", type=_bool, default=True, metavar="BOOL", help="print segments to stdout")
    opt("no-progress", action="store_true", help="no progress bar (shown for files over 30 s)")
    # fmt: on
    p.set_defaults(func=_transcribe)


def _print(line: str) -> None:
    # a console that cannot show a character gets '?' instead of a UnicodeEncodeError
    enc = sys.stdout.encoding or "utf-8"
    print(line.encode(enc, errors="replace").decode(enc), flush=True)


def _accepted(model: Any, opts: dict[str, Any]) -> dict[str, Any]:
    """The options this model's transcribe() takes: each family has the whisper options that
    mean something to it (GigaAM: language, the CTC beam and LM ones); the rest are dropped."""
    accepted = inspect.signature(model.transcribe).parameters
    return {k: v for k, v in opts.items() if k in accepted}


def _transcribe_one(model: Any, path: str, args: argparse.Namespace, opts: dict[str, Any]) -> None:
    from npasr.audio.io import load_audio  # noqa: PLC0415

    audio = load_audio(path, sr=SAMPLE_RATE)  # "-" reads stdin
    seconds, bar = len(audio) / SAMPLE_RATE, None
    if not args.no_progress and seconds > PROGRESS_MIN_SECONDS:
        from tqdm import tqdm  # noqa: PLC0415

        name = "stdin" if path == "-" else Path(path).name
        fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}]"
        bar = tqdm(total=round(seconds, 2), desc=name, bar_format=fmt, file=sys.stderr)

    def progress(done: float, total: float) -> None:
        if bar is not None:
            bar.update(round(min(done, total), 2) - bar.n)

    def show(seg: Any) -> None:
        line = f"[{format_timestamp(seg.start)} --> {format_timestamp(seg.end)}] {seg.text}"
        if bar is not None:
            bar.write(line, file=sys.stdout)  # above the bar, as the segments arrive
        else:
            _print(line)

    opts = _accepted(model, opts)
    live = args.verbose and "segment_callback" in inspect.signature(model.transcribe).parameters
    if live:
        opts["segment_callback"] = show
    try:
        result = model.transcribe(audio, progress_callback=progress, **opts)
    finally:
        if bar is not None:
            bar.close()
    if args.verbose:
        if args.language is None and model.is_multilingual:  # as whisper: only if it detected
            _print(f"Detected language: {LANGUAGES.get(result.language, result.language).title()}")
        if not live:
            for seg in result.segments:
                show(seg)
    write_result(result, "stdin" if path == "-" else path, args.output_dir, args.output_format)


def _transcribe(args: argparse.Namespace) -> int:
    dests = [kw.get("dest", name.replace("-", "_")) for name, kw in _DECODE_FLAGS]
    opts = {d: getattr(args, d) for d in dests if d != "temperature_increment_on_fallback"}
    opts["temperature"] = temperatures(args.temperature, args.temperature_increment_on_fallback)
    os.makedirs(args.output_dir, exist_ok=True)
    model = npasr.load_model(args.model, threads=args.threads, device=args.device)
    _ensure_compiled(args.threads)
    status = 0
    for path in args.files:
        try:
            _transcribe_one(model, path, args, opts)
        except (NpasrError, OSError) as e:  # the user's input: say what is wrong, no traceback
            where = "" if isinstance(e, AudioError) else f"{path}: "  # AudioError names the file
            print(f"npasr: error: {where}{e}", file=sys.stderr)
            status = 1
        except Exception:  # a bug: keep the traceback, still do the other files
            traceback.print_exc()
            print(f"npasr: error: {path}: skipped after the error above", file=sys.stderr)
            status = 1
    return status


def _human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size, unit = float(n), "B"
    for bigger in ("kB", "MB", "GB"):
        if size < 1000:  # noqa: PLR2004 (SI prefixes)
            break
        size, unit = size / 1000, bigger
    return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"


def _models_list(args: argparse.Namespace) -> int:
    rows = [("NAME", "INSTALLED", "SIZE", "PATH")]
    for m in npasr.hub.list_models():
        size = _human_size(m["size"]) if isinstance(m["size"], int | None) else str(m["size"])
        rows.append((m["name"], "yes" if m["installed"] else "no", size, str(m["path"] or "-")))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:  # path last and unpadded: it is the long one
        print("  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)), r[3])
    return 0


def _models_install(args: argparse.Namespace) -> int:
    path = npasr.hub.install(args.name, source=args.source, wtype=args.type, force=args.force)
    print(f"installed {args.name}: {path}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from npasr.convert import convert  # noqa: PLC0415

    out = convert(args.src, args.output, wtype=args.type, tokenizer=args.tokenizer)
    print(f"wrote {out} ({_human_size(Path(out).stat().st_size)})")
    return 0


# what the kernels in Numba's on-disk cache were last compiled for (`_stamp_path`)
KERNEL_STAMP = "npasr-kernels.stamp"


def _stamp_path() -> Path:
    """Beside the kernels when NUMBA_CACHE_DIR names their place (so it goes with them), else
    in npasr's own cache directory."""
    numba_dir = os.environ.get("NUMBA_CACHE_DIR")
    return Path(numba_dir) / KERNEL_STAMP if numba_dir else npasr.hub.cache_dir() / KERNEL_STAMP


def _kernel_stamp() -> str:
    """A digest of what Numba's cached kernels depend on: the Python, NumPy, Numba and llvmlite
    versions, the CPU they were compiled for, Numba's cache and target settings, and the size
    and time of every npasr source file (Numba's own test for a stale cache entry)."""
    import hashlib

    import llvmlite
    import llvmlite.binding as llb
    import numba

    parts = [sys.version, np.__version__, numba.__version__, llvmlite.__version__]
    parts += [llb.get_host_cpu_name(), llb.get_host_cpu_features().flatten()]
    parts += [f"{k}={os.environ.get(k, '')}" for k in ("NUMBA_CACHE_DIR", "NUMBA_CPU_NAME",
              "NUMBA_CPU_FEATURES", "NUMBA_OPT")]  # fmt: skip
    root = Path(npasr.__file__).resolve().parent
    for f in sorted(root.rglob("*.py")):
        st = f.stat()
        parts.append(f"{f.relative_to(root)} {st.st_size} {st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _compile_kernels(threads: int | None) -> float:
    """`npasr.warmup` with one compiling process per CPU (or per --threads), then the stamp."""
    seconds = npasr.warmup(threads)
    try:
        path = _stamp_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_kernel_stamp() + "\n")
    except OSError:  # a read-only cache directory: the kernels still load from Numba's cache
        pass
    return seconds


def _ensure_compiled(threads: int | None) -> None:
    """Before the first transcription on this machine (no stamp, or a stamp for other sources,
    versions or CPU): compile every kernel in parallel processes (`_compile_kernels`), instead of
    one at a time on first use. Later runs load them from Numba's cache."""
    import numba

    if numba.config.DISABLE_JIT:
        return
    try:
        if _stamp_path().read_text().strip() == _kernel_stamp():
            return
    except OSError:
        pass
    print("npasr: compiling the kernels for this machine, once (`npasr warmup` does it ahead)",
          file=sys.stderr)  # fmt: skip
    seconds = _compile_kernels(threads)
    print(f"npasr: kernels compiled in {seconds:.1f} s", file=sys.stderr)


def _warmup(args: argparse.Namespace) -> int:
    seconds = _compile_kernels(args.threads)
    print(f"warmup: kernels compiled or loaded from cache in {seconds:.2f} s")
    t0 = time.perf_counter()
    model = npasr.load_model(args.model, threads=args.threads)
    t1 = time.perf_counter()
    # beam 5 as in `transcribe`'s default, so the batched decoder path is compiled too
    opts = _accepted(model, {"temperature": (0.0,), "beam_size": 5})
    model.transcribe(np.zeros(SAMPLE_RATE, dtype=np.float32), **opts)
    t2 = time.perf_counter()
    print(f"warmup: model loaded in {t1 - t0:.2f} s, 1 s of silence transcribed in {t2 - t1:.2f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npasr", description="Speech recognition, NumPy + Numba")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_transcribe(sub)

    models = sub.add_parser("models", help="list or install models").add_subparsers(
        dest="models_command", required=True, metavar="ACTION"
    )
    models.add_parser("list", help="show known models").set_defaults(func=_models_list)
    inst = models.add_parser("install", help="download/convert a model into the model directory")
    inst.add_argument("name")
    inst.add_argument("--type", default="f16", choices=list(FILE_TYPES), help="weight type")
    inst.add_argument("--force", action="store_true", help="reinstall even if present")
    inst.add_argument("--source", default=None, help="local checkpoint to convert instead")
    inst.set_defaults(func=_models_install)

    conv = sub.add_parser("convert", help="convert a checkpoint to GGUF")
    conv.add_argument("src", help="checkpoint file or directory")
    conv.add_argument("-o", "--output", required=True, metavar="OUT.gguf")
    conv.add_argument("--type", default="f16", choices=list(FILE_TYPES), help="weight type")
    conv.add_argument("--tokenizer", default=None, help="tokenizer file if not in SRC")
    conv.set_defaults(func=_convert)

    warm = sub.add_parser("warmup", help="compile and cache the kernels once")
    warm.add_argument("--model", "-m", default=npasr.hub.DEFAULT_MODEL,
                      help="name, .gguf file or checkpoint")
    warm.add_argument("--threads", "-t", type=_positive_int, default=None,
                      help="compiling processes and threads (unset: all CPUs)")
    warm.set_defaults(func=_warmup)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` (default sys.argv[1:]); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except NpasrError as e:
        print(f"npasr: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("npasr: interrupted", file=sys.stderr)
        return 130  # 128 + SIGINT, what shells report for Ctrl-C
