"""Importing SB3-contrib's RecurrentPPO (MlpLstmPolicy) as a recurrent teacher (issue 28).

The models are built with random weights (spread out so the actions depend on the LSTM state) and saved, not
trained: what is tested is the import. Each must act as RecurrentPPO's own stateful
`predict(obs, state=..., episode_start=..., deterministic=True)` over whole episodes (>= 256 steps, the state
carried and each episode's start passed as SB3-contrib's loop passes it), and then compress (compress_net: the
`compress` pipeline refuses a recurrent teacher until RLlib fine-tuning of one is built).
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import STEPS, agree, assert_compressed_import_acts, episode_obs

import autocompress as ac
from autocompress import sources
from autocompress.errors import ConfigError
from autocompress.nets import torch_act

pytest.importorskip("stable_baselines3")
sb3_contrib = pytest.importorskip("sb3_contrib")
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import VecNormalize  # noqa: E402


def save_recurrent_ppo(tmp: Path, env_id: str, vecnormalize: bool = False, **policy_kwargs) -> Path:
    """A RecurrentPPO MlpLstmPolicy (8 LSTM units, a 16-unit tanh policy net) with seeded random weights, saved
    as a zip; with VecNormalize statistics (random, not fitted) beside it when asked."""
    env = make_vec_env(env_id, n_envs=1, seed=0)
    model = sb3_contrib.RecurrentPPO("MlpLstmPolicy", env, n_steps=32, batch_size=32, seed=0, device="cpu",
                                     policy_kwargs=dict(lstm_hidden_size=8, net_arch=[16], **policy_kwargs))
    rng = np.random.default_rng(6)  # CartPole episodes of about 75 steps, 4 in 10 actions decided by the state
    policy = model.policy
    with torch.no_grad():  # SB3's init gives near-uniform logits (action_net gain 0.01): spread them out, the
        # actor's alike in every variant; without biases after the LSTM, whose state then decides many actions
        for name, p in [(f"{m}.{k}", p) for m in ("lstm_actor", "mlp_extractor.policy_net", "action_net")
                        for k, p in policy.get_submodule(m).named_parameters()]:
            keep = "weight" in name or name.startswith("lstm")
            p.copy_(torch.as_tensor(rng.standard_normal(tuple(p.shape)) * keep, dtype=p.dtype))
    path = tmp / f"{env_id}-{'-'.join(map(str, policy_kwargs.values())) or 'default'}.zip"
    model.save(path)
    if vecnormalize:
        vn = VecNormalize(env)
        vn.obs_rms.mean = rng.standard_normal(vn.obs_rms.mean.shape)
        vn.obs_rms.var = rng.uniform(0.3, 3.0, vn.obs_rms.var.shape)
        vn.save(path.with_name("vec_normalize.pkl"))
    return path


def spec_file(tmp: Path, env_id: str, source: Path) -> Path:
    p = tmp / "spec.yaml"
    p.write_text(yaml.safe_dump({"name": "rppo", "env": env_id, "algorithm": "PPO", "seed": 1,
                                 "teacher": {"from": str(source)}}))
    return p


def import_recurrent(tmp: Path, env_id: str, source: Path):
    return sources.load(ac.load_trial_spec(spec_file(tmp, env_id, source)), recurrent=True)


@pytest.mark.parametrize("env_id, kwargs, critic", [
    ("CartPole-v1", {}, "enable_critic_lstm: its own LSTM"),
    ("CartPole-v1", {"shared_lstm": True, "enable_critic_lstm": False}, "shared_lstm: the actor's LSTM"),
    ("CartPole-v1", {"enable_critic_lstm": False}, "a Linear on the features"),
    ("Pendulum-v1", {"vecnormalize": True}, "enable_critic_lstm: its own LSTM"),
])
def test_recurrent_ppo_acts_like_its_stateful_predict_over_whole_episodes(tmp_path, env_id, kwargs, critic):
    path = save_recurrent_ppo(tmp_path, env_id, **kwargs)
    imported = import_recurrent(tmp_path, env_id, path)
    n_out = 2  # CartPole's two logits; Pendulum's action mean and log-std
    obs_dim = 4 if env_id == "CartPole-v1" else 3
    assert (imported.source_algorithm, imported.algorithm) == ("RecurrentPPO", "PPO")
    assert imported.describe() == [f"lstm {obs_dim}->8", "8->16 tanh", f"16->{n_out} none"]
    assert imported.critic is None and any(critic in note for note in imported.notes)
    assert ("obs_norm" in imported.head) == bool(kwargs.get("vecnormalize"))
    policy = ac.Policy.from_net(imported.actor, imported.head)
    discrete = env_id == "CartPole-v1"
    # fp32 in both: a Box action agrees to float rounding, a discrete one exactly
    assert agree([imported.source_act, policy.act, torch_act(imported.actor, imported.head)], env_id,
                 atol=0.0 if discrete else 1e-5) >= STEPS
    # the state decides actions: many of them differ from those of the same policy started afresh at every step
    policy.reset()
    changed = sum(not np.allclose(policy.act(o, policy.initial_state())[0], policy.act(o), atol=1e-3)
                  for o in episode_obs(imported.source_act, env_id))
    assert changed >= 5


def test_a_recurrent_ppo_zip_is_recognised_and_gated_like_every_recurrent_teacher(tmp_path, monkeypatch):
    path = save_recurrent_ppo(tmp_path, "CartPole-v1")
    spec = ac.load_trial_spec(spec_file(tmp_path, "CartPole-v1", path))
    assert sources.detect(path) == "sb3"
    with pytest.raises(ConfigError, match="a recurrent \\(lstm\\) policy: .*PPO fine-tunes it\\), but teach"):
        sources.load(spec)  # teach / validate / inspect: before any work
    monkeypatch.setitem(sys.modules, "sb3_contrib", None)  # as if the sb3 extra were an older install
    with pytest.raises(ConfigError, match="a RecurrentPPO model needs sb3-contrib"):
        sources.load(spec, recurrent=True)


def test_several_lstm_layers_are_one_error_naming_n_lstm_layers(tmp_path):
    path = save_recurrent_ppo(tmp_path, "CartPole-v1", n_lstm_layers=2)
    with pytest.raises(ConfigError, match="n_lstm_layers=2: not supported; autocompress imports one unidirectional "
                                          "LSTM layer"):
        import_recurrent(tmp_path, "CartPole-v1", path)


def test_imported_recurrent_ppo_compresses_and_its_artifact_acts_as_the_compressed_net(tmp_path):
    imported = import_recurrent(tmp_path, "CartPole-v1", save_recurrent_ppo(tmp_path, "CartPole-v1"))
    assert_compressed_import_acts(imported, "CartPole-v1")
