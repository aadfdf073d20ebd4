"""Family-agnostic weight plumbing: rename tables, strict name/shape checks, a prefixed view.

A rename table is a list of `(regex, template)` pairs applied in order, first match wins
(whisper.cpp `*-arch.h`, one table per foreign naming scheme). A template is one of

    "encoder.blocks.\\1.attn.query.weight"   plain rename (`re.Match.expand` syntax); when the
                                             regex matches a prefix, the rest of the name is kept
    "a.weight + b.weight + c.weight"         a fused tensor split into equal parts along axis 0;
                                             a part written "0" must be all zeros and is dropped
                                             (CTranslate2 pads the missing Whisper key bias)
    "=decoder.token_embedding.weight"        a tied copy: must equal that tensor, then dropped

`storage_for` is the one per-tensor storage rule every converter uses (f32, f16 or a GGML quant).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from npasr.io.gguf import GGML_BLOCK, GGMLType, RawTensor
from npasr.types import ModelFileError

NameTable = list[tuple[str, str]]


def apply_name_table(
    tensors: Mapping[str, np.ndarray], table: NameTable, *, source: str
) -> dict[str, np.ndarray]:
    """Rename every tensor through `table`; any name no rule matches is an error."""
    rules = [(re.compile(p), t) for p, t in table]
    out: dict[str, np.ndarray] = {}
    ties: list[tuple[str, str]] = []
    unmatched = []
    for name, a in tensors.items():
        hit = next(((m, t) for rx, t in rules if (m := rx.match(name))), None)
        if hit is None:
            unmatched.append(name)
            continue
        m, template = hit
        tail = name[m.end() :]  # a rule may match a prefix only: the rest is kept
        if template.startswith("="):
            ties.append((name, m.expand(template[1:]) + tail))
            continue
        targets = [m.expand(t.strip()) + tail for t in template.split(" + ")]
        if a.shape[0] % len(targets):
            raise ModelFileError(f"{source}: {name} {a.shape} does not split into {len(targets)}")
        for target, part in zip(targets, np.split(a, len(targets)), strict=True):
            if target == "0" + tail:
                if np.any(part):
                    raise ModelFileError(f"{source}: {name}: the part that must be zero is not")
                continue
            if target in out:
                raise ModelFileError(f"{source}: two source tensors map to {target}")
            out[target] = part
    if unmatched:
        raise ModelFileError(f"{source}: no rename rule for tensors: {', '.join(unmatched)}")
    for name, target in ties:
        if target not in out or not np.array_equal(tensors[name], out[target]):
            raise ModelFileError(f"{source}: {name} should be tied to {target} but differs")
    return out


def check_names_and_shapes(
    tensors: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]], *, source: str
) -> None:
    """Strict load: every expected name present with its shape, nothing left over."""
    missing = [k for k in expected if k not in tensors]
    unused = [k for k in tensors if k not in expected]
    wrong = [
        f"{k}: expected {expected[k]}, got {tensors[k].shape}"
        for k in expected
        if k in tensors and tuple(tensors[k].shape) != tuple(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {', '.join(missing[:20])}")
    if unused:
        problems.append(f"unused {len(unused)}: {', '.join(unused[:20])}")
    if wrong:
        problems.append(f"wrong shape: {'; '.join(wrong[:20])}")
    if problems:
        raise ModelFileError(
            f"{source}: tensors do not match the architecture: " + " | ".join(problems)
        )


# ------------------------------------------------------------------------ storage types (GGUF out)

# Version of npasr's GGUF conventions and conversion rules, written as `npasr.format_version`.
# Bump it whenever a converter would write a different file for the same source (a new storage
# rule, a renamed key): the hub then rebuilds cached conversions made by older code.
FORMAT_VERSION = 7

# GGML ftype recorded in general.file_type (llama.h llama_ftype: 0 ALL_F32, 1 MOSTLY_F16,
# 7 MOSTLY_Q8_0, 2 MOSTLY_Q4_0, 15 MOSTLY_Q4_K_M-like: Q4_K matrices)
FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7, "q4_0": 2, "q4_k": 15}
QUANT_WTYPES = {"q8_0": GGMLType.Q8_0, "q4_0": GGMLType.Q4_0, "q4_k": GGMLType.Q4_K}


def check_wtype(wtype: str) -> None:
    if wtype not in FILE_TYPES:
        choices = ", ".join(FILE_TYPES)
        raise ModelFileError(f"unknown weight type {wtype!r}; choose one of {choices}")


def storage_for(
    name: str,
    a: np.ndarray,
    wtype: str,
    keep_float: re.Pattern[str],
    keep_f32: re.Pattern[str] | None = None,
    q8_0: re.Pattern[str] | None = None,
    importance: Callable[[str], np.ndarray | None] | None = None,
) -> np.ndarray | RawTensor:
    """How tensor `name` is stored in a `wtype` file.

    * f32: everything float32.
    * f16: tensors with ndim >= 2 in float16; 1-D gains/biases, and names matching `keep_f32`
      (added tables, mel buffers), stay float32.
    * q8_0 / q4_0 / q4_k: a matrix (2-D, or a kernel-1 convolution (O, I, 1), which is the same
      matrix) whose name does not match `keep_float` is quantized when its width is a multiple
      of the block size. Q4_K super-blocks span 256 weights, so narrower widths use Q5_0 (as
      llama.cpp does: the 32-block type nearest in accuracy, 5.5 bits a weight). A
      quantized kernel-1 convolution is stored as its (O, I) matrix. Names matching `q8_0`
      (e.g. a tied embedding/output table, whose logits decide every token) are Q8_0 in every
      quantized type. Everything else as in f16.
    * importance(name) -> (K,) input-channel weights or a (K, K) input second moment
      (`npasr.nn.calibration`) or None, asked only for a matrix whose type takes them
      (`quant.WEIGHTED_TYPES`: Q4_0, Q5_0, Q4_K, Q5_K), so statistics that cost a forward
      pass are computed only when some tensor uses them; such a matrix is quantized to
      minimise the error of its products (`quant.quantize(importance=)`) instead of with the
      plain rule.
    """
    check_wtype(wtype)
    qtype = QUANT_WTYPES.get(wtype)
    matrix = a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 1)
    if qtype is not None and matrix and not keep_float.search(name):
        if q8_0 is not None and q8_0.search(name):
            qtype = GGMLType.Q8_0
        width = a.shape[1]
        if qtype == GGMLType.Q4_K and width % GGML_BLOCK[qtype][0]:
            qtype = GGMLType.Q5_0
        if width % GGML_BLOCK[qtype][0] == 0:
            from npasr.nn.quant import WEIGHTED_TYPES, quantize  # noqa: PLC0415 (nn.quant imports io)

            imp = importance(name) if importance and qtype in WEIGHTED_TYPES else None
            q = quantize(np.asarray(a[..., 0] if a.ndim == 3 else a, np.float32), qtype, imp)
            return RawTensor(qtype, q.shape, q.blocks.reshape(-1))
    half = wtype != "f32" and a.ndim >= 2 and not (keep_f32 and keep_f32.search(name))
    return np.ascontiguousarray(a, dtype=np.float16 if half else np.float32)


def write_model_gguf(
    out: str | os.PathLike[str], arch: str, wtype: str, tensors: Mapping[str, np.ndarray], *,
    keep_float: re.Pattern[str], keep_f32: re.Pattern[str] | None,
    q8_0: re.Pattern[str] | None = None, config: dict[str, Any],
    source: str, tokens: list[str], sentencepiece: bytes | None = None, tokenizer: str = "",
) -> Path:  # fmt: skip
    """A family's GGUF: tensors stored by `storage_for`, the general/npasr keys, the family's
    config keys, the token list and (SentencePiece families) the tokenizer model's bytes."""
    from npasr.io.gguf import write_gguf  # noqa: PLC0415

    check_wtype(wtype)
    stored = {n: storage_for(n, a, wtype, keep_float, keep_f32, q8_0) for n, a in tensors.items()}
    meta: dict[str, Any] = {
        "general.name": source.split(":", 1)[-1],
        "general.file_type": FILE_TYPES[wtype],
        "npasr.format_version": FORMAT_VERSION,
        "npasr.source": source,
        **config,
        "tokenizer.ggml.model": tokenizer or ("sentencepiece" if sentencepiece else "chars"),
    }
    if sentencepiece is not None:
        meta["tokenizer.sentencepiece.model"] = np.frombuffer(sentencepiece, np.uint8)
    return write_gguf(out, arch, meta, stored, tokens=tokens)


class Weights:
    """A prefixed, strict view of a tensor dict that records which names were read (candle vb.pp).

    `w.sub("encoder").sub("conv1")["weight"]` reads `encoder.conv1.weight`; `assert_all_used()`
    at the end of a model's `load()` fails on tensors nobody read (nanoGPT's key-count assert).
    """

    def __init__(
        self,
        tensors: Mapping[str, np.ndarray],
        prefix: str = "",
        *,
        origin: str = "weights",
        _used: set[str] | None = None,
    ) -> None:
        self._tensors, self._prefix, self.origin = tensors, prefix, origin
        self._used: set[str] = set() if _used is None else _used

    def sub(self, name: str | int) -> Weights:
        return Weights(
            self._tensors, f"{self._prefix}{name}.", origin=self.origin, _used=self._used
        )

    def __getitem__(self, name: str) -> np.ndarray:
        key = self._prefix + name
        if key not in self._tensors:
            near = difflib.get_close_matches(key, list(self._tensors), n=3)
            raise ModelFileError(f"{self.origin}: no tensor {key!r}; near misses: {near}")
        self._used.add(key)
        return self._tensors[key]

    def f32(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The tensor as a float32 array of its own (f16 storage is widened once, here),
        shape-checked if given. Never a view of the file: after a model's load nothing reads
        the file's pages again (`GGUFFile.release_pages`), where a bias read in place would map
        its neighbours back too; Linux maps a file a whole page-cache folio at a time, up to
        4 MiB here (kernel 6.18: one decoder layer norm brought in 4 MiB of quantized weights)."""
        a = self[name]
        if not isinstance(a, np.ndarray):  # a quantized tensor where a float one is needed
            from npasr.nn.quant import QTensor

            a = QTensor.from_raw(a).dequantize()
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise ModelFileError(
                f"{self.origin}: {self._prefix + name} has shape {tuple(a.shape)}, expected {shape}"
            )
        return np.array(a, dtype=np.float32)

    def has(self, name: str) -> bool:
        return self._prefix + name in self._tensors

    __contains__ = has

    def assert_all_used(self) -> None:
        unused = sorted(set(self._tensors) - self._used)
        if unused:
            raise ModelFileError(
                f"{self.origin}: {len(unused)} tensors were never used: {', '.join(unused[:20])}"
            )
