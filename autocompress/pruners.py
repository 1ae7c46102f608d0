"""Early stopping of trials that cannot reach the return constraint (multi-fidelity).

Optuna's pruners work on single-objective studies only (`Trial.report` raises in a multi-objective
study), so the search keeps the idiom and does the bookkeeping itself: a trial reports
intermediate values, a pruner object decides from them whether it stops.

A trial reports its return ratio (vs the teacher, on the 5 fine-tune check episodes: seeds apart
from evaluation) at step 0 (compressed, before fine-tuning) and after each fine-tune iteration
(step i) in which the learner trained: an off-policy algorithm's first iterations only fill its
replay buffer (one SGD step at most) and report nothing, so no trial is judged on them. The
pruner is called after every report with the trial's reports so far and the report curves of
earlier trials that finished feasible (the driver's snapshot when the trial
started). `should_stop` returns the reason to stop, or None.

`GatePruner`, the default, stops a trial at step >= `after` (fine-tune iterations done) when its
ratio is below the return constraint `min_ratio` and either
  - below `floor` x min_ratio (hopeless: no history needed), or
  - below every ratio that the `min_history` (or more) earlier feasible trials had at that step:
    no trial that went on to meet the constraint was ever this low at this point.
Step 0 never stops a trial: fine-tuning often recovers a net that compression broke.

The other way round, `finish_at` (a search space's default: 1.0) ends a trial's fine-tune early, at any
report (step 0 included, before RLlib is even built), once its ratio is >= finish_at: at 1.0 the net
already matches the teacher on the check episodes, so fine-tuning has nothing left to recover. The trial
is then evaluated as usual (evaluation, not the check, gives its objectives); `should_finish` gives the
reason. On LunarLander DQN this is what brings the best points early: a distilled student that matches
the teacher costs ~5 trial-seconds instead of ~47 (docs/BENCHMARKS.md, "Search value").

Pure: no Optuna, Ray or RLlib here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

#: a trial's reports: (step, return ratio) in the order made
Reports = Sequence[tuple[int, float]]


class Pruner(Protocol):
    def should_stop(self, reports: Reports, history: Sequence[Reports]) -> str | None:
        """Why the trial should stop now (its last report is the newest), or None to go on."""

    def should_finish(self, reports: Reports) -> str | None:
        """Why the trial's fine-tune may end now and the trial be evaluated, or None to go on."""


class TrialStopped(Exception):
    """Raised in a trial by its reporter; carries the reason and the reports so far."""

    def __init__(self, reason: str, reports: Reports):
        super().__init__(reason)
        self.reason, self.reports = reason, list(reports)


@dataclass(frozen=True)
class NopPruner:
    """Never stops a trial (`pruner: {kind: none}`)."""

    def should_stop(self, reports: Reports, history: Sequence[Reports]) -> str | None:
        return None

    def should_finish(self, reports: Reports) -> str | None:
        return None


@dataclass(frozen=True)
class GatePruner:
    min_ratio: float
    floor: float = 0.25
    after: int = 1
    min_history: int = 2
    finish_at: float | None = None

    def should_finish(self, reports: Reports) -> str | None:
        step, ratio = reports[-1]
        if self.finish_at is None or ratio < self.finish_at:
            return None
        return f"return ratio {ratio:.3f} after {step} fine-tune iteration(s) reached finish_at {self.finish_at}"

    def should_stop(self, reports: Reports, history: Sequence[Reports]) -> str | None:
        step, ratio = reports[-1]
        if step < self.after or not ratio < self.min_ratio:
            return None
        if ratio < self.floor * self.min_ratio:
            return (f"return ratio {ratio:.3f} after {step} fine-tune iteration(s) is below {self.floor} x the "
                    f"constraint {self.min_ratio}")
        seen = [r for curve in history for s, r in curve if s == step]
        if len(seen) >= self.min_history and ratio < min(seen):
            return (f"return ratio {ratio:.3f} after {step} fine-tune iteration(s) is below the constraint "
                    f"{self.min_ratio} and below all {len(seen)} feasible trials at that step (lowest "
                    f"{min(seen):.3f})")
        return None


class Reporter:
    """What a trial calls: `report(step, ratio)` records the value and raises TrialStopped when the
    pruner says so, or returns the pruner's reason to end the fine-tune here (should_finish), else None.
    The report at `last_step` (the fine-tune's end) never stops the trial: only the evaluation is left,
    and it is the real judge."""

    def __init__(self, pruner: Pruner | None = None, history: Sequence[Reports] = (), last_step: int | None = None):
        self.pruner, self.history, self.last_step = pruner or NopPruner(), list(history), last_step
        self.reports: list[tuple[int, float]] = []

    def report(self, step: int, ratio: float) -> str | None:
        self.reports.append((int(step), float(ratio)))
        if self.last_step is not None and step >= self.last_step:
            return None
        reason = self.pruner.should_stop(self.reports, self.history)
        if reason:
            raise TrialStopped(reason, self.reports)
        return self.pruner.should_finish(self.reports)


def make_pruner(kind: str, min_ratio: float | None, **settings) -> Pruner:
    """The pruner of a search space's `pruner:` block; a gate needs the return constraint."""
    if kind == "none" or min_ratio is None:
        return NopPruner()
    if settings.get("finish_at") is not None:  # never end a fine-tune that still misses the constraint
        settings["finish_at"] = max(settings["finish_at"], min_ratio)
    return GatePruner(min_ratio=min_ratio, **settings)
