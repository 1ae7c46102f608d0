"""The search driver: asks Optuna for up to `parallel` trials, runs each as a Ray task (resources
from the trial spec), and records results as they arrive (`ray.wait`), so parallel trials really
overlap. The Optuna storage is the source of truth: a journal file in the run dir by default
(resumable), or any Optuna storage URL (e.g. postgresql://...). MLflow gets a child run per
finished trial; the `pareto` tags follow the front.

Several drivers can work on one study (Optuna's distributed pattern): the first runs `search`,
the others `search(join=True)` against the same storage; each asks its own trials, the budget
counts every driver's, and the children share one MLflow parent run.

The baselines, a sensitivity stage's guided configs and the stacks wait in the study's own queue
(`study.queue`), fed to Optuna one at a time by the driver that opened or resumed the study, so a
stack can run as soon as its anchor has kept the return, ahead of the remaining baselines.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from autocompress import artifact, checks, measure, pareto, rl, targets
from autocompress.config import CompressConfig, TrialSpec
from autocompress.errors import AutocompressError, ConfigError, SearchError, TeacherError
from autocompress.results import SLIM_DROP, TrialResult
from autocompress._search import guided, tasks, warm
from autocompress._search.heldout import conclude
from autocompress._search.record import StudyAttrs, TrialRecord, queue_item, queued_record, write
from autocompress._search.results import STATE_FILE, current_front, feasible, finalize, kept_return, rows, told_values
from autocompress.pruners import make_pruner
from autocompress.samplers import make_sampler
from autocompress._search.study import (HEARTBEAT_S, JOURNAL, MAX_FREE_REPEATS, beat, driver_id, duplicate_of,
                                       fail_orphans, feed, finished, open_study, pin_runtime, queue, reuse_key,
                                       taken)
from autocompress.space import SearchSpace, suggest
from autocompress._search.stacking import baseline_params, stacked_params
from autocompress.teacher import load_teacher, teacher_dir
from autocompress.tracking import Tracker, check_reachable, run_uri, trial_params
from autocompress.urls import redact


@dataclass
class SearchOptions:
    """How a search runs (the space file says what it searches). `check()` validates it all
    before anything is created or started."""

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
    #: an earlier search's run dir to start from (see _search/warm.py)
    warm_start: Path | None = None
    #: test hook (see search.tasks): trial number -> fault
    faults: dict[int, str] = field(default_factory=dict)
    #: check the teacher's margin over a useless policy once its task returns (not checked before Ray:
    #: it had to be trained)
    check_teacher: bool = False

    def check(self) -> None:
        if self.warm_start is not None and (self.resume or self.join):
            raise ConfigError("warm_start starts a new study: it excludes resume and join", option="warm_start")
        if self.resume and self.join:
            raise ConfigError("resume and join exclude each other: resume takes the study over (marks RUNNING "
                              "trials FAIL), join works beside other drivers")
        for name in ("trials", "parallel"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{getattr(self, name)}: must be >= 1", option=name)
        checks.storage_url(self.storage)
        checks.tracking_uri(self.tracking_uri)
        checks.directory(self.run_dir, "run_dir")
        checks.directory(self.cache_dir, "cache_dir")
        make_sampler(self.sampler, self.seed)
        if self.resume and not self.storage and not (Path(self.run_dir) / JOURNAL).exists():
            raise ConfigError(f"{self.run_dir} holds no search to continue (no {JOURNAL}; give the storage URL if "
                              "the search used one)", option="resume")


class Driver:
    """One driver of a study: `launch` asks a trial and starts its Ray task, `poll` records the
    tasks that finished (or timed out) and keeps the driver's heartbeat, `run` loops until the
    budget is spent. Only the driver writes to the study, the run dir and MLflow."""

    def __init__(self, study: optuna.Study, space: SearchSpace, spec: TrialSpec, opts: SearchOptions,
                 tracker: Tracker, teacher: Any, teacher_dirname: str, cache_root: str, log: Callable[[str], None]):
        import ray  # deferred (heavy): `import autocompress` never imports Ray

        self.study, self.space, self.spec, self.opts, self.tracker, self.log = study, space, spec, opts, tracker, log
        self.id = driver_id()
        self.teacher_ref, self.cache_root, self.spec_json = teacher, cache_root, spec.model_dump_json()
        self.task = ray.remote(tasks.trial_task).options(num_cpus=spec.resources.num_cpus, max_retries=1,
                                                         retry_exceptions=False)
        self.reuse_key = reuse_key(spec, teacher_dirname)
        self.pruner = make_pruner(space.pruner.kind, space.constraints.min_return_ratio,
                                  **space.pruner.model_dump(exclude={"kind"}))
        self.repeats_in_row = 0  # free repeats asked in a row (see MAX_FREE_REPEATS)
        self.run_ids: dict[int, str] = tracker.logged_trials() or {}
        self.running: dict[Any, tuple[optuna.trial.Trial, dict, float]] = {}
        self.history: list[tuple[int, float]] = []  # (finished trials, hypervolume)
        self.front_size = 0
        self.started = self.last_beat = time.time()

    # -- one trial ---------------------------------------------------------------------
    def launch(self) -> None:
        """Ask one trial; run it as a Ray task, or record it at once (invalid config, repeat)."""
        if not self.opts.join:  # one feeder: drivers that join would race for the queue's head
            feed(self.study)
        trial = self.study.ask()
        cfg = suggest(trial, self.space)
        guided_cfg = TrialRecord.of(trial).guided  # a sensitivity-guided config: as enqueued (per-layer maps)
        cfg = cfg if guided_cfg is None else guided_cfg
        write(trial, config=cfg, driver=self.id)
        try:
            CompressConfig.model_validate(cfg).check_against(self.spec)
        except ValueError as e:  # ConfigError, or pydantic's ValidationError
            self.record(trial, cfg, None, f"invalid config: {e}")
            return
        write(trial, launched_at=time.time(), reuse_key=self.reuse_key)
        same = duplicate_of(self.study, json.loads(json.dumps(cfg)), self.reuse_key)  # as stored: lists, not tuples
        if same is not None:
            self.answer_repeat(trial, cfg, same)
            return
        self.repeats_in_row = 0
        ref = self.task.remote(trial.number, self.spec_json, cfg, self.teacher_ref, self.cache_root,
                               self.opts.faults.get(trial.number), self.pruner, self.feasible_curves(),
                               latency_known(self.study))
        self.running[ref] = (trial, cfg, time.time())

    def answer_repeat(self, trial, cfg: dict, same) -> None:
        """A config that already ran on this spec, teacher and runtime: its measurements are reused, and
        it does not count in the budget (the sampler is asked again) unless MAX_FREE_REPEATS came in a
        row (a space the sampler has exhausted must still end)."""
        write(trial, duplicate_of=same.number)
        free = self.repeats_in_row < MAX_FREE_REPEATS
        self.repeats_in_row += 1
        if free:
            write(trial, free_repeat=True)
        self.log(f"trial {trial.number} repeats trial {same.number}'s config: its outcome is reused"
                 + (" (not counted in the budget)" if free else f" ({MAX_FREE_REPEATS} repeats in a row: counted)"))
        prior = TrialRecord.of(same)
        if same.state == TrialState.PRUNED:
            self.record(trial, cfg, {"stopped": prior.stopped, "reports": prior.intermediate, "trial_seconds": 0.0},
                        None)
            return
        now = time.time()
        result = dataclasses.replace(prior.result, duplicate_of=same.number, trial_seconds=0.0, timings={},
                                     started_at=now, finished_at=now, node_id=None, hostname=socket.gethostname(),
                                     pid=os.getpid())
        if prior.intermediate is not None:
            write(trial, intermediate=prior.intermediate)
        self.record(trial, cfg, {"result": result, "artifact": Path(result.artifact).read_bytes()}, None)

    def feasible_curves(self) -> list:
        """Report curves of the trials that finished feasible: the history a pruner compares with."""
        recs = ((t, TrialRecord.of(t)) for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        return [rec.intermediate for t, rec in recs if rec.intermediate and feasible(t) and rec.duplicate_of is None]

    def record_stopped(self, trial, cfg: dict, outcome: dict) -> None:
        """A trial the pruner stopped: PRUNED, with its reports, its reason and, as its constraint, the
        shortfall of its last ratio, so the sampler counts it infeasible (TPE puts it with the worst)."""
        reports, reason = outcome["reports"], outcome["stopped"]
        step, ratio = reports[-1]
        if not math.isfinite(ratio):  # nothing non-finite is told (see told_values)
            self.record(trial, cfg, None, f"non-finite return ratio: {ratio} (reported at step {step})")
            return
        write(trial, intermediate=reports, stopped=reason,
              partial={"return_ratio": ratio, "step": step, "trial_seconds": outcome["trial_seconds"],
                       "driver_seconds": time.time() - TrialRecord.of(trial).launched_at})
        if self.space.constraints.min_return_ratio is not None:
            trial.set_constraint("min_return_ratio", self.space.constraints.min_return_ratio - ratio)
        self._close(trial, cfg, TrialState.PRUNED, reason)
        self.log(f"trial {trial.number} stopped early ({outcome['trial_seconds']:.0f} s): {reason}")

    def record(self, trial, cfg: dict, outcome: dict | None, reason: str | None) -> None:
        """Store a finished trial: artifact, MLflow child run, user attrs, then tell Optuna."""
        if self.opts.faults.get(trial.number) == "record":  # test hook: the driver itself fails here
            raise RuntimeError(f"injected fault while recording trial {trial.number} ({tasks.FAULTS_ENV})")
        if outcome is not None and "stopped" in outcome:
            self.record_stopped(trial, cfg, outcome)
            return
        if outcome is not None and outcome.get("reports"):
            write(trial, intermediate=outcome["reports"])
        values = constraints = None
        if outcome is not None and "result" in outcome:
            share_latency(self.study, trial.number, outcome["result"])
        if outcome is not None:
            try:
                values, constraints = told_values(self.space, outcome["result"])
            except FloatingPointError as e:
                reason, outcome = str(e), None
        if outcome is None:
            write(trial, fail_reason=reason)
            self._close(trial, cfg, TrialState.FAIL, reason)
            self.log(f"trial {trial.number} FAILED: {reason.splitlines()[-1] if reason else ''}")
            return
        art = self.opts.run_dir / "trials" / str(trial.number) / "policy.acz"
        art.parent.mkdir(parents=True, exist_ok=True)
        art.write_bytes(outcome["artifact"])
        r: TrialResult = outcome["result"]
        # the study keeps it with its artifact in the run dir and the wall time as the driver saw it
        # (scheduling + worker start + trial + result transfer); MLflow gets it as the worker measured it
        write(trial, result=dataclasses.replace(r, artifact=str(art),
                                                driver_seconds=time.time() - TrialRecord.of(trial).launched_at))
        for k, v in constraints.items():
            trial.set_constraint(k, v)
        # a repeat's result is what the study kept of its original: no per-episode returns or rounds
        logged = r.to_dict(drop=SLIM_DROP if r.duplicate_of is not None else ())
        self._close(trial, cfg, TrialState.COMPLETE, reason, logged, art, values)
        done, hv = self.history[-1]
        self.log(f"trial {trial.number} done: {json.dumps(cfg) if cfg else 'teacher as-is'} -> return "
                 f"{r.return_mean:.1f} (×{r.return_ratio:.3f}), latency ×{r.latency_ratio:.3f}, "
                 f"bytes ×{r.bytes_ratio:.4f}, {r.trial_seconds:.0f} s | {done}/{self.opts.trials} "
                 f"finished, front {self.front_size}, HV {hv:.4f}")

    def _close(self, trial, cfg: dict, state: TrialState, reason: str | None, result: dict | None = None,
               art: Path | None = None, values: list[float] | None = None) -> None:
        """How every trial ends: its MLflow child run, then Optuna told, then the front refreshed."""
        rid = self.tracker.log_trial(trial.number, trial_params(trial.params, cfg), result, state.name, reason, art)
        if rid:
            self.run_ids[trial.number] = rid
        self.study.tell(trial, values, state=state)
        self._update_front()
        self._stack_on_anchor()

    def _stack_on_anchor(self) -> None:
        """Queue the space's stacks (`stack`) ahead of the remaining baselines as soon as their anchor is
        known: the first baseline in run order (teacher aside) that kept the return alone (results.kept_return:
        over a budget or not), once every baseline before it has finished. Once per study, by the feeding driver."""
        attrs = StudyAttrs(self.study)
        if not (self.space.stack and self.space.baselines) or self.opts.join or attrs.stacked is not None:
            return
        anchor = None
        for t in sorted((t for t in self.study.get_trials(deepcopy=False) if TrialRecord.of(t).baseline),
                        key=lambda t: t.number):
            if t.state in (TrialState.WAITING, TrialState.RUNNING):
                return  # an earlier baseline may still be the anchor
            names = [n for n in TrialRecord.of(t).config or {} if n != "critic"]
            if t.state == TrialState.COMPLETE and len(names) == 1 and kept_return(t):
                anchor = (t.number, names[0], t.params)
                break
        if anchor is None and any(queued_record(i).baseline for i in attrs.queue):
            return  # none so far; baselines still to run
        stacks = stacked_params(self.space, anchor[1], anchor[2], attrs.also_at.get(anchor[1])) \
            if anchor else []
        queue(self.study, [queue_item(p, stacked=True) for p in stacks], front=True)
        attrs.stacked = len(stacks)
        self.log(f"trial {anchor[0]} ({anchor[1]}) kept the return alone: {len(stacks)} stack(s) on it queued ahead "
                 "of the remaining baselines" if anchor else "no technique kept the return alone: no stacks")

    def _update_front(self) -> None:
        """Pareto tags, hypervolume and front size after a trial finished (any driver's)."""
        front_rows = current_front(self.study, self.space.objectives)
        self.front_size = len(front_rows)
        done = len(finished(self.study))
        if self.opts.join or len(self.run_ids) < done:  # other drivers' trials: their runs too
            self.run_ids.update(self.tracker.logged_trials() or {})
        self.tracker.set_pareto(self.run_ids, {r["trial"] for r in front_rows})
        hv = pareto.normalised_hypervolume([r for r in rows(self.study) if r["feasible"]], self.space.objectives)
        self.history.append((done, hv))
        self.tracker.log_parent_metrics({"hypervolume": hv, "front_size": self.front_size}, step=done)

    # -- the loop ----------------------------------------------------------------------
    def poll(self, timeout: float = 1.0) -> None:
        """Record what finished within `timeout` seconds, fail what ran too long, beat."""
        import ray  # deferred (heavy)

        ready, _ = ray.wait(list(self.running), num_returns=1, timeout=timeout)
        for ref in ready:
            trial, cfg, _ = self.running.pop(ref)
            try:
                outcome, reason = ray.get(ref), None
            except Exception as e:  # the trial raised, or its worker died
                outcome, reason = None, tasks.failure_reason(e)
            self.record(trial, cfg, outcome, reason)
        limit = self.spec.resources.timeout_s
        for ref, (trial, cfg, started) in list(self.running.items()):
            if time.time() - started > limit:
                ray.cancel(ref, force=True)
                self.running.pop(ref)
                self.record(trial, cfg, None, f"timeout: exceeded resources.timeout_s = {limit} s")
        if time.time() - self.last_beat > HEARTBEAT_S:
            beat(self.study, self.id)
            self.last_beat = time.time()
            n = fail_orphans(self.study, self.id)
            if n:
                self.log(f"{n} trial(s) of a driver that stopped were marked FAIL and will be asked again")

    def status(self) -> dict:
        fin = finished(self.study)
        return {"done": len(fin), "target": self.opts.trials, "running": len(self.running),
                "failed": sum(t.state == TrialState.FAIL for t in fin),
                "stopped": sum(t.state == TrialState.PRUNED for t in fin), "front": self.front_size,
                "hypervolume": self.history[-1][1] if self.history else 0.0, "elapsed": time.time() - self.started}

    def run(self, progress: Callable[[dict], None]) -> None:
        import ray  # deferred (heavy)

        try:
            while True:
                while len(self.running) < self.opts.parallel and taken(self.study) < self.opts.trials:
                    self.launch()
                if not self.running:
                    break
                self.poll()
                progress(self.status())
        except BaseException as e:
            for ref in self.running:
                ray.cancel(ref, force=True)
            self.tracker.finish_parent("KILLED")
            if isinstance(e, Exception) and not isinstance(e, AutocompressError):  # a bug, or the machine
                raise SearchError(f"the search stopped: {type(e).__name__}: {e}. Every finished trial is kept "
                                  f"in the study; run the same search with --resume (run dir {self.opts.run_dir}) "
                                  "to continue it") from e
            raise


# -- one latency per compute signature ---------------------------------------------------------


def latency_known(study: optuna.Study) -> dict[str, dict]:
    """The study's timed compute signatures (any driver's), for a trial to take over."""
    return StudyAttrs(study).latencies()


def share_latency(study: optuna.Study, number: int, result: TrialResult) -> None:
    """The first trial of a compute signature to finish stores its in-kernel figures in the study; a trial
    of that signature that was timed meanwhile (in flight at once) takes them over, so the two tie."""
    sig = result.latency_signature
    if not sig or result.latency_from is not None:
        return
    attrs = StudyAttrs(study)
    prior = attrs.latencies().get(sig)
    if prior is None:
        attrs.set_latency(sig, {"trial": number, **{k: getattr(result, k) for k in measure.LATENCY_FIELDS}})
    elif prior["trial"] != number:
        for k in measure.LATENCY_FIELDS:
            setattr(result, k, prior[k])
        result.latency_from = prior["trial"]


def measure_noise_floor(study: optuna.Study, spec: TrialSpec, teacher_ref, cache_root: str, tracker,
                        log: Callable[[str], None]) -> dict | None:
    """Once per study (runtime c): the teacher timed against itself, stored in the study and on the
    MLflow parent run; the front's latency differences below it are the machine's noise."""
    import ray  # deferred (heavy)

    attrs = StudyAttrs(study)
    if attrs.noise_floor is not None:  # measured already (a resumed or joined study)
        return attrs.noise_floor
    try:
        floor = ray.get(ray.remote(tasks.noise_floor_task).options(num_cpus=spec.resources.num_cpus).remote(
            spec.model_dump_json(), teacher_ref, cache_root))
    except Exception as e:  # informational: the search goes on without it
        log(f"latency noise floor not measured: {tasks.failure_reason(e).splitlines()[-1]}")
        return None
    if floor is None:
        return None
    attrs.noise_floor = floor
    tracker.log_parent_metrics({"latency_noise_floor_min": floor["min"], "latency_noise_floor_max": floor["max"]})
    log(f"latency noise floor: the teacher timed against itself {floor['repeats']} times, "
        f"{floor['min']:.3f}-{floor['max']:.3f}x (different compute signatures; the same one ties exactly)")
    return floor


# -- a whole search ---------------------------------------------------------------------------

def _await_teacher(ref, progress: Path, log: Callable[[str], None]) -> dict:
    """The teacher task's result; meanwhile its progress lines (iteration, return, elapsed, ETA),
    which it writes to `progress` in the (node-local) cache, are passed on to `log`."""
    import ray  # deferred (heavy)

    shown = 0
    while True:
        ready, _ = ray.wait([ref], timeout=2.0)
        lines = progress.read_text().splitlines() if progress.exists() else []
        for line in lines[shown:]:
            log(f"teacher: {line.strip()}")
        shown = len(lines)
        if ready:
            return ray.get(ref)

def _sensitivity_stage(study, space: SearchSpace, spec: TrialSpec, teacher: dict, cache_root: str, run_dir: Path,
                       tracker: Tracker, log: Callable[[str], None]) -> None:
    """The optional first stage: layer sensitivity once per study (cached in the run dir), then its
    guided configs enqueued (the driver runs user attr `guided`: a per-layer config the params
    only approximate)."""
    tasks.install_teacher(teacher["files"], cache_root, teacher["dirname"])
    table, files = guided.search_stage(space, spec, cache_root, run_dir, log)
    tracker.log_parent_files(files, "sensitivity")
    tracker.log_parent_metrics({"sensitivity_seconds": table["seconds"]})
    trials = guided.guided_trials(table, space)
    for params, cfg in trials:
        queue(study, [queue_item(params, guided=cfg)])
    StudyAttrs(study).sensitivity_guided = len(trials)
    log(f"sensitivity: {len(trials)} guided config(s) enqueued")


def _baselines_queued(study) -> bool:
    """Whether this study's baselines were queued (by now, or by a driver before this attr existed)."""
    attrs = StudyAttrs(study)
    return bool(attrs.baselines) or any(TrialRecord.of(t).baseline for t in study.trials) or \
        any(queued_record(i).baseline for i in attrs.queue)


def _fit_to_budget(space: SearchSpace, spec: TrialSpec, teacher: dict, cache_root: str,
                   log: Callable[[str], None]) -> tuple[dict, dict]:
    """Baseline settings a device budget asks for (see autocompress/mcu/fit.py), and the settings at which
    an anchor's on-device stacks run once more (stacking.stacked_params `also_at`): under max_flash / max_ram
    on an MCU target, the distill baseline's `hidden` is the widest choice whose integer-only student fits,
    and its codes stacks run again at the next narrower one that fits."""
    c, distill = space.constraints, space.techniques.get("distill", {})
    hidden = distill.get("hidden")
    if c.max_flash is None and c.max_ram is None or hidden is None or not hidden.sampled:
        return {}, {}
    from autocompress.mcu.fit import widest_fitting  # deferred: the cross-build's modules

    tasks.install_teacher(teacher["files"], cache_root, teacher["dirname"])
    t = load_teacher(Path(cache_root) / teacher["dirname"])
    width, narrower = widest_fitting(t.actor, t.info["head"], hidden.ends(), targets.target(spec.latency.target),
                                     c.max_flash, c.max_ram)
    log(f"distill baseline: hidden {width}, the widest whose 8-bit integer-only student fits "
        f"max_flash {c.max_flash} / max_ram {c.max_ram} on {spec.latency.target}"
        + (f"; its codes stacks also at {narrower}" if narrower else ""))
    return {"distill": {"hidden": width}}, ({"distill": {"hidden": narrower}} if narrower else {})


def _check_trained_teacher(spec: TrialSpec, cache_root: str, teacher: dict, tracker) -> None:
    """The margin check (measure.check_teacher_margin) of a teacher trained inside the search, before any
    trial: TeacherError, the parent run FAILED; the study holds no trial, so --resume starts afresh."""
    tasks.install_teacher(teacher["files"], cache_root, teacher["dirname"])
    t = load_teacher(Path(cache_root) / teacher["dirname"])
    try:
        measure.check_teacher_margin(spec, artifact.runtime_act(t.actor, t.info["head"]),
                                     spec.env_creator())
    except TeacherError:
        tracker.finish_parent("FAILED")
        raise


def run_search(space: SearchSpace, spec: TrialSpec, space_path: Path, spec_path: Path, opts: SearchOptions,
               progress: Callable[[dict], None] = lambda s: None, log: Callable[[str], None] = print) -> dict:
    """Open (or resume, or join) the study, get the teacher, drive the trials, write the front."""
    import ray  # deferred (heavy): `import autocompress` never imports Ray

    opts.check()
    run_dir = Path(opts.run_dir)
    source = warm.open_source(opts.warm_start, spec) if opts.warm_start is not None else None
    if opts.tracking_uri:
        check_reachable(opts.tracking_uri)
    state_path = run_dir / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state and not (opts.resume or opts.join):
        raise ConfigError(f"{run_dir} already holds a search: resume it (--resume / resume=True), join it (--join / "
                          "join=True: add trials beside a running driver), or choose another run dir")
    if opts.join and not opts.storage and not state:
        raise ConfigError("give the shared study's storage URL or the run dir of the search to join", option="join")
    tracking_uri = run_uri(run_dir, state, opts.tracking_uri)
    run_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(space.name, space.objectives, run_dir, opts.storage, opts.sampler, opts.seed,
                       resume=opts.resume, join=opts.join)
    spec = pin_runtime(study, spec)
    tracker = Tracker(tracking_uri, space.name, artifact_dir=run_dir / "mlartifacts", warn=log)
    parent_id = state.get("parent_run_id")
    me = driver_id()
    beat(study, me)
    if opts.resume:
        n = fail_orphans(study, me, include_unowned=True)
        if n:
            log(f"resume: {n} trial(s) left RUNNING by a stopped driver were marked FAIL and will be asked again")
    elif opts.join:
        attrs = StudyAttrs(study)
        if attrs.tracking_uri == redact(tracking_uri):  # same server: one parent run for all
            parent_id = parent_id or attrs.parent_run_id
        log(f"join: study {space.name!r} has {len(study.trials)} trial(s); adding trials beside its other drivers")
    cache_root = str(Path(opts.cache_dir).resolve()) if opts.cache_dir else str((run_dir / "teachers").resolve())
    if source is not None:
        warm.warm_start(study, source, space, reuse_key(spec, teacher_dir(spec, Path(cache_root)).name),
                        str(opts.warm_start), log)
    parent = tracker.start_parent(parent_id, f"search-{space.name}", {
        "space": space_path.name, "trial_spec": spec_path.name, "objectives": ",".join(space.objectives),
        "sampler": opts.sampler, "seed": opts.seed, "trials": opts.trials, "parallel": opts.parallel,
        **{f"constraint.{k}": v for k, v in space.constraints.model_dump(exclude_none=True).items()}},
        [space_path, spec_path])
    # Passwords never reach the run dir: a redacted URL must be given again (storage / tracking URI).
    state.update(space=str(Path(space_path).resolve()), study_name=space.name, parent_run_id=parent,
                 tracking_uri=redact(tracking_uri), storage=redact(opts.storage), objectives=space.objectives,
                 experiment_id=tracker.experiment_id, spec=warm.spec_identity(spec))
    state_path.write_text(json.dumps(state, indent=1))
    if not opts.join:  # where drivers that join find the parent run
        attrs = StudyAttrs(study)
        attrs.parent_run_id = parent
        attrs.tracking_uri = redact(tracking_uri)

    t_ray = time.time()
    rl.ensure_ray()
    ray_init_seconds = time.time() - t_ray
    log("teacher: training, importing or loading from cache ...")
    t0 = time.time()
    try:
        teacher = _await_teacher(ray.remote(tasks.teacher_task).options(num_cpus=spec.resources.num_cpus).remote(
            spec.model_dump_json(), cache_root), tasks.progress_file(cache_root, spec), log)
    except Exception as e:  # e.g. a corrupted teacher cache: one clear message, not a Ray traceback
        tracker.finish_parent("FAILED")
        raise TeacherError(f"teacher: {tasks.failure_reason(e).splitlines()[-1]}") from None
    if opts.check_teacher:
        _check_trained_teacher(spec, cache_root, teacher, tracker)
    tracker.log_parent_metrics({"teacher_train_seconds": teacher["info"]["train_seconds"],
                                "teacher_training_return": teacher["info"]["final_training_return"],
                                "teacher_check_return": teacher["info"].get("check_return", float("nan")),
                                "teacher_task_seconds": time.time() - t0, "ray_init_seconds": ray_init_seconds})

    if space.baselines and not opts.join and not _baselines_queued(study):
        settings, also_at = _fit_to_budget(space, spec, teacher, cache_root, log)
        queue(study, [queue_item(p, baseline=True) for p in baseline_params(space, settings)])
        StudyAttrs(study).also_at = also_at
        StudyAttrs(study).baselines = True
    if space.sensitivity.enabled and not opts.join and StudyAttrs(study).sensitivity_guided is None:
        _sensitivity_stage(study, space, spec, teacher, cache_root, run_dir, tracker, log)
    teacher_ref = ray.put(teacher)
    if not targets.target(spec.latency.target).mcu:
        measure_noise_floor(study, spec, teacher_ref, cache_root, tracker, log)
    driver = Driver(study, space, spec, opts, tracker, teacher_ref, teacher["dirname"], cache_root, log)
    driver.run(progress)
    # the fine-tuned teacher reference (if asked) and the front's held-out values
    conclude(study, spec, space.objectives, run_dir, tracker, teacher_ref, cache_root, log,
             space.constraints.min_return_ratio)
    summary = finalize(study, space.objectives, tracker, run_dir, driver.history, log)
    summary["wall_seconds"] = time.time() - driver.started
    summary["tracking_offline"] = tracker.offline
    tracker.log_parent_metrics({"search_wall_seconds": summary["wall_seconds"]})
    if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # the last driver closes the parent
        tracker.finish_parent()
    return summary
