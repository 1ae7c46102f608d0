"""Every algorithm at a tiny budget: teach -> one compressed trial -> export -> evaluate, and
the exported artifact acts exactly as RLlib's own module (with its action unsquashing) does."""

from pathlib import Path

import numpy as np
import pytest

from autocompress import artifact, envs, measure, rl
from autocompress import teacher as teachers
from autocompress.config import CompressConfig, TrialSpec
from autocompress.pipeline import build_compressed, compress_trial
from autocompress.runtime import NumpyPolicy

pytestmark = pytest.mark.slow

BASE = {"seed": 1, "teacher": {"hidden": [64, 64], "max_iterations": 2},
        "finetune": {"iterations": 1, "lr": 1e-4}, "eval": {"episodes": 2, "seed": 1000},
        "latency": {"warmup": 10, "calls": 100, "rounds": 2}, "sample_steps": 200}
FAST = {
    "PPO": {"training": {"train_batch_size_per_learner": 400, "minibatch_size": 64, "num_epochs": 2}},
    "DQN": {"training": {"num_steps_sampled_before_learning_starts": 100}, "reporting":
            {"min_sample_timesteps_per_iteration": 300}},
    "SAC": {"training": {"num_steps_sampled_before_learning_starts": 100, "train_batch_size_per_learner": 64},
            "reporting": {"min_sample_timesteps_per_iteration": 200}},
}
CASES = [("PPO", "Pendulum-v1", False), ("DQN", "CartPole-v1", False), ("SAC", "Pendulum-v1", False),
         ("PPO", "autocompress.examples.corridor:Corridor", False), ("SAC", "Pendulum-v1", True)]
CFG = {"structured": {"amount": 0.5, "criterion": "l1"}, "prune": {"sparsity": 0.5}, "quantize": {"bits": 6, "mode": "qat"}}


def spec_for(algo, env, normalize_obs=False):
    spec = {**BASE, **FAST[algo], "name": f"tiny_{algo}", "env": env, "algorithm": algo}
    spec["teacher"] = {**spec["teacher"], "normalize_obs": normalize_obs}
    return TrialSpec.model_validate(spec)


@pytest.mark.parametrize("algo,env,normalize_obs", CASES,
                         ids=[f"{a}-{e.split(':')[-1]}{'-normalized' if n else ''}" for a, e, n in CASES])
def test_algorithm_end_to_end(tmp_path, algo, env, normalize_obs):
    spec = spec_for(algo, env, normalize_obs)
    cfg = CompressConfig.model_validate(CFG)
    net, teacher, rounds, *_ = build_compressed(spec, cfg, tmp_path / "cache", log=lambda m: None)
    head = teacher.info["head"]
    assert head["kind"] == ("discrete" if algo == "DQN" or "Corridor" in env else "continuous")
    assert len(rounds) == 1 and net.hidden_widths() == [32, 32]
    if normalize_obs:  # the teacher's filter statistics, frozen, are part of how the policy acts
        stats = teacher.info["obs_stats"]
        assert stats["count"] > 100 and np.ptp(head["obs_norm"]["std"]) > 0.1
    else:
        assert "obs_norm" not in head and teacher.info["obs_stats"] is None

    # the exported artifact acts exactly as RLlib's module holding the compressed net
    policy = NumpyPolicy.from_bytes(artifact.to_bytes(net, head))
    make_env = spec.env_creator()
    obs = measure.collect_obs(policy.act, make_env, 64, seed=11)
    session = rl.Session(spec, net, teacher.state, obs_stats=teacher.info["obs_stats"])
    try:
        expected = session.rllib_actions(obs)
        if normalize_obs:  # fine-tuning holds the teacher's statistics: they are what the artifact carries
            session.train(1, log=lambda m: None)
            assert session.obs_stats() == teacher.info["obs_stats"]
    finally:
        session.stop()
    got = np.array([policy.act(o) for o in obs])
    np.testing.assert_allclose(got.reshape(expected.shape), expected, atol=1e-5)

    # and the full trial measures that artifact
    r = compress_trial(spec, cfg, tmp_path / "out", tmp_path / "cache", log=lambda m: None).to_dict()
    assert Path(r["artifact"]).stat().st_size == r["bytes"] and r["bytes_ratio"] < 0.2
    assert np.isfinite(r["return_ratio"]) and len(r["returns"]) == 2


def test_ppo_critic_compressed_with_its_own_settings(tmp_path):
    """`critic:` prunes and quantizes PPO's value net separately; it is fine-tuned with its masks
    held, reported, and never part of the deployed artifact."""
    
    spec = spec_for("PPO", "CartPole-v1")
    cfg = CompressConfig.model_validate({"prune": {"sparsity": 0.5},
                                         "critic": {"prune": {"sparsity": 0.8}, "quantize": {"bits": 4, "mode": "qat"}}})
    out = build_compressed(spec, cfg, tmp_path / "cache", log=lambda m: None)
    assert out.critic is not None and abs(out.critic.sparsity() - 0.8) < 0.01  # mask held through fine-tuning
    assert abs(out.net.sparsity() - 0.5) < 0.01 and out.critic.layers[0].quant["bits"] == 4
    trained = out.teacher_critic.layers[0].weight.detach()
    kept = out.critic.layers[0].mask.bool()
    assert not np.allclose(out.critic.layers[0].raw_weight().detach()[kept], trained[kept])  # it was trained
    r = compress_trial(spec, cfg, tmp_path / "out", tmp_path / "cache", log=lambda m: None).to_dict()
    assert r["critic_bytes_ratio"] < 0.2
    plain = compress_trial(spec, CompressConfig.model_validate({"prune": {"sparsity": 0.5}}), tmp_path / "o2",
                           tmp_path / "cache", log=lambda m: None).to_dict()
    assert r["bytes"] == plain["bytes"] and plain["critic_bytes"] is None  # the deployed artifact is the actor alone


def test_keep_best_finetune_returns_the_best_checked_net(tmp_path, monkeypatch):
    """finetune.keep_best: the net before fine-tuning and after each iteration are checked on
    finetune.check_episodes seeded episodes; the net kept is the one with the best check."""
    from autocompress import pipeline
    from autocompress.nets import torch_act

    spec = spec_for("DQN", "CartPole-v1")
    spec = spec.model_copy(update={"finetune": spec.finetune.model_copy(update={"iterations": 3, "keep_best": True,
                                                                                "check_episodes": 3})})
    teachers.train_teacher(spec, tmp_path / "c", log=lambda m: None)  # its own checks use the same seeds: not counted
    checks: list[float] = []
    real = pipeline.measure.evaluate

    def spy(act, make_env, episodes, seed):
        r = real(act, make_env, episodes, seed)
        if seed == spec.seed + 77_777:
            assert episodes == 3
            checks.append(float(r.mean()))
        return r

    monkeypatch.setattr(pipeline.measure, "evaluate", spy)
    out = build_compressed(spec, CompressConfig.model_validate({"prune": {"sparsity": 0.5}}), tmp_path / "c",
                           log=lambda m: None)
    assert len(checks) == 4  # before fine-tuning + after each of 3 iterations
    kept = real(torch_act(out.net, out.teacher.info["head"]), envs.env_creator(spec.env), 3, spec.seed + 77_777)
    assert float(kept.mean()) == max(checks)
