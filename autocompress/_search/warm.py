"""Warm start: a new search begins from an earlier one's results (`search --warm-start RUN_DIR`).

- Every COMPLETE trial of the earlier study whose reuse key (trial spec, teacher, runtime: see
  study.reuse_key) equals the new search's is added to the new study as it is: same params, values
  and measurements (user attr `copied_from`), so the sampler starts informed and the front starts
  full. Copies do not use the new search's budget.
- Its front members that were measured under another key (another teacher, an edited spec) are
  enqueued: they run first and are re-measured against the current teacher.
A trial is carried over only where its params give the very same config in the new space
(replayed through `space.suggest`); others are left out and counted in the log line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from autocompress.errors import ConfigError
from autocompress.results import TrialResult
from autocompress.space import SearchSpace, load_search_space, suggest
from autocompress._search.record import TrialRecord, copy_attrs, enqueue, queue_item
from autocompress._search.results import STATE_FILE, constraint_values, current_front, load_run


def spec_identity(spec) -> dict:
    """What must agree between a search and the run it warm-starts from."""
    return {"env": spec.env, "algorithm": spec.algorithm}


def open_source(run_dir: Path, spec) -> optuna.Study:
    """The earlier run's study, after checking it is one (env and algorithm as this search's).
    ConfigError naming `warm_start` otherwise."""
    run_dir = Path(run_dir)
    if not (run_dir / STATE_FILE).is_file():
        raise ConfigError(f"{run_dir}: not a search run dir (no {STATE_FILE})", option="warm_start")
    state = json.loads((run_dir / STATE_FILE).read_text())
    theirs = state.get("spec")
    if theirs is None:  # runs from before the run dir recorded it: read the space file it names
        try:
            theirs = spec_identity(load_search_space(state["space"])[1])
        except (ConfigError, KeyError) as e:
            raise ConfigError(f"{run_dir}: cannot tell which env and algorithm it searched ({e})",
                              option="warm_start") from None
    mine = spec_identity(spec)
    for k in mine:
        if theirs.get(k) != mine[k]:
            raise ConfigError(f"{run_dir} searched {k} {theirs.get(k)!r}, this search {k} {mine[k]!r}: a warm start "
                              "needs the same env and algorithm", option="warm_start")
    try:
        return load_run(run_dir)[0]
    except ConfigError as e:
        raise ConfigError(str(e), option="warm_start") from None


def _replay(params: dict, config: dict, space: SearchSpace):
    """The new space's distributions for `params`, or None when they do not give `config` there."""
    probe = optuna.create_study(directions=["minimize"])
    probe.enqueue_trial(params)
    trial = probe.ask()
    try:
        if json.loads(json.dumps(suggest(trial, space))) != config:
            return None
    except (ValueError, KeyError):  # a value outside the new range or choices
        return None
    return trial.distributions


def warm_start(study: optuna.Study, source: optuna.Study, space: SearchSpace, key: str, origin: str,
               log: Callable[[str], None]) -> dict[str, int]:
    """Copy the matching COMPLETE trials of `source` into `study`, enqueue its front's others."""
    copied, enqueued, skipped = 0, 0, 0
    for t in source.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        rec = TrialRecord.of(t)
        if rec.reuse_key != key or rec.duplicate_of is not None:
            continue
        dists = _replay(t.params, rec.config or {}, space)
        if dists is None:
            skipped += 1
            continue
        study.add_trial(optuna.trial.create_trial(
            params=t.params, distributions=dists, values=t.values,
            user_attrs=copy_attrs(t, copied_from=f"{origin}#{t.number}"),
            constraints=constraint_values(space, rec.result or TrialResult()) or None))
        copied += 1
    for row in current_front(source, space.objectives):
        t = source.trials[row["trial"]]
        if TrialRecord.of(t).reuse_key == key:
            continue  # copied above (or left out as not fitting the space)
        if _replay(t.params, row["config"], space) is None:
            skipped += 1
            continue
        enqueue(study, queue_item(t.params, warm_start=f"{origin}#{t.number}"))
        enqueued += 1
    log(f"warm start from {origin}: {copied} trial(s) copied (same spec and teacher), {enqueued} front "
        f"member(s) enqueued to be re-measured, {skipped} left out (their config is not in this space)")
    return {"copied": copied, "enqueued": enqueued, "skipped": skipped}
