"""The only RLlib adapter: the compressible RLModule, teacher training + cache, fine-tuning.

The RLModule's actor and critic are `PolicyNet`s rebuilt from their specs, so every
compression (mask, codebook, fake-quant, smaller or factorized shapes) is part of the
module itself on the learner and on the env runner alike, and weights move in and out
as plain state dicts via `algo.get_state` / `algo.set_state` (`algo.set_weights` is
broken on the new API stack in Ray 2.60).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
import torch

from autocompress import envs
from autocompress.config import TrialSpec
from autocompress.nets import PolicyNet

# RLlib PPO settings that train CartPole-sized tasks quickly; the trial spec's
# `training:` section overrides any of them.
PPO_DEFAULTS = {"lr": 3e-4, "train_batch_size_per_learner": 4000, "minibatch_size": 128,
                "num_epochs": 6, "vf_loss_coeff": 0.01, "gamma": 0.99}
_STATE_PATH = ("learner_group", "learner", "rl_module", "default_policy")


def ensure_ray() -> None:
    """Start local Ray (or join RAY_ADDRESS) unless already inside a Ray job/worker."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True)


def _module_classes():
    """Imported lazily so that importing autocompress does not import Ray."""
    from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.apis import ValueFunctionAPI
    from ray.rllib.core.rl_module.torch import TorchRLModule

    class CompressiblePPOModule(TorchRLModule, ValueFunctionAPI):
        """PPO module whose actor is the (compressed) deployable net, critic a plain MLP."""

        def setup(self):
            self.actor = PolicyNet.from_spec(self.model_config["actor"])
            self.critic = PolicyNet.from_spec(self.model_config["critic"])

        def _forward(self, batch, **kwargs):
            return {Columns.ACTION_DIST_INPUTS: self.actor(batch[Columns.OBS])}

        def compute_values(self, batch, embeddings=None):
            return self.critic(batch[Columns.OBS]).squeeze(-1)

    class CompressLearner(PPOTorchLearner):
        """PPO loss + optional L1 on the actor's deployed weights (mean |w|, scale-free)."""

        def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
            loss = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
            l1 = config.learner_config_dict.get("l1", 0.0)
            if l1:
                actor = self.module[module_id].unwrapped().actor
                loss = loss + l1 * torch.stack([layer.raw_weight().abs().mean() for layer in actor.layers]).mean()
            return loss

    return CompressiblePPOModule, CompressLearner


def env_spaces(spec: TrialSpec) -> tuple[gym.Space, gym.Space]:
    env = envs.env_creator(spec.env, spec.env_config)()
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def actor_out_dim(head: dict) -> int:
    # Continuous PPO actors output mean and log-std (RLlib's diagonal Gaussian inputs).
    return head["n"] if head["kind"] == "discrete" else 2 * head["act_dim"]


def algo_config(spec: TrialSpec, actor: PolicyNet, critic: PolicyNet, lr: float, l1: float = 0.0):
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    module_cls, learner_cls = _module_classes()
    target = envs.resolve(spec.env)
    return (
        PPOConfig()
        .environment(target, env_config=dict(spec.env_config))
        .framework("torch")
        .env_runners(num_env_runners=0)
        .learners(num_learners=0, learner_class=learner_cls, learner_config_dict={"l1": l1})
        .rl_module(rl_module_spec=RLModuleSpec(module_class=module_cls,
                                               model_config={"actor": actor.spec(), "critic": critic.spec()}))
        .training(**{**PPO_DEFAULTS, **spec.training, "lr": lr})
        .debugging(seed=spec.seed, log_level="ERROR")
    )


def check_training_keys(spec: TrialSpec) -> None:
    """Fail fast on a `training:` key RLlib does not know (builds a config, trains nothing)."""
    from ray.rllib.algorithms.ppo import PPOConfig

    try:
        PPOConfig().training(**{**PPO_DEFAULTS, **spec.training})
    except TypeError as e:
        raise ValueError(f"training: {e}") from None


class Session:
    """A live RLlib algorithm holding our module: push weights in, train, pull them out."""

    def __init__(self, spec: TrialSpec, actor: PolicyNet, critic: PolicyNet, lr: float, l1: float = 0.0):
        ensure_ray()
        torch.set_num_threads(1)
        self.algo = algo_config(spec, actor, critic, lr, l1).build_algo()
        self.returns: list[float] = []
        self.push(actor, critic)

    def _state(self) -> dict[str, np.ndarray]:
        state = self.algo.get_state(components="learner_group/learner/rl_module")
        for k in _STATE_PATH:
            state = state[k]
        return state

    def push(self, actor: PolicyNet, critic: PolicyNet | None = None) -> None:
        state = dict(self._state())
        nets = {"actor": actor, **({"critic": critic} if critic is not None else {})}
        for prefix, net in nets.items():
            state.update({f"{prefix}.{k}": v.detach().cpu().numpy() for k, v in net.state_dict().items()})
        nested = state
        for k in reversed(_STATE_PATH):
            nested = {k: nested}
        self.algo.set_state(nested)

    def pull(self, net: PolicyNet, prefix: str = "actor") -> PolicyNet:
        state = self._state()
        net.load_state_dict({k[len(prefix) + 1:]: torch.as_tensor(v) for k, v in state.items()
                             if k.startswith(prefix + ".")})
        return net

    def train(self, iterations: int, log: Callable[[str], None] = print, stop_return: float | None = None) -> None:
        for i in range(iterations):
            result = self.algo.train()
            ret = float(result["env_runners"].get("episode_return_mean", float("nan")))
            self.returns.append(ret)
            log(f"  iter {i + 1}/{iterations}: training return {ret:.1f}")
            if stop_return is not None and ret >= stop_return:
                break
        for p in self.algo.learner_group._learner.module["default_policy"].parameters():
            if not torch.isfinite(p).all():
                raise FloatingPointError("fine-tune diverged: non-finite weights")

    def stop(self) -> None:
        self.algo.stop()


# -- teacher: trained once per trial spec, cached by a hash of what determines it -------

@dataclass
class Teacher:
    actor: PolicyNet
    critic: PolicyNet
    info: dict
    path: Path


def teacher_dir(spec: TrialSpec, cache_root: Path) -> Path:
    key = hashlib.sha256(json.dumps(spec.teacher_key(), sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_root) / f"{spec.name}-{key}"


def load_teacher(path: Path) -> Teacher:
    """Load a cached teacher; weights via torch.load(weights_only=True), checksum verified."""
    info = json.loads((path / "teacher.json").read_text())
    blob = (path / "teacher.pt").read_bytes()
    if hashlib.sha256(blob).hexdigest() != info["sha256"]:
        raise ValueError(f"teacher cache {path} is corrupted (checksum mismatch); delete it to retrain")
    states = torch.load(path / "teacher.pt", weights_only=True)
    nets = {}
    for name in ("actor", "critic"):
        nets[name] = PolicyNet.from_spec(info[f"{name}_spec"])
        nets[name].load_state_dict(states[name])
    return Teacher(nets["actor"], nets["critic"], info, path)


def train_teacher(spec: TrialSpec, cache_root: Path, log: Callable[[str], None] = print,
                  retrain: bool = False) -> Teacher:
    """The teacher of `spec`, from the cache or trained now with RLlib PPO and cached."""
    path = teacher_dir(spec, cache_root)
    if (path / "teacher.json").exists() and not retrain:
        return load_teacher(path)
    obs_space, act_space = env_spaces(spec)
    head = envs.action_head(act_space)
    t = spec.teacher
    actor = PolicyNet.mlp(int(np.prod(obs_space.shape)), t.hidden, actor_out_dim(head), t.activation)
    critic = PolicyNet.mlp(int(np.prod(obs_space.shape)), t.hidden, 1, t.activation)
    log(f"training teacher for {spec.env}: PPO, hidden {t.hidden}, up to {t.max_iterations} iterations")
    start = time.time()
    session = Session(spec, actor, critic, lr={**PPO_DEFAULTS, **spec.training}["lr"])
    try:
        session.train(t.max_iterations, log=log, stop_return=t.stop_return)
        session.pull(actor, "actor")
        session.pull(critic, "critic")
    finally:
        session.stop()
    info = {"trial_spec": spec.teacher_key(), "head": head, "iterations": len(session.returns),
            "train_seconds": time.time() - start,
            "final_training_return": session.returns[-1] if session.returns else math.nan,
            "actor_spec": actor.spec(), "critic_spec": critic.spec()}
    _save_teacher(path, actor, critic, info)
    return load_teacher(path)


def _save_teacher(path: Path, actor: PolicyNet, critic: PolicyNet, info: dict) -> None:
    """Write to a temp dir and rename, so a concurrent reader never sees half a teacher."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".tmp-teacher-"))
    torch.save({"actor": actor.state_dict(), "critic": critic.state_dict()}, tmp / "teacher.pt")
    info = {**info, "sha256": hashlib.sha256((tmp / "teacher.pt").read_bytes()).hexdigest()}
    (tmp / "teacher.json").write_text(json.dumps(info, indent=1))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
