"""The read side of a search: rows and front from the study, constraint and objective values,
the Pareto files and plots (`finalize`), and opening a run dir (`load_run`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from autocompress import pareto, plots
from autocompress.errors import ConfigError
from autocompress.results import SLIM_DROP, FrontRow, TrialResult
from autocompress.space import SearchSpace
from autocompress._search.record import StudyAttrs, TrialRecord
from autocompress._search.study import finished, storage_for
from autocompress.urls import is_redacted

#: the run dir's record of the search (study name, storage, tracking URI, MLflow parent run)
STATE_FILE = "search.json"
#: objective -> TrialResult field
OBJECTIVE_KEYS = {"return": "return_mean", "latency": "latency_ms", "bytes": "bytes"}
#: a row's held-out values: row key -> key in a held-out snapshot's entry
HELDOUT_KEYS = {"heldout_return_mean": "return_mean", "heldout_return_std": "return_std",
                "heldout_return_ratio": "return_ratio"}


def feasible(t: optuna.trial.FrozenTrial) -> bool:
    """Within every constraint the trial was told (Optuna's convention: a value <= 0 is satisfied)."""
    return all(v <= 0 for v in t.constraints.values())


def kept_return(t: optuna.trial.FrozenTrial) -> bool:
    """Within the return constraint, whatever the budgets (bytes, latency, flash, RAM) say: what makes a
    baseline a stack's anchor, since stacking is how a kept return is brought within a budget."""
    return t.constraints.get("min_return_ratio", 0.0) <= 0


def rows(study: optuna.Study) -> list[dict]:
    """One row per COMPLETE trial: its number, config, constraint feasibility and measurements, and
    its held-out values (heldout_return_mean/_std/_ratio, heldout_episodes) where it has them."""
    out = []
    held = StudyAttrs(study).heldout or {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        rec = TrialRecord.of(t)
        r = (rec.result or TrialResult()).to_dict(drop=SLIM_DROP)
        r.update(trial=t.number, config=rec.config or {}, feasible=feasible(t))
        h = held.get("trials", {}).get(str(t.number))
        if h:
            r.update({k: h[v] for k, v in HELDOUT_KEYS.items()}, heldout_episodes=held["episodes"])
        out.append(r)
    return out


def heldout_of_front(study: optuna.Study, front_rows: list[dict]) -> dict | None:
    """The study's held-out snapshot if every front member has values in it (else None: the front
    changed since, e.g. a resumed search, and pareto/pick go by the evaluation episodes)."""
    held = StudyAttrs(study).heldout
    if not held or not front_rows or any(r.get("heldout_return_ratio") is None for r in front_rows):
        return None
    return held


def reference_row(study: optuna.Study) -> dict | None:
    """The fine-tuned teacher's row (`finetune.teacher_reference`), with its held-out values if any."""
    attrs = StudyAttrs(study)
    ref = attrs.reference
    if not ref:
        return None
    r = TrialResult.from_dict(ref["result"]).to_dict(drop=SLIM_DROP)
    r.update(trial=-1, config={}, feasible=True, reference=True)
    held = attrs.heldout or {}
    if held.get("reference"):
        r.update({k: held["reference"][v] for k, v in HELDOUT_KEYS.items()}, heldout_episodes=held["episodes"])
    return r


def current_front(study: optuna.Study, objectives: list[str]) -> list[dict]:
    """Front over feasible trials when any trial is feasible (Optuna's `best_trials` rule)."""
    return pareto.front(_front_pool(rows(study)), objectives)


def front_layers(study: optuna.Study, objectives: list[str]) -> list[list[dict]]:
    """current_front, then the front of the trials it leaves, and so on (a non-dominated sort of the same pool)."""
    left, out = _front_pool(rows(study)), []
    while left:
        out.append(pareto.front(left, objectives))
        taken = {r["trial"] for r in out[-1]}
        left = [r for r in left if r["trial"] not in taken]
    return out


def _front_pool(rs: list[dict]) -> list[dict]:
    """The rows a front is drawn from: the feasible ones, or all where none is."""
    return [r for r in rs if r["feasible"]] or rs


#: constraint -> the TrialResult field it bounds
CONSTRAINT_FIELDS = {"min_return_ratio": "return_ratio", "max_bytes": "bytes", "max_latency_ms": "latency_ms",
                     "max_flash": "flash", "max_ram": "ram"}
#: fields every trial must have finite, besides its objectives and constraints: the plotted ratios
PLOTTED_FIELDS = ("return_ratio", "latency_ratio", "bytes_ratio")


def constraint_values(space: SearchSpace, result: TrialResult) -> dict[str, float]:
    """Optuna's constraint values (<= 0: satisfied) of a result, one per bound the space sets."""
    c = space.constraints
    out = {}
    for key, field in CONSTRAINT_FIELDS.items():
        bound = getattr(c, key)
        if bound is not None:
            value = getattr(result, field)
            out[key] = bound - value if key.startswith("min_") else value - bound
    return out


def told_values(space: SearchSpace, result: TrialResult) -> tuple[list[float], dict[str, float]]:
    """What a finished trial tells Optuna: its objective values and constraint values. The one guard on
    them: FloatingPointError naming the first field that is not a finite number (NaN, inf: a user's env,
    a degenerate return scale), so that none reaches the sampler, MLflow or a plot; the driver records
    the trial FAIL with that reason and the search goes on."""
    fields = [OBJECTIVE_KEYS[o] for o in space.objectives]
    fields += [CONSTRAINT_FIELDS[k] for k in constraint_values(space, result)] + list(PLOTTED_FIELDS)
    for f in fields:
        v = getattr(result, f)
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise FloatingPointError(f"non-finite {f.replace('_', ' ')}: {v}")
    return [float(getattr(result, OBJECTIVE_KEYS[o])) for o in space.objectives], constraint_values(space, result)


def finalize(study: optuna.Study, objectives: list[str], tracker, run_dir: Path,
             history: list[tuple[int, float]], log: Callable[[str], None] = print) -> dict:
    """Pareto table (CSV + JSON) and plots on the parent run; a plot that cannot be drawn is skipped with
    a warning (`log`), never fatal: the table holds every value."""
    all_rows = rows(study)
    front_rows = current_front(study, objectives)
    front_ids = {r["trial"] for r in front_rows}
    out = run_dir / "pareto"
    out.mkdir(exist_ok=True)
    table = [FrontRow.from_row(r).to_dict() for r in front_rows]
    (out / "pareto.json").write_text(json.dumps(table, indent=1))
    cols = ["trial", "return_mean", "return_ratio", "latency_ms", "latency_ratio", "bytes", "bytes_ratio", "n_params"]
    held = heldout_of_front(study, front_rows)
    if held:
        cols += ["heldout_return_mean", "heldout_return_std", "heldout_return_ratio", "heldout_episodes"]
    (out / "pareto.csv").write_text("\n".join([",".join(cols + ["config"])] + [
        ",".join(str(r[c]) for c in cols) + ',"' + json.dumps(r["config"]).replace('"', '""') + '"' for r in table]))
    files = [out / "pareto.json", out / "pareto.csv"]
    drawings = {"pareto.png": lambda p: plots.pareto_png(all_rows, front_ids, p),
                "pareto.html": lambda p: plots.pareto_html(all_rows, front_ids, p)} if all_rows else {}
    if history:
        drawings["hypervolume.png"] = lambda p: plots.hypervolume_png(history, p)
    for name, draw in drawings.items():
        try:
            files.append(draw(out / name))
        except Exception as e:  # a plot is a view of the table: never the end of a search
            log(f"warning: {name} not drawn ({type(e).__name__}: {e}); pareto.csv / pareto.json hold the values")
    ref = reference_row(study)
    floor = StudyAttrs(study).noise_floor  # the teacher timed against itself: beside the front
    for name, data in (("heldout.json", held), ("reference.json", ref), ("noise_floor.json", floor)):
        if data:  # the held-out snapshot (seeds, teacher, every member) and the fine-tuned teacher's row
            (out / name).write_text(json.dumps(data, indent=1))
            files.append(out / name)
        elif (out / name).exists():  # a snapshot of an earlier front: stale
            (out / name).unlink()
    if tracker is not None:
        tracker.log_parent_files(files)
    return {"front": table, "trials": len(study.trials), "complete": len(all_rows),
            "failed": sum(t.state == TrialState.FAIL for t in study.trials),
            "stopped": sum(t.state == TrialState.PRUNED for t in study.trials),
            "hypervolume": history[-1][1] if history else None, "heldout": held, "reference": ref,
            "latency_noise_floor": floor}


def load_run(run_dir: Path, storage: str | None = None) -> tuple[optuna.Study, dict]:
    """Open the study of a finished or running search from its run dir."""
    state_path = Path(run_dir) / STATE_FILE
    if not state_path.exists():
        raise ConfigError(f"{run_dir}: not a search run dir (no {STATE_FILE})")
    state = json.loads(state_path.read_text())
    url = storage or state.get("storage")
    if is_redacted(url):
        raise ConfigError(f"{run_dir} uses storage {url}: pass it again with the full URL", option="storage")
    try:
        study = optuna.load_study(study_name=state["study_name"], storage=storage_for(Path(run_dir), url))
    except KeyError:  # a storage given here (--storage) is the likelier culprit: name it
        raise ConfigError(f"{run_dir}: {'the storage given has' if storage else 'its storage has'} no study "
                          f"{state['study_name']!r}", option="storage" if storage else None) from None
    return study, state


def hypervolume_history(study: optuna.Study, objectives: list[str]) -> list[tuple[int, float]]:
    """(finished trials, normalised HV of the feasible complete ones) in order of completion."""
    fin = sorted(finished(study), key=lambda t: (t.datetime_complete is None, t.datetime_complete, t.number))
    complete = {r["trial"]: r for r in rows(study)}
    history, seen = [], []
    for k, t in enumerate(fin, 1):
        if t.number in complete and complete[t.number]["feasible"]:
            seen.append(complete[t.number])
        history.append((k, pareto.normalised_hypervolume(seen, objectives)))
    return history
