"""The only Optuna adapter: a multi-objective study whose trials run as Ray tasks.

The driver asks Optuna for up to `parallel` trials, runs each as a Ray task (resources
from the trial spec), and tells results as they arrive (`ray.wait`), so parallel
trials really overlap. The Optuna storage is the source of truth: a journal file in the
run dir by default (resumable), or any Optuna storage URL (e.g. postgresql://...).
MLflow gets a child run per finished trial; the `pareto` tags follow the front.

Several drivers can work on one study (Optuna's distributed pattern): the first runs
`search`, the others `search --join` against the same storage; each asks its own trials,
the budget counts every driver's, and the children share one MLflow parent run.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from autocompress import pareto, plots
from autocompress.config import CompressConfig, TrialSpec
from autocompress.errors import ConfigError
from autocompress.space import SearchSpace, baseline_params, suggest
from autocompress.tracking import Tracker, check_reachable, default_uri
from autocompress.urls import is_redacted, redact

STATE_FILE = "search.json"
optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class SearchOptions:
    run_dir: Path
    trials: int
    parallel: int
    sampler: str
    seed: int
    storage: str | None = None
    tracking_uri: str | None = None
    resume: bool = False
    join: bool = False
    cache_dir: Path | None = None
    # testing hook (AUTOCOMPRESS_FAULT_TRIALS="4,kill-once:2,kill:3"): trial number -> fault
    faults: dict[int, str] = field(default_factory=dict)


FAULTS = ("raise", "kill-once", "kill")


def parse_faults(text: str) -> dict[int, str]:
    """'4,kill:3' -> {4: 'raise', 3: 'kill'}: 'raise' raises in the trial, 'kill' SIGKILLs its
    Ray worker on every attempt, 'kill-once' on the first attempt only (the retry succeeds)."""
    out = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        kind, _, number = item.rpartition(":")
        if (kind or "raise") not in FAULTS or not number.isdigit():
            raise ConfigError(f"AUTOCOMPRESS_FAULT_TRIALS: bad item {item!r}; use N, kill-once:N or kill:N")
        out[int(number)] = kind or "raise"
    return out


# -- Ray tasks (run in workers; everything they need travels as arguments) ---------------

def _install_teacher(files: dict[str, bytes], cache_root: str, dirname: str) -> None:
    path = Path(cache_root) / dirname
    if not (path / "teacher.json").exists():
        tmp = Path(tempfile.mkdtemp(dir=Path(cache_root), prefix=".tmp-teacher-"))
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        try:
            os.replace(tmp, path)
        except OSError:  # another task on this node installed it first
            pass


def _teacher_task(spec_json: str, cache_root: str) -> dict[str, Any]:
    from autocompress import rl

    spec = TrialSpec.model_validate_json(spec_json)
    teacher = rl.train_teacher(spec, Path(cache_root), log=lambda m: None)
    return {"dirname": teacher.path.name, "info": teacher.info,
            "files": {n: (teacher.path / n).read_bytes() for n in ("teacher.pt", "teacher.json")}}


def _inject(fault: str | None, number: int, cache_root: str) -> None:
    import signal

    import ray

    if fault == "raise":
        raise RuntimeError(f"injected fault in trial {number} (AUTOCOMPRESS_FAULT_TRIALS)")
    marker = Path(cache_root) / f".killed-{ray.get_runtime_context().get_job_id()}-trial-{number}"  # per search
    if fault == "kill" or (fault == "kill-once" and not marker.exists()):
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies as if OOM-killed or its node lost


def _trial_task(number: int, spec_json: str, cfg: dict, teacher: dict, cache_root: str, fault: str | None) -> dict:
    import ray

    from autocompress.pipeline import compress_trial

    start = time.time()
    Path(cache_root).mkdir(parents=True, exist_ok=True)
    _inject(fault, number, cache_root)
    _install_teacher(teacher["files"], cache_root, teacher["dirname"])
    spec = TrialSpec.model_validate_json(spec_json)
    with tempfile.TemporaryDirectory() as d:
        result = compress_trial(spec, CompressConfig.model_validate(cfg), d, cache_root, log=lambda m: None)
        artifact = (Path(d) / "policy.acz").read_bytes()
    result.update(node_id=ray.get_runtime_context().get_node_id(), hostname=socket.gethostname(),
                  pid=os.getpid(), started_at=start, finished_at=time.time())
    return {"result": result, "artifact": artifact}


# -- study -------------------------------------------------------------------------------

def make_sampler(name: str, seed: int):
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=6)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"--sampler: unknown sampler {name!r}; choose tpe, nsga2, gp or random")


def storage_for(run_dir: Path, url: str | None):
    if url:
        return url
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(run_dir / "study.journal")))


def open_study(space: SearchSpace, opts: SearchOptions) -> optuna.Study:
    directions = ["maximize" if o == "return" else "minimize" for o in space.objectives]
    storage = storage_for(opts.run_dir, opts.storage)
    sampler = make_sampler(opts.sampler, opts.seed)
    if opts.resume:
        try:
            return optuna.load_study(study_name=space.name, storage=storage, sampler=sampler)
        except KeyError:
            raise ConfigError(f"--resume: no study {space.name!r} in the storage of {opts.run_dir}") from None
    study = optuna.create_study(study_name=space.name, storage=storage, sampler=sampler, directions=directions,
                                load_if_exists=True)
    if opts.join:
        if study.directions != [optuna.study.StudyDirection[d.upper()] for d in directions]:
            raise ConfigError(f"--join: study {space.name!r} has other objectives than {space.objectives}")
        return study
    if study.trials:
        raise ConfigError(f"study {space.name!r} already has {len(study.trials)} trials in this storage: pass "
                          "--resume to continue it, or use another --run-dir / storage")
    return study


#: a driver writes `heartbeat:<host:pid>` into the study's user attrs this often (seconds) ...
HEARTBEAT_S = 10.0
#: ... and its RUNNING trials are taken as orphaned once it has been silent this long
STALE_AFTER_S = 60.0


def beat(study: optuna.Study, driver: str) -> None:
    study.set_user_attr(f"heartbeat:{driver}", time.time())


def _driver_gone(driver: str | None, last_beat: float | None, now: float) -> bool:
    """Is the driver that asked a trial dead? A driver on this host is checked by its pid
    (so a --resume right after a crash need not wait); one elsewhere by its heartbeat."""
    if driver is None or last_beat is None:
        return True  # never beat: a driver older than heartbeats, or one that died as it asked
    host, _, pid = driver.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, someone else's
            return False
        return False
    return now - last_beat > STALE_AFTER_S


def fail_orphans(study: optuna.Study, me: str, include_unowned: bool = False) -> int:
    """Trials left RUNNING by a dead driver: mark FAIL (reason recorded) and ask them again.

    Every driver runs this as it goes (Optuna's `fail_stale_trials` pattern, done per driver
    because journal storage has no heartbeats), so a driver that dies beside others loses no
    budget; `--resume` runs it with `include_unowned`, for trials whose driver never said who
    it was. Trials of live drivers (their own, or other --join drivers') are left alone."""
    beats, now, n = study.user_attrs, time.time(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        driver = t.user_attrs.get("driver")
        if driver == me or (driver is None and not include_unowned):
            continue
        if not _driver_gone(driver, beats.get(f"heartbeat:{driver}"), now):
            continue
        # Optuna has no public setter for a frozen trial's attrs; the storage call is the documented way.
        study._storage.set_trial_user_attr(t._trial_id, "fail_reason",
                                           f"interrupted: its search driver {driver or '(unknown)'} stopped")
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(t.params, skip_if_exists=False)
        n += 1
    return n


def duplicate_of(study: optuna.Study, cfg: dict) -> optuna.trial.FrozenTrial | None:
    """A COMPLETE trial that ran this very techniques config. Trials are seeded from the spec,
    so its measurements stand for a repeat; samplers re-propose configs of discrete spaces
    (e.g. a distill width) and Optuna's own advice is to answer those from the study."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("config") == cfg and Path(t.user_attrs.get("result", {}).get("artifact", "")).is_file():
            return t
    return None


def finished(study: optuna.Study) -> list:
    """Trials that count towards the budget: COMPLETE, or FAIL for a reason of their own."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
            if not t.user_attrs.get("interrupted")]


def rows(study: optuna.Study) -> list[dict]:
    """One row per COMPLETE trial: its number, config, constraint feasibility and measurements."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        r = dict(t.user_attrs.get("result", {}))
        r.update(trial=t.number, config=t.user_attrs.get("config", {}),
                 feasible=all(v <= 0 for v in t.constraints.values()))
        out.append(r)
    return out


def current_front(study: optuna.Study, objectives: list[str]) -> list[dict]:
    """Front over feasible trials when any trial is feasible (Optuna's `best_trials` rule)."""
    rs = rows(study)
    feasible = [r for r in rs if r["feasible"]]
    return pareto.front(feasible or rs, objectives)


def constraint_values(space: SearchSpace, result: dict) -> dict[str, float]:
    c = space.constraints
    out = {}
    if c.min_return_ratio is not None:
        out["min_return_ratio"] = c.min_return_ratio - result["return_ratio"]
    if c.max_bytes is not None:
        out["max_bytes"] = result["bytes"] - c.max_bytes
    if c.max_latency_ms is not None:
        out["max_latency_ms"] = result["latency_ms"] - c.max_latency_ms
    return out


SLIM_DROP = ("returns", "finetune_rounds")


def objective_values(space: SearchSpace, result: dict) -> list[float]:
    keys = {"return": "return_mean", "latency": "latency_ms", "bytes": "bytes"}
    vals = [float(result[keys[o]]) for o in space.objectives]
    if any(v != v for v in vals):
        raise FloatingPointError("an objective is NaN")
    return vals


# -- the driver loop ---------------------------------------------------------------------

def run_search(space: SearchSpace, spec: TrialSpec, space_path: Path, spec_path: Path, opts: SearchOptions,
               progress: Callable[[dict], None] = lambda s: None, log: Callable[[str], None] = print) -> dict:
    import ray

    from autocompress import rl

    run_dir = opts.run_dir
    if opts.tracking_uri:
        check_reachable(opts.tracking_uri)
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state and not (opts.resume or opts.join):
        raise ConfigError(f"{run_dir} already holds a search: pass --resume to continue it (or --join to add "
                          "trials beside a running driver), or choose another --run-dir")
    if opts.join and not opts.storage and not state:
        raise ConfigError("--join: pass --storage (the shared study's URL) or the --run-dir of the search to join")
    study = open_study(space, opts)
    tracking_uri = opts.tracking_uri or state.get("tracking_uri") or default_uri(run_dir)
    if is_redacted(tracking_uri):
        raise ConfigError(f"{run_dir} was searched with a password in the tracking URI: pass --tracking-uri again")
    tracker = Tracker(tracking_uri, space.name, artifact_dir=run_dir / "mlartifacts", warn=log)
    parent_id = state.get("parent_run_id")
    driver = f"{socket.gethostname()}:{os.getpid()}"  # which driver asked a trial (several may share a study)
    beat(study, driver)
    if opts.resume:
        n = fail_orphans(study, driver, include_unowned=True)
        if n:
            log(f"resume: {n} trial(s) left RUNNING by a stopped driver were marked FAIL and will be asked again")
    elif opts.join:
        if study.user_attrs.get("tracking_uri") == redact(tracking_uri):  # same server: one parent run for all
            parent_id = parent_id or study.user_attrs.get("mlflow_parent_run_id")
        log(f"join: study {space.name!r} has {len(study.trials)} trial(s); adding trials beside its other drivers")
    else:
        if space.baselines:
            for params in baseline_params(space):
                study.enqueue_trial(params, user_attrs={"baseline": True})
    parent = tracker.start_parent(parent_id, f"search-{space.name}", {
        "space": space_path.name, "trial_spec": spec_path.name, "objectives": ",".join(space.objectives),
        "sampler": opts.sampler, "seed": opts.seed, "trials": opts.trials, "parallel": opts.parallel,
        **{f"constraint.{k}": v for k, v in space.constraints.model_dump(exclude_none=True).items()}},
        [space_path, spec_path])
    # Passwords never reach the run dir: a redacted URL must be given again (--storage / --tracking-uri).
    state.update(space=str(space_path.resolve()), study_name=space.name, parent_run_id=parent,
                 tracking_uri=redact(tracking_uri), storage=redact(opts.storage), objectives=space.objectives)
    state_path.write_text(json.dumps(state, indent=1))
    if not opts.join:  # where drivers that --join find the parent run
        study.set_user_attr("mlflow_parent_run_id", parent)
        study.set_user_attr("tracking_uri", redact(tracking_uri))

    t_ray = time.time()
    rl.ensure_ray()
    ray_init_seconds = time.time() - t_ray
    cache_root = str(Path(opts.cache_dir).resolve()) if opts.cache_dir else str((run_dir / "teachers").resolve())
    spec_json = spec.model_dump_json()
    log("teacher: training or loading from cache ...")
    t0 = time.time()
    try:
        teacher = ray.get(ray.remote(_teacher_task).options(num_cpus=spec.resources.num_cpus).remote(spec_json,
                                                                                                    cache_root))
    except Exception as e:  # e.g. a corrupted teacher cache: one clear message, not a Ray traceback
        tracker.finish_parent("FAILED")
        raise ConfigError(f"teacher: {_reason(e).splitlines()[-1]}") from None
    teacher_ref = ray.put(teacher)
    tracker.log_parent_metrics({"teacher_train_seconds": teacher["info"]["train_seconds"],
                                "teacher_training_return": teacher["info"]["final_training_return"],
                                "teacher_check_return": teacher["info"].get("check_return", float("nan")),
                                "teacher_task_seconds": time.time() - t0, "ray_init_seconds": ray_init_seconds})
    task = ray.remote(_trial_task).options(num_cpus=spec.resources.num_cpus, max_retries=1, retry_exceptions=False)

    run_ids: dict[int, str] = tracker.logged_trials() or {}
    running: dict[Any, tuple[optuna.trial.Trial, dict, float]] = {}
    history: list[tuple[int, float]] = []
    front_size = [0]  # as of the last finished trial; the progress display reuses it
    last_beat = time.time()
    search_start = time.time()

    def record(trial, cfg, outcome: dict | None, reason: str | None) -> None:
        """Store a finished trial: artifact, MLflow child run, user attrs, then tell Optuna."""
        values, art = None, None
        if outcome is not None:
            try:
                values = objective_values(space, outcome["result"])
            except FloatingPointError as e:
                reason, outcome = f"{type(e).__name__}: {e}", None
        if outcome is not None:
            art = run_dir / "trials" / str(trial.number) / "policy.acz"
            art.parent.mkdir(parents=True, exist_ok=True)
            art.write_bytes(outcome["artifact"])
        state_name = "COMPLETE" if outcome is not None else "FAIL"
        rid = tracker.log_trial(trial.number, trial_params(trial.params, cfg), outcome["result"] if outcome else None,
                                state_name, reason, art)
        if rid:
            run_ids[trial.number] = rid
        if outcome is not None:
            slim = {k: v for k, v in outcome["result"].items() if k not in SLIM_DROP}
            # wall time as the driver saw it: scheduling + worker start + trial + result transfer
            slim["driver_seconds"] = time.time() - trial.user_attrs["launched_at"]
            trial.set_user_attr("result", {**slim, "artifact": str(art)})
            for k, v in constraint_values(space, outcome["result"]).items():
                trial.set_constraint(k, v)
            study.tell(trial, values)
        else:
            trial.set_user_attr("fail_reason", reason)
            study.tell(trial, state=TrialState.FAIL)
            log(f"trial {trial.number} FAILED: {reason.splitlines()[-1] if reason else ''}")
        front_rows = current_front(study, space.objectives)
        front_size[0] = len(front_rows)
        if opts.join or len(run_ids) < len(finished(study)):  # other drivers' trials: their runs too
            run_ids.update(tracker.logged_trials() or {})
        tracker.set_pareto(run_ids, {r["trial"] for r in front_rows})
        done = len(finished(study))
        hv = pareto.normalised_hypervolume([r for r in rows(study) if r["feasible"]], space.objectives)
        history.append((done, hv))
        tracker.log_parent_metrics({"hypervolume": hv, "front_size": len(front_rows)}, step=done)
        if outcome is not None:
            r = outcome["result"]
            log(f"trial {trial.number} done: {json.dumps(cfg) if cfg else 'teacher as-is'} -> return "
                f"{r['return_mean']:.1f} (×{r['return_ratio']:.3f}), latency ×{r['latency_ratio']:.3f}, "
                f"bytes ×{r['bytes_ratio']:.4f}, {r['trial_seconds']:.0f} s | {done}/{opts.trials} finished, "
                f"front {len(front_rows)}, HV {hv:.4f}")

    def launch() -> None:
        trial = study.ask()
        cfg = suggest(trial, space)
        trial.set_user_attr("config", cfg)
        trial.set_user_attr("driver", driver)
        try:
            CompressConfig.model_validate(cfg).check_against(spec)
        except (ConfigError, ValueError) as e:
            record(trial, cfg, None, f"invalid config: {e}")
            return
        trial.set_user_attr("launched_at", time.time())
        same = duplicate_of(study, json.loads(json.dumps(cfg)))  # as stored: lists, not tuples
        if same is not None:  # answered from the study, not run again (it still counts in the budget)
            trial.set_user_attr("duplicate_of", same.number)
            now = time.time()
            result = {**same.user_attrs["result"], "duplicate_of": same.number, "trial_seconds": 0.0, "timings": {},
                      "started_at": now, "finished_at": now, "node_id": None, "hostname": socket.gethostname(),
                      "pid": os.getpid()}
            log(f"trial {trial.number} repeats trial {same.number}'s config: its measurements are reused")
            record(trial, cfg, {"result": result, "artifact": Path(result["artifact"]).read_bytes()}, None)
            return
        ref = task.remote(trial.number, spec_json, cfg, teacher_ref, cache_root, opts.faults.get(trial.number))
        running[ref] = (trial, cfg, time.time())

    def taken() -> int:
        """Budget used by every driver of the study: finished trials plus those running anywhere."""
        return len(finished(study)) + len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

    try:
        while True:
            while len(running) < opts.parallel and taken() < opts.trials:
                launch()
            if not running:
                break
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                trial, cfg, _ = running.pop(ref)
                try:
                    outcome, reason = ray.get(ref), None
                except Exception as e:  # the trial raised, or its worker died
                    outcome, reason = None, _reason(e)
                record(trial, cfg, outcome, reason)
            for ref, (trial, cfg, started) in list(running.items()):
                if time.time() - started > spec.resources.timeout_s:
                    ray.cancel(ref, force=True)
                    running.pop(ref)
                    record(trial, cfg, None, f"timeout: exceeded resources.timeout_s = {spec.resources.timeout_s} s")
            if time.time() - last_beat > HEARTBEAT_S:
                beat(study, driver)
                last_beat = time.time()
                n = fail_orphans(study, driver)
                if n:
                    log(f"{n} trial(s) of a driver that stopped were marked FAIL and will be asked again")
            fin = finished(study)
            progress({"done": len(fin), "target": opts.trials, "running": len(running),
                      "failed": sum(t.state == TrialState.FAIL for t in fin),
                      "front": front_size[0],
                      "hypervolume": history[-1][1] if history else 0.0, "elapsed": time.time() - search_start})
    except BaseException:
        for ref in running:
            ray.cancel(ref, force=True)
        tracker.finish_parent("KILLED")
        raise
    summary = finalize(study, space.objectives, tracker, run_dir, history)
    summary["wall_seconds"] = time.time() - search_start
    summary["tracking_offline"] = tracker.offline
    tracker.log_parent_metrics({"search_wall_seconds": summary["wall_seconds"]})
    if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # the last driver closes the parent
        tracker.finish_parent()
    return summary


def trial_params(params: dict, cfg: dict) -> dict:
    """A child run's MLflow params: Optuna's flat sampled params plus the techniques config."""
    return {**params, "config": json.dumps(cfg)}


def _reason(e: BaseException) -> str:
    """The last lines of the trial's own traceback (RayTaskError wraps the original)."""
    import ray.exceptions

    if isinstance(e, ray.exceptions.WorkerCrashedError):  # killed (OOM, node lost) on every attempt
        return "worker died: the trial's Ray worker was killed on every attempt (retries included)"
    cause = getattr(e, "cause", None) or e
    text = "".join(traceback.format_exception_only(type(cause), cause)).strip()
    return text[-2000:]


def finalize(study: optuna.Study, objectives: list[str], tracker: Tracker, run_dir: Path,
             history: list[tuple[int, float]]) -> dict:
    """Pareto table (CSV + JSON) and plots on the parent run."""
    all_rows = rows(study)
    front_rows = current_front(study, objectives)
    front_ids = {r["trial"] for r in front_rows}
    out = run_dir / "pareto"
    out.mkdir(exist_ok=True)
    table = [pareto_row(r) for r in front_rows]
    (out / "pareto.json").write_text(json.dumps(table, indent=1))
    cols = ["trial", "return_mean", "return_ratio", "latency_ms", "latency_ratio", "bytes", "bytes_ratio", "n_params"]
    (out / "pareto.csv").write_text("\n".join([",".join(cols + ["config"])] + [
        ",".join(str(r[c]) for c in cols) + ',"' + json.dumps(r["params"]).replace('"', '""') + '"' for r in table]))
    files = [out / "pareto.json", out / "pareto.csv"]
    if all_rows:
        files += [plots.pareto_png(all_rows, front_ids, out / "pareto.png"),
                  plots.pareto_html(all_rows, front_ids, out / "pareto.html")]
    if history:
        files.append(plots.hypervolume_png(history, out / "hypervolume.png"))
    tracker.log_parent_files(files)
    return {"front": table, "trials": len(study.trials), "complete": len(all_rows),
            "failed": sum(t.state == TrialState.FAIL for t in study.trials),
            "hypervolume": history[-1][1] if history else None}


def pareto_row(r: dict) -> dict:
    """`params` is the trial's techniques config (Optuna's word); `n_params` the stored parameter count."""
    return {"trial": r["trial"], "params": r["config"], "n_params": r["params"], **{k: r[k] for k in (
        "return_mean", "return_std", "return_ratio", "latency_ms", "latency_ratio", "bytes", "bytes_ratio")}}


def load_run(run_dir: Path, storage: str | None = None) -> tuple[optuna.Study, dict]:
    """Open the study of a finished or running search from its run dir."""
    state_path = Path(run_dir) / STATE_FILE
    if not state_path.exists():
        raise ConfigError(f"{run_dir}: not a search run dir (no {STATE_FILE})")
    state = json.loads(state_path.read_text())
    url = storage or state.get("storage")
    if is_redacted(url):
        raise ConfigError(f"{run_dir} uses storage {url}: pass --storage with the full URL")
    try:
        study = optuna.load_study(study_name=state["study_name"], storage=storage_for(Path(run_dir), url))
    except KeyError:
        raise ConfigError(f"{run_dir}: its storage has no study {state['study_name']!r}") from None
    return study, state


# -- sync: log to MLflow what it missed ---------------------------------------------------

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


def sync_run(run_dir: Path, storage: str | None = None, tracking_uri: str | None = None,
             log: Callable[[str], None] = print) -> dict:
    """Give every finished trial of the study its MLflow child run (those missing only), then
    re-tag the front and re-log the front's files. Idempotent. The study is the source of truth."""
    state_path = Path(run_dir) / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    uri = tracking_uri or state.get("tracking_uri") or default_uri(Path(run_dir))
    if is_redacted(uri):
        raise ConfigError(f"{run_dir} was searched with a password in the tracking URI: pass --tracking-uri")
    check_reachable(uri)
    study, state = load_run(run_dir, storage)
    space_objectives = state["objectives"]
    tracker = Tracker(uri, state["study_name"], artifact_dir=Path(run_dir) / "mlartifacts", warn=log)
    if not tracker.attach_parent(state.get("parent_run_id")):
        parent = tracker.start_parent(None, f"search-{state['study_name']}", {"synced_from": str(run_dir)}, [])
        log(f"parent run {state.get('parent_run_id')} is not in {redact(uri)}: created {parent}")
        state["parent_run_id"] = parent
        (Path(run_dir) / STATE_FILE).write_text(json.dumps(state, indent=1))
    logged = tracker.logged_trials(repair=True)
    present, new = 0, 0
    for t in finished(study):
        if logged is not None and t.number in logged:
            present += 1
            continue
        result = t.user_attrs.get("result")
        art = Path(result["artifact"]) if result and result.get("artifact") else None
        rid = tracker.log_trial(t.number, trial_params(t.params, t.user_attrs.get("config", {})), result,
                                t.state.name, t.user_attrs.get("fail_reason"), art)
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
        raise ConfigError(f"MLflow failed during sync ({tracker.offline}) after {new} trial(s): run sync again")
    return {"logged": new, "present": present, "front": len(front_rows), "parent_run_id": tracker.parent_id}
