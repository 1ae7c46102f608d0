"""Structured pruning: remove whole hidden neurons, giving a physically smaller net.

Neuron j of layer i is row j of W_i, b_i[j] and the inputs of layer i+1 it feeds. On a conv
layer a neuron is a filter (output channel j); what it feeds is a group of g consecutive columns
of W_{i+1}, g = in_features(i+1) / out_features(i): 1 for Linear -> Linear, kh·kw for conv ->
conv (the next filters' weights over channel j), H'·W' for the Linear after the last conv (the
flattened pixels of channel j, channel-first). Criteria:
  random     -- uniform at random (a baseline);
  l1         -- L1 norm of the neuron's incoming weights and bias;
  importance -- mean |activation| on teacher-visited states (over states and, on a conv layer,
                pixels) × L1 norm of its outgoing weights: a first-order estimate of how much
                the next layer's input moves when the neuron is removed (a neuron that is
                never on, or feeds nothing, scores 0).
The net is a plain chain, so the surgery is index selection; a dependency-graph
library (torch-pruning) would add tracing of our custom layer for no gain here.

`amount` may be per HIDDEN layer (see techniques/per_layer.py; conv layers are hidden layers):
[0.5, 0.25] one per hidden layer, or {1: 0.5} for the listed hidden layers only (the others keep
all their neurons).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from autocompress.nets import CLinear, PolicyNet
from autocompress.techniques.base import Context, TechniqueConfig, register
from autocompress.techniques.per_layer import per_layer_type, setting_values

Amount = per_layer_type(float, over="hidden", gt=0.0, lt=1.0)


class StructuredConfig(TechniqueConfig):
    name = "structured"
    stage = "structural"
    order = 20
    gentle = {"amount": "low"}
    sweep = (0.25, 0.5, 0.75, 0.9)
    amount: Amount = Field(0.5, description="fraction of each hidden layer's neurons removed: one for all, a list "
                                            "(one per hidden layer) or a map {hidden layer: amount}")
    criterion: Literal["random", "l1", "importance"] = "l1"


def group_size(layer: CLinear, nxt: CLinear) -> int:
    """Columns of the next layer's weight fed by one neuron (filter) of `layer` (see the module doc)."""
    return nxt.in_features // layer.out_features


def neuron_scores(net: PolicyNet, i: int, criterion: str, obs: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    layer, nxt = net.layers[i], net.layers[i + 1]
    with torch.no_grad():
        if criterion == "random":
            return rng.random(layer.out_features)
        if criterion == "l1":
            s = layer.effective_weight().abs().sum(1)
            return (s + (layer.bias.abs() if layer.bias is not None else 0)).numpy()
        if obs is None:
            raise ValueError("structured criterion 'importance' needs sample observations")
        x = net.to_chw(torch.as_tensor(obs, dtype=torch.float32))
        for layer_k in net.layers[: i + 1]:
            x = layer_k(x)
        activation = x.reshape(len(x), layer.out_features, -1).abs().mean((0, 2))  # per channel: states, pixels
        outgoing = nxt.effective_weight().abs().sum(0).reshape(layer.out_features, group_size(layer, nxt)).sum(1)
        return (activation * outgoing).numpy()


def _select(layer: CLinear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None,
            in_channels: int | None = None) -> CLinear:
    """The layer restricted to output rows `rows` and weight columns `cols`; a conv layer keeps its
    geometry, reading `in_channels` channels when given."""
    if layer.mask is not None or layer.codebook is not None:
        raise ValueError("structured pruning must run before masks/codebooks are set up")
    w = layer.weight.detach()
    b = None if layer.bias is None else layer.bias.detach()
    if rows is not None:
        w, b = w[rows], (None if b is None else b[rows])
    if cols is not None:
        w = w[:, cols]
    conv = None if layer.conv is None else dict(layer.conv)
    if conv is not None and in_channels is not None:
        conv["in_shape"] = [in_channels, *conv["in_shape"][1:]]
    new = CLinear(w.shape[1], w.shape[0], bias=b is not None, act=layer.act, quant=layer.quant, conv=conv)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new


def remove_neurons(net: PolicyNet, i: int, keep: torch.Tensor) -> PolicyNet:
    """Keep only output neurons (conv: filters) `keep` (sorted indices) of layer i; layer i+1 loses
    the inputs they fed (conv -> conv: those input channels)."""
    layers = list(net.layers)
    g = group_size(layers[i], layers[i + 1])
    cols = (keep[:, None] * g + torch.arange(g)[None, :]).reshape(-1)
    layers[i] = _select(layers[i], rows=keep)
    layers[i + 1] = _select(layers[i + 1], cols=cols, in_channels=len(keep))
    return PolicyNet(layers, net.input)


@register(StructuredConfig)
def _structured(net: PolicyNet, cfg: StructuredConfig, ctx: Context) -> PolicyNet:
    rng = np.random.default_rng(ctx.seed)
    amounts = setting_values(cfg, "amount", len(net.layers))
    for i, amount in enumerate(amounts):
        if amount is None:  # a hidden layer the map leaves out keeps all its neurons
            continue
        n = net.layers[i].out_features
        n_keep = max(1, n - int(round(amount * n)))
        scores = neuron_scores(net, i, cfg.criterion, ctx.sample_obs, rng)
        keep = torch.as_tensor(np.sort(np.argsort(-scores, kind="stable")[:n_keep]))
        net = remove_neurons(net, i, keep)
    ctx.log(f"structured: hidden widths -> {net.hidden_widths()}")
    return net

