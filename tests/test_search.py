"""A real search at a tiny budget: Optuna + Ray tasks + RLlib + MLflow, through the CLI."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from autocompress._search import load_run
from autocompress._search.study import MAX_FREE_REPEATS, finished
from conftest import tiny_cartpole

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "autocompress.cli"]

TRIAL = tiny_cartpole("tiny_search", finetune_iterations=1)
SPACE = {
    "name": "tiny", "trial_spec": "trial.yaml", "constraints": {"min_return_ratio": 0.5},
    "budget": {"trials": 6, "parallel": 2}, "seed": 1,
    "techniques": {"prune": {"sparsity": {"low": 0.5, "high": 0.9}}, "quantize": {"bits": {"low": 2, "high": 8}},
                   "structured": {"amount": {"low": 0.25, "high": 0.75}}},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("search")
    (d / "trial.yaml").write_text(yaml.safe_dump(TRIAL))
    (d / "space.yaml").write_text(yaml.safe_dump(SPACE))
    # one teacher for every search in this module
    subprocess.run([*CLI, "teach", d / "trial.yaml", "--cache-dir", d / "cache"], check=True, capture_output=True)
    return d


def run(*args, env=None, timeout=900):
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_search_end_to_end(files):
    run_dir = files / "run"
    r = run("search", files / "space.yaml", "--run-dir", run_dir, "--cache-dir", files / "cache",
            env={"AUTOCOMPRESS_FAULT_TRIALS": "4"})
    assert r.returncode == 0, r.stderr[-3000:]
    study, state = load_run(run_dir)
    trials = study.trials
    assert len(trials) == 6
    states = {t.number: t.state for t in trials}
    assert states[4] == TrialState.FAIL and "injected fault" in trials[4].user_attrs["fail_reason"]
    assert sum(s == TrialState.COMPLETE for s in states.values()) == 5
    assert trials[0].user_attrs["config"] == {}  # teacher as-is runs first

    # one latency per compute signature: trials of one signature tie exactly (all but the first took its
    # figures); the teacher timed against itself is stored beside the front
    by_sig: dict = {}
    for t in trials:
        if t.state == TrialState.COMPLETE:
            res = t.user_attrs["result"]
            by_sig.setdefault(res["latency_signature"], []).append((t.number, res))
    for group in by_sig.values():
        assert len({res["latency_ratio"] for _, res in group}) == 1
        assert sum(res["latency_from"] is None for _, res in group) == 1
    floor = json.loads((run_dir / "pareto" / "noise_floor.json").read_text())
    assert floor == study.user_attrs["latency_noise_floor"] and len(floor["ratios"]) == floor["repeats"]
    assert f"{floor['min']:.3f}-{floor['max']:.3f}x" in r.stdout

    # two trials were in flight at once. The driver's ask/tell times, not the task bodies': on 2
    # busy cores one Ray worker can finish a tiny trial before the second worker has booted.
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:]))

    # MLflow: parent run + one child per trial, metrics, states, pareto tags == `pareto --json`
    client = MlflowClient(state["tracking_uri"])
    parent = client.get_run(state["parent_run_id"])
    assert parent.info.status == "FINISHED" and "hypervolume" in parent.data.metrics
    # the closing lines link into the MLflow UI: the runs table and the parent run's Pareto plot
    assert state["experiment_id"] == parent.info.experiment_id
    assert f"/#/experiments/{state['experiment_id']}/runs?workflowType=machine_learning" in r.stdout
    assert f"/runs/{parent.info.run_id}/artifacts/pareto/pareto.html" in r.stdout
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "pareto")}
    assert {"pareto/pareto.csv", "pareto/pareto.json", "pareto/pareto.png", "pareto/pareto.html",
            "pareto/hypervolume.png"} <= arts
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 6
    by_trial = {int(c.data.tags["trial"]): c for c in children}
    assert by_trial[4].data.tags["state"] == "FAIL" and "injected fault" in by_trial[4].data.tags["fail_reason"]
    for n, c in by_trial.items():
        if n != 4:
            assert {"return_mean", "latency_ms", "bytes", "return_ratio"} <= set(c.data.metrics)
            assert "policy.acz" in {a.path for a in client.list_artifacts(c.info.run_id)}
    p = run("pareto", run_dir, "--json")
    assert p.returncode == 0, p.stderr
    front = json.loads(p.stdout)
    assert front and {n for n, c in by_trial.items() if c.data.tags["pareto"] == "true"} == {f["trial"] for f in front}
    for f in front:
        assert {"trial", "config", "n_params", "return_mean", "return_ratio", "latency_ms", "latency_ratio",
                "bytes", "bytes_ratio"} <= set(f)

    # pick -> YAML usable as --config; export -> the trial's artifact bytes
    k = run("pick", run_dir, "--min-return-ratio", "0.5", "--minimize", "bytes", "--json")
    assert k.returncode == 0, k.stderr
    best = json.loads(k.stdout)
    assert best["bytes"] == min(t.user_attrs["result"]["bytes"] for t in trials if t.state == TrialState.COMPLETE
                                and t.user_attrs["result"]["return_ratio"] >= 0.5)
    y = run("pick", run_dir, "--min-return-ratio", "0.5", "--minimize", "bytes")
    assert yaml.safe_load(y.stdout) == best["config"]
    none = run("pick", run_dir, "--min-return-ratio", "50")
    assert none.returncode == 2 and "no trial meets all constraints" in none.stderr
    out = files / "best.acz"
    e = run("export", run_dir, "--trial", best["trial"], "--output", out)
    assert e.returncode == 0, e.stderr
    assert out.stat().st_size == best["bytes"]

    # a second search in the same run dir without --resume is refused before any work
    again = run("search", files / "space.yaml", "--run-dir", run_dir)
    assert again.returncode == 2 and "--resume" in again.stderr


def test_a_driver_failure_is_one_clear_error_and_resume_completes_the_search(files):
    run_dir = files / "driver-failed"
    args = ["search", files / "space.yaml", "--run-dir", run_dir, "--cache-dir", files / "cache"]
    r = run(*args, env={"AUTOCOMPRESS_FAULT_TRIALS": "record:2"})
    assert r.returncode == 6, r.stderr[-3000:]
    assert "the search stopped: RuntimeError: injected fault while recording trial 2" in r.stderr
    assert "--resume" in r.stderr and "Traceback" not in r.stderr
    study, _ = load_run(run_dir)
    assert study.trials[2].state == TrialState.RUNNING  # never told: the driver died recording it
    r = run(*args, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    study, _ = load_run(run_dir)
    assert study.trials[2].state == TrialState.FAIL and study.trials[2].user_attrs["interrupted"]
    assert len(finished(study)) == SPACE["budget"]["trials"]  # the budget, the interrupted trials aside
    assert not study.get_trials(states=(TrialState.RUNNING,))


def test_sigkill_then_resume_keeps_complete_trials(files):
    run_dir = files / "killed"
    args = ["search", files / "space.yaml", "--run-dir", run_dir, "--cache-dir", files / "cache", "--trials", "8"]
    proc = subprocess.Popen([*CLI, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 600
        complete = {}
        while time.time() < deadline:
            time.sleep(2)
            if (run_dir / "search.json").exists():
                study, _ = load_run(run_dir)
                complete = {t.number: t.values for t in study.trials if t.state == TrialState.COMPLETE}
                if len(complete) >= 2:
                    break
        assert len(complete) >= 2, "search made no progress"
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, mid-run
        proc.wait()
    study, _ = load_run(run_dir)
    before = {t.number: t.values for t in study.trials if t.state == TrialState.COMPLETE}
    r = run("search", files / "space.yaml", "--run-dir", run_dir, "--cache-dir", files / "cache", "--trials", "8",
            "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    study, _ = load_run(run_dir)
    after = {t.number: t.values for t in study.trials if t.state == TrialState.COMPLETE}
    assert all(after[n] == v for n, v in before.items())
    # the budget: every finished trial but those interrupted by the kill and free repeats (a repeat of an
    # earlier config answered from the study, marked free_repeat)
    counted = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
               and not t.user_attrs.get("interrupted") and not t.user_attrs.get("free_repeat")]
    assert len(counted) == 8
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def test_corrupted_teacher_cache_is_one_clear_error(files, tmp_path):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(files / "cache", cache)
    pt = next(cache.glob("*/teacher.pt"))
    pt.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])  # truncated
    r = run("search", files / "space.yaml", "--run-dir", tmp_path / "run", "--cache-dir", cache)
    assert r.returncode == 3, r.stderr[-2000:]  # TeacherError
    assert "corrupted" in r.stderr and "Traceback" not in r.stderr


def test_killed_workers_are_retried_or_fail_with_reason(files, tmp_path):
    """Trial 1's worker is SIGKILLed once (Ray retries it, it completes); trial 2's on every
    attempt (it ends FAIL, reason recorded); the search completes the rest."""
    run_dir = tmp_path / "run"
    r = run("search", files / "space.yaml", "--run-dir", run_dir, "--cache-dir", files / "cache", "--trials", "4",
            env={"AUTOCOMPRESS_FAULT_TRIALS": "kill-once:1,kill:2"})
    assert r.returncode == 0, r.stderr[-3000:]
    study, _ = load_run(run_dir)
    states = {t.number: t.state for t in study.trials}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.COMPLETE, 2: TrialState.FAIL, 3: TrialState.COMPLETE}
    assert "worker died" in study.trials[2].user_attrs["fail_reason"]


def test_bad_fault_spec_is_rejected(files, tmp_path):
    r = run("search", files / "space.yaml", "--run-dir", tmp_path / "run", env={"AUTOCOMPRESS_FAULT_TRIALS": "boom:1"})
    assert r.returncode == 2 and "AUTOCOMPRESS_FAULT_TRIALS" in r.stderr and not (tmp_path / "run").exists()


def test_a_repeated_config_is_answered_from_the_study(files, tmp_path):
    # one config besides the teacher's: every sampled trial after the two baselines repeats one of them
    space = {"name": "repeats", "trial_spec": str(files / "trial.yaml"), "budget": {"trials": 4, "parallel": 1},
             "seed": 0, "techniques": {"quantize": {"bits": {"choices": [8]}, "symmetric": {"choices": [True]},
                                                    "mode": {"choices": ["ptq"]}}}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    r = run("search", tmp_path / "space.yaml", "--run-dir", tmp_path / "run", "--cache-dir", files / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    study, _ = load_run(tmp_path / "run")
    trials = study.trials
    # repeats do not use the budget: the sampler is asked again, until MAX_FREE_REPEATS came in a row
    assert len(trials) == 2 + MAX_FREE_REPEATS + 2 and len(finished(study)) == 4
    assert [t.state for t in trials] == [TrialState.COMPLETE] * len(trials)
    assert [bool(t.user_attrs.get("free_repeat")) for t in trials] == [False] * 2 + [True] * MAX_FREE_REPEATS + [False] * 2
    assert not any("duplicate_of" in t.user_attrs for t in trials[:2])  # the baselines ran
    for t in trials[2:]:
        same = trials[t.user_attrs["duplicate_of"]]
        assert same.number < 2 and same.user_attrs["config"] == t.user_attrs["config"]
        assert t.values == same.values and t.user_attrs["result"]["trial_seconds"] == 0.0
        mine, theirs = (x.user_attrs["result"]["artifact"] for x in (t, same))
        assert mine != theirs and open(mine, "rb").read() == open(theirs, "rb").read()


def test_teacher_training_inside_a_search_shows_progress(files, tmp_path):
    """No cached teacher: the search trains it, and says how far it is (iteration, return, ETA)."""
    space = {**SPACE, "budget": {"trials": 1, "parallel": 1}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({**space, "trial_spec": str(files / "trial.yaml")}))
    r = run("search", tmp_path / "space.yaml", "--run-dir", tmp_path / "run")
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.startswith("teacher: iter ")]
    assert [line.split()[2].rstrip(":") for line in lines] == ["1/2", "2/2"], r.stderr[-3000:]
    assert all("elapsed" in line and "ETA" in line for line in lines)
