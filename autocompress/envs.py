"""Environments: a Gymnasium id ('CartPole-v1') or a user's class ('pkg.module:ClassName'), such as the
partially observable `autocompress.envs:StatelessCartPole` below."""

from __future__ import annotations

import importlib
from typing import Any, Callable

import gymnasium as gym
import numpy as np


def resolve(env: str) -> str | type:
    """The Gymnasium id, or the imported env class for 'module:Class'. Raises ValueError."""
    if ":" in env and not env.startswith("gymnasium"):
        module, _, name = env.partition(":")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"cannot import env class {env!r}: {e}") from None
        if not (isinstance(cls, type) and issubclass(cls, gym.Env)):
            raise ValueError(f"{env!r} is not a gymnasium.Env subclass")
        return cls
    try:
        gym.spec(env)
    except gym.error.Error as e:
        raise ValueError(f"unknown Gymnasium env id {env!r} ({e})") from None
    return env


def env_creator(env: str, env_config: dict[str, Any] | None = None) -> Callable[[], gym.Env]:
    target = resolve(env)
    cfg = dict(env_config or {})
    if isinstance(target, str):
        return lambda: gym.make(target, **cfg)
    return lambda: target(cfg) if cfg else target()


def action_head(space: gym.Space) -> dict[str, Any]:
    """How the deployed net's outputs become an action (stored in the artifact)."""
    if isinstance(space, gym.spaces.Discrete):
        return {"kind": "discrete", "n": int(space.n)}
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return {"kind": "continuous", "act_dim": int(space.shape[0]),
                "low": space.low.tolist(), "high": space.high.tolist(), "squash": "none"}
    raise ValueError(f"unsupported action space {space}")


class StatelessCartPole(gym.ObservationWrapper):
    """CartPole-v1 with its velocities hidden: the observation is (cart position, pole angle) only, so a policy
    must infer the velocities from successive observations (memory: a recurrent policy). RLlib's example env of
    the same name drops the same two values; this one keeps CartPole-v1's 500-step limit."""

    KEPT = [0, 2]  # CartPole's (x, x', theta, theta')

    def __init__(self, config: dict | None = None):
        super().__init__(gym.make("CartPole-v1", **dict(config or {})))
        space = self.env.observation_space
        self.observation_space = gym.spaces.Box(space.low[self.KEPT], space.high[self.KEPT], dtype=np.float32)

    def observation(self, obs):
        return np.asarray(obs, np.float32)[self.KEPT]
