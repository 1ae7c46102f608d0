"""Typed results. The JSON keys (result.json, Optuna user attrs, `--json` output) and the MLflow
metric names are the field names below, so they are written in one place.

`TrialResult` is what one trial measures (`compress`, and every search trial); `FrontRow` is one
row of a search's Pareto table (`Run.front()`, `Run.pick()`, `pareto --json`, pareto.csv).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

#: marks a field that is logged as an MLflow metric of the trial's child run
METRIC = {"metric": True}
#: result keys of results stored before the rename (`params` was a parameter count)
_LEGACY = {"params": "n_params", "teacher_params": "teacher_n_params", "critic_params": "critic_n_params"}


def _metric(default: Any = None) -> Any:
    return field(default=default, metadata=METRIC)


@dataclass
class TrialResult:
    """Everything one trial measured: the exported artifact and the teacher's, side by side."""

    # return over the seeded evaluation episodes (artifact vs teacher, same seeds)
    return_mean: float = _metric(math.nan)
    return_std: float = _metric(math.nan)
    return_ratio: float = _metric(math.nan)
    teacher_return_mean: float = _metric(math.nan)
    teacher_return_std: float = math.nan
    returns: list[float] = field(default_factory=list)
    # batch-1 act() latency, milliseconds, in `runtime`: timed inside the compiled kernel ('c'), or
    # the Python call ('numpy'); the call's time is the secondary latency_call_ms in either
    latency_ms: float = _metric(math.nan)
    latency_p95_ms: float = _metric(math.nan)
    teacher_latency_ms: float = _metric(math.nan)
    latency_ratio: float = _metric(math.nan)
    latency_call_ms: float = _metric(math.nan)
    teacher_latency_call_ms: float = _metric(math.nan)
    runtime: str = ""
    kernels: list[str] = field(default_factory=list)  # per layer, the kernel the runtime chose (layers.KERNELS)
    # runtime c: what the in-kernel time depends on (NativePolicy.signature); within a search, the first
    # trial of a signature is timed and the others take its figures (latency_from: that trial's number)
    latency_signature: str | None = None
    latency_from: int | None = None
    cpu: str = ""
    # where it runs (autocompress.targets). On an MCU target latency_ms is cycles at the target's clock and
    # latency_ratio the cycle ratio; flash / RAM / cycles are of the cross-built C export (None on the host)
    target: str = "host"
    flash: int | None = _metric()
    ram: int | None = _metric()
    cycles: float | None = _metric()        # mean over the recorded observations, exact per observation
    cycles_max: int | None = _metric()
    instructions: float | None = _metric()
    teacher_flash: int | None = _metric()
    teacher_ram: int | None = _metric()
    teacher_cycles: float | None = _metric()
    device_agreement: float | None = _metric()  # share of emulated actions equal to the evaluated runtime's
    # bytes of the artifact file
    bytes: int = _metric(0)
    gzip_bytes: int = _metric(0)
    teacher_bytes: int = _metric(0)
    teacher_gzip_bytes: int = 0
    bytes_ratio: float = _metric(math.nan)
    # the deployed net
    n_params: int = _metric(0)
    teacher_n_params: int = _metric(0)
    sparsity: float = _metric(0.0)
    hidden: list[int] = field(default_factory=list)
    layers: int = _metric(0)
    # the training-only critic (techniques config `critic:`), never in the objectives
    critic_bytes: int | None = _metric()
    critic_bytes_ratio: float | None = _metric()
    critic_n_params: int | None = _metric()
    # where the time went
    compress_seconds: float = _metric(0.0)
    trial_seconds: float = _metric(0.0)
    timings: dict[str, float] = field(default_factory=dict)
    finetune_rounds: list[dict] = field(default_factory=list)
    # where it ran and what it wrote
    teacher_path: str = ""
    artifact: str = ""
    node_id: str | None = None
    hostname: str | None = None
    pid: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    # set by the search driver
    driver_seconds: float | None = None
    duplicate_of: int | None = None

    def to_dict(self, drop: tuple[str, ...] = ()) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in drop}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrialResult":
        """From stored JSON; keys of older releases are renamed, unknown keys ignored."""
        return _from_stored(cls, d)

    def metrics(self) -> dict[str, float]:
        """The MLflow metrics of the trial's child run: metric fields that are finite numbers,
        plus `seconds_<stage>` per timed stage."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata.get("metric")}
        out.update({f"seconds_{k}": v for k, v in self.timings.items()})
        return finite_metrics(out)


#: what a search keeps of a result in the study (per-episode returns and rounds go to MLflow only)
SLIM_DROP = ("returns", "finetune_rounds")


@dataclass
class FrontRow:
    """One trial of a search as the Pareto table shows it. `config` is the techniques config."""

    trial: int
    config: dict[str, Any]
    return_mean: float
    return_std: float
    return_ratio: float
    latency_ms: float
    latency_ratio: float
    bytes: int
    bytes_ratio: float
    n_params: int
    feasible: bool = True
    target: str = "host"
    flash: int | None = None
    ram: int | None = None
    cycles: float | None = None
    artifact: str = ""
    # return on held-out episodes (`pareto --reevaluate`, the end of a search), None where not re-evaluated
    heldout_return_mean: float | None = None
    heldout_return_std: float | None = None
    heldout_return_ratio: float | None = None
    heldout_episodes: int | None = None
    # set by `Run.pick` only. A return chosen on is optimistic, so pick reports the trial it chose on
    # `fresh_episodes` episodes it was not chosen on (eval.fresh_seed ..), the teacher's on the same ones;
    # `chosen_on` / `chosen_episodes`: what it chose on ("held-out": the held-out values above; "evaluation":
    # the trial's evaluation episodes, where the front has none)
    chosen_on: str | None = None
    chosen_episodes: int | None = None
    fresh_return_mean: float | None = None
    fresh_return_std: float | None = None
    fresh_return_ratio: float | None = None
    fresh_teacher_return_mean: float | None = None
    fresh_episodes: int | None = None

    @property
    def chosen_return_ratio(self) -> float | None:
        """The return ratio `pick` chose on (None where this row is no pick's)."""
        return {"held-out": self.heldout_return_ratio, "evaluation": self.return_ratio}.get(self.chosen_on)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "FrontRow":
        """From a study row (`Run.rows()`): the fields above, the rest ignored."""
        return _from_stored(cls, row)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _from_stored(cls, d: dict[str, Any]):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in ((_LEGACY.get(k, k), v) for k, v in d.items()) if k in names})


def finite_metrics(values: dict[str, Any]) -> dict[str, float]:
    """The entries that are finite numbers, as floats: MLflow takes no NaN, inf, None or bool metric."""
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
