"""A tiny user-defined environment, used as `autocompress.examples.corridor:Corridor`.

The agent walks a corridor of `length` cells and is paid +1 at the far end, -0.01 per
step. Observation: [position / length, steps left / max_steps]. Actions: 0 left, 1 right.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class Corridor(gym.Env):
    def __init__(self, config: dict | None = None):
        config = config or {}
        self.length = int(config.get("length", 10))
        self.max_steps = int(config.get("max_steps", 50))
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.pos = self.t = 0

    def _obs(self):
        return np.array([self.pos / self.length, (self.max_steps - self.t) / self.max_steps], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = int(self.np_random.integers(0, self.length // 2))
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.pos = max(0, self.pos + (1 if int(action) == 1 else -1))
        self.t += 1
        done = self.pos >= self.length
        return self._obs(), (1.0 if done else -0.01), done, self.t >= self.max_steps, {}
