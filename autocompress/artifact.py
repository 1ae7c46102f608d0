"""Write the deployable artifact (.acz) of a PolicyNet (read it with runtime.NumpyPolicy or native.NativePolicy).

Layout: b"ACZ1", uint32 header length, compact JSON header (layer shapes, activations, conv
geometry and the observation's layout for conv nets, action head, observation normalisation, per-tensor encoding), then the packed tensors.
The file's byte count is the size objective: packed k-bit codes, bitmaps for sparse
weights, codebooks and smaller shapes all show up in it; fp32 biases are counted too.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import torch

from autocompress.codec import BlobWriter, WeightPayload, encode_weight
from autocompress.nets import CLinear, PolicyNet
from autocompress.runtime import MAGIC, NumpyPolicy


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
    layers = []
    for layer in net.layers:
        b = None
        if layer.bias is not None:
            b = blob.add(layer.bias.detach().numpy().astype("<f4").tobytes())
        layers.append({"act": layer.act, "w": encode_weight(weight_payload(layer), blob), "b": b})
        if layer.conv is not None:
            layers[-1]["conv"] = layer.conv
    header = {"format": "autocompress/acz", "version": 1, "obs_dim": net.in_dim,
              "head": head, "obs_norm": obs_norm, "layers": layers}
    if net.input is not None:
        header["input"] = net.input
    hdr = json.dumps(header, separators=(",", ":")).encode()
    return MAGIC + struct.pack("<I", len(hdr)) + hdr + blob.getvalue()


def runtime_act(net: PolicyNet, head: dict):
    """act(obs) of `net` through its artifact in the numpy runtime: the actions the torch net takes (tests hold
    them equal), at a fraction of the cost of a batch-1 torch forward (~8 ms for the MinAtar CNN on this
    2-core machine under load, vs ~0.4 ms)."""
    return NumpyPolicy.from_bytes(to_bytes(net, head)).act
