"""The Whisper audio encoder on the GPU (npasr.models.whisper.gpu) in Numba's CUDA simulator.

One fresh process (`_SCRIPT`, NUMBA_ENABLE_CUDASIM=1; NPASR_INT8_GEMM=0 and ops.GEMV_MAX_ROWS = 0
so that the CPU encoder runs its exact float path for quantized weights, dequantized tiles and
BLAS, instead of rounding activations to int8 (GEMM) or int16 (GEMV, which these 8 rows would
take)) builds a
tiny random encoder (8 mels, 16 frames -> T = 8 positions, D = 32, 2 heads, 2 blocks) three
times: float32 matrices, Q8_0 and Q4_0 ones (`quant.quantize` of the same kind of random
matrices, held as `QTensor`s in the `Linear`s). Each is run by the CPU `AudioEncoder` and by
`GpuAudioEncoder` (small launch shapes keep the simulator fast) on the same random mel, and both
are compared with a float64 evaluation of the blocks (`ref` formulas, the same dequantized
weights, from the same float32 embedded input: the convolutions run on the CPU in both).

Tolerance, with u = 2^-24 and gamma(n) = n u / (1 - n u) (a float32 n-term sum's relative error
bound, Higham 3.1): 4 L gamma(K) max|y|, K = 4 D the longest sum (fc2; the others are D or T
long) and L the number of blocks. Each block has two residual branches, each ending in a chain
of matrix products whose sums differ in order between the two devices (2 gamma(K) relative in
the GEMM kernel test); LayerNorm in front of each branch and at the end renormalises, and the
weights (std K^-1/2, gains ~1) keep each branch's gain about 1, so the per-block first-order
error stays within 4 gamma(K) of the output scale. This is a bound on first-order error
growth, not a rigorous one for any weights; the script records `ratio` = max |a - b| / bound
for GPU vs CPU, GPU vs float64 and CPU vs float64 (the bound must hold for the CPU encoder too,
so it is not tuned to the GPU). The negative check compares the GPU output with a CPU encoder
whose one fc2 weight moved by 0.5% of that matrix's largest value: the ratio must exceed 1.
"""

from __future__ import annotations

import json

import pytest

from ..nn import run_fresh

_SCRIPT = r"""
import json, math
import npasr
import numpy as np
from scipy.special import erf
from npasr.io.gguf import GGMLType
from npasr.models.whisper.gpu import GpuAudioEncoder, Launch
from npasr.nn import cuda_kernels as ck, ops, quant, ref
from npasr.nn.quant import QTensor
from tests.models.whisper_ref import random_encoder
from tests.nn.cuda_bounds import encoder as encoder_bound

assert ck.available()
ops.GEMV_MAX_ROWS = 0  # the CPU encoder's 8 rows take the exact tile path, not the int16 GEMV
N_MELS, D, H, L, T = 8, 32, 2, 2, 8
LAUNCH = Launch(threads=2, micro=8, bk=32, row_threads=4, elem_threads=256)
out = {}


def f64(lin):
    w = lin.weight.dequantize() if isinstance(lin.weight, QTensor) else lin.weight
    return w.astype(np.float64), lin.bias.astype(np.float64)


def reference(enc, x):  # the blocks and ln_post in float64, from the embedded input x (T, D)
    def ln(x, l):
        return ref.layer_norm(x, l.weight.astype(np.float64), l.bias.astype(np.float64), l.eps)

    def linear(x, lin):
        w, b = f64(lin)
        return x @ w.T + b

    x = x.astype(np.float64)
    for blk in enc.blocks:
        qkv = linear(ln(x, blk.attn_ln), blk.attn.qkv)
        q, k, v = (qkv[:, i * D : (i + 1) * D].reshape(T, H, -1).swapaxes(0, 1) for i in range(3))
        o = ref.attention(q, k, v).swapaxes(0, 1).reshape(T, D)
        x = x + linear(o, blk.attn.out)
        f = linear(ln(x, blk.mlp_ln), blk.mlp.fc1)
        x = x + linear(0.5 * f * (1 + erf(f / math.sqrt(2))), blk.mlp.fc2)
    return ln(x, enc.ln_post)


for seed, qtype in ((0, None), (1, GGMLType.Q8_0), (2, GGMLType.Q4_0)):
    name = "f32" if qtype is None else qtype.name
    enc, mel = random_encoder(np.random.default_rng(seed), N_MELS, D, H, L, T, qtype)
    gpu = GpuAudioEncoder.from_encoder(enc, LAUNCH)
    got = gpu(mel)
    cpu = enc(mel)
    want = reference(enc, gpu.embed(mel))
    assert got.shape == cpu.shape == (T, D) and got.dtype == np.float32
    bound = encoder_bound(want, L, D)
    for key, a, b in (("gpu_cpu", got, cpu), ("gpu_f64", got, want), ("cpu_f64", cpu, want)):
        out[f"{key}_{name}"] = float(np.abs(a.astype(np.float64) - b).max()) / bound
    if qtype is None:  # negative: one fc2 weight of the last block moved by 0.5% of max |w|
        w = enc.blocks[-1].mlp.fc2.weight
        w[3, 5] += np.float32(0.005) * np.abs(w).max()
        out["negative_gpu_cpu_bad_weight"] = float(np.abs(got - enc(mel)).max()) / bound
print(json.dumps(out))
"""

KINDS = ("f32", "Q8_0", "Q4_0")


@pytest.fixture(scope="module")
def results() -> dict[str, float]:
    run = run_fresh(_SCRIPT, NUMBA_ENABLE_CUDASIM="1", NPASR_INT8_GEMM="0")
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pair", ["gpu_cpu", "gpu_f64", "cpu_f64"])
def test_within_bound(results: dict[str, float], pair: str, kind: str) -> None:
    key = f"{pair}_{kind}"
    assert results[key] <= 1.0, f"{key}: error / bound = {results[key]:.3g}"


def test_the_bound_catches_a_wrong_weight(results: dict[str, float]) -> None:
    assert results["negative_gpu_cpu_bad_weight"] > 1.0


def test_device_cuda_without_a_gpu_is_a_clear_error() -> None:
    """No CUDA device here (outside the simulator): load_model(device="cuda") says so with an
    npasr error, which the CLI prints as one line; an unknown device is a ValueError."""
    import npasr
    from npasr.nn import cuda_kernels

    if cuda_kernels.available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(npasr.DeviceError, match="no CUDA device"):
        npasr.load_model("whisper-tiny.en", device="cuda")
    with pytest.raises(ValueError, match="device must be"):
        npasr.load_model("whisper-tiny.en", device="gpu0")


def test_device_cuda_puts_the_gpu_encoder_in_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wiring: with device="cuda" the model's encoder is the `GpuAudioEncoder` built from
    the loaded CPU encoder (its construction stubbed here: no GPU; the simulator test above
    checks the encoder itself)."""
    import npasr
    from npasr.models.whisper import gpu
    from npasr.models.whisper.model import AudioEncoder

    built = []

    def fake(enc: AudioEncoder) -> str:
        built.append(enc)
        return "gpu encoder"

    monkeypatch.setattr(gpu.GpuAudioEncoder, "from_encoder", staticmethod(fake))
    m = npasr.load_model("whisper-tiny.en", device="cuda")
    assert m.model.encoder == "gpu encoder"
    assert len(built) == 1 and isinstance(built[0], AudioEncoder)
