"""The recurrent cells' arithmetic (LSTM, GRU), written once for torch tensors and numpy arrays alike.

A cell is two matrices, as every technique sees them: input-to-hidden `ih` (G·H x in) and
hidden-to-hidden `hh` (G·H x H), all G gates stacked as rows in PyTorch's order (LSTM: i, f, g, o;
GRU: r, z, n), each with its own bias, so a `torch.nn.LSTM` / `nn.GRU` state dict maps one to one.
Both runtimes call `cell_step` on the two matrix products, so the torch net, the numpy runtime
and any later runtime compute the same gate equations (torch's documented ones).

The state is one flat vector per stream: h (GRU, H values) or h then c (LSTM, 2·H values), zeros at an
episode's start. One vector keeps the stateless API (`act(obs, state) -> (action, state)`) and a C
runtime's static buffer simple.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

#: cell -> gates stacked in its matrices' rows
GATES = {"lstm": 4, "gru": 3}
#: cell -> state vectors carried per hidden unit (LSTM: h and c)
STATE_VECTORS = {"lstm": 2, "gru": 1}


def state_size(cell: str, hidden: int) -> int:
    return STATE_VECTORS[cell] * hidden


class Ops(NamedTuple):
    """The array library's functions a cell needs (torch's in nets.py, numpy's here)."""

    sigmoid: Callable
    tanh: Callable
    cat: Callable  # [a, b] -> a and b joined along the last axis


NUMPY_OPS = Ops(lambda x: 0.5 * (1.0 + np.tanh(0.5 * x)), np.tanh,  # that sigmoid cannot overflow
                lambda xs: np.concatenate(xs, axis=-1))


def cell_step(cell: str, gi, gh, state, ops: Ops):
    """One step: gi = ih(x) (..., G·H) and gh = hh(h) (..., G·H), biases included; state (..., S).
    Returns (h', state')."""
    sigmoid, tanh = ops.sigmoid, ops.tanh
    hidden = gi.shape[-1] // GATES[cell]
    h = state[..., :hidden]
    if cell == "gru":
        r = sigmoid(gi[..., :hidden] + gh[..., :hidden])
        z = sigmoid(gi[..., hidden:2 * hidden] + gh[..., hidden:2 * hidden])
        n = tanh(gi[..., 2 * hidden:] + r * gh[..., 2 * hidden:])  # r gates hh's n rows with their bias (torch)
        h = (1 - z) * n + z * h
        return h, h
    g = gi + gh
    i, f = sigmoid(g[..., :hidden]), sigmoid(g[..., hidden:2 * hidden])
    c = f * state[..., hidden:] + i * tanh(g[..., 2 * hidden:3 * hidden])
    h = sigmoid(g[..., 3 * hidden:]) * tanh(c)
    return h, ops.cat([h, c])
