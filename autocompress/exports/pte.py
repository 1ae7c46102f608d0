"""ExecuTorch export: the artifact as a .pte program (XNNPACK-delegated), normalisation and action head inside.

The artifact's layers are rebuilt as a plain torch module (`to_module`: their decoded fp32 weights,
`Layer.w`, whatever the stored form), `torch.export`ed at batch 1 (a phone or board acts on one observation),
lowered with ExecuTorch's XNNPACK partitioner and serialised (`to_pte`). What XNNPACK does not take (ArgMax)
runs in ExecuTorch's portable kernels; `run_pte` acts in ExecuTorch's own Python runtime.

Input `obs`: float32, 1 x obs_dim for an MLP; for a conv net 1 x the env's observation shape (H x W x C for a
channels-last net, C x H x W for channels-first), permuted to NCHW inside the program, as onnx.py does. Output
`action`: an int64 index (argmax, first maximum wins as in the runtimes) of shape (1,) or float32 1 x act_dim,
squashed and mapped onto the env's bounds as the runtimes do. Normalisation: (obs - mean) / std, clamped to
+-clip. Conv layers: Conv2d on NCHW tensors (an asymmetric pad as an explicit constant pad before it), then a
flatten in channel-first order for the next Linear. Activations: tanh, relu, silu, elu, leaky_relu (0.01).

fp32 (`to_pte(data)`): the decoded fp32 net, whatever its stored form (int8 layers included).

int8 (`to_pte(data, int8=True)`, where every layer, Linear or conv, is int8-representable: `Layer.int8`): ExecuTorch's own
quantizer (XNNPACKQuantizer, torchao's pt2e prepare / convert) in its dynamic config, lowered to XNNPACK's
qd8 kernels: weights int8 per output channel (symmetric, max|w| / 127: the layer's own codes where one of them
is +-127, e.g. 8-bit symmetric), each layer's input rounded to int8 per call (asymmetric, (max - min) / 255) and
int32 sums: the runtime's int8 kernel's arithmetic but for that input rounding (kernels.c: symmetric,
max|x| / 127), so actions agree with the runtime's int8 kernels up to one input step per layer
(tests/test_pte.py measures how often). Dynamic: no activation scales to calibrate. Not the static config:
it fixes each activation's scale from calibration observations and rounds the layer outputs too, further from
what the runtime computes (measured on a 64 x 64 relu net: 1.2% of discrete actions differ vs 0.1%).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from autocompress.exports import act_all
from autocompress.layers import int8_representable, layers_of
from autocompress.nets import ACTIVATIONS  # the torch nets' activations: the runtimes' arithmetic
from autocompress.runtime import read_artifact



class _Policy(torch.nn.Module):
    """obs -> normalise -> layers -> action head, from an artifact's header and layers."""

    def __init__(self, header: dict, layers):
        super().__init__()
        self.head, norm, input_ = header["head"], header.get("obs_norm"), header.get("input")
        self.obs_shape = [int(header["obs_dim"])] if input_ is None else [int(v) for v in input_["shape"]]
        self.hwc = input_ is not None and input_["layout"] == "hwc"
        self.clip = None
        if norm is not None:
            def stat(v):  # flat statistics of an image: in the observation's shape
                v = torch.tensor(np.asarray(v, np.float32))
                return v.reshape(self.obs_shape) if v.numel() == int(np.prod(self.obs_shape)) else v
            self.register_buffer("mean", stat(norm["mean"]))
            self.register_buffer("std", stat(norm["std"]))
            self.clip = float(norm["clip"]) if norm.get("clip") else None
        self.norm = norm is not None
        self.specs = []  # per layer: (conv geometry or None, activation, last conv before a Linear)
        for i, layer in enumerate(layers):
            w = torch.tensor(layer.w.T.copy())  # out x in
            geo = layer.conv
            if geo is not None:
                w = w.reshape(layer.shape[0], geo["in_shape"][0], *geo["kernel"])
            self.register_buffer(f"w{i}", w)
            self.register_buffer(f"b{i}", None if layer.b is None else torch.tensor(layer.b))
            flatten = geo is not None and (i + 1 == len(layers) or layers[i + 1].conv is None)
            self.specs.append((geo, layer.act, flatten))
        if self.head["kind"] != "discrete":
            self.act_dim = int(self.head["act_dim"])
            self.register_buffer("low", torch.tensor(np.asarray(self.head["low"], np.float32)))
            self.register_buffer("high", torch.tensor(np.asarray(self.head["high"], np.float32)))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs
        if self.norm:
            x = (x - self.mean) / self.std
            if self.clip is not None:
                x = torch.clamp(x, -self.clip, self.clip)
        if self.hwc:
            x = x.permute(0, 3, 1, 2)
        for i, (geo, act, flatten) in enumerate(self.specs):
            w, b = getattr(self, f"w{i}"), getattr(self, f"b{i}")
            if geo is None:
                x = F.linear(x, w, b)
            else:
                t, bottom, left, r = geo["pad"]
                padding = [t, left]
                if t != bottom or left != r:  # asymmetric ('same' with an odd total): pad explicitly
                    x, padding = F.pad(x, [left, r, t, bottom]), [0, 0]
                x = F.conv2d(x, w, b, stride=list(geo["stride"]), padding=padding)
            x = ACTIVATIONS[act](x)
            if flatten:
                x = torch.flatten(x, 1)  # channel-first order, as the next Linear reads
        if self.head["kind"] == "discrete":
            return torch.argmax(x, dim=1)
        mean = x[:, :self.act_dim]
        squash = self.head.get("squash", "none")
        if squash == "none":
            return torch.maximum(torch.minimum(mean, self.high), self.low)
        a = torch.tanh(mean) if squash == "tanh" else torch.clamp(mean, -1.0, 1.0)
        return self.low + (a + 1.0) * 0.5 * (self.high - self.low)


def to_module(data: bytes) -> torch.nn.Module:
    """The artifact as a torch module: obs (batch x the observation's shape) -> actions, in fp32."""
    header, blob = read_artifact(data)
    layers = layers_of(header, blob)
    for act in {layer.act for layer in layers} - set(ACTIVATIONS):
        raise ValueError(f"activation {act!r}: not in the pte export ({', '.join(ACTIVATIONS)})")
    return _Policy(header, layers).eval()


def to_pte(data: bytes, int8: bool = False) -> bytes:
    """The .pte program (ExecuTorch, XNNPACK-delegated, batch 1) of an artifact: fp32, or int8 (see above)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower  # deferred: ExecuTorch, the [executorch] extra

    if int8 and not int8_representable(layers_of(*read_artifact(data))):
        raise ValueError("pte-int8 needs every layer int8-representable (k-bit quantized, k <= 8 symmetric or "
                         "<= 7 asymmetric); export 'pte' (fp32) for this artifact")
    module = to_module(data)
    example = (torch.zeros(1, *module.obs_shape),)
    with torch.no_grad():
        if int8:
            module = _quantized(module, example)
        program = torch.export.export(module, example)
    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer


def _quantized(module: torch.nn.Module, example: tuple) -> torch.nn.Module:
    """XNNPACK's dynamic int8 quantization of the module's Linear / Conv layers (pt2e)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    # deferred: torchao (ExecuTorch's quantizer)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)
    prepared = prepare_pt2e(torch.export.export(module, example).module(), XNNPACKQuantizer().set_global(config))
    prepared(*example)  # the weights' observers (dynamic: the activations need no calibration)
    return convert_pt2e(prepared)


def write_pte(data: bytes, path: str | Path, int8: bool = False) -> Path:
    path = Path(path)
    path.write_bytes(to_pte(data, int8))
    return path


# -- verification: the program in ExecuTorch's own runtime ----------------------------------------------

def load_pte(model: bytes):
    """The program's `forward` method in ExecuTorch's Python runtime (its XNNPACK and portable kernels)."""
    from executorch.runtime import Runtime  # deferred: ExecuTorch, the [executorch] extra

    return Runtime.get().load_program(model).load_method("forward")


def pte_actor(model: bytes):
    """act(one observation, a row or an image in the env's shape) in ExecuTorch's runtime."""
    method = load_pte(model)
    shape = (1, *tuple(method.metadata.input_tensor_meta(0).sizes())[1:])

    def act(o, model=model):  # (the runtime reads the program from `model`'s buffer: kept alive with act)
        return method.execute([torch.from_numpy(np.asarray(o, np.float32).reshape(shape))])[0].numpy()
    return act


def run_pte(model: bytes, obs: np.ndarray) -> np.ndarray:
    """Actions for observations (rows, or images in the env's shape) in ExecuTorch's runtime, one at a time."""
    return act_all(pte_actor(model), obs)
