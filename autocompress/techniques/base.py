"""One verb for every technique: `apply(net, config, ctx)` dispatches on the config's type.

Modelled on torchao's `quantize_(model, config)`: each technique module defines a
frozen pydantic config and registers one handler for it. Configs validate their own
fields (ranges, choices) so bad input fails before any training, naming the key.

A config class also declares, once, everything the rest of the package needs to know
about its technique: its YAML `name`, its pipeline `stage` and `order`, the exclusive
`group` it belongs to (one technique per group at most), and whether it may compress
PPO's training-only critic. `CompressConfig`, the pipeline and the search space are
built from these declarations, so a new technique is one new module in this package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from autocompress.errors import ConfigError
from autocompress.nets import PolicyNet


#: pipeline stages, in order: new (smaller) nets; compression held through fine-tuning (masks,
#: codebooks, fake-quant), re-applied before each fine-tune round; after fine-tuning (PTQ)
Stage = Literal["structural", "held", "final"]


class TechniqueConfig(BaseModel):
    """Base of every technique config: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: ClassVar[str]
    stage: ClassVar[Stage]
    #: position in the pipeline: within a stage, lower runs first
    order: ClassVar[int]
    #: techniques of one group exclude each other (a weight is on a codebook or on a k-bit grid);
    #: a search space samples the group as one choice param named after it
    group: ClassVar[str | None] = None
    #: may compress PPO's training-only value net (`critic:` in a techniques config)
    for_critic: ClassVar[bool] = True
    #: which end of a setting's range compresses least ("high" bits, "low" sparsity): a search's stack
    #: (`_search.stacking.stacked_params`) takes its second technique there, since stacked losses compound
    gentle: ClassVar[dict[str, Literal["high", "low"]]] = {}
    #: the settings a stack takes on an MCU target, where the space allows them: what lets its codes run
    #: integer-only there (autocompress.intq), the form a flash budget is met with
    on_device: ClassVar[dict[str, Any]] = {}
    #: layer sensitivity (autocompress.layer_sensitivity) of a technique with a per-layer setting: the
    #: values of that setting it sweeps when none are given, and the other settings it fixes for the sweep
    sweep: ClassVar[tuple] = ()
    sweep_base: ClassVar[dict[str, Any]] = {}
    #: baselines run, and stack partners join, in this order (lower first): a distilled student is
    #: the likely anchor (the biggest cut in latency and bytes), weight codes the likely partners (they
    #: shrink any net several-fold at their gentle end), so the first stacks can start after two baselines
    stack_rank: ClassVar[int] = 3
    #: applies to a recurrent net (an LSTM / GRU layer's matrices included); the others raise ConfigError there
    recurrent: ClassVar[bool] = False

    @classmethod
    def gentlest_first(cls, key: str) -> Callable[[Any], Any]:
        """A sort key for values of setting `key`: least compressing first (see `gentle`)."""
        return (lambda v: -v) if cls.gentle[key] == "high" else (lambda v: v)

    def pipeline_stage(self) -> Stage:
        """The stage this config runs in (a setting may move it, e.g. quantize mode ptq vs qat)."""
        return self.stage

    def round_configs(self) -> list["TechniqueConfig"]:
        """The configs to apply before each fine-tune round (iterative pruning raises its
        sparsity round by round); one round by default."""
        return [self]

    def check_against(self, spec) -> None:
        """Checks that need the trial spec (a `config.TrialSpec`); raise ValueError naming the key."""


@dataclass
class Context:
    """What data-driven techniques need besides the net itself.

    sample_obs: observations visited by the teacher (importance scores, distillation seed set), in order;
    sample_starts: True where an episode starts in sample_obs (None: not known; a recurrent student's
                   distillation then takes sample_obs as one episode).
    rollout_episodes: callable(net, n_steps, seed) -> the observations `net` visits in the environment,
                      one array per episode (distillation collects student-visited states with it).
    teacher: the uncompressed teacher net; head: 'discrete' | 'continuous';
    q_values: the discrete outputs are Q-values (DQN), not logits: distillation then regresses them.
    """

    teacher: PolicyNet | None = None
    sample_obs: np.ndarray | None = None
    sample_starts: np.ndarray | None = None
    rollout_episodes: Callable[..., list[np.ndarray]] | None = None
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


def registered() -> list[type[TechniqueConfig]]:
    """Every config class a technique module registered a handler for."""
    return list(_HANDLERS)


def apply(net: PolicyNet, config: TechniqueConfig, ctx: Context | None = None) -> PolicyNet:
    """Apply one technique; returns the (possibly new, possibly reshaped) net."""
    try:
        handler = _HANDLERS[type(config)]
    except KeyError:
        raise TypeError(f"no technique registered for {type(config).__name__}") from None
    check_recurrent(net, [config])
    return handler(net, config, ctx or Context())


def check_recurrent(net: PolicyNet, configs: list[TechniqueConfig]) -> None:
    """ConfigError naming the first of `configs` that cannot compress `net` because it is recurrent (a technique
    that rebuilds or distils the net would drop or mis-handle its LSTM / GRU layer)."""
    bad = [c.name for c in configs if not c.recurrent]
    if net.rnn is not None and bad:
        ok = sorted(c.name for c in _HANDLERS if c.recurrent)
        raise ConfigError(f"{bad[0]}: not supported on a recurrent ({net.rnn.cell}) net yet; these are: "
                          f"{', '.join(ok)}")
