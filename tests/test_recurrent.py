"""Recurrent policies (LSTM / GRU, issue 28): the net, its artifact and numpy runtime with state, the plain
PyTorch import, compress_net on it, and the clear errors where a recurrent net is not supported yet.

Every agreement check runs whole CartPole episodes (>= 256 steps in all), the state carried within an episode
and reset at each episode's start, against torch's own nn.LSTM / nn.GRU.
"""

import hashlib
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from torch import nn

import autocompress as ac
from autocompress import measure, sources
from autocompress.artifact import to_bytes
from autocompress.errors import ConfigError
from autocompress.layers import layers_of
from autocompress.nets import CLinear, PolicyNet, Recurrent, torch_act
from autocompress.runtime import NumpyPolicy, read_artifact
from autocompress.sources import torch_mlp
from autocompress.techniques.base import Context, apply
from autocompress.techniques.distill import DistillConfig
from autocompress.techniques.structured import StructuredConfig

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}
HEAD = {"kind": "discrete", "n": 2}
STEPS = 256


def make_env():
    return gym.make("CartPole-v1")


def recurrent_net(cell: str, seed: int = 0) -> tuple[PolicyNet, nn.Module]:
    """4 -> 32 tanh -> cell(16) -> 2, with the weights of a torch cell (returned too)."""
    torch.manual_seed(seed)
    ref = CELLS[cell](32, 16)
    net = PolicyNet([CLinear(4, 32, act="tanh"), CLinear(16, 2)], rnn=Recurrent(cell, 32, 16, at=1))
    with torch.no_grad():
        for m, k in ((net.rnn.ih, "ih"), (net.rnn.hh, "hh")):
            m.weight.copy_(getattr(ref, f"weight_{k}_l0"))
            m.bias.copy_(getattr(ref, f"bias_{k}_l0"))
    return net, ref


def same_actions(acts: list, steps: int = STEPS, seed: int = 0) -> int:
    """Steps CartPole with acts[0] over whole episodes until `steps` are done, every act seeing the same
    observations and reset at each episode's start; asserts they all act alike at every step. Returns the steps."""
    env, n, ep = make_env(), 0, 0
    while n < steps:
        obs, _ = env.reset(seed=seed + ep)
        for a in acts:
            measure.episode_reset(a)()
        done = False
        while not done:
            actions = [a(obs) for a in acts]
            assert all(np.array_equal(actions[0], b) for b in actions[1:]), (n, actions)
            obs, _, term, trunc, _ = env.step(actions[0])
            done, n = term or trunc, n + 1
        ep += 1
    return n


# -- the net ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_net_steps_like_torch_cell_with_episode_starts(cell):
    net, ref = recurrent_net(cell)
    xs = torch.randn(12, 3, 4)
    starts = torch.zeros(12, 3, dtype=torch.bool)
    starts[5, 1] = True  # stream 1 starts an episode at step 5
    with torch.no_grad():
        out, state = net.sequence(xs, starts=starts)
        enc, head = net.layers[0], net.layers[1]
        h, _ = ref(enc(xs))
        want = head(h)
        h2, _ = ref(enc(xs[5:, 1:2]))  # stream 1 from its episode's start
        want[5:, 1] = head(h2)[:, 0]
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    assert state.shape == (3, net.rnn.state_size)
    with pytest.raises(ValueError, match="carries a state"):  # a feed-forward caller does not act statelessly
        net(xs[0])


@pytest.mark.parametrize("cell", CELLS)
def test_spec_round_trip_and_matrices(cell):
    net, _ = recurrent_net(cell)
    again = PolicyNet.from_spec(net.spec())
    again.load_state_dict(net.state_dict())
    x = torch.randn(5, 4)
    with torch.no_grad():
        torch.testing.assert_close(again.sequence(x[:, None])[0], net.sequence(x[:, None])[0])
    assert again.spec() == net.spec()
    assert [tuple(m.weight.shape) for m in net.matrices()] == [(32, 4), (3 * 16 if cell == "gru" else 64, 32),
                                                               (3 * 16 if cell == "gru" else 64, 16), (2, 16)]
    assert net.hidden_widths() == [32, 16] and net.in_dim == 4
    ff = PolicyNet.mlp(4, [8], 2)
    assert "rnn" not in ff.spec() and not any(k.startswith("rnn") for k in ff.state_dict())


def test_a_cell_on_the_observation_itself():
    torch.manual_seed(1)
    ref = nn.GRU(4, 8)
    net = PolicyNet([CLinear(8, 2)], rnn=Recurrent("gru", 4, 8, at=0))
    with torch.no_grad():
        for m, k in ((net.rnn.ih, "ih"), (net.rnn.hh, "hh")):
            m.weight.copy_(getattr(ref, f"weight_{k}_l0"))
            m.bias.copy_(getattr(ref, f"bias_{k}_l0"))
        xs = torch.randn(30, 4)
        want = net.layers[0](ref(xs)[0])
    assert net.in_dim == 4
    torch.testing.assert_close(net.sequence(xs)[0].detach(), want, atol=1e-5, rtol=1e-5)
    policy = NumpyPolicy.from_bytes(to_bytes(net, HEAD))
    np.testing.assert_allclose(np.stack([policy.forward(x.numpy()) for x in xs]), want.numpy(), atol=1e-5)


def test_bad_recurrent_shapes_are_named():
    with pytest.raises(ValueError, match="reads 16"):
        PolicyNet([CLinear(4, 8, act="tanh"), CLinear(16, 2)], rnn=Recurrent("gru", 16, 16, at=1))
    with pytest.raises(ValueError, match="head layer must follow"):
        PolicyNet([CLinear(4, 8)], rnn=Recurrent("gru", 8, 8, at=1))
    with pytest.raises(ValueError, match="unknown recurrent cell"):
        Recurrent("rnn", 4, 4, at=0)


# -- artifact and numpy runtime ----------------------------------------------------------------------

def _seeded(net):
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.as_tensor(rng.standard_normal(tuple(p.shape)).astype(np.float32) * 0.3))
    return net


#: sha256 of these feed-forward artifacts as written before recurrent layers existed (main at d1b8da0): the
#: recurrent fields must leave every MLP / CNN artifact byte for byte as it was
FEED_FORWARD_SHA256 = {
    "mlp": "dc424581887e34324fee92b751f7d2a8fce5c21001d9a66f4814693c480c677a",
    "mlp-prune-q4": "b52cc845b47901084d0dc0cd4122e63df71840b87dcd3e9cae1fce9ff241eec7",
    "mlp-share": "031516fc9182ad3caa1d5cdd9882b1cf582a8f6adc036cef0f3d081009524a46",
    "cnn-q8": "c9e5f3e6769bbbd45d3e55fb7c9dd149d23d92f9bff70453f080f1c8ee1ff107",
}


def test_feed_forward_artifacts_are_byte_identical():
    mlp = _seeded(PolicyNet.mlp(4, [32, 16], 2))
    cnn = _seeded(PolicyNet.cnn((10, 10, 4), "hwc", [[8, [3, 3], 1], [8, [3, 3], 2]], [16], 3))
    nets = {"mlp": (mlp, HEAD),
            "mlp-prune-q4": (ac.compress_net(mlp, {"prune": {"sparsity": 0.5}, "quantize": {"bits": 4}}), HEAD),
            "mlp-share": (ac.compress_net(mlp, {"share": {"bits": 3}}),
                          {"kind": "continuous", "act_dim": 1, "low": [-2.0], "high": [2.0], "squash": "tanh"}),
            "cnn-q8": (ac.compress_net(cnn, {"quantize": {"bits": 8}}), {"kind": "discrete", "n": 3})}
    got = {k: hashlib.sha256(to_bytes(n, h)).hexdigest() for k, (n, h) in nets.items()}
    assert got == FEED_FORWARD_SHA256
    assert read_artifact(to_bytes(mlp, HEAD))[0]["version"] == 1


@pytest.mark.parametrize("cell", CELLS)
def test_runtime_carries_state_resets_and_has_a_stateless_form(cell):
    net, _ = recurrent_net(cell)
    data = to_bytes(net, HEAD)
    header = read_artifact(data)[0]
    assert header["version"] == 2 and header["rnn"]["cell"] == cell and len(header["layers"]) == 2
    policy = ac.Policy.from_bytes(data, "numpy")  # the C runtime's: tests/test_recurrent_exports.py
    assert policy.runtime == "numpy" and policy.recurrent
    xs = torch.randn(20, 4)
    with torch.no_grad():
        want = net.sequence(xs)[0].numpy()
    impl = policy._impl
    np.testing.assert_allclose(np.stack([impl.forward(x.numpy()) for x in xs]), want, atol=1e-5)
    policy.reset()
    np.testing.assert_allclose(impl.forward(xs[0].numpy()), want[0], atol=1e-5)  # reset: from zeros again
    state, outs = policy.initial_state(), []
    for x in xs:
        out, state = impl.step(x.numpy(), state)
        outs.append(out)
    np.testing.assert_allclose(np.stack(outs), want, atol=1e-5)
    # the stateless act agrees with the stateful one, step by step, over whole episodes
    assert same_actions([torch_act(net, HEAD), ac.Policy.from_bytes(data, "numpy").act, Stateless(policy)]) >= STEPS


class Stateless:
    """act(obs) through a policy's stateless form, the state held here."""

    def __init__(self, policy):
        self.policy = policy
        self.reset()

    def reset(self):
        self.state = self.policy.initial_state()

    def __call__(self, obs):
        action, self.state = self.policy.act(obs, self.state)
        return action


def test_evaluate_resets_the_policy_each_episode():
    net, _ = recurrent_net("lstm")
    policy = ac.Policy.from_net(net, HEAD)
    returns = measure.evaluate(policy.act, make_env, 3, seed=7)
    one_by_one = [measure.evaluate(ac.Policy.from_net(net, HEAD).act, make_env, 1, seed=7 + i)[0] for i in range(3)]
    np.testing.assert_array_equal(returns, one_by_one)
    np.testing.assert_array_equal(returns, measure.evaluate(torch_act(net, HEAD), make_env, 3, seed=7))


def test_what_does_not_run_a_recurrent_artifact_refuses_it(tmp_path):
    """(the exports and the C runtime that do run it, and the rest that refuse: tests/test_recurrent_exports.py)"""
    data = to_bytes(recurrent_net("gru")[0], HEAD)
    with pytest.raises(ValueError, match=r"only the numpy and C runtimes, the C and fp32 ONNX exports and the MCU "
                                         r"targets \(fp32\) run its cell"):
        layers_of(*read_artifact(data))
    with pytest.raises(ValueError, match="integer-only"):
        NumpyPolicy.from_bytes(data, ["iq", "iq"])
    assert ac.Policy.from_bytes(to_bytes(PolicyNet.mlp(4, [8], 2), HEAD)).reset() is None  # feed-forward: no-op


def episode(policy, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One CartPole episode's observations (driven by a balancing controller, so it runs long: up to 200
    steps) and `policy`'s actions on them, stepped with its state reset at the episode's start."""
    env, obs_list = make_env(), []
    obs, _ = env.reset(seed=seed)
    done = False
    while not done and len(obs_list) < 200:
        obs_list.append(np.asarray(obs, np.float32))
        obs, _, term, trunc, _ = env.step(int(obs[2] + obs[3] > 0))
        done = term or trunc
    policy.reset()
    return np.stack(obs_list), np.asarray([policy.act(o) for o in obs_list])


@pytest.mark.parametrize("cell", CELLS)
def test_mlflow_model_carries_the_state_over_a_call_and_resets_at_episode_starts(cell, tmp_path):
    import mlflow  # deferred: MLflow takes seconds to import

    from autocompress import tracking

    net, _ = recurrent_net(cell)
    with torch.no_grad():  # a stronger memory, so a state carried or reset in the wrong place changes actions
        net.rnn.hh.weight.mul_(16)
        net.rnn.ih.weight.mul_(4)
    (tmp_path / "p.acz").write_bytes(to_bytes(net, HEAD))
    policy = ac.Policy.load(tmp_path / "p.acz", "numpy")
    obs_a, act_a = episode(policy, seed=3)
    obs_b, act_b = episode(policy, seed=4)
    assert len(obs_a) + len(obs_b) >= STEPS
    model = mlflow.pyfunc.load_model(str(tracking.save_policy_model(tmp_path / "model", tmp_path / "p.acz",
                                                                    {"runtime": "numpy"})))
    params = model.metadata.signature.params
    assert params is not None and [p.name for p in params.params] == ["episode_starts"]
    # one call = one episode from a fresh state; a second call starts afresh again
    for _ in range(2):
        actions = model.predict(obs_a)
        assert actions.dtype == np.int64 and (actions == act_a).all()
    assert (np.concatenate([model.predict(o[None]) for o in obs_a]) != act_a).any()  # a call per row: the state lost
    # two episodes back to back in one batch: reset where marked
    both = np.concatenate([obs_a, obs_b])
    starts = [True] + [False] * (len(obs_a) - 1) + [True] + [False] * (len(obs_b) - 1)
    assert (model.predict(both, params={"episode_starts": starts}) == np.concatenate([act_a, act_b])).all()
    # without the mark the second episode starts from the first's state: the state does carry
    carried = tracking.PolicyModel()
    carried.load_context(SimpleNamespace(model_config={"runtime": "numpy"}, artifacts={"policy": str(tmp_path / "p.acz")}))
    stepped = ac.Policy.load(tmp_path / "p.acz", "numpy")
    stepped.reset()
    want = np.asarray([stepped.act(o) for o in both])
    assert (carried.predict(None, both) == want).all() and (want[len(obs_a):] != act_b).any()
    with pytest.raises(ValueError, match="episode_starts has 2 values"):
        carried.predict(None, both, params={"episode_starts": [True, False]})


# -- import from a plain PyTorch state dict --------------------------------------------------------------

def save_torch_policy(tmp: Path, kind: str, seed: int = 0, **recurrent) -> Path:
    """A CleanRL-style recurrent actor: Linear(4, 32) tanh -> nn.LSTM / nn.GRU(32, 16) -> Linear(16, 2), its YAML
    beside it (`recurrent` overrides the YAML's recurrent fields)."""
    torch.manual_seed(seed)
    enc, rnn, pi = nn.Linear(4, 32), CELLS[kind](32, 16), nn.Linear(16, 2)
    state = {f"{name}.{k}": v for name, m in (("enc", enc), ("memory", rnn), ("pi", pi)) for k, v in
             m.state_dict().items()}
    path = tmp / f"{kind}.pt"
    torch.save(state, path)
    arch = {"algorithm": "PPO", "layers": ["enc", "pi"], "activation": "tanh", "head": "discrete",
            "recurrent": {"cell": kind, "module": "memory", "after": 1, **recurrent}}
    path.with_suffix(".yaml").write_text(yaml.safe_dump(arch))
    return path


def import_policy(path: Path):
    env = make_env()
    return torch_mlp.load(path, SimpleNamespace(env="CartPole-v1"), env.observation_space, env.action_space)


@pytest.mark.parametrize("cell", CELLS)
def test_import_acts_like_torch_over_whole_episodes(cell, tmp_path):
    imported = import_policy(save_torch_policy(tmp_path, cell))
    assert imported.describe() == ["4->32 tanh", f"{cell} 32->16", "16->2 none"]
    policy = ac.Policy.from_net(imported.actor, imported.head)
    assert same_actions([imported.source_act, policy.act, torch_act(imported.actor, imported.head)]) >= STEPS
    # the state matters: the artifact's outputs differ from those of a policy reset at every step
    obs = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    policy = ac.Policy.from_net(imported.actor, imported.head, "numpy")  # its outputs: NumpyPolicy.forward / step
    carried = np.stack([policy._impl.forward(o) for o in obs])
    fresh = np.stack([policy._impl.step(o, policy.initial_state())[0] for o in obs])
    assert not np.allclose(carried[1:], fresh[1:], atol=1e-4)


@pytest.mark.parametrize("recurrent, message", [
    ({"bidirectional": True}, "recurrent.bidirectional: bidirectional: True: not supported"),
    ({"num_layers": 2}, "recurrent.num_layers: num_layers: 2: not supported"),
    ({"proj_size": 4}, "recurrent.proj_size"),
    ({"cell": "gru"}, "recurrent.cell 'gru': memory's weights have 64 rows for 16 hidden units"),
    ({"after": 2}, "recurrent.after 2: at most 1"),
    ({"after": 0}, "layers[1] 'pi' takes 16 inputs, the layer before gives 32"),
    ({"module": "lstm"}, "recurrent.module 'lstm': no lstm.weight_ih_l0"),
])
def test_unsupported_recurrent_options_are_one_clear_error(tmp_path, recurrent, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        import_policy(save_torch_policy(tmp_path, "lstm", **recurrent))


@pytest.mark.parametrize("module, key", [(nn.LSTM(32, 16, num_layers=2), "num_layers"),
                                         (nn.LSTM(32, 16, bidirectional=True), "bidirectional"),
                                         (nn.LSTM(32, 16, proj_size=8), "proj_size")])
def test_unsupported_options_are_read_from_the_state_dict(tmp_path, module, key):
    path = save_torch_policy(tmp_path, "lstm")
    state = torch.load(path, weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("memory.")}
    state.update({f"memory.{k}": v for k, v in module.state_dict().items()})
    torch.save(state, path)
    with pytest.raises(ConfigError, match=f"recurrent.{key}: lstm.pt holds memory"):
        import_policy(path)


def test_trial_paths_refuse_a_recurrent_teacher_before_any_work(tmp_path):
    path = save_torch_policy(tmp_path, "gru")
    spec = ac.load_trial_spec(_spec_file(tmp_path, path))
    with pytest.raises(ConfigError, match="a recurrent \\(gru\\) policy: .*PPO fine-tunes it\\), but teach"):
        sources.load(spec)
    assert sources.load(spec, recurrent=True).actor.rnn.cell == "gru"


def _spec_file(tmp: Path, source: Path) -> Path:
    p = tmp / "spec.yaml"
    p.write_text(yaml.safe_dump({"name": "rnn", "env": "CartPole-v1", "algorithm": "PPO", "seed": 1,
                                 "teacher": {"from": str(source)}}))
    return p


# -- compression without RL ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cell, config", [
    ("lstm", {"prune": {"sparsity": 0.5}, "quantize": {"bits": 8}}),
    ("gru", {"prune": {"sparsity": [0.3, 0.6, 0.0]}, "share": {"bits": 4}}),
    ("lstm", {"quantize": {"bits": {1: 6}, "symmetric": True}}),
    ("gru", {"structured": {"amount": [0.25, 0.5]}, "quantize": {"bits": 8}}),
])
def test_compress_net_on_an_imported_recurrent_net_acts_as_its_artifact(tmp_path, cell, config):
    imported = import_policy(save_torch_policy(tmp_path, cell))
    small = ac.compress_net(imported.actor, config)
    rnn = small.rnn
    if "prune" in config:
        assert (rnn.hh.mask == 0).any() and (rnn.ih.mask == 0).any()
    if "quantize" in config:
        assert rnn.ih.quant["bits"] == rnn.hh.quant["bits"] == config["quantize"]["bits"] if \
            isinstance(config["quantize"]["bits"], int) else rnn.ih.quant["bits"] == 6 and small.layers[0].quant is None
    if "share" in config:
        assert rnn.ih.codebook is not None and rnn.hh.codebook.numel() <= 16
    if "structured" in config:
        kept = [w - round(a * w) for w, a in zip(imported.actor.hidden_widths(), config["structured"]["amount"])]
        assert small.hidden_widths() == kept and small.rnn.state_size == kept[1]  # a GRU's state: h alone
    data = to_bytes(small, imported.head)
    assert len(data) < len(to_bytes(imported.actor, imported.head))
    policy = ac.Policy.from_bytes(data, kernels=["dense"] * 2)  # fp32 (int8 would round inputs), in C where it can
    assert same_actions([torch_act(small, imported.head), policy.act]) >= STEPS
    assert PolicyNet.from_spec(small.spec()).load_state_dict(small.state_dict())  # masks, codebooks, quant move too


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layer, dead", [(0, 8), (1, 4)])
def test_structured_removes_a_cells_units_from_every_gate_and_its_state(cell, layer, dead):
    """Units that feed nothing (their columns zeroed where they are read) score 0 by importance: removing
    them must leave the net's outputs as they were over a whole sequence, state carried."""
    net, _ = recurrent_net(cell)
    n = net.hidden_widths()[layer]
    gone = torch.randperm(n, generator=torch.Generator().manual_seed(1))[:dead]
    with torch.no_grad():
        for m in ([net.rnn.ih] if layer == 0 else [net.rnn.hh, net.layers[1]]):
            m.weight[:, gone] = 0
    xs = torch.randn(40, 4, generator=torch.Generator().manual_seed(2))
    small = apply(net, StructuredConfig(amount={layer: dead / n}, criterion="importance"), Context(sample_obs=xs.numpy()))
    widths = net.hidden_widths()
    widths[layer] -= dead
    assert small.hidden_widths() == widths and small.rnn.state_size == widths[1] * (2 if cell == "lstm" else 1)
    with torch.no_grad():
        assert torch.allclose(small.sequence(xs)[0], net.sequence(xs)[0], atol=1e-5)


def test_distill_trains_a_smaller_recurrent_student_on_whole_episodes():
    """A GRU student of an LSTM teacher, trained on the teacher's episodes and its own (state carried), acts
    as the teacher does over episodes neither saw, each run from its start."""
    teacher, _ = recurrent_net("lstm", seed=3)  # both actions taken: 53% of its steps are action 1
    with torch.no_grad():
        teacher.layers[-1].bias.zero_()
        teacher.layers[-1].weight.mul_(10)  # a clear preference at each step

    def visited(net, n, seed):
        return measure.collect_episodes(torch_act(net, HEAD), make_env, n, seed)

    rolled = []

    def rollout(net, n, seed):
        rolled.append(net.rnn.cell)
        return visited(net, n, seed)

    episodes = visited(teacher, 1000, 0)
    cfg = DistillConfig(hidden=[16], units=8, cell="gru", rounds=2, epochs=60, lr=1e-2, steps_per_round=500)
    student = apply(teacher, cfg, Context(sample_obs=np.concatenate(episodes), head="discrete", rollout_episodes=rollout,
                                          sample_starts=measure.episode_starts(episodes)))
    assert student.rnn.cell == "gru" and student.hidden_widths() == [16, 8] and rolled == ["gru"]
    with torch.no_grad():
        pairs = [(student.sequence(x)[0].argmax(-1), teacher.sequence(x)[0].argmax(-1))
                 for x in map(torch.as_tensor, visited(teacher, 1000, 100))]
    want = torch.cat([t for _, t in pairs])
    majority = torch.bincount(want).max().item() / len(want)
    agree = torch.cat([s == t for s, t in pairs]).float().mean().item()
    assert agree > max(0.9, majority + 0.05), (agree, majority)


@pytest.mark.parametrize("cfg, message", [
    ({"hidden": [32]}, r"widths \[32, 16\] are not smaller than the teacher's \[32, 16\]"),
    ({"hidden": [32, 8], "units": 8}, r"widths \[32, 8, 8\] are not smaller"),
])
def test_a_recurrent_student_must_be_smaller(cfg, message):
    with pytest.raises(ValueError, match=message):
        apply(recurrent_net("lstm")[0], DistillConfig(**cfg), Context(sample_obs=np.zeros((4, 4), np.float32)))
    with pytest.raises(ValueError, match="distill.units: the teacher is not recurrent"):
        apply(PolicyNet.mlp(4, [32], 2), DistillConfig(hidden=[8], units=4), Context(sample_obs=np.zeros((4, 4))))


@pytest.mark.parametrize("config, name", [({"lowrank": {"rank": 4}}, "lowrank"),
                                          ({"prune": {"sparsity": 0.5}, "lowrank": {"rank": 4}}, "lowrank")])
def test_techniques_that_rebuild_the_net_refuse_a_recurrent_one(config, name):
    net, _ = recurrent_net("lstm")
    with pytest.raises(ConfigError, match=f"{name}: not supported on a recurrent \\(lstm\\) net yet"):
        ac.compress_net(net, config)
