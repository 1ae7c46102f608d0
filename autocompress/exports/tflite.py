"""TFLite (LiteRT) export: the artifact as a .tflite flatbuffer, normalisation and action head inside.

Written here from the artifact's layers with the TFLite schema's object API (ai_edge_litert's
schema_py_generated), not by a converter: litert-torch / ai-edge-torch and TensorFlow's TFLiteConverter
pull TensorFlow or another torch than the one we pin. The same file runs in LiteRT's interpreter and in
TensorFlow Lite Micro's (`run_litert`, `run_tflm`, `tflm_arena_bytes`).

Input `obs`: float32, 1 x obs_dim (batch 1: TFLite Micro's tensors have static shapes). Output `action`:
an int32 index (ARG_MAX, first maximum wins as in the runtimes) or float32 1 x act_dim squashed and mapped
onto the env's bounds as onnx.py does. Normalisation is SUB mean, MUL 1/std (and MINIMUM / MAXIMUM for its
clip). Layers are FULLY_CONNECTED (weights out x in); relu fused, tanh a TANH op, silu LOGISTIC + MUL, elu
ELU, leaky_relu LEAKY_RELU (slope 0.01). A continuous head's last layer keeps only the mean's rows.

fp32 (`to_tflite(data)`): the decoded fp32 net (`Layer.w`), whatever its stored form.

int8 (`to_tflite(data, int8=True)`), full-integer where every layer is int8-representable (`int8_only`), with
the integer-only net's calibrated scales (header `iq`, `artifact.calibrate`), following TFLite's int8 spec:
  input    normalised in fp32, clamped to +-127 s_x (intq's clamp; QUANTIZE alone would also give -128),
           QUANTIZE to int8 (scale s_x, zero point 0). Not folded into the first layer's weights: that would
           change which codes the layer stores, and the integer-only net rounds the normalised input too;
  hidden   FULLY_CONNECTED int8 x int8, weights per output channel (quantized_dimension 0, the layer's
           symmetric scales, zero point 0), bias int32 at s_w s_x, output int8 at the calibrated
           pre-activation scale s_p, zero point 0 (relu fused); tanh a TANH op whose output TFLite fixes at
           scale 1/128, zero point 0 (TFLite Micro's fixed-point kernel assumes it); silu's LOGISTIC at 1/256,
           zero point -128 (TFLite's rule), its MUL and ELU / LEAKY_RELU at intq's max|f| / 127;
  output   DEQUANTIZE, then the last layer in fp32 (its int8 codes times their scales) and the head. The
           calibration has no output range (the integer-only net keeps the last layer's int32 sums, HEAD_SCALE),
           and int8's 255 levels would tie or saturate the logits; the cost is out x in floats, e.g. 2 x 256.
TFLite's requantization (31-bit multipliers, rounding half away from zero) and its tanh differ from intq's
(15-bit multipliers, halves up; a table at max|tanh| / 127): an activation sometimes lands one int8 step away,
so actions agree with intq.forward's up to that (tests/test_tflite.py measures how often).

Operator codes say version 1; LiteRT and TFLite Micro choose kernels by tensor types, not by that number.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb

from autocompress import intq
from autocompress.layers import int8_only, layers_of
from autocompress.runtime import read_artifact

#: the activations this export writes (as TFLite ops, see the module's docstring)
ACTIVATIONS = ("tanh", "relu", "silu", "elu", "leaky_relu", "none")
_TYPES = {np.dtype(np.float32): fb.TensorType.FLOAT32, np.dtype(np.int8): fb.TensorType.INT8,
          np.dtype(np.int32): fb.TensorType.INT32}
#: TFLite's fixed int8 output quantization (scale, zero point) for these ops
TANH_Q, LOGISTIC_Q = (1 / 128, 0), (1 / 256, -128)
#: TFLite Micro's arena for running a model (what it used is `tflm_arena_bytes`)
ARENA = 1 << 20


class _Buffer(fb.BufferT):
    """A constant's bytes aligned to 16 in the file: TFLite Micro reads weights in place, word by word."""

    def Pack(self, builder):
        data = None
        if self.data is not None:
            raw = self.data.tobytes()
            builder.StartVector(1, len(raw), 16)
            builder.head -= len(raw)
            builder.Bytes[builder.head:builder.head + len(raw)] = raw
            data = builder.EndVector()
        fb.BufferStart(builder)
        if data is not None:
            fb.BufferAddData(builder, data)
        return fb.BufferEnd(builder)


class _Graph:
    def __init__(self):
        self.tensors, self.buffers, self.ops, self.codes = [], [_Buffer()], [], []  # buffer 0: the empty one

    def tensor(self, shape, dtype=np.float32, data=None, q: tuple | None = None) -> int:
        """A tensor (a constant when `data` is given); q: (scales, zero points) and per-channel axis 0."""
        t = fb.TensorT()
        t.shape, t.type, t.hasRank = np.asarray(shape, np.int32), _TYPES[np.dtype(dtype)], True
        t.name = f"t{len(self.tensors)}"
        if data is not None:
            buf = _Buffer()
            buf.data = np.ascontiguousarray(data, dtype)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        if q is not None:
            t.quantization = fb.QuantizationParametersT()
            scale, zero = q
            t.quantization.scale = [float(s) for s in np.atleast_1d(scale)]
            t.quantization.zeroPoint = [int(z) for z in np.broadcast_to(zero, np.shape(np.atleast_1d(scale)))]
        self.tensors.append(t)
        return len(self.tensors) - 1

    def const(self, value, dtype=np.float32, q=None) -> int:
        value = np.asarray(value, dtype)
        return self.tensor(value.shape, dtype, value, q)

    def op(self, name: str, inputs: list[int], shape, dtype=np.float32, q=None, options=None) -> int:
        """Append operator `name` (BuiltinOperator's) and return its output tensor."""
        code = getattr(fb.BuiltinOperator, name)
        if code not in self.codes:
            self.codes.append(code)
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs = self.codes.index(code), list(inputs)
        o.outputs = [self.tensor(shape, dtype, q=q)]
        if options is not None:
            o.builtinOptionsType = getattr(fb.BuiltinOptions, type(options).__name__[:-1])
            o.builtinOptions = options
        self.ops.append(o)
        return o.outputs[0]

    def binary(self, name: str, x: int, value, shape) -> int:
        """x (fp32) op a constant, broadcast along the batch."""
        return self.op(name, [x, self.const(np.reshape(value, (1, -1)))], shape)

    def finish(self, inputs: list[int], outputs: list[int]) -> bytes:
        model = fb.ModelT()
        model.version, model.description, model.buffers = 3, "autocompress policy", self.buffers
        model.operatorCodes = []
        for code in self.codes:
            c = fb.OperatorCodeT()
            c.builtinCode, c.deprecatedBuiltinCode = code, min(code, 127)  # codes above 127: the int32 field only
            model.operatorCodes.append(c)
        sub = fb.SubGraphT()
        sub.tensors, sub.operators, sub.inputs, sub.outputs, sub.name = self.tensors, self.ops, inputs, outputs, "main"
        model.subgraphs = [sub]
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def _fc(activation: str = "none"):
    opt = fb.FullyConnectedOptionsT()
    opt.fusedActivationFunction = fb.ActivationFunctionType.RELU if activation == "relu" else 0
    return opt


def _leaky():
    opt = fb.LeakyReluOptionsT()
    opt.alpha = 0.01  # torch's default slope, as layers.ACTIVATIONS
    return opt


def _activation(g: _Graph, x: int, act: str, shape) -> int:
    """An fp32 activation after a FULLY_CONNECTED (relu is fused into it)."""
    if act in ("relu", "none"):
        return x
    if act == "tanh":
        return g.op("TANH", [x], shape)
    if act == "silu":
        return g.op("MUL", [x, g.op("LOGISTIC", [x], shape)], shape, options=fb.MulOptionsT())
    if act == "elu":
        return g.op("ELU", [x], shape)
    if act == "leaky_relu":
        return g.op("LEAKY_RELU", [x], shape, options=_leaky())
    raise AssertionError(act)  # to_tflite checked the activations


def _int8_activation(g: _Graph, x: int, act: str, shape, s_p: float) -> tuple[int, float]:
    """An int8 activation of pre-activations at scale s_p: (its output, that output's scale)."""
    if act in ("relu", "none"):
        return x, s_p
    if act == "tanh":
        return g.op("TANH", [x], shape, np.int8, TANH_Q), TANH_Q[0]
    s = intq.activation_table(act, s_p)[1]
    if act == "silu":
        sig = g.op("LOGISTIC", [x], shape, np.int8, LOGISTIC_Q)
        return g.op("MUL", [x, sig], shape, np.int8, (s, 0), fb.MulOptionsT()), s
    if act == "elu":
        return g.op("ELU", [x], shape, np.int8, (s, 0)), s
    return g.op("LEAKY_RELU", [x], shape, np.int8, (s, 0), _leaky()), s


def _dense(g: _Graph, x: int, w: np.ndarray, b: np.ndarray | None, act: str) -> int:
    """fp32 FULLY_CONNECTED, w input-major as Layer.w (TFLite stores out x in)."""
    shape = [1, w.shape[1]]
    bias = -1 if b is None else g.const(b)  # -1: TFLite's absent optional input
    y = g.op("FULLY_CONNECTED", [x, g.const(w.T), bias], shape, options=_fc(act))
    return _activation(g, y, act, shape)


def _clamp(g: _Graph, x: int, lo, hi, shape) -> int:
    return g.binary("MAXIMUM", g.binary("MINIMUM", x, hi, shape), lo, shape)


def _head(g: _Graph, x: int, head: dict) -> int:
    if head["kind"] == "discrete":
        opt = fb.ArgMaxOptionsT()
        opt.outputType = fb.TensorType.INT32
        return g.op("ARG_MAX", [x, g.const([1], np.int32)], [1], np.int32, options=opt)
    d = int(head["act_dim"])
    shape = [1, d]
    low, high = np.asarray(head["low"], np.float32), np.asarray(head["high"], np.float32)
    squash = head.get("squash", "none")
    if squash == "none":
        return _clamp(g, x, low, high, shape)
    a = g.op("TANH", [x], shape) if squash == "tanh" else _clamp(g, x, -1.0, 1.0, shape)
    half = g.binary("MUL", g.binary("ADD", a, 1.0, shape), 0.5 * (high - low), shape)
    return g.binary("ADD", half, low, shape)


def to_tflite(data: bytes, int8: bool = False) -> bytes:
    """The .tflite flatbuffer of an MLP artifact: fp32, or full-integer int8 (see the module's docstring)."""
    header, blob = read_artifact(data)
    layers = layers_of(header, blob)
    if any(layer.conv is not None for layer in layers):
        raise ValueError("conv policies: not yet in the tflite export")
    head, norm, cal = header["head"], header.get("obs_norm"), header.get("iq")
    for act in {layer.act for layer in layers} - set(ACTIVATIONS):
        raise ValueError(f"activation {act!r}: not in the tflite export ({', '.join(ACTIVATIONS)})")
    if int8 and not int8_only(layers):
        raise ValueError("tflite-int8 needs every layer int8-representable (k-bit quantized, k <= 8 symmetric or "
                         "<= 7 asymmetric); export 'tflite' (fp32) for this artifact")
    if int8 and cal is None:
        raise ValueError("tflite-int8 needs the artifact's int8 activation scales: run "
                         "autocompress.artifact.calibrate(data, obs) with teacher-visited observations first")
    g = _Graph()
    n = int(header["obs_dim"])
    obs = x = g.tensor([1, n])
    clip = np.inf
    if norm is not None:
        x = g.binary("MUL", g.binary("SUB", x, norm["mean"], [1, n]), 1.0 / np.asarray(norm["std"], np.float64), [1, n])
        clip = norm.get("clip") or np.inf
    if int8:
        s_x = float(cal["x"])
        clip = min(clip, 127 * s_x)
    if clip < np.inf:
        x = _clamp(g, x, -clip, clip, [1, n])
    last = layers[-1]
    if int8:
        x = g.op("QUANTIZE", [x], [1, n], np.int8, (s_x, 0))
        for layer, s_p in zip(layers[:-1], cal["p"]):
            q, s_w = layer.int8()
            s_w = np.where(s_w > 0, s_w, 1).astype(np.float32)  # an all-zero row: any scale
            s_acc = s_w.astype(np.float64) * np.float32(s_x)
            b = np.zeros(len(q)) if layer.b is None else layer.b
            bias = g.const(np.clip(np.rint(b / s_acc), -intq.BIAS_LIMIT, intq.BIAS_LIMIT), np.int32, (s_acc, 0))
            shape = [1, len(q)]
            x = g.op("FULLY_CONNECTED", [x, g.const(q, np.int8, (s_w, 0)), bias], shape, np.int8, (s_p, 0),
                     _fc(layer.act))
            x, s_x = _int8_activation(g, x, layer.act, shape, float(s_p))
        x = g.op("DEQUANTIZE", [x], [1, last.shape[1]])
    else:
        for layer in layers[:-1]:
            x = _dense(g, x, layer.w, layer.b, layer.act)
    w, b = last.w, last.b
    if head["kind"] != "discrete":  # the mean's rows only
        d = int(head["act_dim"])
        w, b = w[:, :d], None if b is None else b[:d]
    return g.finish([obs], [_head(g, _dense(g, x, w, b, last.act), head)])


def write_tflite(data: bytes, path: str | Path, int8: bool = False) -> Path:
    path = Path(path)
    path.write_bytes(to_tflite(data, int8))
    return path


# -- verification: the same file in LiteRT's and TensorFlow Lite Micro's interpreters --------------------

def _act_all(set_input, invoke, get_output, obs: np.ndarray) -> np.ndarray:
    out = []
    for o in np.asarray(obs, np.float32).reshape(len(obs), -1):
        set_input(o[None])
        invoke()
        out.append(np.array(get_output()).reshape(-1))
    got = np.array(out)
    return got[:, 0] if got.shape[1] == 1 and got.dtype.kind == "i" else got


def run_litert(model: bytes, obs: np.ndarray) -> np.ndarray:
    """Actions for rows of observations in LiteRT's interpreter (its default CPU kernels), one at a time."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model)
    it.allocate_tensors()
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    return _act_all(lambda x: it.set_tensor(i, x), it.invoke, lambda: it.get_tensor(o), obs)


def _tflm(model: bytes):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(model, arena_size=ARENA)


def run_tflm(model: bytes, obs: np.ndarray) -> np.ndarray:
    """Actions for rows of observations in TensorFlow Lite Micro's interpreter (its reference kernels)."""
    it = _tflm(model)
    return _act_all(lambda x: it.set_input(x, 0), it.invoke, lambda: it.get_output(0), obs)


@contextlib.contextmanager
def _stderr_to(f):
    """The process's stderr (fd 2: TFLite Micro's C++ prints there) into file f."""
    saved = os.dup(2)
    os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def tflm_arena_bytes(model: bytes) -> int:
    """Arena bytes TensorFlow Lite Micro's allocator took for this model after one act (its
    RecordingMicroAllocator's total: tensors, per-op data, scratch; the weights stay in the flatbuffer).
    On this host's build: pointers there are 64-bit, so a 32-bit MCU's arena is somewhat smaller."""
    it = _tflm(model)
    it.set_input(np.zeros(it.get_input_details(0)["shape"], np.float32), 0)
    it.invoke()
    with tempfile.TemporaryFile("w+") as f:
        with _stderr_to(f):
            it.print_allocations()
        f.seek(0)
        found = re.search(r"Arena allocation total (\d+) bytes", f.read())
    if found is None:
        raise RuntimeError("TFLite Micro printed no arena total")
    return int(found.group(1))
