"""The only MLflow adapter: one experiment per search, a parent run for the search and a
child run per trial (params, metrics, state, artifact, tag `pareto`).

Uses `MlflowClient` with explicit run ids (no global active run), so the driver can log
trials in whatever order they finish. Default store: SQLite + artifact folder inside the
run dir; any tracking URI (e.g. http://host:5000) works the same.

MLflow is a mirror, the Optuna study is the source of truth: if the tracking server goes
away mid-search, the tracker goes offline (one warning), the search carries on, and
`autocompress sync RUN_DIR` later logs what MLflow missed.

Each COMPLETE trial's policy is also an MLflow model named `policy` (an MLflow 3 LoggedModel of
the child run, pyfunc flavor, with signature and input example; `PolicyModel` acts through
autocompress's own runtime), so `mlflow.pyfunc.load_model(f"runs:/{run_id}/policy")` and
`mlflow models serve` work on it, and `register_policy` puts it in the Model Registry.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import logging
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import mlflow.pyfunc
import numpy as np
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from autocompress.errors import ConfigError, TrackingError
from autocompress.policy import Policy
from autocompress.results import TrialResult, finite_metrics
from autocompress.runtime import read_artifact
from autocompress.urls import is_redacted, redact

#: the name of each trial's MLflow model: `runs:/<child run id>/policy`
POLICY_MODEL = "policy"

def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (before any work) when an http(s) tracking server does not answer /health."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise TrackingError(f"{redact(uri)}: MLflow tracking server unreachable ({e})", option="tracking_uri") from None


def default_uri(run_dir: Path) -> str:
    return f"sqlite:///{(Path(run_dir) / 'mlflow.db').resolve()}"


def run_uri(run_dir: Path, state: dict, given: str | None = None) -> str:
    """The tracking URI of the search in `run_dir`: `given`, else the one its state recorded, else the run
    dir's own store. The state keeps a password-bearing URI redacted, so that one must be given again."""
    uri = given or state.get("tracking_uri") or default_uri(run_dir)
    if is_redacted(uri):
        raise ConfigError(f"{run_dir} was searched with a password in the tracking URI: give it again",
                          option="tracking_uri")
    return uri


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
            self.offline = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            self.warn(f"MLflow tracking at {redact(self.uri)} failed ({self.offline}); the search goes on and keeps "
                      "every result in its Optuna study: run `autocompress sync RUN_DIR` to log what MLflow missed")
            return None

    return wrapper


def _http_defaults() -> None:
    # A lost server must not stall the search for minutes of HTTP retries (MLflow's default: 7,
    # exponential backoff); the user's own setting wins.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


class Tracker:
    def __init__(self, uri: str, experiment: str, artifact_dir: Path | None = None,
                 warn: Callable[[str], None] = print):
        _http_defaults()
        self.uri, self.warn, self.offline = uri, warn, None
        #: why trials are logged without their `policy` model (e.g. a tracking server older than MLflow 3)
        self.models_off: str | None = None
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
        if ms := _metrics(metrics, step):
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
            "state": state, "pareto": "false", **({"fail_reason": reason[:5000]} if reason else {}),
            **({"target": result["target"]} if result and result.get("target") else {})})
        rid = run.info.run_id
        model = None  # the policy as an MLflow model; the run's metrics are linked to it (its page shows them)
        if state == "COMPLETE" and result and artifact is not None and artifact.exists() and not self.models_off:
            try:
                model = _create_policy_model(self.client, self.experiment_id, rid, number)
            except Exception as e:  # the store may lack MLflow 3's logged models; a lost server fails below
                self._models_failed(number, e)
        metrics = [Metric(k, v, _now(), 0, model_id=model.model_id if model else None)
                   for k, v in (TrialResult.from_dict(result).metrics() if result else {}).items()]
        self.client.log_batch(rid, metrics=metrics, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        if result:
            with tempfile.TemporaryDirectory() as d:
                p = Path(d) / "result.json"
                p.write_text(json.dumps(result, indent=1, default=str))
                self.client.log_artifact(rid, str(p))
        if artifact is not None and artifact.exists():
            self.client.log_artifact(rid, str(artifact))
        if model is not None:
            try:
                _store_policy_model(self.client, model, rid, artifact, result)
            except Exception as e:
                self._models_failed(number, e)
        # a trial stopped early (PRUNED) ended as asked: KILLED, not FAILED
        self.client.set_terminated(rid, status={"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(state, "FAILED"))
        return rid

    def _models_failed(self, number: int, e: Exception) -> None:
        """A trial's MLflow model could not be logged: warn once, log the remaining trials without one
        (their runs, metrics and artifacts as before); `pick --register` logs a picked trial's model later."""
        self.models_off = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        self.warn(f"MLflow at {redact(self.uri)} did not take trial {number}'s `{POLICY_MODEL}` model "
                  f"({self.models_off}); trials are logged without it from here (`autocompress pick --register` "
                  "logs the picked trial's model when it registers it)")

    @_offline_safe
    def set_pareto(self, run_ids: dict[int, str], front: set[int]) -> None:
        """Tag every child `pareto=true|false`, so the tags always match the current front."""
        for number, rid in run_ids.items():
            self.client.set_tag(rid, "pareto", "true" if number in front else "false")

    @_offline_safe
    def log_heldout(self, run_ids: dict[int, str], record: dict) -> None:
        """A held-out snapshot (see _search/heldout.py): `heldout_return_mean/_std/_ratio`,
        `heldout_teacher_return_mean` and `heldout_episodes` on each re-evaluated trial's child run; the
        teacher's and the reference's on the parent, with a tag naming the seeds and runtime."""
        n, seed = record["episodes"], record["seed"]
        common = {"heldout_teacher_return_mean": record["teacher"]["return_mean"], "heldout_episodes": n}
        for number, values in record["trials"].items():
            rid = run_ids.get(int(number))
            if rid:
                self._log_metrics(rid, {**{f"heldout_{k}": v for k, v in values.items()}, **common})
        parent = {**common, "heldout_teacher_return_std": record["teacher"]["return_std"]}
        if record.get("reference"):
            parent.update({f"reference_heldout_{k}": v for k, v in record["reference"].items()})
        self._log_metrics(self.parent_id, parent)
        self.client.set_tag(self.parent_id, "heldout", f"{n} episodes, seeds {seed}..{seed + n - 1}, "
                                                       f"{record['runtime']} runtime")

    @_offline_safe
    def log_reference(self, result: dict, artifact: Path) -> None:
        """The fine-tuned teacher (`finetune.teacher_reference`) on the parent run: its metrics as
        `reference_<name>`, its result.json and artifact under `reference/`."""
        metrics = TrialResult.from_dict(result).metrics()
        self._log_metrics(self.parent_id, {f"reference_{k}": v for k, v in metrics.items()})
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "result.json"
            p.write_text(json.dumps(result, indent=1, default=str))
            self.client.log_artifact(self.parent_id, str(p), artifact_path="reference")
        self.client.log_artifact(self.parent_id, str(artifact), artifact_path="reference")

    def _log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        if ms := _metrics(metrics):
            self.client.log_batch(run_id, metrics=ms)

    @_offline_safe
    def logged_trials(self, repair: bool = False) -> dict[int, str]:
        """Trial number -> run id of the parent's children. With `repair` (sync, no driver running),
        a child left RUNNING was cut off mid-logging (`log_trial` ends a run last): it is deleted,
        with the `policy` model it had begun (PENDING, never READY), and left out, so that it is
        logged again."""
        out: dict[int, str] = {}
        for run in self.client.search_runs([self.experiment_id], max_results=50_000,
                                           filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}'"):
            if "trial" not in run.data.tags:
                continue
            if repair and run.info.status == "RUNNING":
                outputs = self.client.get_run(run.info.run_id).outputs
                for o in outputs.model_outputs if outputs else []:
                    self.client.delete_logged_model(o.model_id)
                self.client.delete_run(run.info.run_id)
            else:
                out[int(run.data.tags["trial"])] = run.info.run_id
        return out


# -- the policy as an MLflow model ------------------------------------------------------------

class PolicyModel(mlflow.pyfunc.PythonModel):
    """A trial's policy as an MLflow pyfunc model: `predict(obs_batch)` -> one action per observation (int64
    for a discrete head, a float32 vector for a continuous one; a conv net's observations are images in the
    env's shape, batch x H x W x C or batch x C x H x W), acted by autocompress's own runtime
    (`autocompress.Policy`), so the actions are the ones the search measured. The .acz artifact is
    loaded once; `model_config` holds the trial's `runtime` and `kernels` (override them at load,
    e.g. `mlflow.pyfunc.load_model(uri, model_config={"runtime": "numpy"})` where no C compiler is).

    A recurrent (LSTM / GRU) policy: the rows of one `predict` call are consecutive steps of one episode, acted
    from a fresh (zero) state, the state carried from row to row and reset at the start of each call; the
    optional `params={"episode_starts": [bool per row]}` resets it also at each row marked True, so one batch
    may hold several episodes back to back. A feed-forward policy acts on each row alone (`episode_starts`
    is not in its signature)."""

    def load_context(self, context) -> None:
        cfg = dict(context.model_config or {})
        data = Path(context.artifacts["policy"]).read_bytes()
        header = read_artifact(data)[0]
        self.obs_shape = _obs_shape(header)
        self.policy = Policy.from_bytes(data, runtime=cfg.get("runtime") or "auto",
                                        **({"kernels": cfg["kernels"]} if cfg.get("kernels") else {}))

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        obs = np.asarray(model_input, dtype=np.float32)
        if obs.ndim == len(self.obs_shape):  # one observation
            obs = obs[None]
        act = self.policy.act
        if self.policy.recurrent:
            starts = list((params or {}).get("episode_starts") or [])
            if starts and len(starts) != len(obs):
                raise ValueError(f"episode_starts has {len(starts)} values for {len(obs)} observations "
                                 "(one bool per row)")
            actions = []
            for i, o in enumerate(obs):
                if i == 0 or (starts and starts[i]):
                    self.policy.reset()
                actions.append(act(o))
        else:
            actions = [act(o) for o in obs]
        head = self.policy.head
        if head["kind"] == "discrete":
            return np.asarray(actions, dtype=np.int64)
        return np.asarray(actions, dtype=np.float32).reshape(len(obs), head["act_dim"])


# models-from-code: the saved model holds this file, not a pickle; loading it imports autocompress
_MODEL_CODE = """import mlflow.models
from autocompress.tracking import PolicyModel

mlflow.models.set_model(PolicyModel())
"""


def _obs_shape(header: dict) -> tuple[int, ...]:
    """The shape of one observation an artifact (its header) reads: (obs_dim,), or a conv net's image shape."""
    return tuple(header["input"]["shape"]) if header.get("input") else (int(header["obs_dim"]),)


def save_policy_model(path: str | Path, artifact: str | Path, result: dict | None = None,
                      mlflow_model: Any = None) -> Path:
    """Save an .acz artifact as an MLflow pyfunc model directory at `path` (which must not exist):
    input signature float32 (-1, obs_dim) (a conv net: (-1, *its observation shape), e.g. (-1, H, W, C)),
    output int64 (-1,) or float32 (-1, act_dim), an input example, explicit pip requirements (none
    inferred), `model_config` {runtime, kernels} from the trial's `result`. A recurrent policy's signature
    also has the params schema: `episode_starts`, a boolean list (default empty: reset at row 0 only)."""
    from mlflow.models import ModelSignature  # deferred (heavy): MLflow's model flavour, for logging a model only
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    header, _ = read_artifact(Path(artifact).read_bytes())
    obs_shape, head = _obs_shape(header), header["head"]
    out = TensorSpec(np.dtype(np.int64), (-1,)) if head["kind"] == "discrete" else \
        TensorSpec(np.dtype(np.float32), (-1, int(head["act_dim"])))
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *obs_shape))]),
                               outputs=Schema([out]),
                               params=ParamSchema([ParamSpec("episode_starts", "boolean", [], (-1,))])
                               if header.get("rnn") else None)
    norm = header.get("obs_norm")
    example = np.asarray(norm["mean"] if norm else np.zeros(obs_shape), np.float32).reshape(1, *obs_shape)
    result = result or {}
    config = {"runtime": result.get("runtime") or "auto",
              **({"kernels": list(result["kernels"])} if result.get("kernels") else {})}
    try:
        version = importlib.metadata.version("autocompress")
    except importlib.metadata.PackageNotFoundError:
        version = None
    requirements = [f"autocompress=={version}" if version else "autocompress", f"mlflow=={mlflow.__version__}"]
    # once per trial, in the search's own output: no INFO line, no progress bar for copying the artifact
    quiet = [logging.getLogger(n) for n in ("mlflow.pyfunc", "mlflow.models")]
    levels = [lg.level for lg in quiet]
    bar = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    with tempfile.TemporaryDirectory() as d:
        code = Path(d) / "policy_model.py"
        code.write_text(_MODEL_CODE)
        try:
            for lg in quiet:
                lg.setLevel(logging.WARNING)
            if bar is None:
                os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
            mlflow.pyfunc.save_model(path=str(path), python_model=str(code), artifacts={"policy": str(artifact)},
                                     signature=signature, input_example=example, pip_requirements=requirements,
                                     model_config=config, mlflow_model=mlflow_model)
        finally:
            for lg, level in zip(quiet, levels):
                lg.setLevel(level)
            if bar is None:
                os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
    return Path(path)


def _create_policy_model(client: MlflowClient, experiment_id: str, run_id: str, number: int | None):
    """A PENDING LoggedModel `policy` whose source is the trial's run, listed in the run's outputs."""
    model = client.create_logged_model(experiment_id, name=POLICY_MODEL, source_run_id=run_id,
                                       tags={"trial": str(number)} if number is not None else None,
                                       model_type="autocompress policy")
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    return model


def _store_policy_model(client: MlflowClient, model, run_id: str, artifact: Path, result: dict | None) -> None:
    """Save the pyfunc model, upload it as the LoggedModel's artifacts, mark it READY (FAILED on error)."""
    from mlflow.models import Model  # deferred (heavy): as above

    try:
        with tempfile.TemporaryDirectory() as d:
            path = save_policy_model(Path(d) / POLICY_MODEL, artifact, result, mlflow_model=Model(
                artifact_path=model.artifact_location, run_id=run_id, model_id=model.model_id,
                model_uuid=model.model_id))
            client.log_model_artifacts(model.model_id, str(path))
    except Exception:
        try:
            client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        except Exception:
            pass
        raise
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)


def policy_model_id(client: MlflowClient, run_id: str) -> str | None:
    """The READY `policy` model of a run (the latest if several), or None (runs logged before models were)."""
    run = client.get_run(run_id)
    models = [client.get_logged_model(o.model_id) for o in (run.outputs.model_outputs if run.outputs else [])]
    ready = [m for m in models if m.name == POLICY_MODEL and m.status == LoggedModelStatus.READY]
    return max(ready, key=lambda m: m.creation_timestamp).model_id if ready else None


@contextlib.contextmanager
def _global_tracking_uri(uri: str):
    """MLflow's local registry stores (sqlite, file) resolve a `models:/<id>` version source through the
    process-global tracking URI, which autocompress otherwise never sets: set it for the call, then put
    it back (and the MLFLOW_TRACKING_URI variable, which MLflow's helper would leave unset)."""
    try:
        # private MLflow API: imported where it is used, guarded
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    except ImportError:  # private: if it moves, the caller's client URI is all there is
        yield
        return
    env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env


def check_registry_names(name: str, alias: str | None) -> None:
    """MLflow's rules for a registered model's name and an alias, checked before any work."""
    if not isinstance(name, str) or not name.strip() or "/" in name or ":" in name:
        raise ConfigError(f"{name!r}: a registered model name is not empty and has no '/' or ':'", option="register")
    if alias is not None and (not isinstance(alias, str) or not re.fullmatch(r"[\w\-]{1,255}", alias)
                              or alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias)):
        raise ConfigError(f"{alias!r}: an alias is 1 to 255 letters, digits, '_' or '-', and neither 'latest' nor "
                          "v<number> (MLflow reserves those)", option="alias")


def register_policy(uri: str, experiment: str, parent_id: str | None, trial: int, name: str, alias: str | None,
                    tags: dict[str, Any], artifact: Path, result: dict | None, run_dir: Path,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Register trial `trial`'s `policy` model (of its child run under `parent_id`) as a new version of
    `name` in the Model Registry of `uri`, with `tags` on the version and `alias` pointing at it. A run
    logged before trials had models gets its model logged first (from `artifact`). TrackingError when
    the trial has no run there (tracking was offline: sync first) or the store refuses."""
    where = redact(uri)
    _http_defaults()
    step = "opening the store"
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        step = "finding the trial's run"
        exp = client.get_experiment_by_name(experiment)
        runs = [] if exp is None or not parent_id else client.search_runs(
            [exp.experiment_id], max_results=10, filter_string=f"tags.mlflow.parentRunId = '{parent_id}' and "
                                                            f"tags.trial = '{int(trial)}'")
        runs = [r for r in runs if r.info.status == "FINISHED"]
        if not runs:
            raise TrackingError(f"trial {trial} has no finished MLflow run in {where} (was tracking offline during "
                                f"the search?): run `autocompress sync {run_dir}` first", option="register")
        rid = runs[0].info.run_id
        step = "finding the run's policy model"
        model_id = policy_model_id(client, rid)
        if model_id is None:
            if not Path(artifact).exists():
                raise ConfigError(f"trial {trial}'s run {rid} has no `{POLICY_MODEL}` model and its artifact is "
                                  f"missing at {artifact}", option="register")
            log(f"trial {trial}'s run {rid} has no `{POLICY_MODEL}` model (logged before trials had one): "
                "logging it now")
            step = "logging the run's policy model"
            model = _create_policy_model(client, exp.experiment_id, rid, trial)
            _store_policy_model(client, model, rid, Path(artifact), result)
            model_id = model.model_id
        step = f"creating the registered model {name!r}"
        try:
            client.create_registered_model(name)
        except MlflowException as e:
            if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        step = f"creating a version of {name!r}"
        logged = client.get_logged_model(model_id)
        with _global_tracking_uri(uri):  # source `models:/<id>`: the version links to its LoggedModel
            version = client.create_model_version(name, source=f"models:/{model_id}", run_id=rid, model_id=model_id,
                                                  tags={k: str(v)[:5000] for k, v in tags.items()})
        step = "linking the model to its version"  # what mlflow.register_model records: the model page shows it
        versions = json.loads(logged.tags.get("mlflow.modelVersions") or "[]")
        entry = {"name": name, "version": str(version.version)}
        if entry not in versions:
            client.set_logged_model_tags(model_id, {"mlflow.modelVersions": json.dumps(versions + [entry])})
        if alias:
            step = f"setting alias {alias!r}"
            client.set_registered_model_alias(name, alias, version.version)
    except MlflowException as e:
        msg = str(e.message if hasattr(e, "message") else e).strip().splitlines()
        raise TrackingError(f"{where}: {step} failed: {msg[0][:500] if msg else type(e).__name__}",
                            option="register") from None
    return {"name": name, "version": int(version.version), "alias": alias, "run_id": rid, "model_id": model_id,
            "model_uri": f"models:/{name}@{alias}" if alias else f"models:/{name}/{version.version}",
            "tags": {k: str(v) for k, v in tags.items()}}


def log_sensitivity(uri: str, experiment: str, params: dict[str, Any], metrics: dict[str, float],
                    files: list[Path], artifact_dir: Path | None = None) -> str:
    """A run named `sensitivity` (tag autocompress.kind=sensitivity) in `experiment`: the sweep's
    settings as params, its totals as metrics, the table (JSON) and heatmap (PNG) under `sensitivity/`.
    A search logs its sensitivity stage on its parent run instead (`Tracker.log_parent_files`).
    Returns the run id; TrackingError when the store refuses."""
    check_reachable(uri)
    try:
        tracker = Tracker(uri, experiment, artifact_dir=artifact_dir)
        client = tracker.client
        rid = client.create_run(tracker.experiment_id, run_name="sensitivity",
                                tags={"autocompress.kind": "sensitivity"}).info.run_id
        client.log_batch(rid, params=[Param(k, str(v)[:6000]) for k, v in params.items()],
                         metrics=_metrics(metrics))
        for f in files:
            client.log_artifact(rid, str(f), artifact_path="sensitivity")
        client.set_terminated(rid)
    except (MlflowException, OSError) as e:
        msg = str(e).strip().splitlines()
        raise TrackingError(f"{redact(uri)}: logging the sensitivity run failed: "
                            f"{msg[0][:500] if msg else type(e).__name__}", option="tracking_uri") from None
    return rid


def trial_params(params: dict, cfg: dict) -> dict:
    """A child run's MLflow params: Optuna's flat sampled params plus the techniques config."""
    return {**params, "config": json.dumps(cfg)}


def _metrics(values: dict[str, Any], step: int = 0) -> list[Metric]:
    return [Metric(k, v, _now(), step) for k, v in finite_metrics(values).items()]


def _now() -> int:
    return int(time.time() * 1000)
