"""Write the deployable artifact (.acz) of a PolicyNet (read it with runtime.NumpyPolicy or native.NativePolicy).

Layout: b"ACZ1", uint32 header length, compact JSON header (layer shapes, activations, conv
geometry and the observation's layout for conv nets, action head, observation normalisation, per-tensor encoding;
a recurrent net's cell in `rnn`: cell, at, hidden and its ih / hh matrices as layer entries), then the packed tensors.
The file's byte count is the size objective: packed k-bit codes, bitmaps for sparse
weights, codebooks and smaller shapes all show up in it; fp32 biases are counted too.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import torch

from autocompress import intq
from autocompress.codec import BlobWriter, WeightPayload, encode_weight
from autocompress.conv import to_chw
from autocompress.layers import ACTIVATIONS, IQ, int8_only, layers_of
from autocompress.nets import CLinear, PolicyNet
from autocompress.runtime import MAGIC, NumpyPolicy, conv_layer, obs_normalizer, read_artifact


def weight_payload(layer: CLinear) -> WeightPayload:
    with torch.no_grad():
        raw = layer.raw_weight().detach()
        mask = None if layer.mask is None else layer.mask.numpy().astype(bool)
        p = WeightPayload(shape=tuple(raw.shape), mask=mask)
        if layer.quant is not None:
            q, scale, zero, qmin = layer.quant_codes()  # the grid the forward pass used (LSQ: learned)
            p.codes = (q - qmin).to(torch.uint8).numpy()
            p.bits, p.scale, p.qmin = layer.quant["bits"], scale.numpy(), qmin
            p.zero = None if layer.quant["symmetric"] else zero.to(torch.uint8).numpy()
        elif layer.codebook is not None:
            p.codes = layer.indices.to(torch.uint8).numpy()
            p.bits = max(1, int(np.ceil(np.log2(layer.codebook.numel()))))
            p.codebook = layer.codebook.detach().numpy()
        else:
            p.values = raw.numpy().astype(np.float32)
    return p


def to_bytes(net: PolicyNet, head: dict, obs_norm: dict | None = None) -> bytes:
    """The artifact; observation normalisation from `obs_norm`, else from the head (a teacher's)."""
    obs_norm = obs_norm or head.get("obs_norm")
    head = {k: v for k, v in head.items() if k != "obs_norm"}  # stored once, in the header's own slot
    blob = BlobWriter()
    layers = [_layer_entry(layer, blob) for layer in net.layers]
    # version 2: a recurrent net (header `rnn`), which a reader of version 1 would run without its cell
    header = {"format": "autocompress/acz", "version": 1 if net.rnn is None else 2, "obs_dim": net.in_dim,
              "head": head, "obs_norm": obs_norm, "layers": layers}
    if net.input is not None:
        header["input"] = net.input
    if net.iq is not None:  # the scales its fine-tuning rounded activations to (PolicyNet.iq)
        header["iq"] = net.iq
    if net.rnn is not None:  # its matrices' tensors after the layers'; `layers` stays the feed-forward chain
        r = net.rnn
        header["rnn"] = {"cell": r.cell, "at": r.at, "hidden": r.hidden, "ih": _layer_entry(r.ih, blob),
                         "hh": _layer_entry(r.hh, blob)}
    return _pack(header, blob.getvalue())


def _layer_entry(layer: CLinear, blob: BlobWriter) -> dict:
    """One layer's header entry (activation, weight encoding, bias), its tensors added to `blob`."""
    b = None
    if layer.bias is not None:
        b = blob.add(layer.bias.detach().numpy().astype("<f4").tobytes())
    entry = {"act": layer.act, "w": encode_weight(weight_payload(layer), blob), "b": b}
    if layer.conv is not None:
        entry["conv"] = layer.conv
    return entry


def _pack(header: dict, blob: bytes) -> bytes:
    """The artifact's bytes: magic, header length, compact JSON header, the packed tensors."""
    hdr = json.dumps(header, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<I", len(hdr)) + hdr + blob


def runtime_act(net: PolicyNet, head: dict):
    """act(obs) of `net` through its artifact in the numpy runtime: the actions the torch net takes (tests hold
    them equal), at a fraction of the cost of a batch-1 torch forward (~8 ms for the MinAtar CNN on this
    2-core machine under load, vs ~0.4 ms). A net whose activations are rounded as on a device (`net.iq`)
    acts as the device's integer-only net."""
    data = to_bytes(net, head)
    integer = net.iq is not None and int8_only(layers_of(*read_artifact(data)))
    return NumpyPolicy.from_bytes(data, [IQ] * len(net.layers) if integer else None).act


def calibrate(data: bytes, obs: np.ndarray) -> bytes:
    """The artifact `data` with the integer-only net's activation scales (header `iq`: the normalised
    input's and each hidden layer's pre-activation's, see autocompress/intq.py), from the fp32 net's
    activations on `obs` (raw observations, e.g. the teacher's visited states); `data` unchanged where
    the net cannot run integer-only."""
    header, blob = read_artifact(data)
    if header.get("rnn"):  # the integer-only net does not run a recurrent cell
        return data
    layers = layers_of(header, blob)
    if not int8_only(layers):
        return data
    header["iq"] = int8_activation_scales(header, layers, obs)
    return _pack(header, bytes(blob))


def int8_activation_scales(header: dict, layers: list, obs: np.ndarray) -> dict:
    """{"x": the normalised input's int8 scale, "p": each hidden layer's pre-activation's} from the fp32 net's
    activations on raw observations `obs` (max |value| / 127; tanh's range capped at intq.TANH_RANGE): what
    `calibrate` stores as header `iq`, and what exports/tflite.py's int8 conv nets take (conv layers too)."""
    x = obs_normalizer(header.get("obs_norm"))(np.asarray(obs, np.float32).reshape(len(obs), -1))
    x_range, pre = float(np.abs(x).max()), []
    x = to_chw(x, header.get("input"))
    for layer in layers[:-1]:
        if layer.conv is not None:
            p = conv_layer(x, layer.w, layer.b, None, layer.conv)
        else:
            p = x @ layer.w + (0 if layer.b is None else layer.b)
        m = float(np.abs(p).max())
        pre.append(min(m, intq.TANH_RANGE) if layer.act == "tanh" else m)
        act = ACTIVATIONS[layer.act]
        x = act(p) if act is not None else p
    return {"x": _int8_scale(x_range), "p": [_int8_scale(m) for m in pre]}


def activation_scales(net: PolicyNet, head: dict, obs: np.ndarray) -> dict | None:
    """The integer-only net's activation scales for `net` (its fp32 activations, as `calibrate` takes them)
    on raw observations `obs`: what `PolicyNet.iq` takes; None where the net cannot run integer-only."""
    bare = PolicyNet(net.layers, net.input)  # its own activations, not rounded at earlier scales
    return read_artifact(calibrate(to_bytes(bare, head), obs))[0].get("iq")


def _int8_scale(max_abs: float) -> float:
    """int8 scale of a range [-max_abs, max_abs] (1.0 for an all-zero range), as fp32."""
    return float(np.float32(max_abs / 127.0 if max_abs > 0 else 1.0))
