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

A recurrent layer (LSTM / GRU) is one hidden layer in its place: its unit j is row j of every gate
in ih and hh (rows g·H + j) and it feeds column j of hh (the state it carries) and of the layer
after it; the layer before it feeds ih's columns. Removing unit j drops its state too (h_j, and c_j
of an LSTM). Its importance activation is h_j over the teacher-visited states run as one sequence
in the order visited (an episode's end carries its state into the next: a small error for a score).

`amount` may be per HIDDEN layer (see techniques/per_layer.py; conv layers are hidden layers):
[0.5, 0.25] one per hidden layer, or {1: 0.5} for the listed hidden layers only (the others keep
all their neurons).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from autocompress.nets import CLinear, PolicyNet, Recurrent
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
    recurrent = True  # an LSTM / GRU layer loses hidden units (see the module doc)


def unit_matrices(net: PolicyNet, i: int) -> tuple[list[CLinear], list[CLinear]]:
    """(producers, consumers) of hidden layer i's units: the matrices whose rows compute them (a cell: ih and
    hh, one row per gate) and those whose columns read them (a conv layer: a group of columns each)."""
    rnn = net.rnn
    if rnn is None:
        return [net.layers[i]], [net.layers[i + 1]]
    if i == rnn.at:
        return [rnn.ih, rnn.hh], [rnn.hh, net.layers[rnn.at]]
    p = i if i < rnn.at else i - 1  # the physical layer: the cell is not in net.layers
    return [net.layers[p]], [rnn.ih if p + 1 == rnn.at else net.layers[p + 1]]


def units(net: PolicyNet, i: int) -> int:
    """Neurons (conv: filters, a cell: hidden units) of hidden layer i."""
    return net.rnn.hidden if net.rnn is not None and i == net.rnn.at else unit_matrices(net, i)[0][0].out_features


def hidden_outputs(net: PolicyNet, i: int, obs: np.ndarray) -> torch.Tensor:
    """What hidden layer i writes on observations `obs` (a cell: h, the observations run as one sequence)."""
    x = net.to_chw(torch.as_tensor(obs, dtype=torch.float32))
    rnn = net.rnn
    if rnn is None or i < rnn.at:
        for layer in net.layers[:i + 1]:
            x = layer(x)
        return x
    for layer in net.layers[:rnn.at]:
        x = layer(x)
    state, hs = torch.zeros(rnn.state_size), []
    for xt in x:
        h, state = rnn.step(xt, state)
        hs.append(h)
    x = torch.stack(hs)
    for layer in net.layers[rnn.at:i]:
        x = layer(x)
    return x


def neuron_scores(net: PolicyNet, i: int, criterion: str, obs: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    n = units(net, i)
    producers, consumers = unit_matrices(net, i)
    with torch.no_grad():
        if criterion == "random":
            return rng.random(n)
        if criterion == "l1":  # a unit's rows: one per gate of a cell
            return sum((m.effective_weight().abs().sum(1) + (m.bias.abs() if m.bias is not None else 0))
                       .reshape(-1, n).sum(0) for m in producers).numpy()
        if obs is None:
            raise ValueError("structured criterion 'importance' needs sample observations")
        activation = hidden_outputs(net, i, obs).reshape(len(obs), n, -1).abs().mean((0, 2))  # states, pixels
        outgoing = sum(m.effective_weight().abs().sum(0).reshape(n, -1).sum(1) for m in consumers)
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
    """Keep only neurons (conv: filters, a cell: units) `keep` (sorted indices) of hidden layer i: their rows
    in the matrices that compute them, their columns in those that read them (conv -> conv: those input channels)."""
    n = units(net, i)
    producers, consumers = unit_matrices(net, i)
    select: dict[int, dict] = {}
    for m in producers:  # row g·n + j is unit j's in gate g (one gate outside a cell)
        select[id(m)] = {"rows": (torch.arange(m.out_features // n)[:, None] * n + keep[None, :]).reshape(-1)}
    for m in consumers:
        g = m.in_features // n
        select.setdefault(id(m), {}).update(cols=(keep[:, None] * g + torch.arange(g)[None, :]).reshape(-1),
                                            in_channels=len(keep))

    def cut(m: CLinear) -> CLinear:
        return _select(m, **select[id(m)]) if id(m) in select else m

    rnn = net.rnn
    if rnn is not None:
        ih, hh = cut(rnn.ih), cut(rnn.hh)
        rnn = Recurrent(rnn.cell, ih.in_features, hh.in_features, rnn.at, ih=ih, hh=hh)
    return PolicyNet([cut(m) for m in net.layers], net.input, rnn=rnn)


@register(StructuredConfig)
def _structured(net: PolicyNet, cfg: StructuredConfig, ctx: Context) -> PolicyNet:
    rng = np.random.default_rng(ctx.seed)
    amounts = setting_values(cfg, "amount", len(net.hidden_widths()) + 1)
    for i, amount in enumerate(amounts):
        if amount is None:  # a hidden layer the map leaves out keeps all its neurons
            continue
        n = units(net, i)
        n_keep = max(1, n - int(round(amount * n)))
        scores = neuron_scores(net, i, cfg.criterion, ctx.sample_obs, rng)
        keep = torch.as_tensor(np.sort(np.argsort(-scores, kind="stable")[:n_keep]))
        net = remove_neurons(net, i, keep)
    ctx.log(f"structured: hidden widths -> {net.hidden_widths()}")
    return net

