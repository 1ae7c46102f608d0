"""Sync: log to MLflow what it missed (a tracking server that went away mid-search). The study is
the source of truth; every finished trial gets its child run, then the front's tags and files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from optuna.trial import TrialState

from autocompress import checks
from autocompress.errors import TrackingError
from autocompress.results import SLIM_DROP
from autocompress._search.record import TrialRecord
from autocompress._search.results import STATE_FILE, current_front, finalize, hypervolume_history, load_run
from autocompress._search.study import finished
from autocompress.tracking import Tracker, check_reachable, run_uri, trial_params
from autocompress.urls import redact


def sync_run(run_dir: Path, storage: str | None = None, tracking_uri: str | None = None,
             log: Callable[[str], None] = print) -> dict:
    """Give every finished trial of the study its MLflow child run (those missing only), then
    re-tag the front and re-log the front's files. Idempotent. The study is the source of truth."""
    checks.storage_url(storage)
    checks.tracking_uri(tracking_uri)
    state_path = Path(run_dir) / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    uri = run_uri(Path(run_dir), state, tracking_uri)
    check_reachable(uri)
    study, state = load_run(run_dir, storage)
    space_objectives = state["objectives"]
    tracker = Tracker(uri, state["study_name"], artifact_dir=Path(run_dir) / "mlartifacts", warn=log)
    if not tracker.attach_parent(state.get("parent_run_id")):
        parent = tracker.start_parent(None, f"search-{state['study_name']}", {"synced_from": str(run_dir)}, [])
        log(f"parent run {state.get('parent_run_id')} is not in {redact(uri)}: created {parent}")
        state.update(parent_run_id=parent, experiment_id=tracker.experiment_id)
        (Path(run_dir) / STATE_FILE).write_text(json.dumps(state, indent=1))
    logged = tracker.logged_trials(repair=True)
    present, new = 0, 0
    for t in finished(study):
        if logged is not None and t.number in logged:
            present += 1
            continue
        rec = TrialRecord.of(t)
        result = rec.result.to_dict(drop=SLIM_DROP) if rec.result else None  # as the study kept it
        art = Path(rec.result.artifact) if rec.result and rec.result.artifact else None
        rid = tracker.log_trial(t.number, trial_params(t.params, rec.config or {}), result, t.state.name,
                                rec.fail_reason or rec.stopped, art)
        if rid is None:
            break
        logged[t.number] = rid
        new += 1
    front_rows = current_front(study, space_objectives)
    tracker.set_pareto(logged or {}, {r["trial"] for r in front_rows})
    history = hypervolume_history(study, space_objectives)
    if history and not tracker.offline and history[-1][0] not in tracker.parent_metric_steps("hypervolume"):
        tracker.log_parent_metrics({"hypervolume": history[-1][1], "front_size": len(front_rows)}, step=history[-1][0])
    finalize(study, space_objectives, tracker, Path(run_dir), history)
    if not tracker.offline and not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) \
            and tracker.parent_status() == "RUNNING":
        tracker.finish_parent()
    if tracker.offline:
        raise TrackingError(f"MLflow failed during sync ({tracker.offline}) after {new} trial(s): run sync again")
    return {"logged": new, "present": present, "front": len(front_rows), "parent_run_id": tracker.parent_id}
