"""Qwen3-ASR-0.6B (real size, random weights) end to end on 30 s and 5 min of speech, 2 threads:
npasr Q8_0 / Q4_K (/ F16) against transformers 5.23 on CPU (torch fp32), every engine in its own
subprocess, one after the other, in the same run; plus this machine's streaming-read bandwidth and
npasr's decode speed against the limit it sets.

Model: a Hugging Face directory in the hf layout (bf16 safetensors + the synthetic tokenizer of
tests/tiny/qwen3_asr_tokenizer), by default /tmp/qwen3_bench, made on the first run by
bench/make_qwen3_asr_model.py with --ref-python (~1 min); --model DIR takes another one (e.g. the
hf-layout output of scripts/make_goldens_qwen3_asr.py --real). GGUFs by
`npasr convert DIR -o bench/out/<dir>_<type>.gguf --type T`,
cached, remade when older than the checkpoint or npasr/models/qwen3_asr/weights.py.
Audio: the English clips of shared/data (16 kHz by npasr's loader), concatenated and repeated,
cut at 30 s and 300 s, written once as bench/out/qwen3_{30,300}s.wav.

Random weights make gibberish that may stop at any time, so both sides decode exactly
--new-tokens tokens (default 200) with no stop token: npasr `Qwen3ASRModel.generate(ids, emb, N,
stop=frozenset())`, transformers `generate(do_sample=False, max_new_tokens=N, min_new_tokens=N)`
(the model builders scale the EOS rows down so EOS never wins anyway). The prompt ids (ChatML, empty
context, auto language; REFERENCE.md §3.5) are built once in the parent with npasr's tokenizer and
given to every engine; the transformers child checks that its feature extractor
(Qwen3ASRFeatureExtractor, padding=True, return_attention_mask=True) yields as many audio tokens.

Each child loads its model ("load s"), runs the whole pipeline once as warm-up ("first s": Numba
JIT, torch first-call costs), then times --repeats runs from the WAV path to the N token ids and
reports the median wall, split into
  features   read the WAV + log-mel (npasr: load_audio + peak normalise + log_mel_whisper;
             transformers: soundfile + Qwen3ASRFeatureExtractor)
  encoder    the audio tower + projector (transformers: forward hooks on audio_tower and
             multi_modal_projector, which run inside generate's first forward)
  prefill    the prompt through the LLM (transformers: generate's start to its first new token,
             less the encoder)
  decode     the rest: N - 1 single-token steps (+ the logits); decode tok/s = (N - 1) / decode s
and its CPU seconds, its own peak RSS (VmHWM) and the N token ids. Agreement: the length of the
prefix each engine shares with transformers' ids (and with npasr-f16's where that ran).

Bandwidth: a child sums a 2 GiB float32 array with a Numba prange over 2 threads (best of 7, after
a warm-up) = the streaming read GB/s of this machine. For each npasr engine: the bytes one decode
step reads: the GGUF's llm.layers.* tensors + the embedding (= the tied output head), as stored
("gguf"), and as the GEMV kernels hold them ("kernel": `QTensor.repack`'s int8 / nibble values
plus f32 scale and offset per 32 weights), plus the float32 KV cache at the mean decode position
(28 layers x K and V x 8 heads x 128 x 4 bytes per position). Decode tokens/s is reported as a
% of GB/s / bytes (the issue's target: >= 60 % of the weight-bytes limit).

    python bench/qwen3_asr.py --json bench/out/qwen3_asr.json                 # ~25 min
    python bench/qwen3_asr.py --smoke                                         # 5 s, 8 tokens
    python bench/qwen3_asr.py --engines npasr-q8_0,npasr-q4_k --durations 30 --repeats 3
    python bench/qwen3_asr.py --profile --durations 30              # one decode step split

--profile: instead of timing, each npasr engine prefills the clip's prompt, then runs 20 decode
steps with a timer around every GEMV kind (qkv, o, gate_up, down, head), the attention kernel,
the RMSNorms, RoPE, SiLU, the embedding lookup and the rest (Python, reshapes, KV-cache writes),
then 20 more under cProfile (top lines by tottime).
Environments: this venv (npasr); --ref-python (torch 2.13 CPU, transformers 5.23.0;
shared/REFERENCE-SETUP.md §2a). The numbers go to bench/RESULTS.md.
"""

# ruff: noqa: PLC0415 (each child imports only the engine it times)

from __future__ import annotations

import _blas_env  # noqa: F401  (first: before NumPy loads OpenBLAS)

# isort: split

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import _common as C  # noqa: E402

OUT = C.REPO / "bench" / "out"
CLIPS = [
    "jfk.flac",
    "en_psphinx-austen-0870.wav",
    "en_ljspeech-LJ001-0001.wav",
    "en_hard-noisy-funasr-noise_en.wav",
    "en_psphinx-austen-0890.wav",
    "en_hard-long-noise1-en.wav",
]
THREADS = 2
ENGINES = ("npasr-q8_0", "npasr-q4_k", "npasr-f16", "npasr-f32", "transformers")
DEFAULT_ENGINES = "transformers,npasr-q8_0,npasr-q4_k"
DEFAULT_MODEL = Path("/tmp/qwen3_bench")
BW_GIB = 2


def build_audio(path: Path, seconds: float) -> Path:
    """CLIPS concatenated (repeated as needed) and cut at `seconds`, 16 kHz mono PCM16."""
    import soundfile as sf

    base = np.concatenate([C.load_audio_16k(C.DATA / c) for c in CLIPS])
    n = int(seconds * C.SR)
    x = np.tile(base, -(-n // len(base)))[:n]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, C.SR, subtype="PCM_16")
    return path


# --- children -------------------------------------------------------------------------------------


def _npasr(spec: dict):
    import npasr
    from npasr.audio.io import load_audio
    from npasr.models.qwen3_asr import text as qtext

    npasr.set_num_threads(THREADS)
    m = npasr.load_model(spec["gguf"], threads=THREADS)
    dec = m.model.text
    n_new, ids = spec["new_tokens"], spec["prompt_ids"]
    real_prefill = dec.prefill
    t_pre = [0.0]

    def prefill(x, cache):  # an instance attribute: generate() calls it through self.model.text
        t0 = time.perf_counter()
        h = real_prefill(x, cache)
        t_pre[0] = time.perf_counter() - t0
        return h

    dec.prefill = prefill

    def run(path: str) -> dict:
        t0 = time.perf_counter()
        mel = m.features(qtext.peak_normalize(load_audio(path)))
        t1 = time.perf_counter()
        emb = m.model.audio(mel)
        t2 = time.perf_counter()
        if len(emb) != ids.count(m.audio_pad):
            raise ValueError(f"{len(emb)} audio embeddings, {ids.count(m.audio_pad)} in the prompt")
        g = m.generate(ids, emb, n_new, stop=frozenset())
        t3 = time.perf_counter()
        return {
            "features_s": t1 - t0,
            "encoder_s": t2 - t1,
            "prefill_s": t_pre[0],
            "decode_s": t3 - t2 - t_pre[0],
            "tokens": [int(t) for t in g.tokens],
        }

    run.model = m
    return run


def _transformers(spec: dict):
    # bench/ holds kernels.py, which shadows the `kernels` package transformers probes for
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    import soundfile as sf
    import torch
    from transformers import Qwen3ASRFeatureExtractor, Qwen3ASRForConditionalGeneration
    from transformers.generation.streamers import BaseStreamer

    torch.set_num_threads(THREADS)
    torch.set_num_interop_threads(1)
    d = spec["model_dir"]
    model = Qwen3ASRForConditionalGeneration.from_pretrained(d, dtype=torch.float32).eval()
    fe = Qwen3ASRFeatureExtractor.from_pretrained(d)
    n_new = spec["new_tokens"]
    ids = torch.tensor([spec["prompt_ids"]])
    marks: dict[str, float] = {}

    def pre(name):
        return lambda *_a, **_k: marks.__setitem__(name + "0", time.perf_counter())

    def post(name):
        return lambda *_a, **_k: marks.__setitem__(name + "1", time.perf_counter())

    for name, mod in (
        ("tower", model.model.audio_tower),
        ("proj", model.model.multi_modal_projector),
    ):
        mod.register_forward_pre_hook(pre(name))
        mod.register_forward_hook(post(name))

    class Stamp(BaseStreamer):  # put() gets the prompt first, then every new token
        def __init__(self) -> None:
            self.times: list[float] = []

        def put(self, value) -> None:
            self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

    def run(path: str) -> dict:
        t0 = time.perf_counter()
        x, sr = sf.read(path, dtype="float32")
        assert sr == 16000 and x.ndim == 1
        f = fe(
            x, sampling_rate=16000, padding=True, return_attention_mask=True, return_tensors="pt"
        )
        t1 = time.perf_counter()
        st = Stamp()
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                input_features=f["input_features"],
                input_features_mask=f["attention_mask"],
                max_new_tokens=n_new,
                min_new_tokens=n_new,
                do_sample=False,
                streamer=st,
            )
        t2 = time.perf_counter()
        enc = marks["proj1"] - marks["tower0"]
        first = st.times[1] if len(st.times) > 1 else t2  # the first new token
        return {
            "features_s": t1 - t0,
            "encoder_s": enc,
            "prefill_s": first - t1 - enc,
            "decode_s": t2 - first,
            "tokens": [int(t) for t in out[0, ids.shape[1] :]],
            "n_audio_features": int(f["attention_mask"].sum()),
        }

    return run


def _bandwidth(spec: dict) -> None:
    """Streaming read GB/s: a Numba prange sum of a BW_GIB GiB float32 array, best of 7."""
    import numba

    numba.set_num_threads(THREADS)

    @numba.njit(parallel=True, fastmath=True, cache=False)
    def total(a):
        s = 0.0
        for i in numba.prange(a.size):
            s += a[i]
        return s

    a = np.ones(BW_GIB * 2**30 // 4, np.float32)
    total(a[:1024])
    times = []
    for _ in range(8):
        t0 = time.perf_counter()
        total(a)
        times.append(time.perf_counter() - t0)
    best = min(times[1:])
    C.emit(
        {
            "gb_s": a.nbytes / best / 1e9,
            "times": times,
            "bytes": a.nbytes,
            "threads": numba.get_num_threads(),
        }
    )


def decode_bytes(m, n_prompt: int, n_new: int) -> dict:
    """Bytes one decode step reads: the decoder matrices + the tied head, as the GEMV kernels hold
    them, and the f32 KV cache at the mean position of the decode."""
    from npasr.nn.quant import QTensor

    dec = m.model.text

    def kernel_bytes(w) -> int:
        if isinstance(w, QTensor):
            p = w.repack()
            if p is not None:
                return sum(a.nbytes for a in (p.qs, p.scale, p.offset) if a is not None)
            return w.nbytes
        return int(getattr(w, "nbytes", 0))

    mats = sum(
        kernel_bytes(lin.weight)
        for lyr in dec.layers
        for lin in (lyr.qkv, lyr.o, lyr.gate_up, lyr.down)
    )
    norms = sum(
        a.nbytes
        for lyr in dec.layers
        for a in (lyr.input_norm, lyr.post_norm, lyr.q_norm, lyr.k_norm)
    )
    cfg = m.config
    kv_per_pos = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * cfg.head_dim * 4
    return {
        "kernel_layers": mats + norms,
        "kernel_head": kernel_bytes(dec.head.weight),
        "kv_mean": kv_per_pos * (n_prompt + n_new / 2),
        "kv_per_pos": kv_per_pos,
    }


def _profile_npasr(spec: dict, run) -> dict:
    """One decode step split by a timer around every kind of call, then cProfile."""
    import cProfile
    import io
    import pstats

    from npasr.audio.io import load_audio
    from npasr.models.qwen3_asr import model as qm
    from npasr.models.qwen3_asr import text as qtext
    from npasr.nn import ops

    m = run.model
    dec = m.model.text
    acc: dict[str, float] = {}
    calls: dict[str, int] = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            r = fn(*a, **k)
            acc[name] = acc.get(name, 0.0) + time.perf_counter() - t0
            calls[name] = calls.get(name, 0) + 1
            return r

        return wrapper

    emb = m.model.audio(m.features(qtext.peak_normalize(load_audio(spec["audio"]))))
    ids = spec["prompt_ids"]
    steps = 20
    cache = qm.KVCache.empty(m.config, len(ids) + 4 * steps + 2)  # warm, timed, plain, cProfile
    h = dec.prefill(m.embed_prompt(ids, emb), cache)

    def step(h):
        tok = int(np.argmax(dec.logits(h)[0]))
        return dec(dec.embed_ids(np.array([tok])), cache)

    for _ in range(steps):  # warm (first calls of the one-row kernels)
        h = step(h)
    patches = []  # (owner, attribute, original)

    def patch(owner, attr, fn):
        patches.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, fn)

    for lyr in dec.layers:
        for name in ("qkv", "o", "gate_up", "down"):
            lin = getattr(lyr, name)
            patch(lyr, name, timed(f"gemv {name}", lin))
    head = dec.head
    patch(dec, "head", type("H", (), {"__call__": staticmethod(timed("gemv head", head))})())
    patch(ops, "attention", timed("attention", ops.attention))
    patch(ops, "silu", timed("silu*up", ops.silu))
    patch(qm, "rms_norm", timed("rms_norm", qm.rms_norm))
    patch(qm.Rope, "apply", staticmethod(timed("rope", qm.Rope.apply)))
    patch(qm.Rope, "tables", timed("rope tables", qm.Rope.tables))
    patch(dec, "embed_ids", timed("embed", dec.embed_ids))
    t0 = time.perf_counter()
    for _ in range(steps):
        h = step(h)
    total = time.perf_counter() - t0
    for owner, attr, orig in reversed(patches):
        if isinstance(owner, type) and attr == "apply":
            setattr(owner, attr, staticmethod(orig))
        elif owner is dec and attr in ("head", "embed_ids"):
            delattr(owner, attr) if attr == "embed_ids" else setattr(owner, attr, orig)
        else:
            setattr(owner, attr, orig)
    t0 = time.perf_counter()
    for _ in range(steps):
        h = step(h)
    plain = time.perf_counter() - t0
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        h = step(h)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(18)
    split = {k: v / steps * 1e3 for k, v in sorted(acc.items(), key=lambda kv: -kv[1])}
    split["rest (python, reshapes, KV writes, argmax)"] = total / steps * 1e3 - sum(split.values())
    nb = decode_bytes(m, len(ids), 3 * steps)
    return {
        "profile_ms_per_step": split,
        "calls_per_step": {k: v / steps for k, v in calls.items()},
        "step_ms_timed": total / steps * 1e3,
        "step_ms_plain": plain / steps * 1e3,
        "position": len(ids) + 2 * steps,  # the middle of the timed steps
        "bytes": nb,
        "cprofile": buf.getvalue(),
    }


def child(spec: dict) -> None:
    engine = spec["engine"]
    if engine == "bandwidth":
        return _bandwidth(spec)
    path = spec["audio"]
    t0 = time.perf_counter()
    run = _npasr(spec) if engine.startswith("npasr-") else _transformers(spec)
    load_s = time.perf_counter() - t0
    if spec.get("profile"):
        C.emit(_profile_npasr(spec, run))
        return None
    t0 = time.perf_counter()
    first = run(path)  # warm-up: Numba JIT / torch first-call costs
    first_s = time.perf_counter() - t0
    res: dict = {"load_s": load_s, "first_s": first_s, "load1": C.loadavg().split()[0]}
    runs, walls, cpus = [], [], []
    for _ in range(spec["repeats"]):
        c0, t0 = C.cpu_seconds(), time.perf_counter()
        runs.append(run(path))
        walls.append(time.perf_counter() - t0)
        cpus.append(C.cpu_seconds() - c0)
    res["load1_end"] = C.loadavg().split()[0]
    for k in ("features_s", "encoder_s", "prefill_s", "decode_s"):
        res[k] = statistics.median(r[k] for r in runs)
    res.update(
        median_s=statistics.median(walls),
        walls=walls,
        cpu_s=statistics.median(cpus),
        tokens=runs[-1]["tokens"],
        same_tokens_every_run=all(r["tokens"] == first["tokens"] for r in runs),
        peak_rss_mib=C.peak_rss_mib(),
    )
    if "n_audio_features" in first:
        res["n_audio_features"] = first["n_audio_features"]
    if engine.startswith("npasr-"):
        res["bytes"] = decode_bytes(run.model, len(spec["prompt_ids"]), spec["new_tokens"])
    C.emit(res)
    return None


# --- parent ---------------------------------------------------------------------------------------


def spawn(python: str, spec: dict, timeout: float = 3600) -> dict:
    cmd = [python, __file__, "--child", json.dumps(spec)]
    env = C.child_env(THREADS, python == sys.executable)
    try:
        p = subprocess.run(
            cmd, capture_output=True, text=True, env=env, cwd=C.REPO, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    for line in p.stdout.splitlines():
        if line.startswith("@@RESULT "):
            return json.loads(line[9:])
    return {"error": f"exit {p.returncode}: {p.stderr[-1500:]}"}


def run_cmd(cmd: list[str], log: list[str]) -> None:
    log.append(shlex.join(cmd))
    print("+ " + log[-1], file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=C.REPO, env=C.child_env(THREADS, False))


def model_dir(args, log: list[str]) -> Path:
    if args.model is not None:
        return args.model
    d = DEFAULT_MODEL
    if (d / "config.json").is_file() and any(d.glob("*.safetensors")):
        return d
    run_cmd([args.ref_python, str(HERE / "make_qwen3_asr_model.py"), str(d)], log)
    return d


def prepare(src: Path, engines: list[str], log: list[str]) -> dict:
    """GGUFs (npasr convert), made when missing or stale."""
    weights_py = C.REPO / "npasr" / "models" / "qwen3_asr" / "weights.py"
    ckpt = sorted(src.glob("*.safetensors"))
    paths: dict = {}
    for e in engines:
        if e.startswith("npasr-"):
            wtype = e.split("-", 1)[1]
            gguf = OUT / f"{src.name}_{wtype}.gguf"
            if C.stale(gguf, *ckpt, src / "config.json", weights_py):
                cmd = [
                    sys.executable,
                    "-m",
                    "npasr",
                    "convert",
                    str(src),
                    "-o",
                    str(gguf),
                    "--type",
                    wtype,
                ]
                run_cmd(cmd, log)
            paths[e] = {"gguf": str(gguf)}
    return paths


def prompt_for(gguf: str, audio: Path) -> list[int]:
    """npasr's prompt (empty context, auto language) for the audio's token count."""
    import soundfile as sf

    from npasr.io.gguf import read_gguf
    from npasr.models.qwen3_asr.asr import Qwen3ASRModel
    from npasr.models.qwen3_asr.config import Qwen3ASRConfig
    from npasr.models.qwen3_asr.tokenizer import Qwen2Tokenizer

    f = read_gguf(gguf)
    cfg = Qwen3ASRConfig.from_gguf(f.metadata)
    n = cfg.audio_tokens(sf.info(str(audio)).frames // 160)
    shell = Qwen3ASRModel.__new__(Qwen3ASRModel)  # prompt_ids needs the tokenizer only
    shell.tokenizer = Qwen2Tokenizer.from_gguf(f.metadata)
    shell.audio_pad = shell.tokenizer.token_id("<|audio_pad|>")
    return shell.prompt_ids(n)


def gguf_bytes(gguf: str) -> dict:
    """Bytes of the decoder's tensors as the GGUF stores them: llm.layers.* and the embedding."""
    from npasr.io.gguf import read_gguf

    f = read_gguf(gguf)

    def nb(t) -> int:
        return int(t.data.nbytes if hasattr(t, "data") else t.nbytes)

    layers = sum(nb(t) for k, t in f.tensors.items() if k.startswith("llm.layers."))
    head = nb(
        f.tensors["lm_head.weight"]
        if "lm_head.weight" in f.tensors
        else f.tensors["llm.embed_tokens.weight"]
    )
    types = sorted({f.tensor_types[k].name for k in f.tensors if k.startswith("llm.layers.")})
    return {
        "gguf_layers": layers,
        "gguf_head": head,
        "gguf_types": types,
        "file_bytes": f.file_size,
    }


def prefix_len(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def analyse(rows: dict, gb_s: float | None, n_new: int) -> None:
    ref = rows.get("transformers", {}).get("tokens")
    f16 = rows.get("npasr-f16", {}).get("tokens")
    for r in rows.values():
        if "tokens" not in r:
            continue
        r["decode_tok_s"] = (n_new - 1) / r["decode_s"] if r["decode_s"] > 0 else None
        if ref is not None:
            r["prefix_vs_transformers"] = prefix_len(r["tokens"], ref)
            r["agree_vs_transformers"] = 1 - C.word_errors(r["tokens"], ref) / max(len(ref), 1)
        if f16 is not None:
            r["prefix_vs_f16"] = prefix_len(r["tokens"], f16)
        b = r.get("bytes")
        if b and gb_s and r["decode_tok_s"]:
            w_gguf = b["gguf_layers"] + b["gguf_head"]
            w_kern = b["kernel_layers"] + b["kernel_head"]
            step = 1 / r["decode_tok_s"]
            r["bw"] = {
                "weights_gguf_mb": w_gguf / 1e6,
                "weights_kernel_mb": w_kern / 1e6,
                "kv_mean_mb": b["kv_mean"] / 1e6,
                "limit_tok_s_gguf": gb_s * 1e9 / w_gguf,
                "pct_gguf": 100 * (w_gguf / step) / (gb_s * 1e9),
                "pct_kernel": 100 * (w_kern / step) / (gb_s * 1e9),
                "pct_kernel_kv": 100 * ((w_kern + b["kv_mean"]) / step) / (gb_s * 1e9),
            }


def report(title: str, rows: dict, n_new: int) -> None:
    tf = rows.get("transformers", {}).get("median_s")
    tf_rss = rows.get("transformers", {}).get("peak_rss_mib")
    print(f"\n{title}")
    print(
        "| engine | wall s (median) | x transformers | features s | encoder s | prefill s "
        "| decode s | decode tok/s | CPU s | load s | first s | peak RSS MiB | x RSS "
        "| prefix = tf | load1 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for engine, r in rows.items():
        if "error" in r:
            print(f"| {engine} | error: {r['error'][-400:]!r} |")
            continue
        t = r["median_s"]
        rel = f"{t / tf:.2f}" if tf else "-"
        rss = f"{r['peak_rss_mib'] / tf_rss:.2f}" if tf_rss else "-"
        pre = r.get("prefix_vs_transformers", "-")
        print(
            f"| {engine} | {t:.2f} | {rel} | {r['features_s']:.2f} | {r['encoder_s']:.2f} "
            f"| {r['prefill_s']:.2f} | {r['decode_s']:.2f} | {r['decode_tok_s']:.1f} "
            f"| {r['cpu_s']:.1f} | {r['load_s']:.1f} | {r['first_s']:.1f} "
            f"| {r['peak_rss_mib']:.0f} | {rss} | {pre}/{n_new} | {r['load1']}-{r['load1_end']} |"
        )
    bws = [(e, r["bw"]) for e, r in rows.items() if "bw" in r]
    if bws:
        print(
            "\n| engine | weights MB/token (GGUF / kernel layout) | KV MB/token (mean) "
            "| limit tok/s (GGUF weights) | decode tok/s | % of limit: GGUF weights "
            "| kernel weights | kernel weights + KV |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for e, b in bws:
            print(
                f"| {e} | {b['weights_gguf_mb']:.0f} / {b['weights_kernel_mb']:.0f} "
                f"| {b['kv_mean_mb']:.0f} | {b['limit_tok_s_gguf']:.1f} "
                f"| {rows[e]['decode_tok_s']:.1f} | {b['pct_gguf']:.0f} % "
                f"| {b['pct_kernel']:.0f} % | {b['pct_kernel_kv']:.0f} % |"
            )


def main() -> None:  # noqa: PLR0912, PLR0915
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument(
        "--model",
        type=Path,
        default=None,
        help=f"hf-layout checkpoint dir (default: {DEFAULT_MODEL}, built if missing)",
    )
    ap.add_argument("--engines", default=DEFAULT_ENGINES, help=f"comma list of {ENGINES}")
    ap.add_argument("--durations", default="30,300", help="seconds of audio, comma list")
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs (after a warm-up)")
    ap.add_argument("--repeats-long", type=int, default=2, help="timed runs for clips > 60 s")
    ap.add_argument("--ref-python", default="/tmp/venv_ref/bin/python")
    ap.add_argument(
        "--max-load",
        type=float,
        default=0.7,
        help="before each child, wait until the 1-min load average is <= this",
    )
    ap.add_argument("--max-wait", type=float, default=600, help="at most this long (s)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="5 s of audio, 8 new tokens, 1 repeat: does everything run",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="instead of timing: one npasr decode step split by call kind",
    )
    args = ap.parse_args()
    if args.child:
        return child(json.loads(args.child))
    if args.smoke:
        args.durations, args.new_tokens, args.repeats, args.repeats_long = "5", 8, 1, 1
    engines = args.engines.split(",")
    assert all(e in ENGINES for e in engines), engines
    log = [shlex.join([sys.executable, *sys.argv])]
    src = model_dir(args, log)
    paths = prepare(src, engines, log)
    if args.profile:
        engines = [e for e in engines if e.startswith("npasr-")]
    gb_s = None
    bw: dict = {}
    if not args.profile:
        C.wait_for_quiet(args.max_load, args.max_wait)
        bw = spawn(sys.executable, {"engine": "bandwidth"})
        gb_s = bw.get("gb_s")
        print(f"streaming read, {THREADS} threads: {bw}", file=sys.stderr, flush=True)
    results: dict = {}
    for secs in (float(s) for s in args.durations.split(",")):
        audio = OUT / f"qwen3_{secs:g}s.wav"
        if not audio.is_file():
            build_audio(audio, secs)
        any_gguf = next((p["gguf"] for p in paths.values()), None)
        if any_gguf is None:  # transformers only: convert nothing, but the prompt needs npasr
            any_gguf = prepare(src, ["npasr-q8_0"], log)["npasr-q8_0"]["gguf"]
        ids = prompt_for(any_gguf, audio)
        rows: dict = {}
        for engine in engines:
            load = C.wait_for_quiet(args.max_load, args.max_wait)
            spec = {
                "engine": engine,
                "audio": str(audio),
                "repeats": args.repeats if secs <= 60 else args.repeats_long,
                "new_tokens": args.new_tokens,
                "prompt_ids": ids,
                "model_dir": str(src),
                "profile": args.profile,
                **paths.get(engine, {}),
            }
            python = args.ref_python if engine == "transformers" else sys.executable
            t0 = time.perf_counter()
            r = rows[engine] = {
                **spawn(python, spec),
                "loadavg_before": load,
                "child_s": time.perf_counter() - t0,
            }
            if engine.startswith("npasr-") and "error" not in r:
                r.setdefault("bytes", {}).update(gguf_bytes(spec["gguf"]))
            if "profile_ms_per_step" in r:
                print_profile(engine, secs, r)
                continue
            print(
                engine,
                f"{secs:g} s",
                json.dumps({k: v for k, v in r.items() if k != "tokens"}),
                file=sys.stderr,
                flush=True,
            )
        if not args.profile:
            analyse(rows, gb_s, args.new_tokens)
            report(
                f"{src.name}: {secs:g} s audio ({audio.name}, {len(ids)} prompt tokens), "
                f"{args.new_tokens} new tokens, {THREADS} threads, streaming read "
                f"{gb_s or float('nan'):.1f} GB/s",
                rows,
                args.new_tokens,
            )
        results[f"{secs:g}s"] = {"prompt_tokens": len(ids), "rows": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        facts = {
            **C.machine_facts(),
            "commands": log,
            "model_dir": str(src),
            "new_tokens": args.new_tokens,
            "bandwidth": bw,
            "ref_versions": versions(args.ref_python),
        }
        args.json.write_text(json.dumps({"machine": facts, "results": results}, indent=1) + "\n")
    return None


def print_profile(engine: str, secs: float, r: dict) -> None:
    b = r["bytes"]
    print(
        f"\n{engine}, {secs:g} s clip, decode step at position ~{r['position']}: "
        f"{r['step_ms_plain']:.1f} ms plain, {r['step_ms_timed']:.1f} ms with timers; "
        f"kernel bytes/step: layers {b['kernel_layers'] / 1e6:.0f} MB + head "
        f"{b['kernel_head'] / 1e6:.0f} MB + KV {b['kv_per_pos'] * r['position'] / 1e6:.0f} MB"
    )
    print("| part | ms / step | calls / step |\n|---|---|---|")
    for k, v in r["profile_ms_per_step"].items():
        print(f"| {k} | {v:.2f} | {r['calls_per_step'].get(k, '')} |")
    print(r["cprofile"])


def versions(py: str) -> dict | str:
    code = (
        "import importlib.metadata as m, json; print(json.dumps({d: m.version(d) "
        "for d in ['torch', 'transformers', 'numpy']}))"
    )
    p = subprocess.run([py, "-c", code], capture_output=True, text=True, check=False)
    return json.loads(p.stdout) if p.returncode == 0 else p.stderr[-300:]


if __name__ == "__main__":
    main()
