"""A plain PyTorch MLP: a state dict (.pt / .pth, loaded with weights_only=True: no code runs) and
an architecture YAML beside it (same stem, .yaml), e.g. for a CleanRL-style actor:

    algorithm: PPO              # how autocompress fine-tunes it: PPO | DQN | SAC
    layers: [fc1, fc2, fc_mu]   # the Linear layers in order, as state-dict prefixes
    activation: tanh            # between layers: tanh | relu | silu | elu | leaky_relu
    head: discrete              # discrete (argmax of the outputs) | continuous (outputs = action mean)
    squash: clip                # continuous: clip (to [-1, 1], then the bounds) | tanh | none (clip to bounds)
    log_std: -0.5               # continuous: the Gaussian's log-std for fine-tuning (outputs are the mean)
    obs_norm: {mean: [...], std: [...], clip: 10}   # optional, applied to raw observations first

A recurrent policy (an `nn.LSTM` or `nn.GRU` between an encoder and the head) adds:

    recurrent:
      cell: lstm                # lstm | gru
      module: lstm              # the nn.LSTM / nn.GRU's state-dict prefix (lstm.weight_ih_l0, ...)
      after: 1                  # how many of `layers` run before it (the encoder, each with `activation`); 0: on
                                # the observation. The rest are the head, reading its hidden state h.
      num_layers: 1             # the module's own options, as it was built: only these values are supported
      bidirectional: false      # (the state dict is checked for them too)
      proj_size: 0
      batch_first: false        # either: one observation a step, so the layout does not matter

The file has no critic: one is warmed up (teacher.critic_warmup iterations, actor frozen) before
fine-tuning, for PPO and SAC; DQN's Q-network is the net itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from autocompress.algos import ALGOS
from autocompress.envs import action_head
from autocompress.errors import ConfigError
from autocompress.recurrent import GATES
from autocompress.runtime import obs_normalizer, output_to_action
from autocompress.sources import (TORCH_ACTIVATIONS, Imported, obs_stats_from, to_policy_net, to_recurrent_net,
                                  with_log_std)


class ObsNorm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mean: list[float]
    std: list[float]
    clip: float | None = None


class RecurrentArch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cell: Literal["lstm", "gru"]
    module: str
    after: int = Field(0, ge=0)
    num_layers: int = Field(1, ge=1)
    bidirectional: bool = False
    proj_size: int = Field(0, ge=0)
    batch_first: bool = False  # the weights are the same either way


class Architecture(BaseModel):
    model_config = ConfigDict(extra="forbid")
    algorithm: Literal["PPO", "DQN", "SAC"]
    layers: list[str] = Field(..., min_length=1)
    activation: Literal["tanh", "relu", "silu", "elu", "leaky_relu"]
    head: Literal["discrete", "continuous"]
    squash: Literal["clip", "tanh", "none"] = "clip"
    log_std: float = -0.5
    obs_norm: ObsNorm | None = None
    recurrent: RecurrentArch | None = None


def load(path: Path, spec, obs_space: gym.Space, act_space: gym.Space) -> Imported:
    arch_path = path.with_suffix(".yaml")
    if not arch_path.is_file():
        raise ConfigError(f"teacher.from {path}: a state dict needs its architecture in {arch_path.name} beside it "
                          "(layers, activation, head, algorithm; see autocompress/sources/torch_mlp.py)")
    try:
        arch = Architecture.model_validate(yaml.safe_load(arch_path.read_text()) or {})
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"{arch_path}: {'.'.join(map(str, err['loc'])) or '(top level)'}: {err['msg']}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{arch_path}: not valid YAML: {e}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"teacher.from {path}: not a readable PyTorch state dict ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200]})") from None
    if not isinstance(state, dict):
        raise ConfigError(f"teacher.from {path}: holds a {type(state).__name__}, not a state dict")
    rec = arch.recurrent
    if rec is not None and rec.after >= len(arch.layers):
        raise ConfigError(f"{arch_path}: recurrent.after {rec.after}: at most {len(arch.layers) - 1} of the "
                          f"{len(arch.layers)} layers run before the {rec.cell} (a head layer must follow it)")
    chain = []
    for i, name in enumerate(arch.layers):
        if f"{name}.weight" not in state:
            raise ConfigError(f"{arch_path}: layers[{i}] {name!r}: no {name}.weight in {path.name} (keys: "
                              f"{', '.join(sorted(state)[:8])}{' ...' if len(state) > 8 else ''})")
        w, b = state[f"{name}.weight"], state.get(f"{name}.bias")
        if w.ndim != 2:
            raise ConfigError(f"{arch_path}: layers[{i}] {name!r} is not a Linear layer (weight shape "
                              f"{tuple(w.shape)})")
        if chain and chain[-1][0].shape[0] != w.shape[1] and (rec is None or i != rec.after):
            raise ConfigError(f"{arch_path}: layers[{i}] {name!r} takes {w.shape[1]} inputs, the layer before "
                              f"gives {chain[-1][0].shape[0]}")
        chain.append((w.numpy(), None if b is None else b.numpy(),
                      arch.activation if i < len(arch.layers) - 1 else "none"))
    head = action_head(act_space)
    if (arch.head == "discrete") != (head["kind"] == "discrete"):
        raise ConfigError(f"{arch_path}: head {arch.head!r} does not fit {spec.env}'s action space {act_space}")
    n_out = head["n"] if head["kind"] == "discrete" else head["act_dim"]
    if chain[-1][0].shape[0] != n_out:
        raise ConfigError(f"{arch_path}: the last layer gives {chain[-1][0].shape[0]} outputs, {spec.env} needs "
                          f"{n_out}")
    cell = None if rec is None else recurrent_cell(rec, state, arch_path, path.name, chain)
    mean_only = None if cell else to_policy_net(chain)  # the net as the user wrote it: the import check's reference
    if head["kind"] == "continuous":
        head["squash"] = arch.squash
        if not ALGOS[arch.algorithm].q_values:  # a Gaussian policy: mean and log-std
            chain = with_log_std(chain, np.full(n_out, arch.log_std, np.float32))
    obs_stats = None
    if arch.obs_norm is not None:
        head["obs_norm"] = arch.obs_norm.model_dump()
        obs_stats = obs_stats_from(arch.obs_norm.mean, arch.obs_norm.std)
    normalize = obs_normalizer(head.get("obs_norm"))

    def source_act(obs: np.ndarray):  # plain torch on the user's own layers
        with torch.no_grad():
            out = mean_only(torch.as_tensor(normalize(obs)[None]))[0].numpy()
        return output_to_action(out, head)

    if cell is None:
        actor = to_policy_net(chain)
    else:
        actor = to_recurrent_net(chain, cell)
        source_act = TorchRecurrentSource(chain, cell, head)  # nn.LSTM / nn.GRU itself, stateful
    algo = ALGOS[arch.algorithm]
    return Imported("torch", arch.algorithm, arch.algorithm, actor, head, source_act, None, obs_stats,
                    notes=[f"{arch.algorithm}: {algo.critic_note}" if algo.q_values else
                           "no critic in the file: warmed up before fine-tuning"])


#: options of nn.LSTM / nn.GRU not supported yet -> the state-dict key that shows one in the file ({} the module)
UNSUPPORTED = {"num_layers": "{}.weight_ih_l1", "bidirectional": "{}.weight_ih_l0_reverse", "proj_size": "{}.weight_hr_l0"}


def recurrent_cell(rec: RecurrentArch, state: dict, arch_path: Path, file: str, chain: list) -> dict:
    """The recurrent module's weights from the state dict, checked against the YAML and the layers around it:
    {cell, at, w_ih, w_hh, b_ih, b_hh} (sources.to_recurrent_net). What is not supported (several layers, both
    directions, an LSTM projection) is one ConfigError naming the option, read from the YAML or the keys."""
    m, where = rec.module, f"{arch_path}: recurrent"
    for option, key in UNSUPPORTED.items():
        given, default, key = getattr(rec, option), RecurrentArch.model_fields[option].default, key.format(m)
        if given != default or key in state:
            how = f"{option}: {given}" if given != default else f"{file} holds {key}"
            raise ConfigError(f"{where}.{option}: {how}: not supported; autocompress imports one unidirectional "
                              f"{rec.cell} layer without projection ({option}: {default})")
    if f"{m}.weight_ih_l0" not in state:
        raise ConfigError(f"{where}.module {m!r}: no {m}.weight_ih_l0 in {file} (keys: "
                          f"{', '.join(sorted(state)[:8])}{' ...' if len(state) > 8 else ''})")
    w_ih, w_hh = state[f"{m}.weight_ih_l0"].numpy(), state[f"{m}.weight_hh_l0"].numpy()
    hidden, gates = w_hh.shape[1], GATES[rec.cell]
    if w_ih.shape[0] != gates * hidden or w_hh.shape[0] != gates * hidden:
        other = {v: k for k, v in GATES.items()}.get(w_ih.shape[0] // hidden, "neither")
        raise ConfigError(f"{where}.cell {rec.cell!r}: {m}'s weights have {w_ih.shape[0]} rows for {hidden} "
                          f"hidden units, an {rec.cell} has {gates} x {hidden} (is it a {other}?)")
    if rec.after > 0 and chain[rec.after - 1][0].shape[0] != w_ih.shape[1]:
        raise ConfigError(f"{where}: the {rec.cell} takes {w_ih.shape[1]} inputs, layers[{rec.after - 1}] gives "
                          f"{chain[rec.after - 1][0].shape[0]}")
    if chain[rec.after][0].shape[1] != hidden:
        raise ConfigError(f"{where}: layers[{rec.after}] takes {chain[rec.after][0].shape[1]} inputs, the "
                          f"{rec.cell} gives {hidden} (its hidden size)")
    bias = [state.get(f"{m}.bias_{k}_l0") for k in ("ih", "hh")]
    return {"cell": rec.cell, "at": rec.after, "w_ih": w_ih, "w_hh": w_hh,
            "b_ih": None if bias[0] is None else bias[0].numpy(), "b_hh": None if bias[1] is None else bias[1].numpy()}


class TorchRecurrentSource:
    """The user's recurrent policy as torch runs it: the encoder and head as nn.Linear + activation, the cell as
    a real nn.LSTM / nn.GRU loaded with the file's weights; the state carried between calls, `reset()` per episode
    (measure.evaluate calls it): the reference an import is checked against."""

    def __init__(self, chain: list, cell: dict, head: dict):
        at, self.head = cell["at"], head
        self.normalize = obs_normalizer(head.get("obs_norm"))
        self.encoder, self.decoder = (_sequential(part) for part in (chain[:at], chain[at:]))
        rnn = (nn.LSTM if cell["cell"] == "lstm" else nn.GRU)(cell["w_ih"].shape[1], cell["w_hh"].shape[1],
                                                              bias=cell["b_ih"] is not None)
        rnn.load_state_dict({k: torch.as_tensor(v) for k, v in (("weight_ih_l0", cell["w_ih"]),
                             ("weight_hh_l0", cell["w_hh"]), ("bias_ih_l0", cell["b_ih"]),
                             ("bias_hh_l0", cell["b_hh"])) if v is not None})
        self.rnn, self.state = rnn, None

    def reset(self) -> None:
        self.state = None

    def __call__(self, obs: np.ndarray):
        with torch.no_grad():
            x = self.encoder(torch.as_tensor(self.normalize(obs))[None, None])  # (seq 1, batch 1, features)
            h, self.state = self.rnn(x, self.state)
            out = self.decoder(h)[0, 0].numpy()
        return output_to_action(out, self.head)


def _sequential(chain: list) -> nn.Sequential:
    """nn.Linear + activation modules of [(weight, bias, activation)]."""
    acts = {v: k for k, v in TORCH_ACTIVATIONS.items()}
    mods: list[nn.Module] = []
    for w, b, act in chain:
        lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
        lin.load_state_dict({"weight": torch.as_tensor(w), **({} if b is None else {"bias": torch.as_tensor(b)})})
        mods.extend([lin] + ([acts[act]()] if act != "none" else []))
    return nn.Sequential(*mods)
