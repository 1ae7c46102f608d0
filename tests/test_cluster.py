"""Cluster mode for real, on this machine: a 2-node Ray cluster (one CPU each), PostgreSQL as
the Optuna storage and an MLflow tracking server; the search goes in with `ray job submit`."""

import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import free_port, start_mlflow_server, stop, tiny_cartpole, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PASSWORD = "s3cret-pw"


def pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    if shutil.which("initdb"):
        return Path(shutil.which("initdb")).parent
    pytest.fail("PostgreSQL server binaries not found: .ci/run installs the 'postgresql' package")


def as_postgres(cmd: list[str], **kw):
    """PostgreSQL refuses to run as root: run its tools as the 'postgres' user when we are root."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def require(ok: bool, what: str, *logs: Path):
    """Fail naming what did not come up, with the tail of each log that says why."""
    if ok:
        return
    tails = []
    for log in logs:
        # of a Ray temp dir, the raylet's and GCS's own logs (the other files there are many and quiet)
        files = [f for f in sorted(log.glob("**/logs/*")) if f.name.startswith(("raylet.", "gcs_server."))] \
            if log.is_dir() else [log]
        for f in files:
            if f.is_file() and f.stat().st_size:
                tails.append(f"--- {f}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:]))
    pytest.fail(f"{what} did not come up\n" + "\n".join(tails))


@pytest.fixture(scope="module")
def services():
    import ray

    # A local Ray that an earlier test started inside this pytest process keeps the new cluster's
    # job agent from registering ("No available agent to submit job"): stop it first.
    ray.shutdown()
    base = Path(tempfile.mkdtemp(prefix="ac-cluster-", dir="/tmp"))
    base.chmod(0o755)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{BIN}:{os.environ['PATH']}"}
    procs, started = [], []
    try:
        # PostgreSQL on loopback, password auth for TCP
        pg, pg_port, data = pg_bin(), free_port(), base / "pg"
        data.mkdir()
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(data, pw.pw_uid, pw.pw_gid)
        as_postgres([str(pg / "initdb"), "-D", str(data), "--auth-local=trust", "--auth-host=scram-sha-256"])
        as_postgres([str(pg / "pg_ctl"), "-D", str(data), "-l", str(data / "log"), "-w", "-o",
                     f"-p {pg_port} -k {data} -c listen_addresses=127.0.0.1", "start"])
        started.append("pg")
        as_postgres([str(pg / "psql"), "-h", str(data), "-p", str(pg_port), "-d", "postgres", "-c",
                     f"CREATE USER ac WITH PASSWORD '{PASSWORD}';"])
        as_postgres([str(pg / "psql"), "-h", str(data), "-p", str(pg_port), "-d", "postgres", "-c",
                     "CREATE DATABASE optuna OWNER ac;"])
        storage = f"postgresql://ac:{PASSWORD}@127.0.0.1:{pg_port}/optuna"
        # MLflow tracking server
        ml_port = free_port()
        procs.append(start_mlflow_server(base, ml_port))
        tracking = f"http://127.0.0.1:{ml_port}"
        # Ray: head + a second node, one CPU each. `--block` keeps each node's processes under a
        # process we own, so teardown stops this cluster only (never other Ray instances here),
        # and its own temp dir keeps it apart from any local Ray an earlier test started.
        ray_port, dash_port, ray_tmp = free_port(), free_port(), base / "ray"
        common = ["--num-cpus=1", "--disable-usage-stats", "--block"]

        def own_ports():  # two nodes on one host: give each its own agent ports (defaults would collide)
            return [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                    f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
        procs.append(subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", f"--port={ray_port}", "--include-dashboard=true",
             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}", f"--temp-dir={ray_tmp}", *own_ports(), *common],
            stdout=subprocess.DEVNULL, stderr=open(base / "ray-head.log", "w"), env=env, start_new_session=True))
        dashboard = f"http://127.0.0.1:{dash_port}"
        require(wait_until(lambda: urllib.request.urlopen(dashboard + "/api/version", timeout=5).status == 200,
                           timeout=120, proc=procs[-1]), "ray head", base / "ray-head.log", ray_tmp)

        def nodes_alive() -> int:
            summary = json.loads(urllib.request.urlopen(dashboard + "/nodes?view=summary", timeout=10).read())
            return sum(n.get("raylet", {}).get("state") == "ALIVE" for n in summary["data"]["summary"])
        # The second node gets its own temp dir too (the default /tmp/ray is shared with every other Ray
        # run on this host). One CI run waited 90 s for it, with no log kept: a node that exits
        # or stays unregistered is now restarted once on fresh ports, and a failure shows its logs.
        for attempt in range(2):
            node_tmp, node_log = base / f"ray-node2-{attempt}", base / f"ray-node2-{attempt}.log"
            procs.append(subprocess.Popen(
                [str(BIN / "ray"), "start", f"--address=127.0.0.1:{ray_port}", f"--temp-dir={node_tmp}",
                 *own_ports(), *common],
                stdout=subprocess.DEVNULL, stderr=open(node_log, "w"), env=env, start_new_session=True))
            if wait_until(lambda: nodes_alive() == 2, timeout=120, proc=procs[-1]):
                break
            if attempt == 0:
                stop(procs.pop())
        else:
            require(False, "second ray node", node_log, node_tmp, base / "ray-head.log")
        yield {"base": base, "storage": storage, "tracking": tracking, "dashboard": dashboard, "env": env,
               "ray_address": f"127.0.0.1:{ray_port}"}
    finally:
        for p in reversed(procs):
            stop(p)
        if "pg" in started:
            as_postgres([str(pg_bin() / "pg_ctl"), "-D", str(base / "pg"), "-m", "fast", "stop"])
        shutil.rmtree(base, ignore_errors=True)


def test_search_submitted_to_a_two_node_cluster(services, monkeypatch):
    import mlflow
    import numpy as np
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    import autocompress as ac

    base = services["base"]
    (base / "trial.yaml").write_text(yaml.safe_dump(tiny_cartpole("tiny_cluster", finetune_iterations=1)))
    (base / "space.yaml").write_text(yaml.safe_dump({
        "name": "cluster", "trial_spec": "trial.yaml", "budget": {"trials": 4, "parallel": 2}, "baselines": False,
        "techniques": {"prune": {"sparsity": {"low": 0.5, "high": 0.9}}, "quantize": {"bits": {"low": 4, "high": 8}}}}))
    run_dir = base / "run"
    # The password travels in the job's env, not on the command line (Ray echoes the entrypoint).
    runtime_env = {"env_vars": {"AUTOCOMPRESS_STORAGE": services["storage"]}}
    cmd = [str(BIN / "ray"), "job", "submit", "--address", services["dashboard"], "--working-dir", str(ROOT),
           "--runtime-env-json", json.dumps(runtime_env), "--",
           "autocompress", "search", str(base / "space.yaml"), "--run-dir", str(run_dir), "--cache-dir",
           str(base / "cache"), "--tracking-uri", services["tracking"]]
    for _ in range(30):  # the head's job agent can come up after its dashboard: submission is refused until then
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=services["env"])
        if "No available agent to submit job" not in r.stderr:
            break
        time.sleep(3)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert PASSWORD not in r.stdout + r.stderr

    # the study lives in PostgreSQL, and its trials ran on both nodes
    study = optuna.load_study(study_name="cluster", storage=services["storage"])
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 4
    nodes = {t.user_attrs["result"]["node_id"] for t in done}
    assert len(nodes) == 2, nodes
    # the runs are in the tracking server; no password in the run dir or in MLflow
    client = MlflowClient(services["tracking"])
    exp = client.get_experiment_by_name("cluster")
    runs = client.search_runs([exp.experiment_id])
    assert len([x for x in runs if x.data.tags.get("autocompress.kind") == "trial"]) == 4
    assert PASSWORD not in (run_dir / "search.json").read_text()
    assert all(PASSWORD not in json.dumps(x.data.params) for x in runs)

    # the picked trial's MLflow model becomes a version in the server's Model Registry, loaded by its alias
    r = subprocess.run([sys.executable, "-m", "autocompress.cli", "pick", str(run_dir), "--min-return-ratio", "0",
                        "--minimize", "bytes", "--register", "cluster-policy", "--tracking-uri", services["tracking"],
                        "--json"], capture_output=True, text=True, timeout=300,
                       env={**services["env"], "AUTOCOMPRESS_STORAGE": services["storage"]})
    assert r.returncode == 0, r.stderr[-3000:]
    assert PASSWORD not in r.stdout + r.stderr
    picked = json.loads(r.stdout)
    registry = MlflowClient(services["tracking"], registry_uri=services["tracking"])
    version = registry.get_model_version_by_alias("cluster-policy", "champion")
    assert version.tags["trial"] == str(picked["trial"]) and float(version.tags["bytes_ratio"]) < 1
    monkeypatch.setenv("MLFLOW_TRACKING_URI", services["tracking"])
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", services["tracking"])
    obs = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    served = mlflow.pyfunc.load_model("models:/cluster-policy@champion").predict(obs)
    policy = ac.Policy.load(picked["artifact"])  # the runtime the search measured
    assert list(served) == [policy.act(o) for o in obs]


def test_two_drivers_share_one_postgresql_study(services):
    """Optuna's distributed pattern: a second driver `--join`s the study in PostgreSQL; together
    they run exactly the budget, with no trial lost or run twice, under one MLflow parent."""
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    base = services["base"]
    # Same teacher as above (fine-tuning is not part of its key); longer fine-tunes make each trial outlast
    # the second driver's start-up, even on a loaded machine, so both drivers really work on the study.
    (base / "trial2.yaml").write_text(yaml.safe_dump(tiny_cartpole("tiny_cluster", finetune_iterations=4)))
    (base / "space2.yaml").write_text(yaml.safe_dump({
        "name": "two_drivers", "trial_spec": "trial2.yaml", "budget": {"trials": 8, "parallel": 1},
        "baselines": False, "techniques": {"prune": {"sparsity": {"low": 0.5, "high": 0.9}},
                                           "quantize": {"bits": {"low": 4, "high": 8}}}}))
    env = {**services["env"], "AUTOCOMPRESS_STORAGE": services["storage"], "RAY_ADDRESS": services["ray_address"]}
    common = ["--cache-dir", str(base / "cache"), "--tracking-uri", services["tracking"]]
    cli = [sys.executable, "-m", "autocompress.cli", "search", str(base / "space2.yaml")]
    first = subprocess.Popen([*cli, "--run-dir", str(base / "driver1"), *common], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if not wait_until(lambda: (base / "driver1" / "search.json").exists(), timeout=120, proc=first):
        first.kill()
        pytest.fail("the first driver's study did not appear in 120 s:\n" + first.communicate()[1][-3000:])
    second = subprocess.run([*cli, "--join", "--run-dir", str(base / "driver2"), *common], env=env, text=True,
                            capture_output=True, timeout=900)
    out1, err1 = first.communicate(timeout=900)
    assert first.returncode == 0, err1[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    assert "join: study 'two_drivers'" in second.stderr
    assert PASSWORD not in out1 + err1 + second.stdout + second.stderr

    study = optuna.load_study(study_name="two_drivers", storage=services["storage"])
    # the budget, no more, no duplicate number (a repeat answered from the study is free: asked again)
    numbers = sorted(t.number for t in study.trials)
    assert numbers == list(range(len(numbers)))
    assert len([t for t in study.trials if not t.user_attrs.get("free_repeat")]) == 8
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    drivers = {}
    for t in study.trials:
        drivers[t.user_attrs["driver"]] = drivers.get(t.user_attrs["driver"], 0) + 1
    assert len(drivers) == 2 and all(n >= 1 for n in drivers.values()), (drivers, second.stderr[-3000:])
    print(f"trials per driver: {sorted(drivers.values())}")
    client = MlflowClient(services["tracking"])
    parent = study.user_attrs["mlflow_parent_run_id"]
    exp = client.get_run(parent).info.experiment_id
    kids = client.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(int(k.data.tags["trial"]) for k in kids) == numbers  # one parent run, every trial once
