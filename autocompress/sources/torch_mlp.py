"""A plain PyTorch MLP: a state dict (.pt / .pth, loaded with weights_only=True: no code runs) and
an architecture YAML beside it (same stem, .yaml), e.g. for a CleanRL-style actor:

    algorithm: PPO              # how autocompress fine-tunes it: PPO | DQN | SAC
    layers: [fc1, fc2, fc_mu]   # the Linear layers in order, as state-dict prefixes
    activation: tanh            # between layers: tanh | relu | silu | elu | leaky_relu
    head: discrete              # discrete (argmax of the outputs) | continuous (outputs = action mean)
    squash: clip                # continuous: clip (to [-1, 1], then the bounds) | tanh | none (clip to bounds)
    log_std: -0.5               # continuous: the Gaussian's log-std for fine-tuning (outputs are the mean)
    obs_norm: {mean: [...], std: [...], clip: 10}   # optional, applied to raw observations first

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

from autocompress.algos import ALGOS
from autocompress.envs import action_head
from autocompress.errors import ConfigError
from autocompress.runtime import obs_normalizer, output_to_action
from autocompress.sources import Imported, obs_stats_from, to_policy_net, with_log_std


class ObsNorm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mean: list[float]
    std: list[float]
    clip: float | None = None


class Architecture(BaseModel):
    model_config = ConfigDict(extra="forbid")
    algorithm: Literal["PPO", "DQN", "SAC"]
    layers: list[str] = Field(..., min_length=1)
    activation: Literal["tanh", "relu", "silu", "elu", "leaky_relu"]
    head: Literal["discrete", "continuous"]
    squash: Literal["clip", "tanh", "none"] = "clip"
    log_std: float = -0.5
    obs_norm: ObsNorm | None = None


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
    chain = []
    for i, name in enumerate(arch.layers):
        if f"{name}.weight" not in state:
            raise ConfigError(f"{arch_path}: layers[{i}] {name!r}: no {name}.weight in {path.name} (keys: "
                              f"{', '.join(sorted(state)[:8])}{' ...' if len(state) > 8 else ''})")
        w, b = state[f"{name}.weight"], state.get(f"{name}.bias")
        if w.ndim != 2:
            raise ConfigError(f"{arch_path}: layers[{i}] {name!r} is not a Linear layer (weight shape "
                              f"{tuple(w.shape)})")
        if chain and chain[-1][0].shape[0] != w.shape[1]:
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
    mean_only = to_policy_net(chain)  # the net as the user wrote it: the reference for the import check
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

    algo = ALGOS[arch.algorithm]
    return Imported("torch", arch.algorithm, arch.algorithm, to_policy_net(chain), head, source_act, None, obs_stats,
                    notes=[f"{arch.algorithm}: {algo.critic_note}" if algo.q_values else
                           "no critic in the file: warmed up before fine-tuning"])
