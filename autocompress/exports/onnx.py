"""ONNX export: the artifact as an ONNX graph, normalisation and action head inside.

Input `obs` (float32): batch x obs_dim for an MLP; for a conv net batch x the env's observation
shape (batch x H x W x C for a channels-last net, batch x C x H x W for channels-first), transposed
to NCHW inside the graph. Output `action`: int64 indices (discrete: ArgMax, first maximum wins as in
the runtimes) or float32 (batch x act_dim) squashed and mapped onto the env's bounds. Weights come
from layers.Layer, as the runtimes decode them. Per layer, as `kernels` says:

  dense (csr, packed)  a float initializer and MatMul: the decoded fp32 net;
  int8                 the int8 kernel's integer arithmetic: int8 weight initializer, inputs
                       rounded to int8 per row (scale max|x| / 127), MatMulInteger (exact int32
                       sums), then the two scales; so its actions equal the C kernel's.

Why not weight-only QDQ (int8 weights behind DequantizeLinear, float MatMul): onnxruntime rewrites
DequantizeLinear -> MatMul into MatMulNBits, which rounds the activations its own way (measured:
2 of 1,000 CartPole-like actions differed from the runtime's), so such a graph would not act as
the policy that was measured.

Conv layers are `Conv` nodes (the geometry's pads and strides) on NCHW tensors; after the last one a
Flatten gives the channel-first order the next Linear reads. An int8 conv layer is the int8 kernel's
arithmetic, as for MatMul: int8 filters, the whole layer input rounded to int8 with one scale per sample,
ConvInteger (exact int32 sums), then the scales per sample and per output channel. Not weight-only QDQ
(int8 filters behind DequantizeLinear, float Conv): the float sums round differently, the next int8 layer
then rounds some inputs to the neighbouring level (measured: continuous actions of a
4-bit MinAtar-sized net off by up to 6.6e-4).

A recurrent net (LSTM / GRU cell) takes and returns its state explicitly: inputs `obs` and `state` (batch x
state size: h, then c for an LSTM; zeros at an episode's start), outputs `action` and `state_out` (feed it back
as the next step's `state`). The cell is unrolled into plain ops, MatMul + Add for its two fp32 matrices, then
Slice / Sigmoid / Tanh / Mul / Add / Concat built by running recurrent.cell_step itself on graph values
(`_Value`), so the graph's gate equations are the runtimes' by construction. Not ONNX's LSTM / GRU ops: their
layout (gate order i, o, f, c; GRU's linear_before_reset) would be a second statement of the same equations.
Agreement with the runtimes over whole CartPole episodes, state carried: equal actions, state within 1e-5
(tests/test_recurrent_exports.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from autocompress.layers import layers_of, recurrent_of
from autocompress.recurrent import Ops, cell_step, state_size
from autocompress.runtime import read_artifact

OPSET = 17


class _Graph:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def const(self, name: str, value, dtype=np.float32) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        self.n += 1
        out = f"{op_type.lower()}_{self.n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out


def _activation(g: _Graph, x: str, act: str) -> str:
    if act == "tanh":
        return g.op("Tanh", [x])
    if act == "relu":
        return g.op("Relu", [x])
    if act == "silu":
        return g.op("Mul", [x, g.op("Sigmoid", [x])])
    if act == "elu":
        return g.op("Elu", [x], alpha=1.0)
    if act == "leaky_relu":
        return g.op("LeakyRelu", [x], alpha=0.01)
    return x


def _int8_input(g: _Graph, x: str, i: int, axes: list[int]) -> tuple[str, str]:
    """(x rounded to int8 with one scale max|x| / 127 per sample over `axes`, that max) as kernels.c does."""
    m = g.op("ReduceMax", [g.op("Abs", [x])], axes=axes, keepdims=1)
    safe = g.op("Max", [m, g.const(f"L{i}_tiny", np.finfo(np.float32).tiny)])  # all-zero rows: sums are 0 anyway
    xq = g.op("Clip", [g.op("Round", [g.op("Mul", [x, g.op("Div", [g.const(f"L{i}_127", 127.0), safe])])]),
                       g.const(f"L{i}_lo", -127.0), g.const(f"L{i}_hi", 127.0)])
    return g.op("Cast", [xq], to=TensorProto.INT8), safe


def _int8_scaled(g: _Graph, acc: str, safe: str, i: int, scale: np.ndarray) -> str:
    """int32 sums -> float: times the input's scale (per sample) and the weights' (per output)."""
    out_scale = g.op("Mul", [g.op("Div", [safe, g.const(f"L{i}_127b", 127.0)]), g.const(f"L{i}_qscale", scale)])
    return g.op("Mul", [g.op("Cast", [acc], to=TensorProto.FLOAT), out_scale])


def _int8_matmul(g: _Graph, x: str, i: int, q: np.ndarray, scale: np.ndarray) -> str:
    """kernels.c's INT8: per-row input scale m / 127, inputs rounded to int8, exact int32 sums."""
    xq, safe = _int8_input(g, x, i, [1])
    acc = g.op("MatMulInteger", [xq, g.const(f"L{i}_q", q.T, np.int8)])
    return _int8_scaled(g, acc, safe, i, scale[None, :])


def _conv(g: _Graph, x: str, i: int, layer, kernel: str) -> str:
    """One conv layer on an NCHW tensor, bias included."""
    geo = layer.conv
    n_out = layer.shape[0]
    shape4 = (n_out, geo["in_shape"][0], *geo["kernel"])
    t, b, left, r = geo["pad"]
    if kernel == "int8":  # kernels.c's INT8 conv: the whole input rounded with one scale per sample
        q, scale = layer.int8()
        xq, safe = _int8_input(g, x, i, [1, 2, 3])
        acc = g.op("ConvInteger", [xq, g.const(f"L{i}_q", q.reshape(shape4), np.int8)], pads=[t, left, b, r],
                   strides=list(geo["stride"]))
        y = _int8_scaled(g, acc, safe, i, scale.reshape(1, -1, 1, 1))
    else:
        y = g.op("Conv", [x, g.const(f"L{i}_w", layer.w.T.reshape(shape4))], pads=[t, left, b, r],
                 strides=list(geo["stride"]))
    if layer.b is not None:
        y = g.op("Add", [y, g.const(f"L{i}_b", layer.b.reshape(-1, 1, 1))])
    return y


class _Value:
    """A graph value of `width` features per sample, with the arithmetic recurrent.cell_step uses (slices of the
    last axis, +, *, 1 - x) adding the ops to the graph: the cell's equations are written once, in recurrent.py."""

    def __init__(self, g: _Graph, name: str, width: int):
        self.g, self.name, self.shape = g, name, (None, width)

    def _new(self, op: str, inputs: list, **attrs) -> "_Value":
        names = [v.name if isinstance(v, _Value) else self.g.const(f"c{self.g.n}_{i}", v) for i, v in enumerate(inputs)]
        return _Value(self.g, self.g.op(op, names, **attrs), self.shape[1])

    def __getitem__(self, key) -> "_Value":
        start, stop, _ = key[-1].indices(self.shape[1])  # x[..., a:b]
        g = self.g
        bounds = [g.const(f"c{g.n}_{k}", [v], np.int64) for k, v in (("a", start), ("b", stop), ("x", 1))]
        name = g.op("Slice", [self.name, *bounds])
        return _Value(g, name, stop - start)

    def __add__(self, other):
        return self._new("Add", [self, other])

    def __mul__(self, other):
        return self._new("Mul", [self, other])

    def __rsub__(self, other):
        return self._new("Sub", [float(other), self])


def _concat(values: list[_Value]) -> _Value:
    g = values[0].g
    return _Value(g, g.op("Concat", [v.name for v in values], axis=1), sum(v.shape[1] for v in values))


_GRAPH_OPS = Ops(lambda v: v._new("Sigmoid", [v]), lambda v: v._new("Tanh", [v]), _concat)


def _cell(g: _Graph, x: str, rnn) -> tuple[str, str]:
    """The recurrent cell on x with the graph input `state`: (h, the next state)."""
    def affine(v: str, name: str, m) -> _Value:
        y = g.op("MatMul", [v, g.const(f"{name}_w", m.w)])
        return _Value(g, y if m.b is None else g.op("Add", [y, g.const(f"{name}_b", m.b)]), m.shape[0])

    state = _Value(g, "state", state_size(rnn.cell, rnn.hidden))
    h, state = cell_step(rnn.cell, affine(x, "ih", rnn.ih), affine(state[..., :rnn.hidden].name, "hh", rnn.hh), state,
                         _GRAPH_OPS)
    return h.name, state.name


def to_onnx(data: bytes, kernels: list[str] | None = None) -> onnx.ModelProto:
    header, blob = read_artifact(data)
    layers, rnn = layers_of(header, blob, recurrent=True), recurrent_of(header, blob)
    kernels = kernels or ["dense"] * len(layers)
    head, norm = header["head"], header.get("obs_norm")
    input_ = header.get("input")  # conv nets: obs keeps the env's shape
    obs_shape = [int(header["obs_dim"])] if input_ is None else [int(v) for v in input_["shape"]]
    g = _Graph()
    x = "obs"
    if norm is not None:
        def stat(v):  # flat statistics of an image: in the observation's shape
            v = np.asarray(v, np.float32)
            return v.reshape(obs_shape) if v.size == int(np.prod(obs_shape)) else v
        x = g.op("Div", [g.op("Sub", [x, g.const("obs_mean", stat(norm["mean"]))]),
                         g.const("obs_std", stat(norm["std"]))])
        if norm.get("clip"):
            x = g.op("Clip", [x, g.const("obs_lo", -norm["clip"]), g.const("obs_hi", norm["clip"])])
    if input_ is not None and input_["layout"] == "hwc":
        x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    for i, (layer, kernel) in enumerate(zip(layers, kernels)):
        if rnn is not None and i == rnn.at:
            x, state_out = _cell(g, x, rnn)
        if layer.conv is not None:
            x = _activation(g, _conv(g, x, i, layer, kernel), layer.act)
            if i + 1 == len(layers) or layers[i + 1].conv is None:
                x = g.op("Flatten", [x], axis=1)  # channel-first order, as the next Linear reads
            continue
        if kernel == "int8":
            x = _int8_matmul(g, x, i, *layer.int8())
        else:
            x = g.op("MatMul", [x, g.const(f"L{i}_w", layer.w)])
        if layer.b is not None:
            x = g.op("Add", [x, g.const(f"L{i}_b", layer.b)])
        x = _activation(g, x, layer.act)
    if head["kind"] == "discrete":
        action, out_type = g.op("ArgMax", [x], axis=1, keepdims=0, select_last_index=0), TensorProto.INT64
        out_shape = ["batch"]
    else:
        d = int(head["act_dim"])
        mean = g.op("Slice", [x, g.const("s0", [0], np.int64), g.const("s1", [d], np.int64), g.const("s2", [1], np.int64)])
        low, high = g.const("act_low", head["low"]), g.const("act_high", head["high"])
        squash = head.get("squash", "none")
        if squash == "none":
            action = g.op("Max", [g.op("Min", [mean, high]), low])
        else:
            a = g.op("Tanh", [mean]) if squash == "tanh" else \
                g.op("Clip", [mean, g.const("m1", -1.0), g.const("p1", 1.0)])
            half = g.op("Mul", [g.op("Add", [a, g.const("one", 1.0)]), g.const("half", 0.5)])
            action = g.op("Add", [low, g.op("Mul", [half, g.op("Sub", [high, low])])])
        out_type, out_shape = TensorProto.FLOAT, ["batch", d]
    g.nodes.append(helper.make_node("Identity", [action], ["action"]))
    inputs = [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", *obs_shape])]
    outputs = [helper.make_tensor_value_info("action", out_type, out_shape)]
    if rnn is not None:
        g.nodes.append(helper.make_node("Identity", [state_out], ["state_out"]))
        size = state_size(rnn.cell, rnn.hidden)
        inputs.append(helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", size]))
        outputs.append(helper.make_tensor_value_info("state_out", TensorProto.FLOAT, ["batch", size]))
    graph = helper.make_graph(g.nodes, "autocompress_policy", inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="autocompress")
    onnx.checker.check_model(model)
    return model


def write_onnx(data: bytes, path: str | Path, kernels: list[str] | None = None) -> Path:
    path = Path(path)
    path.write_bytes(to_onnx(data, kernels).SerializeToString())
    return path
