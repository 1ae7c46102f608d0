"""The only MLflow adapter: one experiment per search, a parent run for the search and a
child run per trial (params, metrics, state, artifact, tag `pareto`).

Uses `MlflowClient` with explicit run ids (no global active run), so the driver can log
trials in whatever order they finish. Default store: SQLite + artifact folder inside the
run dir; any tracking URI (e.g. http://host:5000) works the same.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

#: result keys logged as child-run metrics (when numeric and finite)
METRIC_KEYS = ("return_mean", "return_std", "return_ratio", "teacher_return_mean", "latency_ms", "latency_p95_ms",
               "teacher_latency_ms", "latency_ratio", "bytes", "gzip_bytes", "teacher_bytes", "bytes_ratio",
               "params", "teacher_params", "sparsity", "layers", "compress_seconds", "trial_seconds")


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (before any work) when an http(s) tracking server does not answer /health."""
    import urllib.error
    import urllib.request

    from autocompress.errors import ConfigError
    from autocompress.urls import redact

    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ConfigError(f"--tracking-uri {redact(uri)}: MLflow tracking server unreachable ({e})") from None


def default_uri(run_dir: Path) -> str:
    return f"sqlite:///{(Path(run_dir) / 'mlflow.db').resolve()}"


class Tracker:
    def __init__(self, uri: str, experiment: str, artifact_dir: Path | None = None):
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

    def log_parent_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        ms = [Metric(k, float(v), _now(), step) for k, v in metrics.items() if _finite(v)]
        if ms:
            self.client.log_batch(self.parent_id, metrics=ms)

    def log_parent_files(self, files: list[Path], artifact_path: str = "pareto") -> None:
        for f in files:
            self.client.log_artifact(self.parent_id, str(f), artifact_path=artifact_path)

    def finish_parent(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_id, status=status)

    # -- children ----------------------------------------------------------------------
    def log_trial(self, number: int, params: dict[str, Any], result: dict[str, Any] | None, state: str,
                  reason: str | None = None, artifact: Path | None = None) -> str:
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{number}", tags={
            "mlflow.parentRunId": self.parent_id, "autocompress.kind": "trial", "trial": str(number),
            "state": state, "pareto": "false", **({"fail_reason": reason[:5000]} if reason else {})})
        rid = run.info.run_id
        metrics = [Metric(k, float(result[k]), _now(), 0) for k in METRIC_KEYS
                   if result and k in result and _finite(result[k])]
        metrics += [Metric(f"seconds_{k}", float(v), _now(), 0) for k, v in (result or {}).get("timings", {}).items()]
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

    def set_pareto(self, run_ids: dict[int, str], front: set[int]) -> None:
        """Tag every child `pareto=true|false`, so the tags always match the current front."""
        for number, rid in run_ids.items():
            self.client.set_tag(rid, "pareto", "true" if number in front else "false")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _now() -> int:
    import time

    return int(time.time() * 1000)
