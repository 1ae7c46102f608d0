"""RLlib PPO trains and fine-tunes a recurrent (LSTM / GRU) policy (issue 28): our stateful RLModule steps the
compressed net itself over [B, T] batches, the session moves its weights in and out, and the fine-tuned net's
artifact acts as the torch net over whole episodes of a partially observable env (StatelessCartPole).
"""

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

import autocompress as ac
from autocompress import artifact, pipeline, rl
from autocompress import teacher as teachers
from autocompress.envs import StatelessCartPole
from autocompress.config import CompressConfig, parse
from autocompress.errors import ConfigError
from autocompress.nets import PolicyNet, torch_act

from conftest import STEPS, agree

COMPRESS = {"prune": {"sparsity": 0.5}, "quantize": {"bits": 8, "mode": "qat"}}


def module_of(actor: PolicyNet, critic: PolicyNet, max_seq_len: int = 5):
    """Our PPO module built from the nets' specs (as on a Ray worker), their weights loaded (as Session.push does)."""
    from autocompress._rl_modules import CompressiblePPOModule

    module = CompressiblePPOModule(observation_space=gym.spaces.Box(-5, 5, (2,), np.float32),
                                   action_space=gym.spaces.Discrete(2),
                                   model_config={"actor": actor.spec(), "critic": critic.spec(), "critic_hidden": [8],
                                                 "activation": "tanh", "max_seq_len": max_seq_len})
    module.actor.load_state_dict(actor.state_dict())
    module.critic.load_state_dict(critic.state_dict())
    return module


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_module_over_a_batch_of_sequences_steps_the_compressed_net(cell):
    from ray.rllib.core.columns import Columns

    torch.manual_seed(0)
    actor = ac.compress_net(PolicyNet.recurrent_mlp(2, [8], 2, "tanh", cell, 6, 1), COMPRESS)
    critic = PolicyNet.recurrent_mlp(2, [8], 1, "tanh", cell, 4, 0)
    module = module_of(actor, critic)
    assert module.is_stateful()
    init = module.get_initial_state()
    assert {k: v.shape for k, v in init.items()} == {"actor": (6 * (1 + (cell == "lstm")),),
                                                     "critic": (4 * (1 + (cell == "lstm")),)}  # h (and c)
    assert not any(v.any() for v in init.values())  # zeros, as the nets start an episode
    B, T = 3, 5
    obs = torch.randn(B, T, 2)
    state_in = {k: torch.randn(B, len(v)) for k, v in init.items()}
    batch = {Columns.OBS: obs, Columns.STATE_IN: state_in}
    with torch.no_grad():
        out = module.forward_exploration(batch)
        values = module.compute_values(batch)
        train = module.forward_train(batch)
        want = {name: [] for name in ("actor", "critic")}
        state = dict(state_in)
        for t in range(T):  # the nets stepped T times, state carried
            for name, net in (("actor", actor), ("critic", critic)):
                y, state[name] = net.step(obs[:, t], state[name])
                want[name].append(y)
    logits = torch.stack(want["actor"], 1)
    torch.testing.assert_close(out[Columns.ACTION_DIST_INPUTS], logits, rtol=0, atol=0)
    torch.testing.assert_close(train[Columns.ACTION_DIST_INPUTS], logits, rtol=0, atol=0)
    torch.testing.assert_close(values, torch.stack(want["critic"], 1).squeeze(-1), rtol=0, atol=0)
    for name in state:
        torch.testing.assert_close(out[Columns.STATE_OUT][name], state[name], rtol=0, atol=0)


def test_a_feed_forward_module_is_stateless_as_before():
    torch.manual_seed(0)
    module = module_of(PolicyNet.mlp(2, [8], 2), PolicyNet.mlp(2, [8], 1))
    assert not module.is_stateful() and module.get_initial_state() == {}


def spec_data(algorithm: str = "PPO", **teacher) -> dict:
    """A tiny recurrent PPO spec on StatelessCartPole: a 2-iteration teacher, [16] + LSTM 16."""
    return {"name": "rnn-stateless", "env": "autocompress.envs:StatelessCartPole", "algorithm": algorithm, "seed": 2,
            "teacher": {"hidden": [16], "rnn": {"cell": "lstm", "hidden": 16, "max_seq_len": 8},
                        "max_iterations": 2, **teacher},
            "training": {"train_batch_size_per_learner": 500, "minibatch_size": 64, "num_epochs": 2},
            "finetune": {"iterations": 1, "lr": 1e-3},
            "eval": {"episodes": 3, "seed": 1000, "reference_return": 0.0},
            "latency": {"warmup": 10, "calls": 200, "rounds": 2}, "sample_steps": 200}


def write_spec(tmp: Path, data: dict) -> Path:
    p = tmp / "spec.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("algorithm", ["DQN", "SAC"])
def test_a_recurrent_teacher_for_dqn_or_sac_is_one_error_naming_the_key(tmp_path, algorithm):
    with pytest.raises(ConfigError, match=f"teacher.rnn: recurrent teachers are trained with PPO, not {algorithm}"):
        ac.load_trial_spec(write_spec(tmp_path, spec_data(algorithm)))


def test_the_spec_counts_the_cell_as_a_layer_and_keeps_feed_forward_keys():
    spec = ac.load_trial_spec(Path(__file__).resolve().parents[1] / "trials" / "stateless_cartpole_ppo.yaml")
    assert spec.teacher.n_layers() == 3 and spec.teacher.rnn.cell == "lstm"
    plain = spec.updated({"teacher": {"rnn": None}})
    assert "rnn" not in plain.teacher_key()["teacher"] and "rnn" in spec.teacher_key()["teacher"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny recurrent teacher, trained here (2 RLlib iterations)."""
    tmp = tmp_path_factory.mktemp("rnn_finetune")
    spec = ac.load_trial_spec(write_spec(tmp, spec_data()))
    teacher = teachers.train_teacher(spec, tmp / "cache", log=lambda m: None)
    return spec, teacher, tmp


@pytest.mark.slow
def test_a_trained_recurrent_teacher_has_the_specs_cell_and_a_recurrent_critic(trained):
    spec, teacher, _ = trained
    assert teacher.actor.rnn.cell == "lstm" and teacher.actor.hidden_widths() == [16, 16]
    critic = pipeline.teacher_critic(teacher, spec)
    assert critic.rnn is not None and critic.rnn.hidden == 16


class RLlibActs:
    """RLlib's own stateful inference on the session's env-runner module (rl.module_step), state carried."""

    def __init__(self, session: rl.Session):
        self.module, self.space, self.state = session.algo.get_module(), gym.spaces.Discrete(2), None

    def reset(self) -> None:
        self.state = {k: torch.as_tensor(v)[None] for k, v in self.module.get_initial_state().items()}

    def __call__(self, obs):
        a, self.state = rl.module_step(self.module, np.asarray(obs)[None], self.state, None, self.space)
        return int(a[0])


@pytest.mark.slow
def test_session_pushes_trains_and_pulls_a_compressed_recurrent_net(trained):
    spec, teacher, _ = trained
    net = ac.compress_net(teacher.actor, COMPRESS)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    session = rl.Session(spec, net, teacher.state, lr=1e-3)
    try:
        assert agree([RLlibActs(session), torch_act(net, teacher.info["head"])], StatelessCartPole) >= STEPS
        session.train(1, log=lambda m: None)
        session.pull(net)
        assert agree([RLlibActs(session), torch_act(net, teacher.info["head"])], StatelessCartPole) >= STEPS
    finally:
        session.stop()
    moved = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("rnn.") for k in moved) and any(k.startswith("layers.") for k in moved)
    masks = {k: v for k, v in net.state_dict().items() if k.endswith("mask")}
    assert masks and all(torch.equal(v, before[k]) for k, v in masks.items())  # pushed and pulled unchanged
    assert net.sparsity() >= 0.5


@pytest.mark.slow
def test_finetuned_recurrent_artifact_acts_as_the_finetuned_net(trained):
    spec, teacher, tmp = trained
    built = pipeline.build_compressed(spec, parse(CompressConfig, COMPRESS, "config"), tmp / "cache",
                                      log=lambda m: None)
    assert len(built.rounds) == 1 and built.net.rnn.ih.quant["bits"] == 8
    unfinetuned = ac.compress_net(teacher.actor, COMPRESS)
    assert not torch.equal(built.net.rnn.hh.raw_weight(), unfinetuned.rnn.hh.raw_weight())  # it was fine-tuned
    head = teacher.info["head"]
    policy = ac.Policy.from_bytes(artifact.to_bytes(built.net, head), kernels=["dense"] * 2)
    assert agree([torch_act(built.net, head), policy.act], StatelessCartPole) >= STEPS
