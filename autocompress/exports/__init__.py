"""What a user ships, from one artifact: .acz (autocompress's runtimes), C source, ONNX, TFLite.

`kernels` is the trial's recorded per-layer choice: 'acz', 'c' and 'onnx' act as the runtime did
with those kernels, and the C export stores each layer in the form its kernel reads (so it runs
at the in-process kernel's speed). Without a recorded choice, C takes each layer's smallest fast
form (exports.c.compact_kernels) and ONNX the fp32 net. 'onnx-int8' runs every layer whose codes
fit int8 in integer arithmetic, i.e. acts as the runtime with `int8_kernels(data)`. 'tflite' is the fp32 net (MLP or conv),
'tflite-int8' the integer-only net of a calibrated artifact (exports/tflite.py), for LiteRT and TFLite Micro.
'pte' the fp32 net as an XNNPACK-delegated ExecuTorch program, 'pte-int8' its int8 layers through ExecuTorch's
XNNPACK quantizer (dynamic int8: acts as the runtime with `int8_kernels(data)` up to the inputs' rounding;
exports/pte.py).
tests/test_exports.py, tests/test_tflite.py and tests/test_pte.py check each on 1,000 observations.

A recurrent (LSTM / GRU) artifact exports as 'acz', 'c' (host and MCU targets: the fp32 cell, the state in
static buffers, policy_reset()) and 'onnx' (fp32 cell; the state an explicit input and output); the others are
one clear error each (tests/test_recurrent_exports.py).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from autocompress.exports.c import HOST_CFLAGS, write_c, write_makefile
from autocompress.layers import check_kernels, compact_kernels, layers_of, recurrent_of
from autocompress.runtime import read_artifact

FORMATS = {"acz": "the artifact file (autocompress.Policy.load)", "c": "a directory: policy.c, policy.h, main.c",
           "onnx": "an ONNX graph (fp32; int8 layers where the trial ran them)",
           "onnx-int8": "an ONNX graph, int8 weights and integer MatMul wherever the codes fit int8",
           "tflite": "a TFLite flatbuffer for LiteRT / TFLite Micro (fp32)",
           "tflite-int8": "a full-integer int8 TFLite flatbuffer (int8 layers, artifact.calibrate's scales)",
           "pte": "an ExecuTorch program for its XNNPACK backend (fp32)",
           "pte-int8": "an ExecuTorch program, int8 layers through XNNPACK's quantizer (dynamic int8)"}


def act_all(act, obs: np.ndarray) -> np.ndarray:
    """Actions of act(one observation) on each of `obs`: indices (discrete) or rows of floats."""
    got = np.array([np.asarray(act(o)).reshape(-1) for o in np.asarray(obs, np.float32)])
    return got[:, 0] if got.shape[1] == 1 and got.dtype.kind == "i" else got


def int8_kernels(data: bytes) -> list[str]:
    """The int8 kernel on every layer that may run it, dense elsewhere (what 'onnx-int8' computes)."""
    return ["int8" if "int8" in layer.kernels() else "dense" for layer in layers_of(*read_artifact(data))]


def write(data: bytes, fmt: str, output: str | Path, kernels: list[str] | None = None,
          smallest: bool = False, target: str = "host", obs=None) -> list[Path]:
    """Write `data` (an .acz artifact) as `fmt` to `output` (a directory for 'c', else a file).
    `smallest` (C only): every layer in its smallest stored form (k-bit codes packed as in the
    artifact), for the least flash at some speed; int8 layers stay int8. `target` (C only): the Makefile's
    compiler and flags, those the figures were measured with (`kernels`: those the trial chose there). `obs`
    ('tflite-int8' only): raw observations (e.g. teacher-visited states) that give the int8 activation scales
    where the artifact has none (conv nets, uncalibrated MLPs)."""
    output = Path(output)
    if fmt == "acz":  # the artifact as it is: nothing to parse
        output.write_bytes(data)
        return [output]
    header, blob = read_artifact(data)
    layers, rnn = layers_of(header, blob, recurrent=True), recurrent_of(header, blob)
    if rnn is not None:
        _check_recurrent(fmt, rnn.cell)
    kernels = check_kernels(layers, kernels, rnn)
    if fmt == "c":
        rnn_kernels = None
        if smallest:
            small = ("dense", "csr", "q8", "packed")
            kernels = compact_kernels(layers, kernels, small)
            rnn_kernels = rnn.kernels(small) if rnn is not None else None
        paths = write_c(data, output, kernels or compact_kernels(layers), rnn_kernels)
        return paths + [write_makefile(output, target)]
    if fmt in ("onnx", "onnx-int8"):
        from autocompress.exports.onnx import write_onnx  # deferred (heavy): onnx

        return [write_onnx(data, output, int8_kernels(data) if fmt == "onnx-int8" else kernels)]
    if fmt in ("tflite", "tflite-int8"):
        from autocompress.exports.tflite import write_tflite  # deferred: LiteRT, the [tflite] extra

        return [write_tflite(data, output, int8=fmt == "tflite-int8", obs=obs)]
    if fmt in ("pte", "pte-int8"):
        from autocompress.exports.pte import write_pte  # deferred: ExecuTorch, the [executorch] extra

        return [write_pte(data, output, int8=fmt == "pte-int8")]
    raise ValueError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}")


def _check_recurrent(fmt: str, cell: str) -> None:
    """One clear error where an export of a recurrent net would not carry its cell and state."""
    if fmt not in ("c", "onnx") and fmt in FORMATS:
        raise ValueError(f"format {fmt!r}: a recurrent ({cell}) net exports as acz, c or onnx (fp32) so far; "
                         f"{fmt} does not carry its state yet")


def flash_size(c_dir: str | Path, cc: str | None = None) -> dict[str, int]:
    """Sections of policy.c compiled for this machine as its Makefile builds it (exports.c.HOST_CFLAGS;
    `size`): text (code + the const weights, i.e. flash) and bss (static scratch, i.e. RAM)."""
    c_dir = Path(c_dir)
    cc = cc or shutil.which("cc") or "gcc"
    obj = c_dir / "policy.o"
    subprocess.run([cc, *HOST_CFLAGS, "-c", str(c_dir / "policy.c"), "-o", str(obj)], check=True,
                   capture_output=True)
    text, data, bss = subprocess.run(["size", str(obj)], check=True, capture_output=True,
                                     text=True).stdout.splitlines()[1].split()[:3]
    obj.unlink()
    return {"text": int(text), "data": int(data), "bss": int(bss)}
