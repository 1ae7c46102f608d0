"""Every technique on a conv policy (issue 16): structured pruning removes filters, low-rank splits a conv
into r filters + a 1x1 conv, distillation trains a smaller CNN, quantize / prune / share work on the filter
matrices, per-layer settings count conv layers, the sensitivity table labels them; and every compressed
net acts the same through its artifact (NumpyPolicy) as in torch."""

from pathlib import Path

import numpy as np
import pytest
import torch

from autocompress.artifact import to_bytes
from autocompress.config import CompressConfig, load_trial_spec, parse
from autocompress.errors import ConfigError
from autocompress.layer_sensitivity import measure
from autocompress.nets import PolicyNet
from autocompress.pipeline import compress_net
from autocompress.runtime import NumpyPolicy
from autocompress.techniques import Context, DistillConfig, apply
from autocompress.techniques.lowrank import factorize

ROOT = Path(__file__).resolve().parents[1]
HEAD = {"kind": "discrete", "n": 3}
SHAPE = (10, 10, 4)  # HWC, like MinAtar's
FILTERS = [[16, [3, 3], 1, "valid"], [16, 3, 1, "valid"]]  # 10x10 -> 8x8 -> 6x6


def make_cnn(seed: int) -> PolicyNet:
    """conv 4->16 3x3, conv 16->16 3x3, Linear 576->32, Linear 32->3; random biases (a kept filter is found
    by its bias) and a head scaled so that actions are clear."""
    torch.manual_seed(seed)
    net = PolicyNet.cnn(SHAPE, "hwc", FILTERS, [32], 3)
    with torch.no_grad():
        for layer in net.layers:
            layer.bias.uniform_(-0.1, 0.1)
        net.layers[-1].weight.mul_(20)
    return net


@pytest.fixture
def cnn() -> PolicyNet:
    return make_cnn(0)


@pytest.fixture(autouse=True)
def one_thread():
    """Small convolutions on a shared 2-core machine: one torch thread is ~20x faster than several."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def states() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(256, *SHAPE)).astype(np.float32)


def compress(net: PolicyNet, data: dict, obs: np.ndarray, **ctx) -> PolicyNet:
    """As a trial does it (pipeline.compress_net), without fine-tuning."""
    return compress_net(net, parse(CompressConfig, data, "cfg.yaml"), Context(sample_obs=obs, **ctx), None)


def outputs(net: PolicyNet, obs: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return net(torch.as_tensor(obs))


def kept(new_layer, old_layer) -> list[int]:
    """Which of `old_layer`'s output neurons (filters) `new_layer` kept, found by their distinct biases."""
    old = old_layer.bias.detach().numpy()
    return [int(np.flatnonzero(old == b)[0]) for b in new_layer.bias.detach().numpy()]


def assert_artifact_acts_like(net: PolicyNet, seed: int = 1) -> None:
    """The net's artifact, run by NumpyPolicy, takes the torch net's actions on 500 observations
    (except near-ties, where float rounding may pick either)."""
    obs = np.random.default_rng(seed).normal(size=(500, *SHAPE)).astype(np.float32)
    policy = NumpyPolicy.from_bytes(to_bytes(net, HEAD))
    want = outputs(net, obs).numpy()
    got = np.array([policy.act(o) for o in obs])
    top = np.sort(want, axis=1)
    clear = top[:, -1] - top[:, -2] > 1e-3
    assert clear.mean() > 0.95
    assert (got[clear] == want.argmax(1)[clear]).all()
    np.testing.assert_allclose(policy.forward(obs), want, rtol=1e-4, atol=1e-3)


# -- structured pruning: filters --------------------------------------------------------------

@pytest.mark.parametrize("criterion", ["random", "l1", "importance"])
def test_structured_removes_filters_physically(cnn, states, criterion):
    s = compress(cnn, {"structured": {"amount": 0.5, "criterion": criterion}}, states)
    assert [layer.out_features for layer in s.layers] == [8, 8, 16, 3]
    assert s.layers[0].conv == cnn.layers[0].conv                     # the input is untouched
    assert s.layers[1].conv["in_shape"] == [8, 8, 8] and s.layers[1].in_features == 8 * 9
    assert s.layers[2].in_features == 8 * 6 * 6                       # 8 channels of 6x6 pixels
    assert outputs(s, states).shape == (256, 3)
    assert_artifact_acts_like(s)


def test_structured_equals_the_net_with_those_filters_zeroed(cnn, states):
    s = compress(cnn, {"structured": {"amount": [0.5, 0.25, 0.5], "criterion": "l1"}}, states)
    zeroed = cnn.clone()
    with torch.no_grad():
        for i in range(3):  # relu(0) = 0: a zeroed filter (neuron) feeds the next layer nothing
            gone = sorted(set(range(cnn.layers[i].out_features)) - set(kept(s.layers[i], cnn.layers[i])))
            assert len(gone) == round([0.5, 0.25, 0.5][i] * cnn.layers[i].out_features)
            zeroed.layers[i].weight[gone] = 0.0
            zeroed.layers[i].bias[gone] = 0.0
    torch.testing.assert_close(outputs(s, states), outputs(zeroed, states), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer", [0, 1])  # conv -> conv (columns j·9..j·9+8), conv -> Linear (j·36..j·36+35)
def test_importance_removes_the_filters_that_feed_nothing(cnn, states, layer):
    nxt = cnn.layers[layer + 1]
    g = nxt.in_features // 16
    dead = list(range(0, 16, 2))
    with torch.no_grad():
        for j in dead:
            nxt.weight[:, j * g:(j + 1) * g] = 0.0
    s = apply(cnn.clone(), parse(CompressConfig, {"structured": {"amount": {layer: 0.5}, "criterion": "importance"}},
                                 "cfg.yaml").structured, Context(sample_obs=states))
    assert kept(s.layers[layer], cnn.layers[layer]) == list(range(1, 16, 2))
    torch.testing.assert_close(outputs(s, states), outputs(cnn, states), atol=1e-5, rtol=1e-5)


# -- low-rank: r filters + a 1x1 conv ------------------------------------------------------------

def test_full_rank_conv_factorization_reproduces_the_net(cnn, states):
    first, second = factorize(cnn.layers[1], 16)
    assert first.conv == cnn.layers[1].conv and first.bias is None and first.act == "none"
    assert second.conv == {"in_shape": [16, 6, 6], "kernel": [1, 1], "stride": [1, 1], "pad": [0, 0, 0, 0]}
    net = PolicyNet([cnn.layers[0], first, second, *cnn.layers[2:]], cnn.input)
    torch.testing.assert_close(outputs(net, states), outputs(cnn, states), atol=1e-4, rtol=1e-4)
    assert_artifact_acts_like(net)


def test_lowrank_conv_gives_a_smaller_artifact(cnn, states):
    lr = compress(cnn, {"lowrank": {"rank": 4}}, states)
    # 16x36 at rank 4: 4·(36+16) < 16·36; 16x144: 4·160 < 2304; 32x576 too; 3x32 would grow
    shapes = [(layer.out_features, layer.in_features, (layer.conv or {}).get("kernel")) for layer in lr.layers]
    assert shapes == [(4, 36, [3, 3]), (16, 4, [1, 1]), (4, 144, [3, 3]), (16, 4, [1, 1]),
                      (4, 576, None), (32, 4, None), (3, 32, None)]
    assert len(to_bytes(lr, HEAD)) < len(to_bytes(cnn, HEAD)) / 2
    assert_artifact_acts_like(lr)
    # per-layer settings index the factor pairs as the teacher's 4 layers
    q = compress(cnn, {"lowrank": {"rank": 4}, "quantize": {"bits": {1: 4}}}, states)
    assert [None if layer.quant is None else layer.quant["bits"] for layer in q.layers] == [None, None, 4, 4,
                                                                                          None, None, None]


# -- distillation into a smaller CNN ---------------------------------------------------------------

def test_distill_trains_a_smaller_cnn(states):
    teacher = make_cnn(2)  # its actions on `states` are spread over all three (46% at most are one action)

    def rollout(student, n, seed):
        assert student.conv_layers == 1  # the student acts in the env between rounds
        return [np.random.default_rng(seed).normal(size=(n, *SHAPE)).astype(np.float32)]  # one episode

    cfg = {"distill": {"channels": [8], "hidden": [16], "rounds": 2, "epochs": 30, "lr": 1e-2, "steps_per_round": 256}}
    student = compress(teacher, cfg, states, rollout_episodes=rollout)
    assert student.conv_filters() == [[8, [3, 3], [1, 1], [0, 0, 0, 0]]]  # the teacher's first geometry
    assert [layer.out_features for layer in student.layers] == [8, 16, 3]
    assert student.layers[1].in_features == 8 * 8 * 8 and student.input == teacher.input
    assert student.num_params() < teacher.num_params() / 2
    want = outputs(teacher, states).argmax(1)
    majority = np.bincount(want.numpy()).max() / len(want)
    agree = (outputs(student, states).argmax(1) == want).float().mean().item()
    assert agree > 0.8 and agree > majority + 0.25
    assert_artifact_acts_like(student)


@pytest.mark.parametrize("cfg,needle", [
    ({"channels": [16, 16], "hidden": [32]}, r"distill.hidden \[32\] is not smaller .* conv channels \[16, 16\]"),
    ({"channels": [32], "hidden": [8]}, r"distill.channels \[32\] is not smaller than the teacher's conv channels"),
    ({"channels": [8, 8, 8], "hidden": [8]}, r"distill.channels \[8, 8, 8\] is not smaller"),
    # one 3x3 conv of 16 leaves 8x8 pixels for the head: more weights than the teacher
    ({"channels": [16], "hidden": [32]}, r"the student has \d+ parameters, not fewer than the teacher's"),
])
def test_distill_rejects_a_student_that_is_not_smaller(cnn, states, cfg, needle):
    with pytest.raises(ValueError, match=needle):
        apply(cnn, DistillConfig(**cfg), Context(sample_obs=states))


def test_distill_channels_against_the_trial_spec():
    mlp = load_trial_spec(ROOT / "trials" / "cartpole_ppo.yaml")
    with pytest.raises(ConfigError, match=r"distill.channels \[8\]: the teacher has no conv layers"):
        parse(CompressConfig, {"distill": {"channels": [8], "hidden": [16]}}, "cfg.yaml").check_against(mlp)
    conv = load_trial_spec(ROOT / "trials" / "minatar_breakout_ppo.yaml")  # conv [16, 32], hidden [128]
    parse(CompressConfig, {"distill": {"channels": [8, 16], "hidden": [64]}}, "c.yaml").check_against(conv)
    parse(CompressConfig, {"distill": {"hidden": [64]}}, "c.yaml").check_against(conv)  # the teacher's channels
    with pytest.raises(ConfigError, match=r"distill.channels \[8, 64\] is not smaller"):
        parse(CompressConfig, {"distill": {"channels": [8, 64], "hidden": [64]}}, "c.yaml").check_against(conv)
    assert DistillConfig(channels=[8], hidden=[64]).n_layers(2) == 3
    assert DistillConfig(hidden=[64, 64]).n_layers(2) == 5


# -- weight techniques on filter matrices ----------------------------------------------------------

@pytest.mark.parametrize("data", [
    {"quantize": {"bits": 4, "per_channel": True}},
    {"quantize": {"bits": [8, 3, 4, 8], "per_channel": True, "symmetric": True}},
    {"prune": {"sparsity": 0.8}},
    {"share": {"bits": 3}},
    {"prune": {"sparsity": {0: 0.5, 1: 0.9}}, "quantize": {"bits": 5}},
    {"structured": {"amount": 0.5}, "lowrank": {"rank": 4}, "prune": {"sparsity": 0.5}, "share": {"bits": 4}},
])
def test_weight_techniques_on_conv_layers_act_the_same_from_the_artifact(cnn, states, data):
    net = compress(cnn, data, states)
    if "prune" in data and "structured" not in data:
        sparsity = data["prune"]["sparsity"]
        for i, layer in enumerate(net.layers):
            want = sparsity if not isinstance(sparsity, dict) else sparsity.get(i, 0.0)
            assert float((layer.raw_weight() == 0).float().mean()) == pytest.approx(want, abs=0.01)
    if "share" in data:
        assert all(len(torch.unique(layer.effective_weight())) <= 2 ** data["share"]["bits"] + 1
                   for layer in net.layers)
    if "quantize" in data and data["quantize"]["bits"] == 4:  # per channel = per filter: each row its own grid
        w = net.layers[1].effective_weight().detach()
        assert all(len(torch.unique(row)) <= 16 for row in w)
        assert len(torch.unique(w)) > 16
    assert_artifact_acts_like(net)


def test_per_layer_lists_count_the_conv_layers(cnn, states):
    with pytest.raises(ConfigError, match=r"quantize.bits: a list of 3 values for a net of 4 layers"):
        compress(cnn, {"quantize": {"bits": [8, 4, 4]}}, states)
    with pytest.raises(ConfigError, match=r"structured.amount: a list of 2 values for a net of 3 hidden layers"):
        compress(cnn, {"structured": {"amount": [0.5, 0.5]}}, states)


# -- layer sensitivity on a conv net ---------------------------------------------------------------

def test_sensitivity_table_of_a_conv_net(cnn, states):
    table = measure(cnn, HEAD, states, None, settings={"quantize": [8, 2], "structured": [0.5]})
    rows = {(r["technique"], r["layer"], r["setting"]): r for r in table["rows"]}
    assert set(rows) == {("quantize", i, b) for i in range(4) for b in (8, 2)} | \
        {("structured", i, 0.5) for i in range(3)}
    assert all(rows[("quantize", i, 8)]["agreement"] > 0.95 for i in range(4))
    assert [la["label"] for la in table["layers"]] == ["0: conv 3x3/1 4→16", "1: conv 3x3/1 16→16",
                                                           "2: 576→32", "3: 32→3"]
