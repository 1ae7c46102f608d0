"""The policy network every technique works on: a chain of compressible layers (Linear or Conv2d).

A `PolicyNet` is fully described by its `spec()` (a JSON-able dict): layer shapes,
activations and which compression each layer carries (pruning mask, shared-weight
codebook, fake-quant). `PolicyNet.from_spec(spec)` rebuilds an identical module, so
the RLlib module built on a Ray worker has exactly the same state-dict keys as the
net the techniques produced here, and weights move between them as plain dicts.

The compression lives in the forward pass (`CLinear.effective_weight`): pruned
weights are multiplied by their mask, shared weights are looked up in a trainable
codebook, quantized weights go through fake-quant with a straight-through gradient.
So fine-tuning cannot revive a pruned weight or leave the codebook, whatever the
optimizer does. A conv layer is the same layer with a geometry (`conv`, see autocompress/conv.py):
its weight is the out x (C·kh·kw) filter matrix, so every technique sees a matrix either way. A recurrent
layer (`Recurrent`: an LSTM or GRU cell between the encoder layers and the head layers) is two CLinear
matrices, input-to-hidden and hidden-to-hidden with the gates stacked as rows (autocompress/recurrent.py),
so the same holds there; a recurrent net steps with an explicit state (`step`, `sequence`). An LSQ layer (`quant["learned"]`) holds its grid as parameters `step`
(and `zero_point`, asymmetric), trained with the weights and moved with them.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from autocompress.conv import LAYOUTS, batch_dims, geometry_chain, in_size, out_hw
from autocompress.intq import activation_table
from autocompress.recurrent import GATES, Ops, cell_step, state_size
from autocompress.quantgrid import (code_range, fake_quant, lsq_codes, lsq_fake_quant, lsq_init, quantize_codes,
                                    round_ste)
from autocompress.runtime import obs_normalizer, output_to_action

#: the activations a layer may have (numpy runtime, C kernel and exports implement the same set):
#: RLlib's fcnet activations and the usual ones of Stable-Baselines3 / PyTorch MLPs
ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "silu": nn.functional.silu, "elu": nn.functional.elu,
               "leaky_relu": nn.functional.leaky_relu, "none": lambda x: x}


class CLinear(nn.Module):
    """A Linear (or, with `conv` geometry, Conv2d) layer that may carry a pruning mask, a weight codebook
    and fake-quant. `in_features` is the weight's columns: C·kh·kw for a conv layer."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, act: str = "none",
                 masked: bool = False, share_k: int = 0, quant: dict | None = None, conv: dict | None = None):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; known: {sorted(ACTIVATIONS)}")
        self.in_features, self.out_features, self.act = in_features, out_features, act
        self.conv = None if conv is None else {k: [int(v) for v in conv[k]] for k in ("in_shape", "kernel", "stride",
                                                                                       "pad")}
        if self.conv is not None and in_features != self.conv["in_shape"][0] * int(np.prod(self.conv["kernel"])):
            raise ValueError(f"a conv layer over {self.conv['in_shape'][0]} channels with kernel "
                             f"{self.conv['kernel']} has C·kh·kw weight columns, not {in_features}")
        self.quant = dict(quant) if quant else None
        # Registered as None up front so techniques can fill them in by assignment.
        self.register_parameter("weight", None)
        self.register_parameter("codebook", None)
        self.register_buffer("indices", None)
        self.register_buffer("mask", None)
        self.register_parameter("step", None)
        self.register_parameter("zero_point", None)
        if self.quant and self.quant.get("learned"):  # placeholders of the right shape: a state dict fills them
            rows = out_features if self.quant["per_channel"] else 1
            self.step = nn.Parameter(torch.ones(rows, 1))
            if not self.quant["symmetric"]:
                self.zero_point = nn.Parameter(torch.zeros(rows, 1))
        if share_k:
            self.set_codebook(torch.zeros(share_k), torch.zeros(out_features, in_features, dtype=torch.long))
        else:
            self.weight = nn.Parameter(torch.empty(out_features, in_features))
            nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        if masked:
            self.mask = torch.ones(out_features, in_features)

    def set_codebook(self, codebook: torch.Tensor, indices: torch.Tensor) -> None:
        """Replace the dense weight by a trainable codebook and fixed per-weight indices."""
        self.weight = None
        self.codebook = nn.Parameter(codebook.float())
        self.indices = indices.long()

    def set_quant(self, spec: dict | None) -> None:
        """Put the layer on a k-bit grid (`quantgrid` spec); a learned (LSQ) grid starts from the
        current weights (`quantgrid.lsq_init`)."""
        self.quant = dict(spec) if spec else None
        self.step = self.zero_point = None
        if self.quant and self.quant.get("learned"):
            step, zero = lsq_init(self.raw_weight(), self.quant)
            self.step = nn.Parameter(step)
            self.zero_point = None if zero is None else nn.Parameter(zero)

    # -- the compressed weight, as deployed -------------------------------------------
    def raw_weight(self) -> torch.Tensor:
        """Weight before fake-quant: codebook lookup (if shared) times mask (if pruned)."""
        w = self.codebook[self.indices] if self.codebook is not None else self.weight
        return w * self.mask if self.mask is not None else w

    def effective_weight(self) -> torch.Tensor:
        w = self.raw_weight()
        if self.step is not None:
            return lsq_fake_quant(w, self.step, self.zero_point, self.quant)
        if self.quant is not None:
            w = fake_quant(w, self.quant)
        return w

    def quant_codes(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """(codes q in [qmin, qmax], scale, zero point, qmin) of the deployed weight, w = (q - zero)·scale:
        exactly the numbers the forward pass quantizes with (for LSQ, the learned grid)."""
        raw = self.raw_weight().detach()
        if self.step is not None:
            q, scale, zero = lsq_codes(raw, self.step, self.zero_point, self.quant)
            return q, scale, zero, code_range(self.quant)[0]
        return quantize_codes(raw, self.quant)

    # -- sizes of the activations it reads and writes (flat, channel-first) --------------
    @property
    def in_size(self) -> int:
        return self.in_features if self.conv is None else in_size(self.conv)

    @property
    def out_hw(self) -> tuple[int, int]:
        """Output height x width (1 x 1 for a Linear layer)."""
        return (1, 1) if self.conv is None else out_hw(self.conv)

    @property
    def out_size(self) -> int:
        return self.out_features * self.out_hw[0] * self.out_hw[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ACTIVATIONS[self.act](self.pre_activation(x))

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        w = self.effective_weight()
        if self.conv is None:
            return nn.functional.linear(x, w, self.bias)
        (c, h, wd), (kh, kw), (t, b, left, r) = self.conv["in_shape"], self.conv["kernel"], self.conv["pad"]
        lead = x.shape[:-1]
        x = nn.functional.pad(x.reshape(-1, c, h, wd), (left, r, t, b))
        y = nn.functional.conv2d(x, w.reshape(self.out_features, c, kh, kw), self.bias, stride=self.conv["stride"])
        return y.reshape(*lead, -1)

    def layer_spec(self) -> dict[str, Any]:
        s = {
            "in": self.in_features, "out": self.out_features, "bias": self.bias is not None,
            "act": self.act, "masked": self.mask is not None,
            "share_k": 0 if self.codebook is None else int(self.codebook.numel()),
            "quant": self.quant,
        }
        if self.conv is not None:
            s["conv"] = self.conv
        return s

    @classmethod
    def from_layer_spec(cls, s: dict[str, Any]) -> "CLinear":
        return cls(s["in"], s["out"], bias=s["bias"], act=s["act"], masked=s["masked"],
                   share_k=s["share_k"], quant=s["quant"], conv=s.get("conv"))


TORCH_OPS = Ops(torch.sigmoid, torch.tanh, lambda xs: torch.cat(xs, dim=-1))


class Recurrent(nn.Module):
    """One LSTM or GRU layer: `ih` (G·H x in) and `hh` (G·H x H) CLinear matrices, gates stacked as rows in
    PyTorch's order, each with its own bias (autocompress/recurrent.py). It runs after the first `at` layers of
    its PolicyNet (the encoder; 0: on the observation) and before the rest (the head)."""

    def __init__(self, cell: str, in_features: int, hidden: int, at: int, *, bias: bool = True,
                 ih: CLinear | None = None, hh: CLinear | None = None):
        super().__init__()
        if cell not in GATES:
            raise ValueError(f"unknown recurrent cell {cell!r}; known: {sorted(GATES)}")
        self.cell, self.in_features, self.hidden, self.at = cell, int(in_features), int(hidden), int(at)
        rows = GATES[cell] * self.hidden
        self.ih = ih if ih is not None else CLinear(self.in_features, rows, bias=bias)
        self.hh = hh if hh is not None else CLinear(self.hidden, rows, bias=bias)
        for name, m, cols in (("ih", self.ih, self.in_features), ("hh", self.hh, self.hidden)):
            if m.conv is not None or m.act != "none" or (m.out_features, m.in_features) != (rows, cols):
                raise ValueError(f"a {cell} layer's {name} matrix is a plain {rows} x {cols} Linear without "
                                 f"activation, not {m.out_features} x {m.in_features}")

    @property
    def state_size(self) -> int:
        return state_size(self.cell, self.hidden)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h', state') from inputs x (..., in) and the state (..., state_size)."""
        return cell_step(self.cell, self.ih(x), self.hh(state[..., :self.hidden]), state, TORCH_OPS)

    def layer_spec(self) -> dict[str, Any]:
        return {"cell": self.cell, "in": self.in_features, "hidden": self.hidden, "at": self.at,
                "ih": self.ih.layer_spec(), "hh": self.hh.layer_spec()}

    @classmethod
    def from_layer_spec(cls, s: dict[str, Any]) -> "Recurrent":
        return cls(s["cell"], s["in"], s["hidden"], s["at"], ih=CLinear.from_layer_spec(s["ih"]),
                   hh=CLinear.from_layer_spec(s["hh"]))


class PolicyNet(nn.Module):
    """obs -> [CLinear + activation]* -> outputs (logits, Q-values, or action mean).

    `input` ({"shape": obs shape, "layout": "hwc" | "chw"}, conv nets only): how an observation is laid
    out; it is transposed to flat channel-first before the first layer (autocompress/conv.py).

    `iq` (the artifact header's integer-only scales, artifact.activation_scales; None: fp32 activations):
    the forward pass rounds activations as the integer-only net on a device does (autocompress/intq.py), so
    QAT fine-tunes what the device computes: the input and each hidden pre-activation to int8 at its scale,
    a table activation's output to its table's step, with a straight-through gradient. The integer-only
    export keeps these scales."""

    def __init__(self, layers: list[CLinear], input: dict | None = None, iq: dict | None = None,
                 rnn: Recurrent | None = None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.input = None if input is None else {"shape": [int(v) for v in input["shape"]],
                                                 "layout": input["layout"]}
        self.iq = iq
        self.rnn = rnn  # registered only when present: a feed-forward net's state dict keys stay as they were
        for i, (a, b) in enumerate(zip(layers, layers[1:])):
            if (rnn is None or i + 1 != rnn.at) and a.out_size != b.in_size:  # the cell sits between at-1 and at
                raise ValueError(f"layer {i} writes {a.out_size} values, layer {i + 1} reads {b.in_size}")
        if rnn is not None:
            self._check_recurrent()

    def _check_recurrent(self) -> None:
        rnn, layers = self.rnn, self.layers
        if not 0 <= rnn.at < len(layers):
            raise ValueError(f"the {rnn.cell} layer runs after {rnn.at} layers: between 0 and {len(layers) - 1} "
                             f"(a head layer must follow it)")
        if rnn.at > 0 and layers[rnn.at - 1].out_size != rnn.in_features:
            raise ValueError(f"layer {rnn.at - 1} writes {layers[rnn.at - 1].out_size} values, the {rnn.cell} layer "
                             f"reads {rnn.in_features}")
        if rnn.at == 0 and self.input is not None:
            raise ValueError("a recurrent layer on the observation itself: conv nets put it after their conv layers")
        if layers[rnn.at].in_size != rnn.hidden:
            raise ValueError(f"the {rnn.cell} layer writes {rnn.hidden} values, layer {rnn.at} reads "
                             f"{layers[rnn.at].in_size}")
        if self.iq is not None:
            raise ValueError("integer-only activations (iq) are not supported in a recurrent net yet")

    @classmethod
    def mlp(cls, in_dim: int, hidden: list[int], out_dim: int, act: str = "tanh") -> "PolicyNet":
        dims = [in_dim, *hidden, out_dim]
        return cls([CLinear(dims[i], dims[i + 1], act=act if i < len(hidden) else "none")
                    for i in range(len(dims) - 1)])

    @classmethod
    def recurrent_mlp(cls, in_dim: int, hidden: list[int], out_dim: int, act: str, cell: str, units: int,
                      after: int) -> "PolicyNet":
        """An MLP with an LSTM / GRU layer of `units` after its first `after` hidden layers (0: on the observation)."""
        encoder = cls.mlp(in_dim, hidden[:after], 1, act).layers[:-1]  # the hidden layers alone
        rnn = Recurrent(cell, hidden[after - 1] if after else in_dim, units, after)
        return cls([*encoder, *cls.mlp(units, hidden[after:], out_dim, act).layers], rnn=rnn)

    @classmethod
    def cnn(cls, obs_shape: tuple[int, ...], layout: str, filters: list[list], hidden: list[int], out_dim: int,
            act: str = "relu", conv_act: str = "relu") -> "PolicyNet":
        """Conv layers from RLlib-style `conv_filters` (see conv.geometry_chain), flatten, MLP head."""
        if layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r}: one of {', '.join(LAYOUTS)}")
        chain = geometry_chain(tuple(obs_shape), layout, filters)
        layers = [CLinear(g["in_shape"][0] * g["kernel"][0] * g["kernel"][1], int(f[0]), act=conv_act, conv=g)
                  for g, f in zip(chain, filters)]
        head = cls.mlp(layers[-1].out_size, hidden, out_dim, act)
        return cls([*layers, *head.layers], {"shape": list(obs_shape), "layout": layout})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rnn is not None:  # a caller written for feed-forward nets must not act from a zero state unawares
            raise ValueError(f"a recurrent ({self.rnn.cell}) PolicyNet carries a state: call step(x, state) or "
                             "sequence(xs, state, starts), not forward(x)")
        x = self.to_chw(x)
        if self.iq is not None:
            return self._integer_forward(x)
        for layer in self.layers:
            x = layer(x)
        return x

    # -- recurrent nets: the state is explicit (Recurrent.state_size values per stream, zeros at an episode start) --
    def initial_state(self, *batch: int) -> torch.Tensor:
        """The state at an episode's start (zeros) for a batch of shape `batch` (none: one stream)."""
        return torch.zeros(*batch, self.rnn.state_size)

    def step(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of a recurrent net: (outputs, next state) from observations x (..., obs) and the state
        (..., state_size; None: an episode's start)."""
        x = self.to_chw(x)
        if state is None:
            state = self.initial_state(*x.shape[:-1])
        for layer in self.layers[:self.rnn.at]:
            x = layer(x)
        x, state = self.rnn.step(x, state)
        for layer in self.layers[self.rnn.at:]:
            x = layer(x)
        return x, state

    def sequence(self, xs: torch.Tensor, state: torch.Tensor | None = None,
                 starts: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A recurrent net over time: (outputs (T, ..., out), last state) from observations xs (T, ..., obs),
        the state before the first step (None: zeros) and `starts` (T, ...) true where an episode starts at
        that step (its state is zeroed first)."""
        outs = []
        for t in range(len(xs)):
            if starts is not None and state is not None:
                state = state * (~torch.as_tensor(starts[t], dtype=torch.bool)).unsqueeze(-1)
            out, state = self.step(xs[t], state)
            outs.append(out)
        return torch.stack(outs), state

    def matrices(self) -> list[CLinear]:
        """Every weight matrix, in the order data flows: the layers, a recurrent layer's ih and hh in its place."""
        if self.rnn is None:
            return list(self.layers)
        at = self.rnn.at
        return [*self.layers[:at], self.rnn.ih, self.rnn.hh, *self.layers[at:]]

    def _integer_forward(self, x: torch.Tensor) -> torch.Tensor:
        """forward() with the integer-only net's activation rounding (intq.plan's scales and tables)."""
        x = fake_int8(x, self.iq["x"])
        for layer, s_p in zip(self.layers[:-1], self.iq["p"]):
            p = fake_int8(layer.pre_activation(x), s_p)
            x = ACTIVATIONS[layer.act](p)
            if layer.act not in ("relu", "none"):  # a table on the device: its outputs at the table's step
                x = fake_int8(x, activation_table(layer.act, s_p)[1])
        return self.layers[-1](x)

    def to_chw(self, x: torch.Tensor) -> torch.Tensor:
        """Observations (..., *obs shape or flat) -> flat channel-first (..., C·H·W); an MLP's pass through."""
        if self.input is None:
            return x
        shape = self.input["shape"]
        lead = batch_dims(x.shape, shape)
        x = x.float().reshape(*lead, *shape)
        if self.input["layout"] == "hwc":
            x = x.movedim(-1, -3)
        return x.reshape(*lead, int(np.prod(shape)))

    def conv_filters(self) -> list[list]:
        """The conv layers as filters with explicit padding ([channels, kernel, stride, pad]): what
        `PolicyNet.cnn` takes to build a net with the same encoder geometry (e.g. a critic)."""
        return [[layer.out_features, layer.conv["kernel"], layer.conv["stride"], layer.conv["pad"]]
                for layer in self.layers if layer.conv is not None]

    @property
    def conv_layers(self) -> int:
        """How many layers (from the first) are convolutions."""
        return sum(layer.conv is not None for layer in self.layers)

    @property
    def in_dim(self) -> int:
        """Observation values the net reads."""
        return self.rnn.in_features if self.rnn is not None and self.rnn.at == 0 else self.layers[0].in_size

    @property
    def out_dim(self) -> int:
        return self.layers[-1].out_features

    def hidden_widths(self) -> list[int]:
        """Widths of the hidden layers, a recurrent layer's hidden size in its place."""
        widths = [layer.out_features for layer in self.layers[:-1]]
        if self.rnn is not None:
            widths.insert(self.rnn.at, self.rnn.hidden)
        return widths

    def spec(self) -> dict[str, Any]:
        s = {"layers": [layer.layer_spec() for layer in self.layers]}
        if self.input is not None:
            s["input"] = self.input
        if self.iq is not None:
            s["iq"] = self.iq
        if self.rnn is not None:
            s["rnn"] = self.rnn.layer_spec()
        return s

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "PolicyNet":
        rnn = Recurrent.from_layer_spec(spec["rnn"]) if spec.get("rnn") else None
        return cls([CLinear.from_layer_spec(s) for s in spec["layers"]], spec.get("input"), spec.get("iq"), rnn)

    def clone(self) -> "PolicyNet":
        return copy.deepcopy(self)

    def sparsity(self) -> float:
        """Fraction of zero weights over all layers' deployed weights."""
        zeros = total = 0
        for layer in self.matrices():
            w = layer.raw_weight()
            zeros += int((w == 0).sum())
            total += w.numel()
        return zeros / total

    def num_params(self) -> int:
        """Stored parameters of the deployed net: nonzero weights (or their indices) + biases."""
        total = 0
        for layer in self.matrices():
            w = layer.raw_weight()
            total += int((w != 0).sum()) if layer.mask is not None else w.numel()
            total += 0 if layer.bias is None else layer.bias.numel()
            total += 0 if layer.codebook is None else layer.codebook.numel()
        return total


def fake_int8(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x rounded to the int8 grid of `scale` (clamped to +-127 steps), straight-through inside the range."""
    return torch.clamp(round_ste(x / scale), -127, 127) * scale


def torch_act(net: PolicyNet, head: dict) -> Callable[[np.ndarray], Any]:
    """Deterministic action of a torch net for a raw env observation, by the same rules the
    runtime applies (the head's `obs_norm` first, when the teacher trained with one). A recurrent net's
    carries its state from call to call, with `reset()` for an episode's start (measure.evaluate calls it)."""
    normalize = obs_normalizer(head.get("obs_norm"))
    if net.rnn is not None:
        return RecurrentTorchAct(net, head, normalize)

    def act(obs):
        x = normalize(obs)
        with torch.no_grad():
            out = net(torch.as_tensor(x[None]))[0].numpy()
        return output_to_action(out, head)

    return act


class RecurrentTorchAct:
    """torch_act of a recurrent net: one stream, its state carried between calls, zeroed by `reset()`."""

    def __init__(self, net: PolicyNet, head: dict, normalize: Callable[[np.ndarray], np.ndarray]):
        self.net, self.head, self.normalize, self.state = net, head, normalize, None

    def reset(self) -> None:
        self.state = None

    def __call__(self, obs: np.ndarray):
        with torch.no_grad():
            out, self.state = self.net.step(torch.as_tensor(self.normalize(obs)), self.state)
        return output_to_action(out.numpy(), self.head)
