"""The Ray tasks of a search. They run in workers, so everything they need travels as arguments
(the teacher's files included: no shared filesystem on a cluster), and they return plain data (a
trial's measurements as its TrialResult); only the driver writes to the study, the run dir and MLflow.

`faults` is a test hook (env var AUTOCOMPRESS_FAULT_TRIALS="4,kill-once:2,kill:3"): it makes
the named trials raise, or kills their worker, to exercise the search's fault handling.
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from autocompress import measure, pipeline
from autocompress import teacher as teachers
from autocompress.config import CompressConfig, TrialSpec
from autocompress.errors import ConfigError
from autocompress.pruners import Pruner, Reporter, TrialStopped
from autocompress.teacher import load_teacher

FAULTS_ENV = "AUTOCOMPRESS_FAULT_TRIALS"
FAULTS = ("raise", "kill-once", "kill", "record")


def parse_faults(text: str) -> dict[int, str]:
    """'4,kill:3' -> {4: 'raise', 3: 'kill'}: 'raise' raises in the trial, 'kill' SIGKILLs its
    Ray worker on every attempt, 'kill-once' on the first attempt only (the retry succeeds), 'record'
    raises in the driver while it records the trial (the search stops; resuming continues it)."""
    out = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        kind, _, number = item.rpartition(":")
        if (kind or "raise") not in FAULTS or not number.isdigit():
            raise ConfigError(f"{FAULTS_ENV}: bad item {item!r}; use N, kill-once:N, kill:N or record:N")
        out[int(number)] = kind or "raise"
    return out


def faults_from_env() -> dict[int, str]:
    return parse_faults(os.environ.get(FAULTS_ENV, ""))


def install_teacher(files: dict[str, bytes], cache_root: str, dirname: str) -> None:
    """Put the teacher's files (shipped with a task: no shared filesystem on a cluster) into this
    node's cache, once."""
    path = Path(cache_root) / dirname
    if not (path / "teacher.json").exists():
        tmp = Path(tempfile.mkdtemp(dir=Path(cache_root), prefix=".tmp-teacher-"))
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        try:
            os.replace(tmp, path)
        except OSError:  # another task on this node installed it first
            pass


def progress_file(cache_root: str | Path, spec: TrialSpec) -> Path:
    """Where the teacher task writes its progress lines (the driver shows them as they come)."""
    return Path(cache_root) / f".{spec.name}.teacher-progress.log"


def teacher_task(spec_json: str, cache_root: str) -> dict[str, Any]:
    spec = TrialSpec.model_validate_json(spec_json)
    progress = progress_file(cache_root, spec)
    progress.parent.mkdir(parents=True, exist_ok=True)
    progress.write_text("")

    def log(msg: str) -> None:
        with progress.open("a") as f:
            f.write(msg.replace("\n", " ") + "\n")

    teacher = teachers.train_teacher(spec, Path(cache_root), log=log)
    return {"dirname": teacher.path.name, "info": teacher.info,
            "files": {n: (teacher.path / n).read_bytes() for n in ("teacher.pt", "teacher.json")}}


def _inject(fault: str | None, number: int, cache_root: str) -> None:
    import ray  # deferred (heavy): Ray, in the driver and its workers only

    if fault == "raise":
        raise RuntimeError(f"injected fault in trial {number} ({FAULTS_ENV})")
    marker = Path(cache_root) / f".killed-{ray.get_runtime_context().get_job_id()}-trial-{number}"  # per search
    if fault == "kill" or (fault == "kill-once" and not marker.exists()):
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)  # the worker dies as if OOM-killed or its node lost


def trial_task(number: int, spec_json: str, cfg: dict, teacher: dict, cache_root: str, fault: str | None,
               pruner: Pruner | None = None, history: list = (), latency_known: dict | None = None) -> dict:
    """One trial: {"result", "artifact", "reports"}, or, when `pruner` stopped it (see
    autocompress.pruners; `history`: earlier feasible trials' report curves),
    {"stopped": reason, "reports", "trial_seconds"}. `latency_known`: the study's timed compute
    signatures (measure.measure_artifacts)."""
    import ray  # deferred (heavy): Ray, in the driver and its workers only

    start = time.time()
    Path(cache_root).mkdir(parents=True, exist_ok=True)
    _inject(fault, number, cache_root)
    install_teacher(teacher["files"], cache_root, teacher["dirname"])
    spec = TrialSpec.model_validate_json(spec_json)
    reporter = Reporter(pruner, history, last_step=spec.finetune.iterations)
    try:
        with tempfile.TemporaryDirectory() as d:
            result = pipeline.compress_trial(spec, CompressConfig.model_validate(cfg), d, cache_root,
                                             log=lambda m: None, report=reporter.report,
                                             latency_known=latency_known)
            artifact = (Path(d) / "policy.acz").read_bytes()
    except TrialStopped as e:
        return {"stopped": e.reason, "reports": e.reports, "trial_seconds": time.time() - start}
    result.node_id, result.hostname, result.pid = ray.get_runtime_context().get_node_id(), socket.gethostname(), os.getpid()
    result.started_at, result.finished_at = start, time.time()
    return {"result": result, "artifact": artifact, "reports": reporter.reports}


def noise_floor_task(spec_json: str, teacher: dict, cache_root: str) -> dict | None:
    """The teacher timed against itself (measure.latency_noise_floor), on a worker like the trials."""
    install_teacher(teacher["files"], cache_root, teacher["dirname"])
    spec = TrialSpec.model_validate_json(spec_json)
    data = load_teacher(Path(cache_root) / teacher["dirname"]).artifact()
    return measure.latency_noise_floor(spec, data, spec.env_creator())


def failure_reason(e: BaseException) -> str:
    """The last lines of the trial's own traceback (RayTaskError wraps the original)."""
    import ray.exceptions  # deferred (heavy): Ray

    if isinstance(e, ray.exceptions.WorkerCrashedError):  # killed (OOM, node lost) on every attempt
        return "worker died: the trial's Ray worker was killed on every attempt (retries included)"
    cause = getattr(e, "cause", None) or e
    text = "".join(traceback.format_exception_only(type(cause), cause)).strip()
    return text[-2000:]
