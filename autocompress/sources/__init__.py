"""Teacher sources: the user's own trained policy, turned into autocompress's nets.

One small adapter per format, each returning an `Imported`: the deployed net as a PolicyNet (the
exact function the source computes, as a chain of Linear + activation layers, after conv layers for
a CNN policy: RLlib's CNN encoder, SB3's NatureCNN), how its outputs become actions (`head`,
observation normalisation included), the critic when the file has one,
and the source framework's own deterministic action (`source_act`) to check the import against.

    sb3      a Stable-Baselines3 .zip (PPO, A2C, DQN, SAC MlpPolicy; PPO, A2C, DQN CnnPolicy; SB3-contrib's
             RecurrentPPO MlpLstmPolicy), VecNormalize .pkl beside it
    torch    a PyTorch state dict (.pt / .pth) with an architecture YAML beside it
    rllib    an RLlib (new API stack) Algorithm or RLModule checkpoint directory (MLP or, PPO and DQN, CNN
             encoders; PPO with use_lstm)

Every format but the plain state dict unpickles Python objects: only load files you trust.
A plain state dict may hold an LSTM / GRU policy (one layer between the encoder and the head), and so may an
SB3-contrib RecurrentPPO zip and an RLlib PPO checkpoint with use_lstm (one LSTM layer each). What cannot be
represented (a custom feature extractor, several LSTM layers, RLlib's prev-action / prev-reward LSTM inputs, an unknown
activation, gSDE, an observation space the conv encoder does not read) is one ConfigError naming the layer or option,
raised before Ray starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from autocompress.conv import out_hw, same_pad
from autocompress.errors import ConfigError
from autocompress.nets import CLinear, PolicyNet, Recurrent

#: torch activation module -> our activation name (anything else is refused, named)
TORCH_ACTIVATIONS = {nn.Tanh: "tanh", nn.ReLU: "relu", nn.SiLU: "silu", nn.ELU: "elu", nn.LeakyReLU: "leaky_relu"}


@dataclass
class Imported:
    format: str                              # sb3 | torch | rllib
    source_algorithm: str                    # as the source names it, e.g. A2C
    algorithm: str                           # how autocompress fine-tunes it: PPO | DQN | SAC
    actor: PolicyNet                         # the deployed net
    head: dict                               # outputs -> action, with obs_norm when the source normalised
    source_act: Callable[[np.ndarray], Any]  # the source framework's own deterministic action, one raw obs
    critic: PolicyNet | None = None          # PPO value net obs -> 1 (None: warmed up before fine-tuning)
    obs_stats: dict | None = None            # obs normalisation as MeanStdFilter statistics, for fine-tuning
    notes: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        out = [f"{layer.in_features}->{layer.out_features} {layer.act}" if layer.conv is None else
               f"conv {'x'.join(map(str, layer.conv['kernel']))}/{'x'.join(map(str, layer.conv['stride']))} "
               f"{layer.conv['in_shape'][0]}->{layer.out_features} {layer.act}" for layer in self.actor.layers]
        rnn = self.actor.rnn
        if rnn is not None:
            out.insert(rnn.at, f"{rnn.cell} {rnn.in_features}->{rnn.hidden}")
        return out


def detect(path: Path) -> str:
    path = Path(path)
    if path.is_dir():
        if (path / "rllib_checkpoint.json").exists() or (path / "module_state.pkl").exists() or \
                (path / "learner_group").is_dir():
            return "rllib"
        raise ConfigError(f"teacher.from {path}: a directory but not an RLlib checkpoint (no rllib_checkpoint.json)")
    if path.suffix == ".zip":
        return "sb3"
    if path.suffix in (".pt", ".pth"):
        return "torch"
    raise ConfigError(f"teacher.from {path}: cannot tell its format from the name; give teacher.format "
                      "(sb3 for a Stable-Baselines3 .zip, torch for a state dict + YAML, rllib for a checkpoint dir)")


def load(spec, recurrent: bool = False) -> Imported:
    """Import `spec.teacher.from_` and check it against the spec (algorithm, observation and action
    spaces). Raises ConfigError naming what does not fit. A recurrent (LSTM / GRU) policy only with
    `recurrent=True`: its callers carry the state (compress and search, checked by
    pipeline.check_recurrent_trial; evaluate; the teacher cache); every caller without it (sensitivity, inspect,
    teach, validate) measures in ways that do not carry a state yet."""
    t = spec.teacher
    fmt = detect(Path(t.from_)) if t.format == "auto" else t.format
    env = spec.env_creator()()
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    if fmt == "sb3":
        from autocompress.sources import sb3 as adapter  # deferred: each adapter imports its library (sb3, Ray)
    elif fmt == "torch":
        from autocompress.sources import torch_mlp as adapter
    else:
        from autocompress.sources import rllib as adapter
    imported = adapter.load(Path(t.from_), spec, obs_space, act_space)
    if imported.actor.rnn is not None and not recurrent:
        raise ConfigError(f"teacher.from {t.from_}: a recurrent ({imported.actor.rnn.cell}) policy: autocompress "
                          "imports it (sources.load(spec, recurrent=True)) and compresses it with compress_net, "
                          "compress, search or sensitivity (PPO fine-tunes it), but teach, validate and inspect do "
                          "not take one yet")
    if imported.algorithm != spec.algorithm:
        raise ConfigError(f"teacher.from {t.from_}: a {imported.source_algorithm} policy, but the trial spec's "
                          f"algorithm is {spec.algorithm} ({imported.source_algorithm} is fine-tuned as "
                          f"{imported.algorithm})")
    n_obs = int(np.prod(obs_space.shape))
    if imported.actor.in_dim != n_obs:
        raise ConfigError(f"teacher.from {t.from_}: the policy takes {imported.actor.in_dim} observation values, "
                          f"{spec.env} gives {n_obs} ({obs_space})")
    return imported


# -- shared by the adapters ------------------------------------------------------------------

def linear_chain(modules: list[nn.Module], where: str) -> list[tuple[nn.Linear, str]]:
    """[(Linear, activation after it)] from a flat list of Linear / activation / Identity modules."""
    out: list[tuple[nn.Linear, str]] = []
    for i, m in enumerate(modules):
        if isinstance(m, nn.Linear):
            out.append((m, "none"))
        elif isinstance(m, (nn.Identity, nn.Flatten)):
            continue
        elif type(m) in TORCH_ACTIVATIONS:
            if not out or out[-1][1] != "none":
                raise ConfigError(f"{where}[{i}]: {type(m).__name__} does not follow a Linear layer")
            out[-1] = (out[-1][0], _activation(m, f"{where}[{i}]"))
        else:
            raise ConfigError(f"{where}[{i}]: unsupported layer {type(m).__name__} (autocompress represents Linear "
                              f"layers with {', '.join(sorted(set(TORCH_ACTIVATIONS.values())))} activations)")
    return out


def _activation(m: nn.Module, where: str) -> str:
    if isinstance(m, nn.LeakyReLU) and m.negative_slope != 0.01:
        raise ConfigError(f"{where}: LeakyReLU(negative_slope={m.negative_slope}): only 0.01 is supported")
    if isinstance(m, nn.ELU) and m.alpha != 1.0:
        raise ConfigError(f"{where}: ELU(alpha={m.alpha}): only alpha=1 is supported")
    return TORCH_ACTIVATIONS[type(m)]


def conv_chain(modules: list[nn.Module], where: str, in_shape: tuple[int, int, int],
               in_scale: float = 1.0) -> tuple[list[tuple], tuple[int, int, int]]:
    """[(filter matrix (out, C·kh·kw), bias, activation, geometry)] from a flat list of ZeroPad2d / Conv2d /
    activation / Flatten modules reading channel-first images of `in_shape` (C, H, W), and the (C, H, W)
    they write. `in_scale` multiplies the first layer's filters: a constant input scaling folded in exactly
    (a convolution is linear and pads with zeros), e.g. SB3's 1/255 for uint8 images."""
    out: list[tuple] = []
    (c, h, w), pad = in_shape, [0, 0, 0, 0]
    for i, m in enumerate(modules):
        at = f"{where}[{i}]"
        if isinstance(m, nn.ZeroPad2d):
            left, r, t, b = m.padding  # torch's order
            pad = [pad[0] + t, pad[1] + b, pad[2] + left, pad[3] + r]
        elif isinstance(m, nn.Conv2d):
            if m.groups != 1 or tuple(m.dilation) != (1, 1) or m.padding_mode != "zeros":
                raise ConfigError(f"{at}: Conv2d with groups={m.groups}, dilation={tuple(m.dilation)}, padding_mode="
                                  f"{m.padding_mode!r}: only plain convolutions (groups 1, dilation 1, zero "
                                  "padding) are supported")
            if m.in_channels != c:
                raise ConfigError(f"{at}: Conv2d reads {m.in_channels} channels, its input has {c} (images of "
                                  f"{h}x{w} pixels, {c} channels)")
            kernel, stride = list(m.kernel_size), list(m.stride)
            ph, pw = (0, 0) if m.padding == "valid" else m.padding
            own = same_pad(h, w, kernel, stride) if m.padding == "same" else [ph, ph, pw, pw]
            geo = {"in_shape": [c, h, w], "kernel": kernel, "stride": stride,
                   "pad": [p + q for p, q in zip(pad, own)]}
            oh, ow = out_hw(geo)
            if oh < 1 or ow < 1:
                raise ConfigError(f"{at}: a {kernel[0]}x{kernel[1]} kernel with stride {stride} on a {h}x{w} input "
                                  f"leaves {oh}x{ow}: the image shrinks below 1x1")
            wt, bias = params(m)
            wt = wt.reshape(m.out_channels, -1) * (np.float32(in_scale) if not out else np.float32(1))
            out.append((wt, bias, "none", geo))
            (c, h, w), pad = (m.out_channels, oh, ow), [0, 0, 0, 0]
        elif type(m) in TORCH_ACTIVATIONS:
            if not out or out[-1][2] != "none" or any(pad):
                raise ConfigError(f"{at}: {type(m).__name__} does not follow a Conv2d layer")
            out[-1] = (*out[-1][:2], _activation(m, at), out[-1][3])
        elif isinstance(m, (nn.Identity, nn.Flatten)):
            continue
        else:
            raise ConfigError(f"{at}: unsupported layer {type(m).__name__} in a conv encoder (autocompress "
                              "represents ZeroPad2d + Conv2d + activation layers)")
    if not out:
        raise ConfigError(f"{where}: a conv encoder without Conv2d layers")
    return out, (c, h, w)


def hwc_columns(w: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    """A Linear weight that reads (H, W, C)-flattened features, reordered to read (C, H, W)-flattened ones."""
    c, h, wd = chw
    return np.ascontiguousarray(np.asarray(w).reshape(-1, h, wd, c).transpose(0, 3, 1, 2).reshape(len(w), -1))


def to_recurrent_net(chain: list[tuple], cell: dict) -> PolicyNet:
    """A recurrent PolicyNet: the Linear layers of `chain` (as to_policy_net takes them), the first cell["at"] before
    an LSTM / GRU layer of cell["cell"] with torch's weights w_ih (G·H x in), w_hh (G·H x H) and biases b_ih, b_hh
    (None: none), the rest after it."""
    w_ih, w_hh = (torch.as_tensor(np.asarray(cell[k], np.float32)) for k in ("w_ih", "w_hh"))
    rnn = Recurrent(cell["cell"], w_ih.shape[1], w_hh.shape[1], cell["at"], bias=cell["b_ih"] is not None)
    with torch.no_grad():
        for m, w, b in ((rnn.ih, w_ih, cell["b_ih"]), (rnn.hh, w_hh, cell["b_hh"])):
            m.weight.copy_(w)
            if b is not None:
                m.bias.copy_(torch.as_tensor(np.asarray(b, np.float32)))
    return PolicyNet(clinears(chain), rnn=rnn)


def to_policy_net(chain: list[tuple], input: dict | None = None) -> PolicyNet:
    """PolicyNet from [(weight (out, in), bias (out,) or None, activation[, conv geometry])]; `input` (the
    observation's shape and layout) for a net that starts with conv layers."""
    return PolicyNet(clinears(chain), input)


def clinears(chain: list[tuple]) -> list[CLinear]:
    """CLinear layers holding the weights of [(weight (out, in), bias (out,) or None, activation[, conv geometry])]."""
    layers = []
    for w, b, act, *conv in chain:
        w = torch.as_tensor(np.asarray(w, np.float32))
        layer = CLinear(w.shape[1], w.shape[0], bias=b is not None, act=act, conv=conv[0] if conv else None)
        with torch.no_grad():
            layer.weight.copy_(w)
            if b is not None:
                layer.bias.copy_(torch.as_tensor(np.asarray(b, np.float32)))
        layers.append(layer)
    return layers


def params(lin: nn.Linear) -> tuple[np.ndarray, np.ndarray | None]:
    return lin.weight.detach().cpu().numpy(), None if lin.bias is None else lin.bias.detach().cpu().numpy()


def with_log_std(chain: list, log_std: np.ndarray) -> list:
    """A Gaussian head whose log-std does not depend on the state (SB3 PPO, a mean-only MLP) as our
    actors' outputs (mean, log_std): extra rows with zero weights and the log-std as bias."""
    w, b, act = chain[-1]
    n_in = w.shape[1]
    b = np.zeros(w.shape[0], np.float32) if b is None else b
    return chain[:-1] + [(np.concatenate([w, np.zeros((len(log_std), n_in), np.float32)]),
                          np.concatenate([b, np.asarray(log_std, np.float32)]), act)]


def obs_stats_from(mean: np.ndarray, std: np.ndarray) -> dict:
    """MeanStdFilter statistics that normalise with (about) this mean and std during fine-tuning
    (RLlib's filter divides by sqrt(ssd / (n - 1)) + 1e-8; the artifact keeps the source's exact std)."""
    n = 1_000_000
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    return {"count": n, "mean": mean.tolist(), "sum_sq_diff": (std ** 2 * (n - 1)).tolist()}
