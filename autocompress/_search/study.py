"""The study: opening it in its storage, heartbeats of the drivers that work on it, trials left
behind by a driver that is gone, repeated configs, and the budget. Optuna only (no Ray, no MLflow).
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import warnings
import zlib
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from autocompress import native
from autocompress.config import PICK_ONLY
from autocompress._search.record import StudyAttrs, TrialRecord, enqueue, write_finished
from autocompress.errors import ConfigError
from autocompress.samplers import make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)

#: the default storage: a journal file in the run dir (resumable, no server)
JOURNAL = "study.journal"


def storage_for(run_dir: Path, url: str | None):
    if url:
        return url
    return JournalStorage(JournalFileBackend(str(Path(run_dir) / JOURNAL)))


def open_study(name: str, objectives: list[str], run_dir: Path, storage: str | None, sampler: str, seed: int,
               resume: bool = False, join: bool = False) -> optuna.Study:
    directions = ["maximize" if o == "return" else "minimize" for o in objectives]
    store = storage_for(run_dir, storage)
    smp = make_sampler(sampler, seed)
    if resume:
        try:
            study = optuna.load_study(study_name=name, storage=store, sampler=smp)
        except KeyError:
            raise ConfigError(f"no study {name!r} in the storage of {run_dir}", option="resume") from None
        return name_objectives(continued(study, sampler, seed), objectives)
    study = optuna.create_study(study_name=name, storage=store, sampler=smp, directions=directions,
                                load_if_exists=True)
    if join:
        if study.directions != [optuna.study.StudyDirection[d.upper()] for d in directions]:
            raise ConfigError(f"study {name!r} has other objectives than {objectives}", option="join")
        return name_objectives(continued(study, sampler, seed, driver_id()), objectives)
    if study.trials:
        raise ConfigError(f"study {name!r} already has {len(study.trials)} trials in this storage: pass "
                          "resume to continue it, or use another run dir / storage")
    return name_objectives(study, objectives)


def continued(study: optuna.Study, sampler: str, seed: int, salt: str = "") -> optuna.Study:
    """A driver that continues a study with trials (resume, join) gets a random stream of its own,
    seeded from the seed and the trials so far (and, joining, the driver): re-seeded with the plain
    seed it would replay the first driver's draws, random configs that are all repeats."""
    if study.trials:
        mixed = zlib.crc32(f"{seed}|{len(study.trials)}|{salt}".encode())
        study.sampler = make_sampler(sampler, mixed)
    return study


def name_objectives(study: optuna.Study, objectives: list[str]) -> optuna.Study:
    """Name the study's values after the objectives ("return", "latency", "bytes"), so that
    optuna-dashboard and `trials_dataframe` show them instead of "Objective 0/1/2". Written only
    when missing or different (a resumed or joined study usually has them already), and never
    when the count does not match (a study made by other code: its values are left unnamed)."""
    if study.metric_names != list(objectives) and len(study.directions) == len(objectives):
        with warnings.catch_warnings():  # Optuna still marks it experimental (since 3.2): noise to a user
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(objectives))
    return study


#: a driver writes its heartbeat into the study (StudyAttrs.beat) this often (seconds) ...
HEARTBEAT_S = 10.0
#: ... and its RUNNING trials are taken as orphaned once it has been silent this long
STALE_AFTER_S = 60.0


def pin_runtime(study: optuna.Study, spec):
    """The spec with latency.runtime fixed for the whole study: 'auto' resolves once, where the study
    starts, and is kept in the study; every trial (any worker, any later driver) then measures in it,
    and a worker that cannot fails its trial instead of falling back to another runtime."""
    attrs = StudyAttrs(study)
    pinned = attrs.runtime
    wanted = spec.latency.runtime
    resolved = (pinned or ("c" if native.available() else "numpy")) if wanted == "auto" else wanted
    if pinned and resolved != pinned:
        raise ConfigError(f"latency.runtime: this study measured latency in the {pinned!r} runtime, the trial spec "
                          f"asks for {resolved!r}; one study never mixes runtimes: start a new run dir")
    if resolved == "c" and not native.available():
        raise ConfigError("latency.runtime: 'c' needs a C compiler (cc, gcc, clang or $CC) and none works here; "
                          "set latency.runtime: numpy")
    attrs.runtime = resolved
    return spec.updated({"latency": {"runtime": resolved}})


def beat(study: optuna.Study, driver: str) -> None:
    StudyAttrs(study).beat(driver)


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
    beats, now, n = StudyAttrs(study).heartbeats(), time.time(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        driver = TrialRecord.of(t).driver
        if driver == me or (driver is None and not include_unowned):
            continue
        if not _driver_gone(driver, beats.get(driver), now):
            continue
        write_finished(study, t, fail_reason=f"interrupted: its search driver {driver or '(unknown)'} stopped")
        write_finished(study, t, interrupted=True)
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(t.params, skip_if_exists=False)
        n += 1
    return n


#: repeats of earlier configs answered in a row without counting in the budget; the next one counts
MAX_FREE_REPEATS = 10


def reuse_key(spec, teacher_dirname: str) -> str:
    """What a trial's measurements depend on besides its config: the trial spec (its runtime pinned;
    resources aside) and the teacher (its cache name holds the hash of what made it). A resumed or
    warm-started study with an edited spec never reuses stale measurements."""
    text = spec.model_dump_json(exclude={"resources": True, **PICK_ONLY}) + "|" + teacher_dirname
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def duplicate_of(study: optuna.Study, cfg: dict, key: str) -> optuna.trial.FrozenTrial | None:
    """A COMPLETE trial (its artifact still there) or a trial stopped early (PRUNED) that ran this
    very techniques config under the same reuse key. Trials are seeded from the spec, so its
    outcome stands for a repeat; samplers re-propose configs of discrete spaces (e.g. a distill
    width) and Optuna's own advice is to answer those from the study."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        rec = TrialRecord.of(t)
        if rec.config == cfg and rec.reuse_key == key and (
                t.state == TrialState.PRUNED or Path(rec.result.artifact if rec.result else "").is_file()):
            return t
    return None


def finished(study: optuna.Study) -> list:
    """Trials that count towards the budget: COMPLETE (free repeats and warm-start copies aside),
    stopped early (PRUNED), or FAIL for a reason of their own."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                 TrialState.FAIL))
            if not _uncounted(TrialRecord.of(t))]


def _uncounted(rec: TrialRecord) -> bool:
    return rec.interrupted or rec.free_repeat or bool(rec.copied_from)


def taken(study: optuna.Study) -> int:
    """Budget used by every driver of the study: finished trials plus those running anywhere."""
    return len(finished(study)) + len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def queue(study: optuna.Study, items: list[dict], front: bool = False) -> None:
    """Add trials (record.queue_item) to the study's own queue (at its `front`, or its end). Optuna runs WAITING trials
    oldest first and cannot reorder them; holding ours back until a worker is free lets a stack
    decided mid-way run before the remaining baselines."""
    attrs = StudyAttrs(study)
    held = attrs.queue
    attrs.queue = items + held if front else held + items


def feed(study: optuna.Study) -> None:
    """Enqueue the head of the study's queue, unless a trial is WAITING already (that one runs next)."""
    attrs = StudyAttrs(study)
    held = attrs.queue
    if held and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        attrs.queue = held[1:]
        enqueue(study, held[0])


def driver_id() -> str:
    """Which driver asked a trial (several may share a study): host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"
