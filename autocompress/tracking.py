"""The only MLflow adapter: one experiment per search, a parent run for the search and a
child run per trial (params, metrics, state, artifact, tag `pareto`).

Uses `MlflowClient` with explicit run ids (no global active run), so the driver can log
trials in whatever order they finish. Default store: SQLite + artifact folder inside the
run dir; any tracking URI (e.g. http://host:5000) works the same.

MLflow is a mirror, the Optuna study is the source of truth: if the tracking server goes
away mid-search, the tracker goes offline (one warning), the search carries on, and
`autocompress sync RUN_DIR` later logs what MLflow missed.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from autocompress.results import TrialResult

def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (before any work) when an http(s) tracking server does not answer /health."""
    import urllib.error
    import urllib.request

    from autocompress.errors import TrackingError
    from autocompress.urls import redact

    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise TrackingError(f"{redact(uri)}: MLflow tracking server unreachable ({e})", option="tracking_uri") from None


def default_uri(run_dir: Path) -> str:
    return f"sqlite:///{(Path(run_dir) / 'mlflow.db').resolve()}"


def _offline_safe(method):
    """Mid-search logging: after the first failure the tracker is offline and calls are skipped
    (each would wait for its retries); the method returns None instead of raising."""

    @functools.wraps(method)
    def wrapper(self: "Tracker", *args, **kwargs):
        if self.offline:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # MlflowException, connection errors: MLflow is unreachable or refusing
            from autocompress.urls import redact

            self.offline = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            self.warn(f"MLflow tracking at {redact(self.uri)} failed ({self.offline}); the search goes on and keeps "
                      "every result in its Optuna study: run `autocompress sync RUN_DIR` to log what MLflow missed")
            return None

    return wrapper


class Tracker:
    def __init__(self, uri: str, experiment: str, artifact_dir: Path | None = None,
                 warn: Callable[[str], None] = print):
        # A lost server must not stall the search for minutes of HTTP retries (MLflow's default: 7,
        # exponential backoff); the user's own setting wins.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        self.uri, self.warn, self.offline = uri, warn, None
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            loc = Path(artifact_dir).resolve().as_uri() if artifact_dir is not None else None
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=loc)
        else:
            self.experiment_id = exp.experiment_id
        self.parent_id: str | None = None

    # -- parent ------------------------------------------------------------------------
    def start_parent(self, run_id: str | None, name: str, params: dict[str, Any], files: list[Path]) -> str:
        """Open the search's parent run (or reopen `run_id` when resuming)."""
        if run_id:
            self.parent_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags={"autocompress.kind": "search"})
        self.parent_id = run.info.run_id
        self.client.log_batch(self.parent_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        for f in files:
            self.client.log_artifact(self.parent_id, str(f), artifact_path="inputs")
        return self.parent_id

    def attach_parent(self, run_id: str | None) -> bool:
        """Use an existing parent run (no status change); False when the store does not have it."""
        from mlflow.exceptions import MlflowException

        try:
            if run_id and self.client.get_run(run_id).info.experiment_id == self.experiment_id:
                self.parent_id = run_id
                return True
        except MlflowException:
            pass
        return False

    def parent_status(self) -> str:
        return self.client.get_run(self.parent_id).info.status

    def parent_metric_steps(self, key: str) -> set[int]:
        return {m.step for m in self.client.get_metric_history(self.parent_id, key)}

    @_offline_safe
    def log_parent_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        ms = [Metric(k, float(v), _now(), step) for k, v in metrics.items() if _finite(v)]
        if ms:
            self.client.log_batch(self.parent_id, metrics=ms)

    @_offline_safe
    def log_parent_files(self, files: list[Path], artifact_path: str = "pareto") -> None:
        for f in files:
            self.client.log_artifact(self.parent_id, str(f), artifact_path=artifact_path)

    @_offline_safe
    def finish_parent(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_id, status=status)

    # -- children ----------------------------------------------------------------------
    @_offline_safe
    def log_trial(self, number: int, params: dict[str, Any], result: dict[str, Any] | None, state: str,
                  reason: str | None = None, artifact: Path | None = None) -> str:
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{number}", tags={
            "mlflow.parentRunId": self.parent_id, "autocompress.kind": "trial", "trial": str(number),
            "state": state, "pareto": "false", **({"fail_reason": reason[:5000]} if reason else {})})
        rid = run.info.run_id
        metrics = [Metric(k, v, _now(), 0) for k, v in (TrialResult.from_dict(result).metrics() if result else {}).items()]
        self.client.log_batch(rid, metrics=metrics, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        if result:
            with tempfile.TemporaryDirectory() as d:
                p = Path(d) / "result.json"
                p.write_text(json.dumps(result, indent=1, default=str))
                self.client.log_artifact(rid, str(p))
        if artifact is not None and artifact.exists():
            self.client.log_artifact(rid, str(artifact))
        self.client.set_terminated(rid, status="FINISHED" if state == "COMPLETE" else "FAILED")
        return rid

    @_offline_safe
    def set_pareto(self, run_ids: dict[int, str], front: set[int]) -> None:
        """Tag every child `pareto=true|false`, so the tags always match the current front."""
        for number, rid in run_ids.items():
            self.client.set_tag(rid, "pareto", "true" if number in front else "false")

    @_offline_safe
    def logged_trials(self, repair: bool = False) -> dict[int, str]:
        """Trial number -> run id of the parent's children. With `repair` (sync, no driver running),
        a child left RUNNING was cut off mid-logging (`log_trial` ends a run last): it is deleted
        and left out, so that it is logged again."""
        out: dict[int, str] = {}
        for run in self.client.search_runs([self.experiment_id], max_results=50_000,
                                           filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'"):
            if "trial" not in run.data.tags:
                continue
            if repair and run.info.status == "RUNNING":
                self.client.delete_run(run.info.run_id)
            else:
                out[int(run.data.tags["trial"])] = run.info.run_id
        return out


def trial_params(params: dict, cfg: dict) -> dict:
    """A child run's MLflow params: Optuna's flat sampled params plus the techniques config."""
    return {**params, "config": json.dumps(cfg)}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _now() -> int:
    import time

    return int(time.time() * 1000)
