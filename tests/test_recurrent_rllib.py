"""Importing an RLlib PPO checkpoint with `use_lstm` (new API stack) as a recurrent teacher (issue 28).

The algorithms are built, not trained (their actors' weights spread out so the actions depend on the LSTM state),
and saved with `save_to_path`: what is tested is the import. It must act as RLlib's own stateful inference
(`forward_inference` with Columns.STATE_IN carried, get_initial_state() at each episode's start) over whole episodes
(>= 256 steps), on the module RLModule.from_checkpoint rebuilds, and then compress (compress_net).
"""

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

pytestmark = pytest.mark.slow  # RLlib builds four algorithms (~25 s on 2 shared cores)

#: checkpoint -> (env, model_config beyond use_lstm with 8 cells over a 16-unit tanh tokenizer)
CHECKPOINTS = {
    "separate": ("CartPole-v1", {"vf_share_layers": False, "max_seq_len": 8}),
    "shared": ("CartPole-v1", {"vf_share_layers": True}),
    "box": ("Pendulum-v1", {"vf_share_layers": False}),
    "prev_action": ("CartPole-v1", {"lstm_use_prev_action": True}),
}


def save_lstm_ppo(path: Path, env_id: str, model_config: dict) -> None:
    from ray.rllib.algorithms.ppo import PPOConfig

    cfg = (PPOConfig().environment(env_id).env_runners(num_env_runners=0).learners(num_learners=0)
           .rl_module(model_config={"use_lstm": True, "lstm_cell_size": 8, "fcnet_hiddens": [16], **model_config})
           .debugging(seed=0))
    algo = cfg.build_algo()
    try:
        module = algo.learner_group._learner.module["default_policy"]  # the learner copy is what is saved
        rng = np.random.default_rng(3)
        with torch.no_grad():  # RLlib's init gives near-uniform logits: spread the actor's weights out, no biases
            # after the LSTM, so that its state decides many actions
            for name, p in module.named_parameters():
                if name.startswith(("encoder.actor_encoder.", "encoder.encoder.", "pi.")):
                    scale = ("weight" in name or ".lstm." in name) * (2.0 if ".lstm." in name else 1.0)
                    p.copy_(torch.as_tensor(rng.standard_normal(tuple(p.shape)) * scale, dtype=p.dtype))
        algo.save_to_path(str(path))
    finally:
        algo.stop()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    from autocompress.rl import ensure_ray

    ensure_ray()
    d = tmp_path_factory.mktemp("rllib_lstm")
    for kind, (env_id, model_config) in CHECKPOINTS.items():
        save_lstm_ppo(d / kind, env_id, model_config)
    return {k: d / k for k in CHECKPOINTS}


def import_recurrent(tmp: Path, kind: str, source: Path, recurrent: bool = True):
    p = tmp / "spec.yaml"
    p.write_text(yaml.safe_dump({"name": "rlstm", "env": CHECKPOINTS[kind][0], "algorithm": "PPO", "seed": 1,
                                 "teacher": {"from": str(source)}}))
    return sources.load(ac.load_trial_spec(p), recurrent=recurrent)


class RLlibStateful:
    """The reference, independent of the adapter's: the module RLModule.from_checkpoint rebuilds, stepped with
    forward_inference (batch 1, time 1), STATE_IN carried, get_initial_state() at an episode's start."""

    def __init__(self, checkpoint: Path):
        from ray.rllib.core.columns import Columns
        from ray.rllib.core.rl_module.rl_module import RLModule

        self.module = RLModule.from_checkpoint(str(checkpoint / "learner_group" / "learner" / "rl_module" /
                                                   "default_policy"))
        self.columns, self.state = Columns, None

    def reset(self) -> None:
        self.state = torch.utils._pytree.tree_map(lambda s: s[None], self.module.get_initial_state())

    def __call__(self, obs: np.ndarray):
        from ray.rllib.utils.spaces.space_utils import unsquash_action

        c = self.columns
        with torch.no_grad():
            out = self.module.forward_inference({c.OBS: torch.as_tensor(obs, dtype=torch.float32)[None, None],
                                                 c.STATE_IN: self.state})
        self.state = out[c.STATE_OUT]
        dist = self.module.get_inference_action_dist_cls().from_logits(out[c.ACTION_DIST_INPUTS][:, 0])
        a = dist.to_deterministic().sample().numpy()[0]  # argmax of the logits; a Gaussian's mean
        space = self.module.action_space
        return int(a) if space.shape == () else unsquash_action(a, space)


@pytest.mark.parametrize("kind", ["separate", "shared", "box"])
def test_lstm_checkpoint_acts_like_rllibs_stateful_inference_over_whole_episodes(checkpoints, kind, tmp_path):
    env_id = CHECKPOINTS[kind][0]
    assert sources.detect(checkpoints[kind]) == "rllib"
    imported = import_recurrent(tmp_path, kind, checkpoints[kind])
    obs_dim, n_out = (4, 2) if env_id == "CartPole-v1" else (3, 2)  # logits; the action's mean and log-std
    assert (imported.format, imported.algorithm) == ("rllib", "PPO")
    assert imported.describe() == [f"{obs_dim}->16 tanh", "lstm 16->8", f"8->{n_out} none"]
    assert imported.critic is None and any("critic" in n and "not imported" in n for n in imported.notes)
    policy = ac.Policy.from_net(imported.actor, imported.head)
    discrete = kind != "box"
    acts = [RLlibStateful(checkpoints[kind]), imported.source_act, policy.act, torch_act(imported.actor, imported.head)]
    assert agree(acts, env_id, atol=0.0 if discrete else 2e-5) >= STEPS  # exact, or float rounding
    if discrete:  # the state decides actions: many differ from those of the same policy started afresh every step
        policy.reset()
        changed = sum(policy.act(o, policy.initial_state())[0] != policy.act(o)
                      for o in episode_obs(imported.source_act, env_id))
        assert changed >= 8  # 12 of the first episode's 26 steps with these weights


def test_lstm_checkpoint_is_gated_like_every_recurrent_teacher(checkpoints, tmp_path):
    with pytest.raises(ConfigError, match="a recurrent \\(lstm\\) policy: .*PPO fine-tunes it\\), but teach"):
        import_recurrent(tmp_path, "separate", checkpoints["separate"], recurrent=False)


def test_prev_action_input_is_one_error_naming_the_option(checkpoints, tmp_path):
    with pytest.raises(ConfigError, match="lstm_use_prev_action=True: not supported"):
        import_recurrent(tmp_path, "prev_action", checkpoints["prev_action"])


def test_imported_lstm_checkpoint_compresses_and_its_artifact_acts_as_the_compressed_net(checkpoints, tmp_path):
    imported = import_recurrent(tmp_path, "separate", checkpoints["separate"])
    assert_compressed_import_acts(imported, "CartPole-v1")
