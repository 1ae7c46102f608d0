"""After the trials: the fine-tuned teacher as a reference row, held-out re-evaluation, and the fresh
episodes `pick` reports its choice on.

The front is chosen on the evaluation episodes, so its returns there are optimistic. Held-out
re-evaluation acts every front member's artifact, the teacher's (and the reference's) on
`eval.heldout_episodes` fresh episodes (seeds from `eval.heldout_seed`, validated apart from every
seed a trial trains, selects or evaluates on), in the runtime the study pinned, with each trial's
recorded kernels. Optuna freezes a finished trial's user attrs, so the values live in the study's
user attrs: `heldout` = {episodes, seed, runtime, at, teacher, reference, trials: {"<n>": {return_mean,
return_std, return_ratio}}} (one snapshot, all on the same seeds), mirrored as MLflow metrics
`heldout_*` on each trial's child run and the parent run.

The reference (`finetune.teacher_reference: true`): the teacher fine-tuned with the trials' fine-tune
settings and no technique, once per search, measured like a trial; study user attr `reference`, parent
run metrics `reference_*`. Never a trial: not on the front, not in the budget.

`pick` chooses on the held-out values (set A), so they are optimistic for the trial it chose: it reports
that trial (and the teacher) on `eval.fresh_episodes` more episodes (set B, seeds from `eval.fresh_seed`,
validated apart like the others), study user attr `fresh:<trial>`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
import time
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from autocompress import measure, pipeline, rl
from autocompress import teacher as teachers
from autocompress.config import PICK_ONLY, CompressConfig, TrialSpec
from autocompress.errors import ConfigError
from autocompress.results import SLIM_DROP
from autocompress.tracking import Tracker, check_reachable, run_uri
from autocompress._search.record import StudyAttrs
from autocompress._search.results import finalize, front_layers, hypervolume_history, rows
from autocompress._search.tasks import install_teacher

Log = Callable[[str], None]


# -- the reference row ----------------------------------------------------------------------------

def reference_task(spec_json: str, teacher: dict, cache_root: str) -> dict:
    """Ray task: the teacher fine-tuned as a trial would be (no technique), exported and measured."""
    Path(cache_root).mkdir(parents=True, exist_ok=True)
    install_teacher(teacher["files"], cache_root, teacher["dirname"])
    spec = TrialSpec.model_validate_json(spec_json)
    with tempfile.TemporaryDirectory() as d:
        result = pipeline.compress_trial(spec, CompressConfig(), d, cache_root, log=lambda m: None,
                                         finetune_teacher=True)
        return {"result": result, "artifact": (Path(d) / "policy.acz").read_bytes()}


def _spec_key(spec: TrialSpec) -> str:
    return hashlib.sha256(spec.model_dump_json(exclude=PICK_ONLY).encode()).hexdigest()[:16]


def run_reference(study: optuna.Study, spec: TrialSpec, teacher_ref, cache_root: str, tracker, run_dir: Path,
                  log: Log) -> dict | None:
    """Fine-tune the teacher once (kept in the study; again only if the spec changed). A failure is
    logged and the search's results stand without it."""
    import ray  # deferred: a finished run's study is read without Ray

    attrs = StudyAttrs(study)
    have = attrs.reference
    if have and have.get("spec_key") == _spec_key(spec) and Path(have["artifact"]).is_file():
        return have
    log(f"reference: fine-tuning the teacher itself ({spec.finetune.iterations} iterations, lr {spec.finetune.lr}, "
        "no technique) ...")
    task = ray.remote(reference_task).options(num_cpus=spec.resources.num_cpus, max_retries=0)
    ref = task.remote(spec.model_dump_json(), teacher_ref, cache_root)
    try:
        out = ray.get(ref, timeout=spec.resources.timeout_s)
    except Exception as e:  # the trials' results stand: the reference is an extra row
        ray.cancel(ref, force=True)
        log(f"reference: failed, left out ({type(e).__name__}: {str(e).strip().splitlines()[-1][:300]})")
        return None
    art = Path(run_dir) / "reference" / "policy.acz"
    art.parent.mkdir(parents=True, exist_ok=True)
    art.write_bytes(out["artifact"])
    result = dataclasses.replace(out["result"], artifact=str(art))
    record = {"result": result.to_dict(drop=SLIM_DROP), "artifact": str(art), "spec_key": _spec_key(spec)}
    attrs.reference = record
    if tracker is not None:  # MLflow gets it as measured (its per-episode returns too)
        tracker.log_reference(out["result"].to_dict(), art)
    log(f"reference (teacher fine-tuned, no compression): return {result.return_mean:.1f} "
        f"(×{result.return_ratio:.3f} the teacher)")
    return record


# -- held-out re-evaluation -------------------------------------------------------------------------

def _returns_task(data: bytes, spec_json: str, runtime: str, kernels: list[str] | None):
    return measure.artifact_returns(data, TrialSpec.model_validate_json(spec_json), runtime, kernels)


def teacher_artifact(all_rows: list[dict], spec: TrialSpec, run_dir: Path) -> bytes:
    """The teacher's artifact: the teacher-as-is trial's (the same export), else that of the teacher cache
    the trials recorded, else of the spec's teacher cached in the run dir or committed with the repo."""
    for r in all_rows:
        if not r["config"] and Path(r["artifact"]).is_file():
            return Path(r["artifact"]).read_bytes()
    for r in all_rows:
        if r.get("teacher_path") and (Path(r["teacher_path"]) / "teacher.json").is_file():
            return teachers.load_teacher(Path(r["teacher_path"])).artifact()
    teacher = teachers.available_teacher(spec, Path(run_dir) / "teachers")
    if teacher is not None:
        return teacher.artifact()
    raise ConfigError("held-out re-evaluation needs the teacher: no teacher-as-is trial and no teacher cache at "
                      + (all_rows[0].get("teacher_path") or "(none recorded)" if all_rows else "(no trials)"))


def policies(all_rows: list[dict], trial_rows: list[dict], run_dir: Path, spec: TrialSpec,
             reference: dict | None = None) -> dict:
    """What held-out re-evaluation acts, name -> (artifact bytes, recorded kernels): the teacher
    (`teacher_artifact`), each of `trial_rows` by trial number, and the `reference` record if its
    artifact is there."""
    jobs: dict = {"teacher": (teacher_artifact(all_rows, spec, run_dir), None), **trial_jobs(trial_rows)}
    if reference and Path(reference["artifact"]).is_file():
        jobs["reference"] = (Path(reference["artifact"]).read_bytes(), reference["result"].get("kernels"))
    return jobs


def trial_jobs(trial_rows: list[dict]) -> dict:
    """Trial number -> (artifact bytes, recorded kernels): what re-evaluation acts for each of `trial_rows`."""
    return {r["trial"]: (Path(r["artifact"]).read_bytes(), r.get("kernels")) for r in trial_rows}


def heldout_values(jobs: dict, held_spec: TrialSpec, runtime: str, log: Log = lambda m: None,
                   parallel: bool = False) -> dict:
    """name -> {return_mean, return_std, return_ratio} of every policy in `jobs` (`policies`) on the
    episodes of `held_spec` (a measure.heldout_spec), the ratio to the teacher's return on the same ones."""
    return _summaries(_evaluate_all(jobs, held_spec, runtime, log, parallel), held_spec)


def _summaries(returns: dict, held_spec: TrialSpec) -> dict:
    return {k: measure.heldout_summary(v, returns["teacher"], held_spec) for k, v in returns.items()}


def _evaluate_all(jobs: dict, spec: TrialSpec, runtime: str, log: Log, parallel: bool) -> dict:
    """Held-out returns of every job (name -> (artifact bytes, kernels)): one Ray task each when
    `parallel`, else one after the other; a progress line per policy either way."""
    out = {}
    if parallel:
        import ray  # deferred: sequential re-evaluation needs no Ray

        task = ray.remote(_returns_task).options(num_cpus=1)
        spec_json = spec.model_dump_json()
        pending = {task.remote(data, spec_json, runtime, kernels): name for name, (data, kernels) in jobs.items()}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            name = pending.pop(ready[0])
            out[name] = ray.get(ready[0])
            log(f"held-out: {_name(name)} done ({len(out)}/{len(jobs)})")
        return out
    for name, (data, kernels) in jobs.items():
        out[name] = measure.artifact_returns(data, spec, runtime, kernels)
        log(f"held-out: {_name(name)} done ({len(out)}/{len(jobs)})")
    return out


def _name(name) -> str:
    return f"trial {name}" if isinstance(name, int) else name


#: front layers re-evaluated at most: the front, then (while no re-evaluated trial keeps the return constraint on
#: the held-out episodes) the trials it dominated, layer by layer
HELDOUT_LAYERS = 3


def reevaluate(study: optuna.Study, spec: TrialSpec, objectives: list[str], run_dir: Path, tracker=None,
               episodes: int | None = None, log: Log = print, parallel: bool | None = None,
               min_return_ratio: float | None = None) -> dict:
    """Re-evaluate the front, the teacher and the reference on held-out episodes (default: the spec's
    eval.heldout_episodes); store the snapshot in the study (HELDOUT) and MLflow. `parallel`: Ray tasks
    (default: where Ray is running already, as at the end of a search). Where no front member keeps
    `min_return_ratio` (the space's constraint) there, the next layers of the non-dominated sort too, up to
    HELDOUT_LAYERS: the front is drawn on the evaluation episodes, and where those saturate (CartPole's 500)
    one member can dominate trials the held-out episodes rank above it; `pick` then chooses among them all."""
    held_spec = measure.heldout_spec(spec, episodes)  # ConfigError when those seeds overlap others
    n, seed = held_spec.eval.episodes, held_spec.eval.seed
    if n < 1:
        raise ConfigError(f"{n}: held-out episodes must be >= 1", option="reevaluate")
    attrs = StudyAttrs(study)
    runtime = attrs.runtime or measure.policy_runtime(spec.latency.runtime)[0]
    layers = front_layers(study, objectives)
    front_rows = layers[0] if layers else []
    jobs = policies(rows(study), front_rows, run_dir, spec, attrs.reference)
    if parallel is None:
        import ray  # deferred (heavy): only to ask whether it runs

        parallel = ray.is_initialized()
    log(f"held-out: {len(jobs)} policies (front of {len(front_rows)}, the teacher"
        f"{', the reference' if 'reference' in jobs else ''}) on {n} episodes, seeds {seed}..{seed + n - 1}, "
        f"{runtime} runtime{', in parallel Ray tasks' if parallel else ''}")
    returns = _evaluate_all(jobs, held_spec, runtime, log, parallel)
    for layer in layers[1:HELDOUT_LAYERS] if min_return_ratio is not None else []:
        if any(isinstance(k, int) and v["return_ratio"] >= min_return_ratio
               for k, v in _summaries(returns, held_spec).items()):
            break
        log(f"held-out: no re-evaluated trial keeps return ratio {min_return_ratio} there; the next layer of the "
            f"front ({len(layer)} trial(s) it dominated) too")
        returns.update(_evaluate_all(trial_jobs(layer), held_spec, runtime, log, parallel))
    values = _summaries(returns, held_spec)
    record = {"episodes": n, "seed": seed, "runtime": runtime, "at": time.time(), "teacher": values.pop("teacher"),
              "reference": values.pop("reference", None), "trials": {str(k): v for k, v in values.items()}}
    attrs.heldout = record
    if tracker is not None:
        tracker.log_heldout(tracker.logged_trials() or {}, record)
    return record


def layers_left(study: optuna.Study, objectives: list[str], min_return_ratio: float) -> bool:
    """Whether `reevaluate` at `min_return_ratio` would act more trials than the snapshot holds: none of them
    keeps it held-out, and the first HELDOUT_LAYERS layers of the front hold trials it lacks (a snapshot taken
    at a lower return constraint, e.g. the space's 0.9 where `pick` asks 0.95, stopped at the front)."""
    values = (StudyAttrs(study).heldout or {}).get("trials", {})
    if any(v["return_ratio"] >= min_return_ratio for v in values.values()):
        return False
    return any(str(r["trial"]) not in values for layer in front_layers(study, objectives)[:HELDOUT_LAYERS]
               for r in layer)


def conclude(study: optuna.Study, spec: TrialSpec, objectives: list[str], run_dir: Path, tracker, teacher_ref,
             cache_root: str, log: Log, min_return_ratio: float | None = None) -> None:
    """The end of a search (the last driver): the reference row if the spec asks for it (fine-tuned from
    `teacher_ref`, the teacher task's result in Ray's object store, installed in `cache_root`), then the
    front's held-out values (eval.heldout_episodes > 0; `reevaluate`, with the space's return constraint).
    The caller then re-writes the front's files."""
    if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        log("held-out / reference: other drivers are still running trials; the last one to finish does it")
        return
    if spec.finetune.teacher_reference:
        run_reference(study, spec, teacher_ref, cache_root, tracker, run_dir, log)
    if spec.eval.heldout_episodes > 0 and rows(study):
        reevaluate(study, spec, objectives, run_dir, tracker, log=log, min_return_ratio=min_return_ratio)


# -- pick's report on fresh episodes ----------------------------------------------------------------------

def fresh_values(study: optuna.Study, spec: TrialSpec, run_dir: Path, row: dict, log: Log = lambda m: None
                 ) -> dict | None:
    """The return of the trial `row` (one of `rows(study)`, the one `pick` chose) and of the teacher on the
    spec's fresh episodes (eval.fresh_seed, eval.fresh_episodes), acted as the trial was measured (its
    runtime and kernels): {episodes, seed, runtime, return_mean, return_std, return_ratio,
    teacher_return_mean}. Kept in the study (StudyAttrs.fresh) and reused while the episodes and runtime are
    the same, so picking the trial again runs no episodes. None where eval.fresh_episodes is 0."""
    if spec.eval.fresh_episodes == 0:
        return None
    attrs = StudyAttrs(study)
    runtime = row.get("runtime") or attrs.runtime or measure.policy_runtime(spec.latency.runtime)[0]
    key = {"episodes": spec.eval.fresh_episodes, "seed": spec.eval.fresh_seed, "runtime": runtime}
    kept = attrs.fresh(row["trial"])
    if kept and all(kept.get(k) == v for k, v in key.items()):
        return kept
    n, seed = key["episodes"], key["seed"]
    log(f"pick: trial {row['trial']} and the teacher on {n} fresh episodes, seeds {seed}..{seed + n - 1}, "
        f"{runtime} runtime")
    jobs = policies(rows(study), [row], run_dir, spec)
    values = heldout_values(jobs, measure.fresh_spec(spec), runtime)
    record = {**key, **values[row["trial"]], "teacher_return_mean": values["teacher"]["return_mean"]}
    attrs.set_fresh(row["trial"], record)
    return record


def reevaluate_run(run_dir: Path, study: optuna.Study, state: dict, spec: TrialSpec, episodes: int | None = None,
                   tracking_uri: str | None = None, parallel: bool = False, log: Log = print,
                   min_return_ratio: float | None = None) -> dict:
    """`pareto RUN --reevaluate N`: re-evaluate a finished search's front on held-out episodes, store the
    values in its study and MLflow (the store it logged to, or `tracking_uri`; where that is unreachable
    the study alone gets them and `autocompress sync` re-logs the files), and re-write the front's files."""
    if study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        raise ConfigError(f"{run_dir}: the search is still running trials; re-evaluate once it has finished",
                          option="reevaluate")
    measure.heldout_spec(spec, episodes)  # bad seeds or episodes: before any work
    tracker, uri = None, run_uri(run_dir, state, tracking_uri)
    try:
        check_reachable(uri)
        tracker = Tracker(uri, state["study_name"], artifact_dir=Path(run_dir) / "mlartifacts", warn=log)
        if not tracker.attach_parent(state.get("parent_run_id")):
            log(f"held-out: the search's parent run is not in MLflow at {uri}: values go to the study only")
            tracker = None
    except Exception as e:  # MLflow is a mirror (unreachable, refusing): the study keeps the values
        log(f"held-out: MLflow unavailable ({type(e).__name__}: {str(e)[:200]}): values go to the study only")
        tracker = None
    if parallel:
        rl.ensure_ray()
    record = reevaluate(study, spec, state["objectives"], Path(run_dir), tracker, episodes, log, parallel,
                        min_return_ratio)
    finalize(study, state["objectives"], tracker, Path(run_dir), hypervolume_history(study, state["objectives"]))
    return record
