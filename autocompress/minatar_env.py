"""MinAtar games (Young & Tian 2019: 10x10 pixel Atari-like games, k binary channels) as a Gymnasium env,
used as `autocompress.minatar_env:MinAtar` with env_config {game, sticky_action_prob, max_steps}.

minatar's own Gymnasium wrapper gives boolean observations and is not registered on import; RLlib and our
nets take float32, channels-last (H, W, C), so this is the thin wrapper they need: the game's minimal action
set, reset(seed=...) seeding the game's random state (evaluation episodes are then reproducible), and a
step limit so that a strong policy's episode ends.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class MinAtar(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, config: dict | None = None):
        from minatar import Environment  # the game engine only: minatar.gym imports seaborn for rendering

        config = dict(config or {})
        self.game = Environment(config.get("game", "breakout"),
                                sticky_action_prob=float(config.get("sticky_action_prob", 0.1)))
        self.max_steps = int(config.get("max_steps", 2000))
        self.actions = self.game.minimal_action_set()
        self.observation_space = gym.spaces.Box(0.0, 1.0, tuple(self.game.state_shape()), np.float32)
        self.action_space = gym.spaces.Discrete(len(self.actions))
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.game.seed(seed)
        self.game.reset()
        self.t = 0
        return self.game.state().astype(np.float32), {}

    def step(self, action):
        reward, done = self.game.act(self.actions[int(action)])
        self.t += 1
        return self.game.state().astype(np.float32), float(reward), bool(done), self.t >= self.max_steps, {}
