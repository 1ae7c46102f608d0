"""TFLite (LiteRT) export: the artifact as a .tflite flatbuffer, normalisation and action head inside.

Written here from the artifact's layers with the TFLite schema's object API (ai_edge_litert's
schema_py_generated), not by a converter: litert-torch / ai-edge-torch and TensorFlow's TFLiteConverter
pull TensorFlow or another torch than the one we pin. The same file runs in LiteRT's interpreter and in
TensorFlow Lite Micro's (`run_litert`, `run_tflm`, `tflm_arena_bytes`).

Input `obs`: float32, 1 x obs_dim (batch 1: TFLite Micro's tensors have static shapes); for a conv net 1 x the
env's observation shape (H x W x C channels-last, TFLite's own NHWC; C x H x W channels-first, a TRANSPOSE to NHWC
after the normalisation). Output `action`: an int32 index (ARG_MAX, first maximum wins as in the runtimes) or
float32 1 x act_dim squashed and mapped onto the env's bounds as onnx.py does. Normalisation is SUB mean, MUL
1/std (and MINIMUM / MAXIMUM for its clip). Layers are FULLY_CONNECTED (weights out x in) or CONV_2D (filters
out x kh x kw x C; the geometry's pads as TFLite's SAME or VALID where they are those, else an explicit PAD then
VALID), after the last conv a TRANSPOSE to NCHW and a RESHAPE: the channel-first order the next Linear reads.
relu fused, tanh a TANH op, silu LOGISTIC + MUL, elu ELU, leaky_relu LEAKY_RELU (slope 0.01). A continuous
head's last layer keeps only the mean's rows.

fp32 (`to_tflite(data)`): the decoded fp32 net (`Layer.w`), whatever its stored form.

int8 (`to_tflite(data, int8=True)`), full-integer where every layer (Linear or conv) is int8-representable
(`Layer.int8`), with the integer-only net's calibrated scales (header `iq`, `artifact.calibrate`), or, where the
artifact has none (an uncalibrated artifact, e.g. a host trial's),
the same scales from raw observations given to `to_tflite(data, True, obs)` (`artifact.int8_activation_scales`,
the fp32 net's activations; `Run.export` gives the teacher-visited states of the trial's spec). TFLite's int8 spec:
  input    normalised in fp32, clamped to +-127 s_x (intq's clamp; QUANTIZE alone would also give -128),
           QUANTIZE to int8 (scale s_x, zero point 0). Not folded into the first layer's weights: that would
           change which codes the layer stores, and the integer-only net rounds the normalised input too;
  hidden   FULLY_CONNECTED / CONV_2D int8 x int8, weights per output channel (quantized_dimension 0, the layer's
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
from autocompress.artifact import int8_activation_scales
from autocompress.conv import out_hw, same_pad
from autocompress.exports import act_all
from autocompress.layers import int8_representable, layers_of
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
        """x (fp32, of `shape`) op a constant: one of x's shape (batch 1), else broadcast along x's last axis."""
        v = np.asarray(value, np.float32)
        v = v.reshape(shape) if v.size == np.prod(shape) else v.reshape([1] * (len(shape) - 1) + [-1])
        return self.op(name, [x, self.const(v)], shape)

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


def _weights(g: _Graph, layer, s_x: float | None) -> tuple[int, int]:
    """(weights, bias) of a hidden layer: fp32 (s_x None), or int8 per output channel with an int32 bias at
    s_w s_x (s_x: the layer input's scale). Out x in for FULLY_CONNECTED, OHWI filters for CONV_2D."""
    geo, n_out = layer.conv, layer.shape[0]
    b = np.zeros(n_out, np.float32) if layer.b is None else layer.b  # (TFLite Micro's conv wants a bias)
    if s_x is None:
        w, dtype, q = layer.w.T, np.float32, None
        bias = -1 if layer.b is None and geo is None else g.const(b)  # -1: TFLite's absent optional input
    else:
        w, s_w = layer.int8()
        s_w = np.where(s_w > 0, s_w, 1).astype(np.float32)  # an all-zero row: any scale
        s_acc = s_w.astype(np.float64) * np.float32(s_x)
        dtype, q = np.int8, (s_w, 0)
        bias = g.const(np.clip(np.rint(b / s_acc), -intq.BIAS_LIMIT, intq.BIAS_LIMIT), np.int32, (s_acc, 0))
    if geo is not None:  # rows in (C, kh, kw) order -> out x kh x kw x C
        w = w.reshape(n_out, geo["in_shape"][0], *geo["kernel"]).transpose(0, 2, 3, 1)
    return g.const(w, dtype, q), bias


def _transpose(g: _Graph, x: int, perm: list[int], shape, dtype=np.float32, q=None) -> tuple[int, list[int]]:
    """x (of `shape`) transposed by perm: (the tensor, its shape)."""
    out = [shape[i] for i in perm]
    return g.op("TRANSPOSE", [x, g.const(perm, np.int32)], out, dtype, q), out


def _conv(g: _Graph, x: int, layer, weights: tuple[int, int], shape, dtype, q_in, q_out) -> tuple[int, list[int]]:
    """CONV_2D on NHWC x (of `shape`) with the geometry's pads: TFLite's SAME or VALID where they are those,
    else an explicit PAD then VALID (e.g. pads set by hand). (The output, its shape.)"""
    geo = layer.conv
    c, h, w = geo["in_shape"]
    pad = [int(v) for v in geo["pad"]]
    opt = fb.Conv2DOptionsT()
    opt.strideH, opt.strideW = (int(v) for v in geo["stride"])
    opt.fusedActivationFunction = fb.ActivationFunctionType.RELU if layer.act == "relu" else 0
    opt.padding = fb.Padding.VALID
    if any(pad) and pad == same_pad(h, w, geo["kernel"], geo["stride"]):
        opt.padding = fb.Padding.SAME
    elif any(pad):  # int8: PAD fills with the zero point, 0
        t, b, left, r = pad
        x = g.op("PAD", [x, g.const([[0, 0], [t, b], [left, r], [0, 0]], np.int32)], [1, h + t + b, w + left + r, c],
                 dtype, q_in)
    out = [1, *out_hw(geo), layer.shape[0]]
    return g.op("CONV_2D", [x, *weights], out, dtype, q_out, opt), out


def _flatten(g: _Graph, x: int, shape, dtype=np.float32, q=None) -> tuple[int, list[int]]:
    """NHWC -> 1 x (C H W) in channel-first order, as the next Linear reads: TRANSPOSE to NCHW, RESHAPE."""
    x, nchw = _transpose(g, x, [0, 3, 1, 2], shape, dtype, q)
    flat = [1, int(np.prod(nchw))]
    return g.op("RESHAPE", [x, g.const(flat, np.int32)], flat, dtype, q), flat


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


def to_tflite(data: bytes, int8: bool = False, obs: np.ndarray | None = None) -> bytes:
    """The .tflite flatbuffer of an artifact (MLP or conv): fp32, or full-integer int8 (see the module's docstring)
    with the artifact's `iq` scales, else (an uncalibrated artifact) scales from `obs`, raw
    observations such as the teacher's visited states (`artifact.int8_activation_scales`)."""
    header, blob = read_artifact(data)
    layers = layers_of(header, blob)
    head, norm, cal, input_ = header["head"], header.get("obs_norm"), header.get("iq"), header.get("input")
    for act in {layer.act for layer in layers} - set(ACTIVATIONS):
        raise ValueError(f"activation {act!r}: not in the tflite export ({', '.join(ACTIVATIONS)})")
    if layers[-1].conv is not None:
        raise ValueError("a conv layer last (no Linear head): not in the tflite export")
    if int8 and not int8_representable(layers):
        raise ValueError("tflite-int8 needs every layer int8-representable (k-bit quantized, k <= 8 symmetric or "
                         "<= 7 asymmetric); export 'tflite' (fp32) for this artifact")
    if int8 and cal is None and obs is not None:
        cal = int8_activation_scales(header, layers, obs)
    if int8 and cal is None:
        raise ValueError("tflite-int8 needs the artifact's int8 activation scales: run "
                         "autocompress.artifact.calibrate(data, obs) with teacher-visited observations first"
                         + (" (a conv net: pass those observations, to_tflite(data, int8=True, obs=obs))"
                            if any(layer.conv is not None for layer in layers) else ""))
    g = _Graph()
    shape = [1, int(header["obs_dim"])] if input_ is None else [1, *(int(v) for v in input_["shape"])]
    obs_t = x = g.tensor(shape)
    clip = np.inf
    if norm is not None:
        x = g.binary("MUL", g.binary("SUB", x, norm["mean"], shape), 1.0 / np.asarray(norm["std"], np.float64), shape)
        clip = norm.get("clip") or np.inf
    if int8:
        s_x = float(cal["x"])
        clip = min(clip, 127 * s_x)
    if clip < np.inf:
        x = _clamp(g, x, -clip, clip, shape)
    if input_ is not None and input_["layout"] == "chw":  # TFLite's convolutions read NHWC
        x, shape = _transpose(g, x, [0, 2, 3, 1], shape)
    dtype, q = (np.int8, (s_x, 0)) if int8 else (np.float32, None)
    if int8:
        x = g.op("QUANTIZE", [x], shape, np.int8, q)
    for i, layer in enumerate(layers[:-1]):
        q_out = (float(cal["p"][i]), 0) if int8 else None
        weights = _weights(g, layer, s_x if int8 else None)
        if layer.conv is None:
            shape = [1, layer.shape[0]]
            x = g.op("FULLY_CONNECTED", [x, *weights], shape, dtype, q_out, _fc(layer.act))
        else:
            x, shape = _conv(g, x, layer, weights, shape, dtype, q, q_out)
        if int8:
            x, s_x = _int8_activation(g, x, layer.act, shape, q_out[0])
            q = (s_x, 0)
        else:
            x = _activation(g, x, layer.act, shape)
        if layer.conv is not None and layers[i + 1].conv is None:
            x, shape = _flatten(g, x, shape, dtype, q)
    last = layers[-1]
    if int8:
        x = g.op("DEQUANTIZE", [x], shape)
    w, b = last.w, last.b
    if head["kind"] != "discrete":  # the mean's rows only
        d = int(head["act_dim"])
        w, b = w[:, :d], None if b is None else b[:d]
    return g.finish([obs_t], [_head(g, _dense(g, x, w, b, last.act), head)])


def needs_calibration(data: bytes) -> bool:
    """Whether tflite-int8 of `data` needs calibration observations: its layers int8-representable, no `iq`."""
    header, blob = read_artifact(data)
    return "iq" not in header and int8_representable(layers_of(header, blob))


def write_tflite(data: bytes, path: str | Path, int8: bool = False, obs: np.ndarray | None = None) -> Path:
    path = Path(path)
    path.write_bytes(to_tflite(data, int8, obs))
    return path


# -- verification: the same file in LiteRT's and TensorFlow Lite Micro's interpreters --------------------

def _actor(set_input, invoke, get_output, shape):
    """act(one observation, a row or an image in the env's shape) through an interpreter's input of `shape`."""
    def act(o):
        set_input(np.asarray(o, np.float32).reshape(shape))
        invoke()
        return np.array(get_output()).reshape(-1)
    return act


def litert_actor(model: bytes, threads: int | None = None):
    """act(one observation) in LiteRT's interpreter (its default CPU kernels; `threads`: its thread count)."""
    from ai_edge_litert.interpreter import Interpreter  # deferred: LiteRT's interpreter, for measuring only

    it = Interpreter(model_content=model, num_threads=threads)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]["index"]
    return _actor(lambda x: it.set_tensor(i["index"], x), it.invoke, lambda: it.get_tensor(o), i["shape"])


def run_litert(model: bytes, obs: np.ndarray) -> np.ndarray:
    """Actions for observations (rows, or images in the env's shape) in LiteRT's interpreter, one at a time."""
    return act_all(litert_actor(model), obs)


def _tflm(model: bytes):
    from tflite_micro.python.tflite_micro import runtime  # deferred: TFLite Micro, for its arena only

    return runtime.Interpreter.from_bytes(model, arena_size=ARENA)


def run_tflm(model: bytes, obs: np.ndarray) -> np.ndarray:
    """Actions for observations (rows, or images) in TensorFlow Lite Micro's interpreter (its reference kernels)."""
    it = _tflm(model)
    shape = it.get_input_details(0)["shape"]
    return act_all(_actor(lambda x: it.set_input(x, 0), it.invoke, lambda: it.get_output(0), shape), obs)


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
