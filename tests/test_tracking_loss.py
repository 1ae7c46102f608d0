"""The MLflow tracking server dies mid-search: the search finishes with every result in its
Optuna study, and `autocompress sync` later logs what MLflow missed, idempotently."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from autocompress._search import load_run
from conftest import free_port, start_mlflow_server, stop, tiny_cartpole

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "autocompress.cli"]
BIN = Path(sys.executable).parent


def children(uri: str, parent_id: str) -> dict[int, object]:
    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    runs = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    return {int(r.data.tags["trial"]): r for r in runs}


def test_tracking_server_lost_mid_search_then_sync(tmp_path):
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(tiny_cartpole("tiny_loss", finetune_iterations=1)))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({
        "name": "loss", "trial_spec": "trial.yaml", "budget": {"trials": 5, "parallel": 2}, "baselines": False,
        "techniques": {"prune": {"sparsity": {"low": 0.5, "high": 0.9}}, "quantize": {"bits": {"low": 4, "high": 8}}}}))
    port, server_dir, run_dir = free_port(), tmp_path / "server", tmp_path / "run"
    server_dir.mkdir()
    uri = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(server_dir, port)
    try:
        search = subprocess.Popen([*CLI, "search", str(tmp_path / "space.yaml"), "--run-dir", str(run_dir),
                                   "--cache-dir", str(tmp_path / "cache"), "--tracking-uri", uri],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
        deadline = time.time() + 600
        while time.time() < deadline and search.poll() is None:  # the server dies after the first trial
            time.sleep(1)
            if (run_dir / "search.json").exists():
                study, _ = load_run(run_dir)
                if any(t.state == TrialState.COMPLETE for t in study.trials):
                    break
        stop(server, signal.SIGKILL)
        out, err = search.communicate(timeout=900)
        assert search.returncode == 0, err[-3000:]
        assert "autocompress sync" in err
        study, state = load_run(run_dir)
        assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 5  # nothing lost

        server = start_mlflow_server(server_dir, port)  # back, with what it had logged before it died
        before = children(uri, state["parent_run_id"])
        assert len(before) < 5
        # a child the server died under is left RUNNING (half logged): sync deletes it and logs it again
        complete = {n: r for n, r in before.items() if r.info.status != "RUNNING"}
        s1 = run_cli("sync", run_dir)
        assert s1.returncode == 0, s1.stderr[-3000:]
        assert f"synced {5 - len(complete)} trial(s) to MLflow, {len(complete)} already there" in s1.stdout
        after = children(uri, state["parent_run_id"])
        assert sorted(after) == [0, 1, 2, 3, 4] and all(r.info.status == "FINISHED" for r in after.values())
        assert all(after[n].info.run_id == complete[n].info.run_id for n in complete)  # kept, not duplicated
        assert all({"return_mean", "bytes", "latency_ms"} <= set(r.data.metrics) for r in after.values())
        front = {f["trial"] for f in __import__("json").loads(run_cli("pareto", run_dir, "--json").stdout)}
        assert {n for n, r in after.items() if r.data.tags["pareto"] == "true"} == front
        arts = {a.path for a in MlflowClient(uri).list_artifacts(state["parent_run_id"], "pareto")}
        assert "pareto/pareto.json" in arts

        s2 = run_cli("sync", run_dir)  # idempotent
        assert s2.returncode == 0 and "synced 0 trial(s)" in s2.stdout
        assert sorted(children(uri, state["parent_run_id"])) == [0, 1, 2, 3, 4]
    finally:
        stop(server, signal.SIGKILL)


def test_sync_with_server_down_is_one_clear_error(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "search.json").write_text('{"study_name": "x", "objectives": ["return"], "tracking_uri": '
                                         f'"http://127.0.0.1:{free_port()}"}}')
    r = run_cli("sync", run_dir)
    assert r.returncode == 4 and "unreachable" in r.stderr and "Traceback" not in r.stderr  # TrackingError


def run_cli(*args):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=600)
