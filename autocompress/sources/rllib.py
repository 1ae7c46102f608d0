"""RLlib checkpoints of the new API stack: an Algorithm checkpoint (`algo.save_to_path(dir)`) or an
RLModule checkpoint, for PPO, DQN and SAC with RLlib's default MLP encoders, and PPO and DQN with its
CNN encoder (`conv_filters`).

Read with `RLModule.from_checkpoint` and walked module by module (any `fcnet_hiddens`, RLlib's
activations, `vf_share_layers`, `free_log_std`, head hiddens):
  PPO   actor = (actor or shared) encoder + pi head; critic = (critic or shared) encoder + vf head
  DQN   Q = encoder + af head; a dueling Q (V + A - mean A) becomes one chain whose head layers hold
        the A and V branches side by side (block-diagonal) and whose last layer computes V + A - mean A,
        exactly; target nets are rebuilt from the online net
  SAC   actor = pi encoder + pi head (tanh-squashed mean); RLlib's twin Q nets are not carried over
        (a critic is warmed up before fine-tuning)
RLlib's CNN encoder (TorchCNNEncoder: ZeroPad2d + Conv2d + activation per filter) reads channels-last
images, permutes them to channels-first for its convs and its output back to channels-last before the
Flatten: the conv layers become ours with the net's input layout 'hwc', and the first Linear after them
gets its input columns reordered from (H, W, C) to our (C, H, W) order.
The env runner's MeanStdFilter statistics come along when the Algorithm checkpoint has them.
Continuous actions follow RLlib's default normalize_actions=True (mean clipped to [-1, 1], mapped
onto the bounds) for PPO. Checkpoints are pickles: only load checkpoints you trust.

PPO with `use_lstm` (TorchStatefulActorCriticEncoder; separate or shared encoders): the actor's TorchLSTMEncoder is
its tokenizer (RLlib's MLP encoder from `fcnet_hiddens`) -> one LSTM layer of `lstm_cell_size` units -> the pi head,
a recurrent PolicyNet whose state (h then c) starts at zeros, as get_initial_state() does. `max_seq_len` only shapes
training batches: inference steps one observation at a time, state carried. RLlib's catalog builds one LSTM layer
over an MLP tokenizer; anything else (several layers, an LSTM after the CNN encoder) and `lstm_use_prev_action` /
`lstm_use_prev_reward` (inputs autocompress does not feed) are one ConfigError naming them. The critic (its own or
the shared LSTM) is not imported: a fine-tune first trains a recurrent one (teacher.critic_warmup). `source_act` is
RLlib's stateful forward_inference (RLlibSource: STATE_IN carried, get_initial_state() after reset()).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import gymnasium as gym
import numpy as np
from torch import nn
from torch.utils._pytree import tree_map

from autocompress import rl
from autocompress.envs import action_head
from autocompress.errors import ConfigError
from autocompress.sources import (Imported, conv_chain, hwc_columns, linear_chain, params, to_policy_net,
                                  to_recurrent_net, with_log_std)

_ALGOS = {"DefaultPPOTorchRLModule": "PPO", "DefaultDQNTorchRLModule": "DQN", "DefaultSACTorchRLModule": "SAC"}


def _module_dir(path: Path) -> Path:
    for d in (path / "learner_group" / "learner" / "rl_module" / "default_policy", path / "default_policy", path):
        if (d / "module_state.pkl").exists():
            return d
    raise ConfigError(f"teacher.from {path}: no RLModule in this checkpoint (looked for "
                      "learner_group/learner/rl_module/default_policy/module_state.pkl)")


def _mlp(part, where: str) -> list:
    net = getattr(getattr(part, "net", None), "mlp", None)
    if net is None:
        raise ConfigError(f"{where}: {type(part).__name__} is not one of RLlib's default MLP encoders/heads "
                          "(attention and custom encoders are not supported, LSTM encoders for PPO only)")
    return [(*params(m), a) for m, a in linear_chain(list(net), where)]


def _encoder(part, where: str, obs_space: gym.Space) -> tuple[list, tuple[int, int, int] | None]:
    """An encoder's chain and, for RLlib's CNN encoder, the (C, H, W) of its output (flattened as H, W, C)."""
    if type(part).__name__ != "TorchCNNEncoder":
        return _mlp(part, where), None
    shape = tuple(obs_space.shape)
    if len(shape) != 3:
        raise ConfigError(f"{where}: RLlib's CNN encoder reads images (H, W, C); the env's observations have "
                          f"shape {shape}")
    modules = [m for sub in part.net for m in (sub.cnn if hasattr(sub, "cnn") else [sub])]
    first = next((m for m in modules if isinstance(m, nn.Conv2d)), None)
    if first is not None and first.in_channels != shape[2]:
        hint = "; these look channels-first" if shape[0] == first.in_channels else ""
        raise ConfigError(f"{where}: the CNN encoder's first Conv2d reads {first.in_channels} channels, but the env's "
                          f"observations {shape} have {shape[2]} in the last axis (RLlib's CNN encoder reads "
                          f"channels-last images{hint})")
    return conv_chain(modules, f"{where}.cnn", (shape[2], shape[0], shape[1]))


def _after(enc_out: tuple[int, int, int] | None, head: list) -> list:
    """A head's chain reading a CNN encoder's (H, W, C)-flattened output, as our (C, H, W) order reads it."""
    if enc_out is None:
        return head
    w, b, act = head[0]
    return [(hwc_columns(w, enc_out), b, act), *head[1:]]


def _obs_stats(path: Path) -> tuple[dict | None, float]:
    f = path / "env_runner" / "env_to_module_connector" / "MeanStdFilter" / "state.pkl"
    if not f.exists():
        return None, 0.0
    from ray.rllib.utils.filter import RunningStat  # deferred (heavy): RLlib

    with open(f, "rb") as fh:
        state = pickle.load(fh)
    (agent,) = state.values()
    (rs,) = [RunningStat.from_state(s) for s in agent["running_stats"]]
    return ({"count": int(rs.num_pushes), "mean": rs.mean_array.tolist(),
             "sum_sq_diff": rs.sum_sq_diff_array.tolist()}, float(agent.get("clip_by_value") or 0.0))


def _dueling(enc: list, af: list, vf: list, where: str) -> list:
    """One chain for Q = V + A - mean(A): A and V head layers side by side, block-diagonal."""
    if len(af) != len(vf):
        raise ConfigError(f"{where}: dueling heads of different depth ({len(af)} vs {len(vf)} layers)")
    chain = list(enc)
    for k, ((wa, ba, acta), (wv, bv, actv)) in enumerate(zip(af, vf)):
        last = k == len(af) - 1
        if not last:
            if acta != actv:
                raise ConfigError(f"{where}: dueling heads with different activations ({acta}, {actv})")
            if k == 0:  # both branches read the encoder's output
                w = np.concatenate([wa, wv])
            else:
                w = np.block([[wa, np.zeros((wa.shape[0], wv.shape[1]))], [np.zeros((wv.shape[0], wa.shape[1])), wv]])
            chain.append((w.astype(np.float32), np.concatenate([ba, bv]).astype(np.float32), acta))
            continue
        centred_w, centred_b = wa - wa.mean(0, keepdims=True), ba - ba.mean()
        if k == 0:  # heads without hidden layers: one Linear from the encoder's output
            w = centred_w + wv
        else:
            w = np.concatenate([centred_w, np.repeat(wv, wa.shape[0], axis=0)], axis=1)
        chain.append((w.astype(np.float32), (centred_b + bv).astype(np.float32), "none"))
    return chain


def load(path: Path, spec, obs_space: gym.Space, act_space: gym.Space) -> Imported:
    from ray.rllib.core.rl_module.rl_module import RLModule  # deferred (heavy): RLlib

    module_dir = _module_dir(path)
    try:
        module = RLModule.from_checkpoint(str(module_dir))
    except Exception as e:
        raise ConfigError(f"teacher.from {path}: RLlib could not load the module ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:300] if str(e) else ''})") from None
    source = _ALGOS.get(type(module).__name__)
    if source is None:
        raise ConfigError(f"teacher.from {path}: module {type(module).__name__}: supported are RLlib's default "
                          f"PPO, DQN and SAC modules ({', '.join(_ALGOS)})")
    if module.observation_space is not None and module.observation_space.shape != obs_space.shape:
        raise ConfigError(f"teacher.from {path}: observation space {module.observation_space} does not match "
                          f"{spec.env}'s {obs_space}")
    if module.action_space is not None and (type(module.action_space) is not type(act_space) or
                                            module.action_space.shape != act_space.shape or
                                            getattr(module.action_space, "n", None) != getattr(act_space, "n", None)):
        raise ConfigError(f"teacher.from {path}: action space {module.action_space} does not match "
                          f"{spec.env}'s {act_space}")
    where = f"teacher.from {path}"
    config = module.model_config or {}  # a dict or a DefaultModelConfig
    for option in ("lstm_use_prev_action", "lstm_use_prev_reward"):  # inputs beside the observation: not fed here
        if config.get(option) if isinstance(config, dict) else getattr(config, option, False):
            raise ConfigError(f"{where}: {option}=True: not supported; autocompress imports recurrent policies that "
                              "read the observation alone")
    head = action_head(act_space)
    critic, cell, notes = None, None, []
    image = {"shape": list(obs_space.shape), "layout": "hwc"}  # the input of a net with RLlib's CNN encoder
    if source == "PPO":
        enc = module.encoder
        actor_enc = getattr(enc, "actor_encoder", None) or getattr(enc, "encoder", None)
        critic_enc = getattr(enc, "critic_encoder", None) or getattr(enc, "encoder", None)
        if type(actor_enc).__name__ == "TorchLSTMEncoder":
            enc, cell = _lstm_encoder(actor_enc, f"{where}: encoder", obs_space)
            out = None
            notes.append(f"the critic ({'the shared LSTM' if critic_enc is actor_enc else 'its own LSTM'}) is not "
                         "imported: only the actor's LSTM acts; a fine-tune first trains a recurrent critic "
                         "(teacher.critic_warmup)")
        else:
            enc, out = _encoder(actor_enc, f"{where}: encoder", obs_space)
        chain = enc + _after(out, _mlp(module.pi, f"{where}: pi"))
        log_std = getattr(module.pi, "log_std", None)
        if log_std is not None:  # free_log_std: a state-independent log-std parameter
            chain = with_log_std(chain, log_std.detach().numpy())
        if cell is None:
            enc, out = _encoder(critic_enc, f"{where}: critic encoder", obs_space)
            critic = to_policy_net(enc + _after(out, _mlp(module.vf, f"{where}: vf")), image if out else None)
        if head["kind"] == "continuous":
            head["squash"] = "clip"
    elif source == "DQN":
        if getattr(module, "num_atoms", 1) > 1 or getattr(module, "uses_noisy", False):
            raise ConfigError(f"{where}: distributional (num_atoms > 1) or noisy DQN is not supported")
        enc, out = _encoder(module.encoder, f"{where}: encoder", obs_space)
        af = _after(out, _mlp(module.af, f"{where}: af"))
        chain = _dueling(enc, af, _after(out, _mlp(module.vf, f"{where}: vf")), where) if module.uses_dueling else \
            enc + af
    else:
        chain = _mlp(module.pi_encoder, f"{where}: pi_encoder") + _mlp(module.pi, f"{where}: pi")
        head["squash"] = "tanh"
    stats, clip = _obs_stats(path)
    if stats is not None:
        head["obs_norm"] = {**rl.obs_norm(stats), "clip": clip or None}

    if cell is not None:
        actor = to_recurrent_net(chain, cell)
    else:
        actor = to_policy_net(chain, image if len(chain[0]) == 4 else None)
    notes.insert(0, f"{type(module).__name__}, {'with' if stats else 'without'} MeanStdFilter statistics")
    return Imported("rllib", source, source, actor, head, RLlibSource(module, stats, clip, act_space), critic, stats,
                    notes=notes)


class RLlibSource:
    """RLlib's own deterministic action on one raw observation (rl.module_actions). A stateful module's state is
    carried between calls and `reset()` (measure.evaluate calls it per episode) restarts it from
    get_initial_state(), as RLlib's env runner does at an episode's start; a feed-forward module ignores both."""

    def __init__(self, module, stats: dict | None, clip: float, act_space: gym.Space):
        self.module, self.stats, self.clip, self.space = module, stats, clip, act_space
        self.state = None

    def reset(self) -> None:
        self.state = None

    def __call__(self, obs: np.ndarray):
        obs = np.asarray(obs, np.float32)[None]
        if self.module.is_stateful():
            if self.state is None:  # RLlib batches the initial state (a batch axis of 1 on every leaf), as here
                self.state = tree_map(lambda s: s[None], self.module.get_initial_state())
            a, self.state = rl.module_step(self.module, obs, self.state, self.stats, self.space, clip=self.clip)
        else:
            a = rl.module_actions(self.module, obs, self.stats, self.space, clip=self.clip)
        return int(a[0]) if isinstance(self.space, gym.spaces.Discrete) else a[0]


def _lstm_encoder(part, where: str, obs_space: gym.Space) -> tuple[list, dict]:
    """A TorchLSTMEncoder as the chain before its LSTM (the tokenizer) and a sources.to_recurrent_net cell."""
    tokenizer = []
    if part.tokenizer is not None:
        tokenizer, out = _encoder(part.tokenizer, f"{where}.tokenizer", obs_space)
        if out is not None:
            raise ConfigError(f"{where}: an LSTM after RLlib's CNN encoder (use_lstm with conv_filters) is not "
                              "imported yet; autocompress imports use_lstm over the MLP encoder")
    lstm = part.lstm
    for attr, supported in (("num_layers", 1), ("bidirectional", False), ("proj_size", 0)):
        if getattr(lstm, attr) != supported:  # RLlib's catalog builds one plain layer: only a custom catalog's differs
            raise ConfigError(f"{where}.lstm: {attr}={getattr(lstm, attr)}: not supported; autocompress imports one "
                              f"unidirectional LSTM layer without projection ({attr}={supported})")
    w = {k: v.detach().cpu().numpy() for k, v in lstm.state_dict().items()}
    return tokenizer, {"cell": "lstm", "at": len(tokenizer), "w_ih": w["weight_ih_l0"], "w_hh": w["weight_hh_l0"],
                       "b_ih": w.get("bias_ih_l0"), "b_hh": w.get("bias_hh_l0")}  # use_bias=False: no biases
