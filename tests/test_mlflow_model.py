"""Each trial's policy as an MLflow model (`runs:/<child run>/policy`, pyfunc), `mlflow models serve`
on it, and `pick --register` into the MLflow Model Registry."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

import autocompress as ac
from autocompress import tracking
from conftest import free_port, wait_until

CLI = [sys.executable, "-m", "autocompress.cli"]
BIN = Path(sys.executable).parent
DISCRETE = {"kind": "discrete", "n": 3}
CONTINUOUS = {"kind": "continuous", "act_dim": 2, "low": [-1.0, 0.0], "high": [1.0, 2.0], "squash": "tanh"}
RESULT = {"runtime": "numpy", "return_mean": 9.5, "return_ratio": 0.95, "latency_ms": 0.002, "latency_ratio": 0.4,
          "bytes": 321, "bytes_ratio": 0.01}


def artifact(tmp_path: Path, head: dict, name: str = "policy.acz") -> Path:
    torch.manual_seed(0)
    net = ac.PolicyNet.mlp(4, [16], 3 if head["kind"] == "discrete" else 4)  # continuous: mean + log_std
    path = tmp_path / name
    path.write_bytes(ac.Policy.from_net(net, head, runtime="numpy").data)
    return path


def runtime_actions(acz: Path, obs: np.ndarray) -> np.ndarray:
    policy = ac.Policy.load(acz, "numpy")
    return np.asarray([policy.act(o) for o in obs])


@pytest.fixture
def obs4() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32)


@pytest.mark.parametrize("head", [DISCRETE, CONTINUOUS], ids=["discrete", "continuous"])
def test_pyfunc_model_acts_like_the_runtime(tmp_path, head, obs4):
    acz = artifact(tmp_path, head)
    path = tracking.save_policy_model(tmp_path / "model", acz, RESULT)
    model = mlflow.pyfunc.load_model(str(path))
    actions = model.predict(obs4)
    if head["kind"] == "discrete":
        assert actions.dtype == np.int64 and actions.shape == (64,)
        assert (actions == runtime_actions(acz, obs4)).all()
    else:
        assert actions.dtype == np.float32 and actions.shape == (64, 2)
        np.testing.assert_allclose(actions, runtime_actions(acz, obs4), atol=1e-6)
    inputs = model.metadata.get_input_schema().inputs[0]
    assert inputs.type == np.dtype(np.float32) and inputs.shape == (-1, 4)
    assert model.metadata.get_output_schema() is not None
    assert model.model_config == {"runtime": "numpy"}
    assert (path / "input_example.json").exists() and (path / "serving_input_example.json").exists()
    requirements = (path / "requirements.txt").read_text()
    assert "autocompress" in requirements and "mlflow==" in requirements
    assert not (path / "python_model.pkl").exists()  # models-from-code: no pickle in the model
    # the recorded runtime can be overridden at load (e.g. where the serving machine has no C compiler)
    again = mlflow.pyfunc.load_model(str(path), model_config={"runtime": "numpy"})
    assert (np.asarray(again.predict(obs4[:5])) == np.asarray(actions[:5])).all()


def use_store(monkeypatch, uri: str) -> None:
    """What `runs:/` and `models:/` URIs resolve against (autocompress itself never sets MLflow's globals)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)


def test_each_complete_trial_gets_a_policy_model(tmp_path, obs4, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    acz = artifact(tmp_path, DISCRETE)
    tracker = tracking.Tracker(uri, "models", artifact_dir=tmp_path / "mlartifacts", warn=print)
    tracker.start_parent(None, "search-models", {}, [])
    times = []
    for n in range(4):
        t0 = time.perf_counter()
        rid = tracker.log_trial(n, {"q": n}, {**RESULT, "kernels": ["dense", "dense"]}, "COMPLETE", None, acz)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    bare = tracker.log_trial(9, {"q": 9}, RESULT, "COMPLETE", None, None)  # the same without the model
    bare_s = time.perf_counter() - t0
    failed = tracker.log_trial(10, {"q": 10}, None, "FAIL", "diverged", None)
    assert tracker.offline is None
    with capsys.disabled():
        print(f"\nlog_trial with its policy model: first {times[0]:.3f} s (MLflow's one-off scan of installed "
              f"packages), then {np.median(times[1:]):.3f} s; without a model {bare_s:.3f} s")
    assert np.median(times[1:]) < 0.5  # once per trial: well under a second

    use_store(monkeypatch, uri)
    model = mlflow.pyfunc.load_model(f"runs:/{rid}/policy")
    assert (model.predict(obs4) == runtime_actions(acz, obs4)).all()
    assert model.model_config == {"runtime": "numpy", "kernels": ["dense", "dense"]}
    client = MlflowClient(uri)
    mid = tracking.policy_model_id(client, rid)
    logged = client.get_logged_model(mid)
    assert logged.status == LoggedModelStatus.READY and logged.source_run_id == rid and logged.name == "policy"
    assert {"return_ratio", "bytes_ratio", "latency_ratio"} <= {m.key for m in logged.metrics}
    assert {"return_ratio", "bytes_ratio", "latency_ratio"} <= set(client.get_run(rid).data.metrics)
    assert tracking.policy_model_id(client, bare) is None and tracking.policy_model_id(client, failed) is None


def test_register_versions_tags_and_alias(tmp_path, obs4, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    acz = artifact(tmp_path, DISCRETE)
    tracker = tracking.Tracker(uri, "reg", artifact_dir=tmp_path / "mlartifacts")
    tracker.start_parent(None, "search-reg", {}, [])
    rids = {n: tracker.log_trial(n, {}, RESULT, "COMPLETE", None, acz) for n in (0, 1)}
    tracker.log_trial(2, {}, RESULT, "COMPLETE", None, None)  # a run logged before trials had models
    tags = {"trial": 1, "bytes": 321, "config": json.dumps({"quantize": {"bits": 8}})}

    def register(trial, **kw):
        return tracking.register_policy(uri, "reg", tracker.parent_id, trial, "cartpole", kw.pop("alias", "champion"),
                                        {**tags, "trial": trial}, acz, RESULT, tmp_path, **kw)

    before = (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI"))
    v1 = register(1)
    assert (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")) == before  # globals left alone
    assert (v1["version"], v1["run_id"], v1["model_uri"]) == (1, rids[1], "models:/cartpole@champion")
    logs = []
    v2 = register(2, log=logs.append)  # its model is logged now, then registered
    assert v2["version"] == 2 and "no `policy` model" in logs[0]
    client = MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version_by_alias("cartpole", "champion")
    assert str(version.version) == "2" and version.tags["trial"] == "2" and version.tags["bytes"] == "321"
    assert json.loads(version.tags["config"]) == {"quantize": {"bits": 8}}
    assert version.source == f"models:/{v2['model_id']}" and version.run_id == v2["run_id"]
    links = json.loads(client.get_logged_model(v2["model_id"]).tags["mlflow.modelVersions"])
    assert links == [{"name": "cartpole", "version": "2"}]  # the model's page shows its registered version
    use_store(monkeypatch, uri)
    assert (mlflow.pyfunc.load_model("models:/cartpole@champion").predict(obs4) == runtime_actions(acz, obs4)).all()
    assert register(0, alias=None)["model_uri"] == "models:/cartpole/3"
    assert str(client.get_model_version_by_alias("cartpole", "champion").version) == "2"  # untouched

    with pytest.raises(ac.TrackingError, match="trial 7 has no finished MLflow run.*autocompress sync") as e:
        register(7)
    assert e.value.option == "register"


def test_register_bad_input_is_one_clear_error(tmp_path, monkeypatch):
    for name, alias, option in (("a/b", "champion", "register"), ("", "champion", "register"),
                                ("ok", "v3", "alias"), ("ok", "latest", "alias"), ("ok", "has space", "alias")):
        with pytest.raises(ac.ConfigError) as e:
            tracking.check_registry_names(name, alias)
        assert e.value.option == option
    tracking.check_registry_names("cartpole-ppo.small", "champion")
    # MLflow 3.17 refuses a file:// store unless MLFLOW_ALLOW_FILE_STORE=true (then its registry works too)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ac.TrackingError) as e:
        tracking.register_policy((tmp_path / "mlruns").as_uri(), "x", "p", 0, "m", "champion", {},
                                 tmp_path / "none.acz", None, tmp_path)
    assert e.value.option == "register" and "MLFLOW_ALLOW_FILE_STORE" in str(e.value)


# -- on a finished search (slow) ------------------------------------------------------------------

def trial_run_id(run_dir: Path, trial: int) -> tuple[str, str]:
    state = json.loads((run_dir / "search.json").read_text())
    uri = state["tracking_uri"]
    client = MlflowClient(uri)
    parent = client.get_run(state["parent_run_id"])
    runs = client.search_runs([parent.info.experiment_id], filter_string=(
        f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.trial = '{trial}'"))
    return uri, runs[0].info.run_id


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_the_runtime_actions(search_run, tmp_path):
    trial = ac.Run.load(search_run).pick(min_return_ratio=0.0, minimize="bytes").trial
    uri, rid = trial_run_id(search_run, trial)
    port = free_port()
    obs = np.random.default_rng(2).normal(size=(32, 4)).astype(np.float32)
    server = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", f"runs:/{rid}/policy", "--env-manager",
                               "local", "-h", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / "serve.log", "w"), start_new_session=True,
                              env={**os.environ, "MLFLOW_TRACKING_URI": uri,  # serve execs `uvicorn` from PATH
                                   "PATH": f"{BIN}:{os.environ['PATH']}"})
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                     data=json.dumps({"inputs": obs.tolist()}).encode(),
                                     headers={"Content-Type": "application/json"})
        answers: list = []

        def answered() -> bool:  # raises (and wait_until retries) until the server is up
            answers.append(json.loads(urllib.request.urlopen(req, timeout=10).read()))
            return True
        assert wait_until(answered, 120, server), (tmp_path / "serve.log").read_text()[-3000:]
        body = answers[0]
        artifact_path = Path(ac.Run.load(search_run).rows()[0]["artifact"]).parent.parent / str(trial) / "policy.acz"
        policy = ac.Policy.load(artifact_path)  # the runtime the search measured ('auto')
        assert body["predictions"] == [int(policy.act(o)) for o in obs]
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.slow
def test_pick_register_on_the_local_store(search_run, tmp_path):
    def pick(*args):
        return subprocess.run([*CLI, "pick", str(search_run), "--min-return-ratio", "0", "--minimize", "bytes", *args],
                              capture_output=True, text=True, timeout=300)

    first = pick("--register", "cartpole-pick", "--json")
    assert first.returncode == 0, first.stderr[-3000:]
    row = json.loads(first.stdout)
    assert row["registered"]["name"] == "cartpole-pick" and row["registered"]["alias"] == "champion"
    assert "registered trial" in first.stderr
    second = pick("--register", "cartpole-pick", "--alias", "prod")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "# autocompress pick: trial" in second.stdout
    uri = json.loads((search_run / "search.json").read_text())["tracking_uri"]
    client = MlflowClient(uri, registry_uri=uri)
    champion, prod = (client.get_model_version_by_alias("cartpole-pick", a) for a in ("champion", "prod"))
    assert (int(champion.version), int(prod.version)) == (row["registered"]["version"],
                                                          row["registered"]["version"] + 1)
    for key in ("return_ratio", "latency_ratio", "bytes_ratio", "bytes", "latency_ms", "trial", "config"):
        assert key in prod.tags, key
    assert float(prod.tags["bytes_ratio"]) == pytest.approx(row["bytes_ratio"], rel=1e-6)
    assert int(prod.tags["trial"]) == row["trial"]
    # and what pick measured it on apart from its choice
    assert float(prod.tags["fresh_return_ratio"]) == pytest.approx(row["fresh_return_ratio"], rel=1e-6)
    assert int(prod.tags["fresh_episodes"]) == row["fresh_episodes"] == 100

    bad = pick("--register", "a/b")
    assert bad.returncode == 2 and "--register" in bad.stderr and "Traceback" not in bad.stderr
    with pytest.raises(ac.TrackingError, match="MLFLOW_ALLOW_FILE_STORE") as e:  # exit code 4 in the CLI
        ac.Run.load(search_run).register(row["trial"], "x", tracking_uri=(tmp_path / "mlruns").as_uri())
    assert e.value.option == "register"


@pytest.mark.slow
def test_sync_logs_each_trial_with_its_model(search_run, tmp_path):
    """`sync` into a store that missed the whole search (a copy of the run dir, so the shared one stays as
    it is): every trial it logs gets its `policy` model, as the search's own logging does."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(search_run, copy)
    uri = f"sqlite:///{tmp_path / 'other.db'}"
    report = ac.sync(copy, tracking_uri=uri)
    assert report["logged"] == 3
    client = MlflowClient(uri)
    exp = client.get_run(report["parent_run_id"]).info.experiment_id
    kids = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{report['parent_run_id']}'")
    assert len(kids) == 3 and all(tracking.policy_model_id(client, k.info.run_id) for k in kids)


def test_a_store_that_refuses_models_still_gets_every_trial(tmp_path, monkeypatch):
    """A tracking server without MLflow 3's logged models (e.g. an MLflow 2 server): one warning, then
    the trials are logged as before, without their model; the tracker stays online."""
    def refuse(*a, **k):
        raise RuntimeError("ENDPOINT_NOT_FOUND: /api/2.0/mlflow/logged-models")

    monkeypatch.setattr(tracking, "_create_policy_model", refuse)
    warnings = []
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = tracking.Tracker(uri, "old", artifact_dir=tmp_path / "mlartifacts", warn=warnings.append)
    tracker.start_parent(None, "search-old", {}, [])
    acz = artifact(tmp_path, DISCRETE)
    rids = [tracker.log_trial(n, {}, RESULT, "COMPLETE", None, acz) for n in range(2)]
    assert all(rids) and tracker.offline is None and len(warnings) == 1 and "pick --register" in warnings[0]
    client = MlflowClient(uri)
    assert all(client.get_run(r).info.status == "FINISHED" and "bytes_ratio" in client.get_run(r).data.metrics
               for r in rids)


def test_sync_repair_drops_a_cut_off_trial_with_its_pending_model(tmp_path):
    """A child run the tracking server died under stays RUNNING with its `policy` model PENDING: the
    repair that sync does deletes both (the model would otherwise stay listed as pending for ever)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = tracking.Tracker(uri, "cut", artifact_dir=tmp_path / "mlartifacts", warn=print)
    tracker.start_parent(None, "search-cut", {}, [])
    kept = tracker.log_trial(0, {}, RESULT, "COMPLETE", None, artifact(tmp_path, DISCRETE))
    client = MlflowClient(uri)
    cut = client.create_run(tracker.experiment_id, tags={"mlflow.parentRunId": tracker.parent_id, "trial": "1"})
    pending = tracking._create_policy_model(client, tracker.experiment_id, cut.info.run_id, 1)

    assert tracker.logged_trials() == {0: kept, 1: cut.info.run_id}  # no repair: both listed, nothing deleted
    assert tracker.logged_trials(repair=True) == {0: kept}
    assert client.get_run(cut.info.run_id).info.lifecycle_stage == "deleted"
    models = {m.model_id: m.status for m in client.search_logged_models([tracker.experiment_id])}
    assert pending.model_id not in models and models[tracking.policy_model_id(client, kept)] == LoggedModelStatus.READY
