"""What a search keeps in Optuna's user attrs: each trial's record (`TrialRecord`) and the study's own
entries (`StudyAttrs`). Every attr name is spelled here only; the rest of the search reads and writes
through these. A study written by an earlier release reads the same: an attr it lacks is its field's
default, and what is written keeps the keys and values it always had.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable

import optuna

from autocompress.results import SLIM_DROP, TrialResult


@dataclass
class TrialRecord:
    """One trial's user attrs, one field each (the attr's name is the field's). A field at its default
    (None, False) is not stored: `attrs()` holds only what was set."""

    # set as the driver asks the trial
    config: dict | None = None         # the techniques config it runs ({}: the teacher as-is)
    driver: str | None = None          # the driver that asked it (study.driver_id)
    launched_at: float | None = None   # when its Ray task was started (time.time())
    reuse_key: str | None = None       # what its measurements depend on besides the config (study.reuse_key)
    # how it ended
    result: TrialResult | None = None  # COMPLETE: its measurements, as the study keeps them (no SLIM_DROP)
    intermediate: list | None = None   # the return ratios it reported, [[step, ratio], ...]
    stopped: str | None = None         # PRUNED: why the pruner stopped it
    partial: dict | None = None        # PRUNED: its last return ratio, step and seconds
    fail_reason: str | None = None     # FAIL: why
    interrupted: bool = False          # FAIL because its driver stopped: asked again, not in the budget
    duplicate_of: int | None = None    # a repeated config: the trial whose outcome it reuses
    free_repeat: bool = False          # ... and it is not counted in the budget
    copied_from: str | None = None     # a warm start's copy of "<run dir>#<trial>"
    # set where it was queued
    baseline: bool = False             # a space baseline (stacking.baseline_params)
    stacked: bool = False              # a stack on the anchor baseline (stacking.stacked_params)
    guided: dict | None = None         # a sensitivity-guided config, run as enqueued (per-layer maps)
    warm_start: str | None = None      # an earlier run's front member "<run dir>#<trial>", re-measured

    @classmethod
    def of(cls, trial: optuna.trial.FrozenTrial | optuna.Trial) -> "TrialRecord":
        return cls.from_attrs(trial.user_attrs)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> "TrialRecord":
        """From stored attrs; attrs that are no field are ignored, a result is read by TrialResult.from_dict."""
        known = {k: v for k, v in attrs.items() if k in _FIELDS}
        if known.get("result") is not None:
            known["result"] = TrialResult.from_dict(known["result"])
        return cls(**known)

    def attrs(self) -> dict[str, Any]:
        """The fields that are set, as stored."""
        return {k: _stored(v) for k, v in ((f, getattr(self, f)) for f in _FIELDS) if v is not None and v is not False}


_FIELDS = tuple(f.name for f in dataclasses.fields(TrialRecord))


def _stored(value: Any) -> Any:
    return value.to_dict(drop=SLIM_DROP) if isinstance(value, TrialResult) else value


def write(trial: optuna.Trial, **fields: Any) -> None:
    """Set fields of a running trial's record (one user attr each), e.g. write(trial, stopped=reason)."""
    for name, value in fields.items():
        trial.set_user_attr(_field(name), _stored(value))


def write_finished(study: optuna.Study, trial: optuna.trial.FrozenTrial, **fields: Any) -> None:
    """`write` for a trial another driver asked (a FrozenTrial): Optuna has no public setter for its
    attrs; the storage call is the documented way."""
    for name, value in fields.items():
        study._storage.set_trial_user_attr(trial._trial_id, _field(name), _stored(value))


def _field(name: str) -> str:
    if name not in _FIELDS:
        raise AttributeError(f"TrialRecord has no field {name!r}")
    return name


def copy_attrs(trial: optuna.trial.FrozenTrial, **fields: Any) -> dict[str, Any]:
    """A trial's attrs exactly as stored (a warm start copies them over), with `fields` set."""
    return {**trial.user_attrs, **TrialRecord(**fields).attrs()}


def queue_item(params: dict, **fields: Any) -> dict:
    """An entry of the study's queue (StudyAttrs.queue): the params and the record fields to enqueue with."""
    return {"params": params, "user_attrs": TrialRecord(**fields).attrs()}


def queued_record(item: dict) -> TrialRecord:
    return TrialRecord.from_attrs(item["user_attrs"])


def enqueue(study: optuna.Study, item: dict) -> None:
    """Hand a queue entry (`queue_item`) to Optuna, which asks it next."""
    study.enqueue_trial(item["params"], user_attrs=item["user_attrs"])


# -- the study's own attrs ------------------------------------------------------------------------

class _Attr:
    """A study user attr as an attribute of StudyAttrs; `empty` makes the value of one never written."""

    def __init__(self, key: str, empty: Callable[[], Any] | None = None):
        self.key, self.empty = key, empty

    def __get__(self, attrs: "StudyAttrs | None", owner=None) -> Any:
        if attrs is None:
            return self
        value = attrs.study.user_attrs.get(self.key)
        return self.empty() if value is None and self.empty else value

    def __set__(self, attrs: "StudyAttrs", value: Any) -> None:
        attrs.study.set_user_attr(self.key, value)


#: study attr prefixes: one attr per driver (`heartbeat:<host:pid>`), per timed compute signature, and per
#: trial `pick` reported on fresh episodes (one attr each: concurrent picks never overwrite one another)
HEARTBEAT, LATENCY, FRESH = "heartbeat:", "latency:", "fresh:"


class StudyAttrs:
    """The study's own user attrs by name. Each read asks the storage afresh (other drivers write too)."""

    #: trials the feeding driver enqueues one at a time, [queue_item, ...]
    queue = _Attr("queue", list)
    #: latency.runtime as pinned for the whole study (study.pin_runtime)
    runtime = _Attr("runtime")
    #: the held-out snapshot of the front, and the fine-tuned teacher's record (see _search/heldout.py)
    heldout = _Attr("heldout")
    reference = _Attr("reference")
    #: the teacher timed against itself (measure.latency_noise_floor)
    noise_floor = _Attr("latency_noise_floor")
    #: where drivers that join find the MLflow parent run
    tracking_uri = _Attr("tracking_uri")
    parent_run_id = _Attr("mlflow_parent_run_id")
    #: how many stacks were queued on the anchor (None: not decided yet), and how many guided configs
    stacked = _Attr("stacked")
    #: whether the space's baselines were queued (after the teacher: a device budget picks the student's width)
    baselines = _Attr("baselines")
    #: technique -> the settings at which its on-device stacks run once more (a device budget's next narrower
    #: student, _search.driver._fit_to_budget)
    also_at = _Attr("also_at", dict)
    sensitivity_guided = _Attr("sensitivity_guided")

    def __init__(self, study: optuna.Study):
        self.study = study

    def beat(self, driver: str) -> None:
        self.study.set_user_attr(HEARTBEAT + driver, time.time())

    def heartbeats(self) -> dict[str, float]:
        """driver -> its last heartbeat."""
        return _prefixed(self.study.user_attrs, HEARTBEAT)

    def latencies(self) -> dict[str, dict]:
        """compute signature -> its in-kernel figures and the trial that measured them."""
        return _prefixed(self.study.user_attrs, LATENCY)

    def set_latency(self, signature: str, figures: dict) -> None:
        self.study.set_user_attr(LATENCY + signature, figures)

    def fresh(self, trial: int) -> dict | None:
        """Trial `trial`'s return on pick's fresh episodes (see _search/heldout.py `fresh_values`), if measured."""
        return self.study.user_attrs.get(f"{FRESH}{trial}")

    def set_fresh(self, trial: int, values: dict) -> None:
        self.study.set_user_attr(f"{FRESH}{trial}", values)


def _prefixed(attrs: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in attrs.items() if k.startswith(prefix)}
