"""The only RLlib adapter: compressible RLModules for PPO, DQN and SAC (their classes in
`_rl_modules.py`, what differs between the algorithms in `algos.py`), and a training / fine-tuning
session over them (the teacher's cache and training loop are `teacher.py`).

In every module the deployed (acting) net is a `PolicyNet` rebuilt from its spec —
PPO's actor (`actor`), DQN's Q-network (`af`, plus its target copy `_target_af`), SAC's
actor (`pi`) — so every compression (mask, codebook, fake-quant, smaller or factorized
shapes) is part of the module itself on the learner and the env runners alike; a
recurrent one makes PPO's module stateful (its state carried over RLlib's [B, T] chunks).
The other nets (PPO critic: default_critic; SAC twin Q) are used for fine-tuning only. Weights
move in and out as plain state dicts via `algo.get_state` / `algo.set_state`
(`algo.set_weights` is broken on the new API stack in Ray 2.60).
"""

from __future__ import annotations

import os
from typing import Callable

import gymnasium as gym
import numpy as np
import torch

from autocompress import envs
from autocompress.algos import ALGOS
from autocompress.config import RnnSpec, TrialSpec
from autocompress.errors import ConfigError
from autocompress.nets import PolicyNet

_STATE_PATH = ("learner_group", "learner", "rl_module", "default_policy")


def ensure_ray() -> None:
    """Start local Ray (or join RAY_ADDRESS) unless already inside a Ray job/worker."""
    import ray  # deferred (heavy): Ray starts only where RLlib runs

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True)


def _classes(algorithm: str):
    """(config class, module class, learner class, catalog class): Ray is imported here, on first use."""
    from autocompress._rl_modules import CLASSES  # deferred (heavy): its module imports RLlib

    if algorithm not in CLASSES:
        raise ValueError(f"unknown algorithm {algorithm!r}")
    return CLASSES[algorithm]


def env_spaces(spec: TrialSpec) -> tuple[gym.Space, gym.Space]:
    env = spec.env_creator()()
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def action_head(spec: TrialSpec, act_space: gym.Space) -> dict:
    head = envs.action_head(act_space)
    if head["kind"] == "continuous":
        head["squash"] = ALGOS[spec.algorithm].squash
    return head


def actor_out_dim(head: dict) -> int:
    # Continuous actors output mean and log-std (RLlib's Gaussian / squashed-Gaussian inputs).
    return head["n"] if head["kind"] == "discrete" else 2 * head["act_dim"]


def training_settings(spec: TrialSpec) -> dict:
    settings = {**ALGOS[spec.algorithm].defaults, **spec.training}
    if isinstance(settings.get("n_step"), list):  # YAML has no tuples; RLlib wants (min, max)
        settings["n_step"] = tuple(settings["n_step"])
    return settings


def algo_config(spec: TrialSpec, actor: PolicyNet, lr: float | None = None, l1: float = 0.0,
                critic: PolicyNet | None = None, frozen_obs_stats: bool = False, normalize_actions: bool = True):
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec  # deferred (heavy): RLlib

    config_cls, module_cls, learner_cls, catalog_cls = _classes(spec.algorithm)
    algo = ALGOS[spec.algorithm]
    training = training_settings(spec)
    if lr is not None:  # fine-tuning: the spec's fine-tune learning rate for actor and critic alike
        training.update({k: lr for k in algo.lr_keys})
        if algo.epsilon_schedule:  # the net is trained already: explore at the schedule's final epsilon,
            eps = training["epsilon"]  # not from 1.0 again (that fills the buffer with random-policy states)
            training["epsilon"] = [(0, eps[-1][1] if isinstance(eps, (list, tuple)) else eps)]
    t = spec.teacher
    critic_hidden = list(t.critic_hidden or t.hidden)
    if critic is None and algo.own_critic:
        critic = default_critic(spec, actor)
    model_config = {"actor": actor.spec(), "critic_hidden": critic_hidden, "activation": t.activation,
                    "fcnet_hiddens": critic_hidden, "fcnet_activation": t.activation,
                    "critic": critic.spec() if critic is not None else None,
                    "max_seq_len": t.rnn.max_seq_len if t.rnn else RnnSpec().max_seq_len}  # RLlib's, for a stateful module
    return (
        config_cls()
        .environment(envs.resolve(spec.env), env_config=dict(spec.env_config), normalize_actions=normalize_actions,
                     clip_actions=not normalize_actions)
        .framework("torch")
        .env_runners(num_env_runners=0, **_obs_filter(spec, frozen_obs_stats))
        .learners(num_learners=0, learner_class=learner_cls, learner_config_dict={"l1": l1})
        .rl_module(rl_module_spec=RLModuleSpec(module_class=module_cls, catalog_class=catalog_cls,
                                               model_config=model_config))
        .training(**training)
        .reporting(**{**algo.reporting, **spec.reporting})
        .debugging(seed=spec.seed, log_level="ERROR")
    )


def default_critic(spec: TrialSpec, actor: PolicyNet) -> PolicyNet | None:
    """PPO's value net where an MLP on the observation (the module's own, `critic_hidden`; None here) does not fit
    the actor: a conv actor's gets the same encoder geometry, a recurrent actor's its own cell of the same kind
    (the state is what the observation leaves out) — the teacher's filters and cell size, not a compressed actor's."""
    t = spec.teacher
    widths = list(t.critic_hidden or t.hidden)
    if actor.input is not None:
        filters = t.conv_filters or actor.conv_filters()
        return PolicyNet.cnn(actor.input["shape"], actor.input["layout"], filters, widths, 1, t.activation)
    if actor.rnn is not None:
        cell, units = (t.rnn.cell, t.rnn.hidden) if t.rnn else (actor.rnn.cell, actor.rnn.hidden)
        after = t.rnn.layers_before(widths) if t.rnn else len(widths)
        return PolicyNet.recurrent_mlp(actor.in_dim, widths, 1, t.activation, cell, units, after)
    return None


# -- observation normalisation (teacher.normalize_obs) -------------------------------------
# RLlib's MeanStdFilter normalises observations in the env runner and writes them back into the
# episodes, so learners train on what the module saw. Its statistics move while the teacher trains
# and are frozen for fine-tuning; they leave RLlib as plain numbers (`obs_stats`: count, mean,
# sum of squared deviations), never as RLlib's serialized state (that unpickles on load).

OBS_CLIP = 10.0  # MeanStdFilter's default clip, kept: the first observations of a run have std ~ 0


def _obs_filter(spec: TrialSpec, frozen: bool) -> dict:
    if not (spec.teacher.normalize_obs or frozen):  # frozen statistics: a teacher that normalised, or an import
        return {}
    from ray.rllib.connectors.env_to_module.mean_std_filter import MeanStdFilter  # deferred (heavy): RLlib

    return {"env_to_module_connector": lambda *args, **kwargs: MeanStdFilter(clip_by_value=OBS_CLIP,
                                                                            update_stats=not frozen)}


def obs_norm(stats: dict) -> dict:
    """The frozen transform of `stats`, as the artifact and `torch_act` apply it (see
    runtime.obs_normalizer): MeanStdFilter's mean, unbiased std + its epsilon, and clip."""
    from ray.rllib.utils.numpy import SMALL_NUMBER  # deferred (heavy): RLlib

    n, ssd = stats["count"], np.asarray(stats["sum_sq_diff"], np.float64)
    std = np.sqrt(ssd / (n - 1)) if n > 1 else np.zeros_like(ssd)
    return {"mean": list(map(float, stats["mean"])), "std": (std + SMALL_NUMBER).tolist(), "clip": OBS_CLIP}


def _running_stat(stats: dict):
    from ray.rllib.utils.filter import RunningStat  # deferred (heavy): RLlib

    rs = RunningStat(np.asarray(stats["mean"]).shape)
    rs.num_pushes = int(stats["count"])
    rs.mean_array = np.asarray(stats["mean"], np.float64)
    rs.sum_sq_diff_array = np.asarray(stats["sum_sq_diff"], np.float64)
    return rs


def check_training_keys(spec: TrialSpec) -> None:
    """Fail fast on a `training:` key RLlib does not know (builds a config, trains nothing)."""
    config_cls = _classes(spec.algorithm)[0]
    try:
        config_cls().training(**training_settings(spec))
    except TypeError as e:
        raise ConfigError(f"training: {e}") from None


def _nest(state: dict) -> dict:
    for k in reversed(_STATE_PATH):
        state = {k: state}
    return state


class Session:
    """A live RLlib algorithm holding our module: push the deployed net in, train, pull it out.

    `base_state` (the teacher's full module state) initialises everything that is not the
    deployed net: critic, Q-nets, and their targets. `critic` (PPO) replaces the value net by a
    compressed (or imported) one, trained along with the actor. `normalize_actions=False`: the
    actor's Gaussian mean is in env units, clipped to the bounds (an SB3 PPO), not in [-1, 1].
    """

    def __init__(self, spec: TrialSpec, actor: PolicyNet, base_state: dict | None = None,
                 lr: float | None = None, l1: float = 0.0, critic: PolicyNet | None = None,
                 obs_stats: dict | None = None, normalize_actions: bool = True):
        ensure_ray()
        torch.set_num_threads(1)
        self.algo_info = ALGOS[spec.algorithm]
        self.normalize_obs = spec.teacher.normalize_obs or obs_stats is not None
        self.algo = algo_config(spec, actor, lr, l1, critic, frozen_obs_stats=obs_stats is not None,
                                normalize_actions=normalize_actions).build_algo()
        if obs_stats is not None:  # fine-tuning a teacher that normalised: its statistics, frozen
            self._set_obs_stats(obs_stats)
        self.returns: list[float] = []
        self.learned: list[bool] = []  # per iteration: did the learner fine-tune (see train)
        state = self.module_state()
        if base_state is not None:
            state.update({k: v for k, v in base_state.items() if not self._is_actor(k) and k in state
                          and not (critic is not None and k.startswith("critic."))})
        if critic is not None:
            state.update({f"critic.{k}": v.detach().cpu().numpy() for k, v in critic.state_dict().items()})
        self.algo.set_state(_nest(state))
        self.push(actor)

    def _is_actor(self, key: str) -> bool:
        return any(key.startswith(p + ".") for p in (self.algo_info.actor, *self.algo_info.copies))

    def module_state(self) -> dict[str, np.ndarray]:
        state = self.algo.get_state(components="learner_group/learner/rl_module")
        for k in _STATE_PATH:
            state = state[k]
        return dict(state)

    def push(self, actor: PolicyNet) -> None:
        """Replace the deployed net (and its target copies) everywhere: learner and env runners."""
        state = {k: v for k, v in self.module_state().items() if not self._is_actor(k)}
        net_state = {k: v.detach().cpu().numpy() for k, v in actor.state_dict().items()}
        for prefix in (self.algo_info.actor, *self.algo_info.copies):
            state.update({f"{prefix}.{k}": v for k, v in net_state.items()})
        self.algo.set_state(_nest(state))

    def pull(self, net: PolicyNet, prefix: str | None = None) -> PolicyNet:
        """Load the trained deployed net (or, with prefix='critic', the critic) into `net`."""
        prefix = (prefix or self.algo_info.actor) + "."
        net.load_state_dict({k[len(prefix):]: torch.as_tensor(v) for k, v in self.module_state().items()
                             if k.startswith(prefix)})
        return net

    def train(self, iterations: int, log: Callable[[str], None] = print, stop_return: float | None = None) -> None:
        for i in range(iterations):
            result = self.algo.train()
            ret = float(result.get("env_runners", {}).get("episode_return_mean", float("nan")))
            self.returns.append(ret)
            # An off-policy algorithm's first iterations fill its replay buffer (RLlib's
            # num_steps_sampled_before_learning_starts): at most one SGD step, fewer samples replayed than
            # sampled. Such an iteration has not fine-tuned the net.
            sampled = result.get("env_runners", {}).get("num_env_steps_sampled", 0)
            trained = result.get("learners", {}).get("__all_modules__", {}).get("num_env_steps_trained", 0)
            self.learned.append(bool(trained >= sampled > 0))
            log(f"  iter {i + 1}/{iterations}: training return {ret:.1f}")
            if stop_return is not None and ret >= stop_return:
                break
        for k, v in self.module_state().items():
            if np.issubdtype(np.asarray(v).dtype, np.floating) and not np.isfinite(v).all():
                raise FloatingPointError(f"fine-tune diverged: non-finite values in {k}")

    def _filter_state(self) -> tuple[dict, str]:
        from ray.rllib.core import COMPONENT_ENV_TO_MODULE_CONNECTOR as C  # deferred (heavy): RLlib

        state = self.algo.env_runner.get_state(components=C)[C]
        return state, next(k for k in state if "MeanStdFilter" in k)

    def obs_stats(self) -> dict | None:
        """The observation filter's statistics now, as plain numbers (None: no normalisation)."""
        if not self.normalize_obs:
            return None
        from ray.rllib.utils.filter import RunningStat  # deferred (heavy): RLlib

        state, name = self._filter_state()
        (agent,) = state[name].values()
        (rs,) = [RunningStat.from_state(s) for s in agent["running_stats"]]
        return {"count": int(rs.num_pushes), "mean": rs.mean_array.tolist(), "sum_sq_diff": rs.sum_sq_diff_array.tolist()}

    def _set_obs_stats(self, stats: dict) -> None:
        from ray.rllib.core import COMPONENT_ENV_TO_MODULE_CONNECTOR as C  # deferred (heavy): RLlib

        state, name = self._filter_state()
        for agent in state[name].values():
            agent["running_stats"] = [_running_stat(stats).to_state()]
        self.algo.env_runner.set_state({C: state})

    def rllib_actions(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions as RLlib itself takes them (see `module_actions`): the reference
        our exported artifact must match."""
        return module_actions(self.algo.get_module(), obs, self.obs_stats(), self.algo.env_runner.env.single_action_space)

    def stop(self) -> None:
        self.algo.stop()


def module_actions(module, obs: np.ndarray, stats: dict | None, space: gym.Space, clip: float = OBS_CLIP) -> np.ndarray:
    """Deterministic actions of an RLModule as RLlib takes them: the MeanStdFilter transform (RLlib's
    own code, statistics frozen), forward_inference, the deterministic action distribution, then
    RLlib's action unsquashing onto the env bounds."""
    from ray.rllib.core.columns import Columns  # deferred (heavy): RLlib

    with torch.no_grad():
        out = module.forward_inference({Columns.OBS: torch.as_tensor(_filtered(obs, stats, clip))})
    return _actions(module, out, space)


def module_step(module, obs: np.ndarray, state, stats: dict | None, space: gym.Space, clip: float = OBS_CLIP):
    """A stateful RLModule's deterministic actions for one time step of a batch (as module_actions) and its next
    state: `state` is Columns.STATE_IN as RLlib batches it (each leaf (B, ...)), e.g. get_initial_state() with a
    batch axis at an episode's start; the observations get RLlib's time axis of 1."""
    from ray.rllib.core.columns import Columns  # deferred (heavy): RLlib

    with torch.no_grad():
        out = module.forward_inference({Columns.OBS: torch.as_tensor(_filtered(obs, stats, clip))[:, None],
                                        Columns.STATE_IN: state})
    out = {k: v[:, 0] if k in (Columns.ACTIONS, Columns.ACTION_DIST_INPUTS) else v for k, v in out.items()}
    return _actions(module, out, space), out[Columns.STATE_OUT]


def _filtered(obs: np.ndarray, stats: dict | None, clip: float) -> np.ndarray:
    if stats is not None:
        from ray.rllib.utils.filter import MeanStdFilter  # deferred (heavy): RLlib

        f = MeanStdFilter(np.asarray(stats["mean"]).shape, clip=clip)
        f.running_stats = _running_stat(stats)
        obs = np.stack([f(np.asarray(o, np.float64), update=False) for o in obs])
    return np.asarray(obs, np.float32)


def _actions(module, out: dict, space: gym.Space) -> np.ndarray:
    from ray.rllib.core.columns import Columns  # deferred (heavy): RLlib
    from ray.rllib.utils.spaces.space_utils import unsquash_action  # deferred (heavy): RLlib

    if Columns.ACTIONS in out:  # DQN: already greedy
        return out[Columns.ACTIONS].numpy()
    dist = module.get_inference_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
    if hasattr(dist, "_squash"):
        # SAC: RLlib 2.60's TorchSquashedGaussian.to_deterministic() returns the raw
        # (unsquashed) mean; the deterministic action of the trained policy is its squash.
        actions = dist._squash(dist.loc).numpy()
    else:
        actions = dist.to_deterministic().sample().numpy()
    if isinstance(space, gym.spaces.Box):
        return np.stack([unsquash_action(a, space) for a in actions])
    return actions
