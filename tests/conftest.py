import os

import numpy as np
import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from autocompress.nets import PolicyNet  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def net() -> PolicyNet:
    """A teacher-shaped MLP (4 -> 64 -> 64 -> 2) with reproducible random weights."""
    torch.manual_seed(0)
    return PolicyNet.mlp(4, [64, 64], 2)


@pytest.fixture
def obs() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32)


def tiny_cartpole(name: str, finetune_iterations: int) -> dict:
    """A trial spec that really trains, at a tiny budget: a 2-iteration [64, 64] PPO teacher."""
    return {
        "name": name, "env": "CartPole-v1", "seed": 3,
        "teacher": {"hidden": [64, 64], "max_iterations": 2},
        "training": {"train_batch_size_per_learner": 500, "minibatch_size": 64, "num_epochs": 2},
        "finetune": {"iterations": finetune_iterations, "lr": 1e-4},
        "eval": {"episodes": 3, "seed": 100},
        "latency": {"warmup": 10, "calls": 200, "rounds": 2},
        "sample_steps": 200,
    }
