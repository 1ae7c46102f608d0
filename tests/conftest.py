import os

import numpy as np
import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from autocompress.nets import PolicyNet  # noqa: E402


@pytest.fixture
def net() -> PolicyNet:
    """A teacher-shaped MLP (4 -> 64 -> 64 -> 2) with reproducible random weights."""
    torch.manual_seed(0)
    return PolicyNet.mlp(4, [64, 64], 2)


@pytest.fixture
def obs() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32)
