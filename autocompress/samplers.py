"""The samplers a search can use: one table that space validation, the factory and `--help` read.

Factories import Optuna lazily, so validating a space file does not load it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from autocompress.errors import ConfigError


@dataclass(frozen=True)
class SamplerEntry:
    help: str
    make: Callable[[int], Any]


def _tpe(seed: int):
    import optuna  # deferred (heavy): Optuna, for a search only

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=6)


def _nsga2(seed: int):
    import optuna  # deferred (heavy): Optuna, for a search only

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)


def _gp(seed: int):
    import optuna  # deferred (heavy): Optuna, for a search only

    return optuna.samplers.GPSampler(seed=seed)


def _random(seed: int):
    import optuna  # deferred (heavy): Optuna, for a search only

    return optuna.samplers.RandomSampler(seed=seed)


SAMPLERS: dict[str, SamplerEntry] = {
    "tpe": SamplerEntry("multi-objective TPE, 6 random startup trials (default: good at small budgets and "
                        "conditional spaces)", _tpe),
    "nsga2": SamplerEntry("NSGA-II, population 8 (needs many trials)", _nsga2),
    "gp": SamplerEntry("Gaussian process (constrained multi-objective; slow per ask)", _gp),
    "random": SamplerEntry("uniform random (a baseline)", _random),
}


def make_sampler(name: str, seed: int):
    """The Optuna sampler `name` seeded with `seed`. Raises ConfigError naming the option."""
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose {', '.join(SAMPLERS)}", option="sampler")
    try:
        return SAMPLERS[name].make(seed)
    except ValueError as e:  # e.g. numpy's seed range
        raise ConfigError(f"{seed}: {e}", option="seed") from None
