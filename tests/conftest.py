import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from autocompress import measure  # noqa: E402
from autocompress.nets import PolicyNet  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float = 90, proc: subprocess.Popen | None = None) -> bool:
    """True once check() holds; False when `proc` exits first or the timeout passes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return True
        except Exception:
            pass
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(1)
    return False


def start_mlflow_server(base: Path, port: int, timeout: float = 120) -> subprocess.Popen:
    """`mlflow server` on loopback (sqlite store, artifacts under `base`), in its own session so that
    stop() ends its workers too; returns once /health answers, or fails with its log's tail."""
    log = base / "mlflow-server.log"
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{base}/mlflow.db",
         "--artifacts-destination", str(base / "mlartifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], stdout=subprocess.DEVNULL, stderr=open(log, "a"), start_new_session=True,
        # no job runner (GenAI scorers: 7 more processes that start slowly and stay for the whole suite)
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    if wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status == 200,
                  timeout, proc):
        return proc
    stop(proc)
    pytest.fail(f"mlflow server did not start:\n{log.read_text(errors='replace')[-3000:]}")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 60) -> None:
    """Stop a process started in its own session with everything it spawned (SIGKILL after `grace` s)."""
    for s in (sig, signal.SIGKILL):
        try:
            os.killpg(proc.pid, s)
            proc.wait(timeout=grace)
            return
        except ProcessLookupError:
            proc.wait()
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture
def net() -> PolicyNet:
    """A teacher-shaped MLP (4 -> 64 -> 64 -> 2) with reproducible random weights."""
    torch.manual_seed(0)
    return PolicyNet.mlp(4, [64, 64], 2)


@pytest.fixture
def obs() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32)


def tiny_cartpole(name: str, finetune_iterations: int) -> dict:
    """A trial spec that really trains, at a tiny budget: a 2-iteration [64, 64] PPO teacher."""
    return {
        "name": name, "env": "CartPole-v1", "seed": 3,
        "teacher": {"hidden": [64, 64], "max_iterations": 2},
        "training": {"train_batch_size_per_learner": 500, "minibatch_size": 64, "num_epochs": 2},
        "finetune": {"iterations": finetune_iterations, "lr": 1e-4},
        # apart from sample_obs (seeds 3..202). A 2-iteration teacher on 3 episodes may lead a random policy
        # by less than the margin check asks (47 vs 37 in one CI run): CartPole's worst return, 0, stands in
        # for a useless policy (eval.reference_return); the ratios are unchanged (returns are positive)
        "eval": {"episodes": 3, "seed": 1000, "reference_return": 0.0},
        "latency": {"warmup": 10, "calls": 200, "rounds": 2},
        "sample_steps": 200,
    }


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def search_run(tmp_path_factory) -> Path:
    """A tiny finished search (3 trials of int8..4-bit PTQ on the committed CartPole teacher), shared by
    the tests that read a run dir (API examples, exports, MLflow); they must not change it (but for what
    `pick` keeps in the study: its chosen trial's fresh-episode values)."""
    import yaml

    import autocompress as ac

    d = tmp_path_factory.mktemp("api_run")
    spec = yaml.safe_load((ROOT / "trials" / "cartpole_ppo.yaml").read_text())
    spec.update(finetune={"iterations": 0}, eval={"episodes": 3}, latency={"calls": 200})
    (d / "trial.yaml").write_text(yaml.safe_dump(spec))
    space = yaml.safe_load((ROOT / "search_spaces" / "cartpole_ppo.yaml").read_text())
    space.update(trial_spec="trial.yaml", techniques={"quantize": {"bits": {"low": 4, "high": 8}}})
    (d / "space.yaml").write_text(yaml.safe_dump(space))
    run = ac.search(d / "space.yaml", trials=3, run_dir=d / "run", cache_dir=d / "cache")
    assert run.summary["complete"] == 3
    return d / "run"


def readme_commands() -> list[str]:
    """README's command lines that run autocompress (indented code), `.venv/bin/` as written."""
    lines = [line.strip() for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("    ")]
    return [line for line in lines if re.match(r"(RAY_AUTH_MODE=disabled )?\.venv/bin/autocompress ", line)]


@pytest.fixture(scope="session")
def readme_tour(tmp_path_factory) -> Path:
    """README's main job and 5-minute tour run as written, in README's order, in a directory laid out as the repo,
    the search cut to 3 trials and `--trial 11` pointed at a trial those 3 made (tests/test_readme_tour.py);
    the guides that go on from its run dir (docs/guides/ship-it.md) take the directory from there."""
    from _shell import repo_dir, sh

    d = repo_dir(tmp_path_factory.mktemp("readme"))
    for line in readme_commands():
        command = line.split("   #")[0]  # README's trailing comments
        if " search " in command:
            command += " --trials 3"
        sh(command.replace("--trial 11", "--trial 2"), d)
    return d


# -- recurrent imports (tests/test_recurrent_*.py) ---------------------------------------------------

STEPS = 256  # issue 28: whole-episode agreement over at least this many steps


def agree(acts: list, env_id, steps: int = STEPS, atol: float = 0.0) -> int:
    """Steps env_id (a Gymnasium id, or a callable that makes the env) with acts[0] over whole episodes until `steps` are done, every act seeing the same observations
    and told of each episode's start (measure.episode_reset); asserts they act alike (Box: within atol) at every
    step. Returns the steps."""
    env, n, ep = gym.make(env_id) if isinstance(env_id, str) else env_id(), 0, 0
    while n < steps:
        obs, _ = env.reset(seed=ep)
        for a in acts:
            measure.episode_reset(a)()
        done = False
        while not done:
            actions = [a(obs) for a in acts]
            for b in actions[1:]:
                np.testing.assert_allclose(b, actions[0], atol=atol, rtol=0, err_msg=f"step {n}")
            obs, _, term, trunc, _ = env.step(actions[0])
            done, n = term or trunc, n + 1
        ep += 1
    return n


def assert_compressed_import_acts(imported, env_id: str) -> None:
    """An imported recurrent actor, pruned 50% + 8-bit by compress_net: its artifact is smaller and acts as the
    compressed torch net over whole episodes (fp32 kernels: int8 would round inputs; in C where it can)."""
    import autocompress as ac
    from autocompress.artifact import to_bytes
    from autocompress.nets import torch_act

    small = ac.compress_net(imported.actor, {"prune": {"sparsity": 0.5}, "quantize": {"bits": 8}})
    assert (small.rnn.hh.mask == 0).any() and small.rnn.ih.quant["bits"] == 8
    data = to_bytes(small, imported.head)
    assert len(data) < len(to_bytes(imported.actor, imported.head))
    policy = ac.Policy.from_bytes(data, kernels=["dense"] * 2)
    assert agree([torch_act(small, imported.head), policy.act], env_id) >= STEPS


def episode_obs(act, env_id: str) -> list[np.ndarray]:
    """The observations of one episode acted by `act` (reset first)."""
    env, out = gym.make(env_id), []
    obs, _ = env.reset(seed=0)
    measure.episode_reset(act)()
    done = False
    while not done:
        out.append(obs)
        obs, _, term, trunc, _ = env.step(act(obs))
        done = term or trunc
    return out
