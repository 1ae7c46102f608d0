"""One verb for every technique: `apply(net, config, ctx)` dispatches on the config's type.

Modelled on torchao's `quantize_(model, config)`: each technique module defines a
frozen pydantic config and registers one handler for it. Configs validate their own
fields (ranges, choices) so bad input fails before any training, naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from autocompress.nets import PolicyNet


class TechniqueConfig(BaseModel):
    """Base of every technique config: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: ClassVar[str]


@dataclass
class Context:
    """What data-driven techniques need besides the net itself.

    sample_obs: observations visited by the teacher (importance scores, distillation seed set).
    rollout_obs: callable(policy_fn, n_steps, seed) -> observations visited by `policy_fn`
                 in the environment (distillation collects student-visited states with it).
    teacher: the uncompressed teacher net; head: 'discrete' | 'continuous';
    q_values: the discrete outputs are Q-values (DQN), not logits: distillation then regresses them.
    """

    teacher: PolicyNet | None = None
    sample_obs: np.ndarray | None = None
    rollout_obs: Callable[..., np.ndarray] | None = None
    head: str = "discrete"
    q_values: bool = False
    seed: int = 0
    log: Callable[[str], None] = field(default=lambda msg: None)


_HANDLERS: dict[type, Callable[[PolicyNet, Any, Context], PolicyNet]] = {}


def register(config_type: type[TechniqueConfig]):
    def deco(fn):
        _HANDLERS[config_type] = fn
        return fn

    return deco


def apply(net: PolicyNet, config: TechniqueConfig, ctx: Context | None = None) -> PolicyNet:
    """Apply one technique; returns the (possibly new, possibly reshaped) net."""
    try:
        handler = _HANDLERS[type(config)]
    except KeyError:
        raise TypeError(f"no technique registered for {type(config).__name__}") from None
    return handler(net, config, ctx or Context())
