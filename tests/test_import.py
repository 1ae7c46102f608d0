"""Importing the user's own policy (teacher.from): Stable-Baselines3 zips and plain PyTorch MLPs.

Each imported teacher must act exactly like its source: the artifact's actions (C and numpy
runtimes) against SB3's own `model.predict(obs, deterministic=True)` (VecNormalize applied as SB3
applies it), or against a torch.nn.Sequential the test builds itself, on 256+ observations. Bad
files are one ConfigError each, before any work. The slow tests fine-tune imported teachers in RLlib.
"""

import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from torch import nn

import autocompress as ac
from autocompress import artifact, sources

sb3 = pytest.importorskip("stable_baselines3")
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import VecNormalize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


#: these tests import policies trained for seconds, or not at all, on purpose (what is tested is the import,
#: not the policy), so most are no better than random: each env's worst return stands in for a useless
#: policy (eval.reference_return), which the teacher-margin check (measure.check_teacher_margin) then uses
WORST_RETURN = {"CartPole-v1": 0.0, "Pendulum-v1": -3300.0, "Acrobot-v1": -500.0, "MountainCar-v0": -200.0}


def spec_for(tmp: Path, name: str, env: str, algorithm: str, source: Path, **teacher) -> Path:
    data = {"name": name, "env": env, "algorithm": algorithm, "seed": 1,
            "teacher": {"from": str(source), **teacher},
            "training": ({"train_batch_size_per_learner": 500, "minibatch_size": 64, "num_epochs": 2}
                         if algorithm == "PPO" else {}),
            "finetune": {"iterations": 1}, "eval": {"episodes": 2, "seed": 500},
            "latency": {"warmup": 10, "calls": 200, "rounds": 2}, "sample_steps": 200}
    if env in WORST_RETURN:
        data["eval"]["reference_return"] = WORST_RETURN[env]
    if algorithm != "PPO":
        data["reporting"] = {"min_sample_timesteps_per_iteration": 200}
        data["training"] = {"num_steps_sampled_before_learning_starts": 100}
    path = tmp / f"spec-{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Tiny SB3 models (seconds each): the architectures vary, the training hardly matters."""
    d = tmp_path_factory.mktemp("sb3")
    out = {}
    m = sb3.PPO("MlpPolicy", "CartPole-v1", n_steps=128, batch_size=64, seed=0,
                policy_kwargs=dict(net_arch=dict(pi=[32, 32], vf=[16]), activation_fn=nn.ReLU))
    m.learn(128)
    m.save(d / "ppo.zip")
    out["ppo"] = d / "ppo.zip"
    m = sb3.A2C("MlpPolicy", "CartPole-v1", seed=0, policy_kwargs=dict(net_arch=[24], activation_fn=nn.ELU))
    m.learn(50)
    m.save(d / "a2c.zip")
    out["a2c"] = d / "a2c.zip"
    m = sb3.DQN("MlpPolicy", "CartPole-v1", learning_starts=50, seed=0,
                policy_kwargs=dict(net_arch=[32, 16], activation_fn=nn.SiLU))
    m.learn(100)
    m.save(d / "dqn.zip")
    out["dqn"] = d / "dqn.zip"
    venv = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=0))
    m = sb3.SAC("MlpPolicy", venv, learning_starts=50, seed=0, policy_kwargs=dict(net_arch=[32, 32]))
    m.learn(100)
    m.save(d / "sac.zip")
    venv.save(d / "sac_vecnormalize.pkl")
    out["sac"] = d / "sac.zip"
    venv = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=0))
    m = sb3.PPO("MlpPolicy", venv, n_steps=64, batch_size=32, seed=0, policy_kwargs=dict(log_std_init=-1.0))
    m.learn(64)
    (d / "ppoc").mkdir()
    m.save(d / "ppoc" / "ppoc.zip")
    venv.save(d / "ppoc" / "vec_normalize.pkl")  # the other default name
    out["ppoc"] = d / "ppoc" / "ppoc.zip"
    m = sb3.PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, policy_kwargs=dict(activation_fn=nn.Sigmoid))
    m.save(d / "sigmoid.zip")
    out["sigmoid"] = d / "sigmoid.zip"
    return out


CASES = {  # model -> env, spec algorithm
    "ppo": ("CartPole-v1", "PPO"), "a2c": ("CartPole-v1", "PPO"), "dqn": ("CartPole-v1", "DQN"),
    "sac": ("Pendulum-v1", "SAC"), "ppoc": ("Pendulum-v1", "PPO"),
}


def observations(env_id: str, n: int = 300) -> np.ndarray:
    """States a random policy visits plus samples of the observation space (some far out of range)."""
    env = gym.make(env_id)
    obs, out = env.reset(seed=0)[0], []
    for _ in range(n // 2):
        out.append(obs)
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            obs = env.reset()[0]
    space = env.observation_space
    wide = gym.spaces.Box(np.maximum(space.low, -5.0), np.minimum(space.high, 5.0), dtype=np.float32)
    wide.seed(0)
    out += [wide.sample() for _ in range(n - len(out))]
    return np.asarray(out, np.float32)


@pytest.mark.parametrize("name", list(CASES))
def test_sb3_import_acts_like_model_predict(models, name, tmp_path):
    env_id, algorithm = CASES[name]
    spec = ac.load_trial_spec(spec_for(tmp_path, name, env_id, algorithm, models[name]))
    imported = sources.load(spec)
    model = getattr(sb3, imported.source_algorithm).load(models[name], device="cpu")
    vn_file = models[name].with_name("vec_normalize.pkl" if name == "ppoc" else f"{name}_vecnormalize.pkl")
    vn = VecNormalize.load(str(vn_file), make_vec_env(env_id, n_envs=1)) if vn_file.exists() else None
    assert (vn is not None) == ("obs_norm" in imported.head)
    data = artifact.to_bytes(imported.actor, imported.head)
    runtimes = [ac.Policy.from_bytes(data, "numpy"), ac.Policy.from_bytes(data, "c")]
    obs = observations(env_id)
    for o in obs:
        x = o[None] if vn is None else vn.normalize_obs(o[None])
        want = model.predict(x, deterministic=True)[0][0]
        for policy in runtimes:
            got = policy.act(o)
            if imported.head["kind"] == "discrete":
                assert got == int(want)
            else:
                np.testing.assert_allclose(got, want, atol=2e-5)


def test_sb3_architecture_is_read_from_the_file(models, tmp_path):
    spec = ac.load_trial_spec(spec_for(tmp_path, "ppo", "CartPole-v1", "PPO", models["ppo"]))
    imported = sources.load(spec)
    assert imported.describe() == ["4->32 relu", "32->32 relu", "32->2 none"]
    assert [layer.out_features for layer in imported.critic.layers] == [16, 1]  # vf=[16] + value head
    dqn = sources.load(ac.load_trial_spec(spec_for(tmp_path, "dqn", "CartPole-v1", "DQN", models["dqn"])))
    assert dqn.describe() == ["4->32 silu", "32->16 silu", "16->2 none"] and dqn.critic is None
    sac = sources.load(ac.load_trial_spec(spec_for(tmp_path, "sac", "Pendulum-v1", "SAC", models["sac"])))
    assert sac.head["squash"] == "tanh" and sac.actor.out_dim == 2  # (mean, log_std) of a 1-D action


def test_torch_mlp_import_acts_like_the_users_module(tmp_path):
    torch.manual_seed(0)
    user = nn.Sequential(nn.Linear(3, 20), nn.Tanh(), nn.Linear(20, 20), nn.Tanh(), nn.Linear(20, 1))
    torch.save({"fc1." + k[2:] if k.startswith("0.") else "fc2." + k[2:] if k.startswith("2.") else "mu." + k[2:]: v
                for k, v in user.state_dict().items()}, tmp_path / "actor.pt")
    norm = {"mean": [0.1, -0.2, 0.3], "std": [0.5, 1.5, 2.0], "clip": 5.0}
    (tmp_path / "actor.yaml").write_text(yaml.safe_dump({
        "algorithm": "SAC", "layers": ["fc1", "fc2", "mu"], "activation": "tanh", "head": "continuous",
        "squash": "tanh", "obs_norm": norm}))
    spec = ac.load_trial_spec(spec_for(tmp_path, "mlp", "Pendulum-v1", "SAC", tmp_path / "actor.pt"))
    imported = sources.load(spec)
    policy = ac.Policy.from_net(imported.actor, imported.head, "c")
    mean, std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
    for o in observations("Pendulum-v1", 256):
        x = np.clip((o - mean) / std, -5, 5)
        with torch.no_grad():
            want = 2.0 * np.tanh(user(torch.as_tensor(x[None]))[0].numpy())  # Pendulum bounds [-2, 2]
        np.testing.assert_allclose(policy.act(o), want, atol=2e-5)


# -- bad input: one clear error each, before any work ------------------------------------------

def cli(*args):
    return subprocess.run([sys.executable, "-m", "autocompress.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def test_bad_imports_are_one_clear_error(models, tmp_path):
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(models["ppo"].read_bytes()[:300])
    (tmp_path / "conv.pt").write_bytes(b"")
    torch.save({"c.weight": torch.zeros(4, 3, 3, 3), "c.bias": torch.zeros(4)}, tmp_path / "conv.pt")
    (tmp_path / "conv.yaml").write_text(yaml.safe_dump({"algorithm": "PPO", "layers": ["c"], "activation": "relu",
                                                         "head": "discrete"}))
    cases = [
        (spec_for(tmp_path, "trunc", "CartPole-v1", "PPO", truncated), "not a readable Stable-Baselines3 zip"),
        (spec_for(tmp_path, "obs", "Acrobot-v1", "PPO", models["ppo"]), "observation space"),
        (spec_for(tmp_path, "act", "MountainCar-v0", "PPO", models["sac"]), "observation space"),
        (spec_for(tmp_path, "algo", "CartPole-v1", "PPO", models["dqn"]), "a DQN policy, but the trial spec's algorithm"),
        (spec_for(tmp_path, "sig", "CartPole-v1", "PPO", models["sigmoid"]), "unsupported layer Sigmoid"),
        (spec_for(tmp_path, "conv", "CartPole-v1", "PPO", tmp_path / "conv.pt"), "'c' is not a Linear layer"),
        (spec_for(tmp_path, "novn", "Pendulum-v1", "SAC", models["sac"], vecnormalize=str(tmp_path / "gone.pkl")),
         "teacher.vecnormalize"),
    ]
    for path, message in cases:
        run_dir = tmp_path / f"run-{path.stem}"
        r = cli("compress", path, "--config", ROOT / "configs" / "int8_ptq.yaml", "-o", run_dir)
        assert r.returncode == 2, (path.stem, r.stderr[-2000:])
        assert message in r.stderr and "Traceback" not in r.stderr, (path.stem, r.stderr[-2000:])
        assert not run_dir.exists()


def test_search_with_a_bad_import_creates_no_run_dir(models, tmp_path):
    spec = spec_for(tmp_path, "algo", "CartPole-v1", "PPO", models["dqn"])
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({"name": "bad", "trial_spec": str(spec),
                                                         "techniques": {"quantize": {"bits": 8}}}))
    with pytest.raises(ac.ConfigError, match="a DQN policy"):
        ac.search(tmp_path / "space.yaml", run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_validate_reports_the_import_next_to_its_source(models, tmp_path):
    spec = spec_for(tmp_path, "a2c", "CartPole-v1", "PPO", models["a2c"])
    report = ac.inspect_import(spec, episodes=3)
    assert report["format"] == "sb3" and report["algorithm"] == "A2C" and report["fine_tuned_as"] == "PPO"
    assert report["return"] == report["source_return"] and report["action_agreement"] == 1.0
    assert report["critic"] == "from the file" and report["layers"] == ["4->24 elu", "24->2 none"]
    r = cli("validate", spec, "--episodes", "2")
    assert r.returncode == 0 and "imported sb3 A2C policy" in r.stdout and "same action on 100.0%" in r.stdout


# -- fine-tuning imported teachers in RLlib (critics from the file, or warmed up) ------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["ppo", "dqn", "sac", "ppoc"])
def test_imported_teacher_compress_finetune_export(models, name, tmp_path):
    env_id, algorithm = CASES[name]
    spec = ac.load_trial_spec(spec_for(tmp_path, name, env_id, algorithm, models[name], critic_warmup=1))
    logs: list[str] = []
    r = ac.compress(spec, {"prune": {"sparsity": 0.5}}, output_dir=tmp_path / "out", cache_dir=tmp_path / "cache",
                    log=logs.append)
    assert r.bytes < r.teacher_bytes and np.isfinite(r.return_ratio) and r.sparsity == pytest.approx(0.5, abs=0.01)
    assert r.timings.get("rllib_train", 0) > 0  # it really fine-tuned
    assert any("critic warm-up" in m for m in logs) == (name == "sac")  # SB3 SAC critics are not imported
    teacher = ac.teach(spec, cache_dir=tmp_path / "cache", train=False)
    assert teacher.info["source"]["format"] == "sb3"
    # the teacher's bytes and latency are measured from its own imported weights
    assert r.teacher_bytes == len(artifact.to_bytes(teacher.actor, teacher.info["head"]))
    policy = ac.Policy.load(r.artifact)
    assert np.isfinite(ac.evaluate(policy, spec, episodes=1)).all()


@pytest.mark.slow
def test_torch_mlp_ppo_without_critic_is_warmed_up_then_fine_tuned(tmp_path):
    torch.manual_seed(0)
    torch.save({"a.weight": torch.randn(16, 4) * 0.3, "a.bias": torch.zeros(16), "b.weight": torch.randn(2, 16) * 0.3,
                "b.bias": torch.zeros(2)}, tmp_path / "pi.pt")
    (tmp_path / "pi.yaml").write_text(yaml.safe_dump({"algorithm": "PPO", "layers": ["a", "b"], "activation": "relu",
                                                       "head": "discrete"}))
    spec = ac.load_trial_spec(spec_for(tmp_path, "mlp_ppo", "CartPole-v1", "PPO", tmp_path / "pi.pt",
                                       critic_warmup=1))
    logs: list[str] = []
    r = ac.compress(spec, {"quantize": {"bits": 8}}, output_dir=tmp_path / "out", cache_dir=tmp_path / "cache",
                    log=logs.append)
    assert any(m.startswith("critic warm-up: 1 iterations") for m in logs) and r.timings["critic_warmup"] > 0
    assert r.timings["techniques"] >= 0  # the warm-up is timed on its own, not inside rllib_build too
    assert r.bytes < r.teacher_bytes and np.isfinite(r.return_mean)


# -- RLlib checkpoints (new API stack, RLlib's default modules), trained here by RLlib alone --------

def _rllib_checkpoint(kind: str, path: Path) -> None:
    from ray.rllib.algorithms.dqn import DQNConfig
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.algorithms.sac import SACConfig
    from ray.rllib.connectors.env_to_module.mean_std_filter import MeanStdFilter

    small = {"num_steps_sampled_before_learning_starts": 100}
    cfg = {
        "ppo": PPOConfig().environment("CartPole-v1").env_runners(
            num_env_runners=0, env_to_module_connector=lambda *a, **k: MeanStdFilter())
        .training(train_batch_size_per_learner=256, minibatch_size=64, num_epochs=1)
        .rl_module(model_config={"fcnet_hiddens": [32, 32], "fcnet_activation": "relu", "vf_share_layers": False}),
        "ppoc": PPOConfig().environment("Pendulum-v1").env_runners(num_env_runners=0)
        .training(train_batch_size_per_learner=256, minibatch_size=64, num_epochs=1)
        .rl_module(model_config={"fcnet_hiddens": [16], "fcnet_activation": "elu", "vf_share_layers": True,
                                 "free_log_std": True}),
        "dqn": DQNConfig().environment("CartPole-v1").env_runners(num_env_runners=0).training(**small)
        .reporting(min_sample_timesteps_per_iteration=200)
        .rl_module(model_config={"fcnet_hiddens": [32], "fcnet_activation": "silu", "head_fcnet_hiddens": [16]}),
        "sac": SACConfig().environment("Pendulum-v1").env_runners(num_env_runners=0).training(**small)
        .reporting(min_sample_timesteps_per_iteration=200).rl_module(model_config={"fcnet_hiddens": [24, 24]}),
    }[kind].learners(num_learners=0).debugging(seed=0)
    algo = cfg.build_algo()
    try:
        algo.train()
        algo.save_to_path(str(path))
    finally:
        algo.stop()


@pytest.fixture(scope="module")
def rllib_checkpoints(tmp_path_factory) -> dict[str, Path]:
    from autocompress.rl import ensure_ray

    ensure_ray()
    d = tmp_path_factory.mktemp("rllib")
    for kind in ("ppo", "ppoc", "dqn", "sac"):
        _rllib_checkpoint(kind, d / kind)
    return {k: d / k for k in ("ppo", "ppoc", "dqn", "sac")}


RLLIB = {"ppo": ("CartPole-v1", "PPO"), "ppoc": ("Pendulum-v1", "PPO"), "dqn": ("CartPole-v1", "DQN"),
         "sac": ("Pendulum-v1", "SAC")}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(RLLIB))
def test_rllib_checkpoint_import_acts_like_forward_inference(rllib_checkpoints, kind, tmp_path):
    """Against RLlib's own forward_inference + MeanStdFilter + unsquashing, on the module that
    RLModule.from_checkpoint rebuilds (not the adapter's reference)."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    from autocompress import rl

    env_id, algorithm = RLLIB[kind]
    spec = ac.load_trial_spec(spec_for(tmp_path, kind, env_id, algorithm, rllib_checkpoints[kind]))
    imported = sources.load(spec)
    assert imported.format == "rllib" and (kind == "ppo") == ("obs_norm" in imported.head)
    module = RLModule.from_checkpoint(str(rllib_checkpoints[kind] / "learner_group" / "learner" / "rl_module" /
                                          "default_policy"))
    obs = observations(env_id, 256)
    want = rl.module_actions(module, obs, imported.obs_stats, gym.make(env_id).action_space)
    policy = ac.Policy.from_net(imported.actor, imported.head, "c")
    for o, w in zip(obs, want):
        if imported.head["kind"] == "discrete":
            assert policy.act(o) == int(w)
        else:
            np.testing.assert_allclose(policy.act(o), w, atol=2e-5)
    if kind == "dqn":  # dueling heads with a hidden layer: A and V side by side, combined exactly
        assert imported.describe() == ["4->32 silu", "32->32 relu", "32->2 none"]


@pytest.mark.slow
def test_rllib_checkpoint_compress_finetune_export(rllib_checkpoints, tmp_path):
    spec = ac.load_trial_spec(spec_for(tmp_path, "rl_ppo", "CartPole-v1", "PPO", rllib_checkpoints["ppo"]))
    r = ac.compress(spec, {"quantize": {"bits": 8}}, output_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    assert r.bytes < r.teacher_bytes and r.timings.get("rllib_train", 0) > 0 and np.isfinite(r.return_ratio)
    teacher = ac.teach(spec, cache_dir=tmp_path / "cache", train=False)
    assert teacher.info["critic_spec"] and teacher.info["obs_stats"]["count"] > 0  # critic and filter came along
