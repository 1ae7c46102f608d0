import numpy as np
import pytest
import torch

from autocompress.nets import PolicyNet
from autocompress.techniques import Context, DistillConfig, LowRankConfig, ShareConfig, StructuredConfig, apply
from autocompress.techniques.lowrank import factorize, rank_for_energy
from autocompress.techniques.structured import remove_neurons


@pytest.mark.parametrize("criterion", ["random", "l1", "importance"])
def test_structured_gives_smaller_linear_shapes(net, obs, criterion):
    s = apply(net.clone(), StructuredConfig(amount=0.5, criterion=criterion), Context(sample_obs=obs))
    assert s.hidden_widths() == [32, 32]
    assert [tuple(layer.weight.shape) for layer in s.layers] == [(32, 4), (32, 32), (2, 32)]
    assert s(torch.as_tensor(obs)).shape == (256, 2)


def test_removing_a_neuron_that_feeds_nothing_leaves_outputs_unchanged(net, obs):
    x = torch.as_tensor(obs)
    with torch.no_grad():
        net.layers[1].weight[:, 5] = 0.0       # neuron 5 of layer 0 feeds nothing
    keep = torch.tensor([i for i in range(64) if i != 5])
    smaller = remove_neurons(net, 0, keep)
    assert smaller.layers[0].out_features == 63
    torch.testing.assert_close(smaller(x), net(x))


def kept_neurons(before: PolicyNet, after: PolicyNet, i: int) -> list[int]:
    """Which neurons of hidden layer i survived pruning: each row of the smaller layer found in the original."""
    rows = before.layers[i].weight.detach()
    return [next(j for j in range(len(rows)) if torch.equal(row, rows[j])) for row in after.layers[i].weight.detach()]


def assert_kept(before: PolicyNet, after: PolicyNet, i: int, keep: list[int]) -> None:
    """Exactly neurons `keep` of layer i are left, and layer i + 1 reads exactly their inputs."""
    assert kept_neurons(before, after, i) == keep
    torch.testing.assert_close(after.layers[i + 1].weight, before.layers[i + 1].weight[:, keep], rtol=0, atol=0)


@pytest.mark.parametrize("i", [0, 1])
def test_l1_removes_the_neurons_of_smallest_l1_norm(net, i):
    # neuron j gets L1 norm planted[j] (a shuffled 1..64), split at random between incoming weights and the bias,
    # every sign random: only |weights| + |bias| ranks them in this order
    rng = np.random.default_rng(1)
    planted = rng.permutation(64) + 1.0
    layer = net.layers[i]
    share = rng.uniform(0.2, 0.8, size=64)  # of each norm on the weights, the rest on the bias
    signs = rng.choice([-1.0, 1.0], size=(64, layer.in_features + 1))
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(signs[:, :-1] * (planted * share / layer.in_features)[:, None]))
        layer.bias.copy_(torch.as_tensor(signs[:, -1] * planted * (1 - share)))
    s = apply(net.clone(), StructuredConfig(amount={i: 0.5}, criterion="l1"))
    assert_kept(net, s, i, [j for j in range(64) if planted[j] > 32])
    assert s.hidden_widths() == ([32, 64] if i == 0 else [64, 32])  # the other hidden layer keeps all


@pytest.mark.parametrize("i", [0, 1])
def test_importance_removes_the_neurons_that_move_the_next_layer_least(net, obs, i):
    # importance = mean |activation| x L1 of outgoing weights. Planted, neurons 0..63 in shuffled groups of 16:
    #   feeds nothing  (outgoing 0; large incoming weights, so l1 or activation alone would keep it)  -> 0
    #   never on       (incoming and bias 0, tanh(0) = 0; large outgoing weights)                    -> 0
    #   weak / strong  (ordinary neurons whose outgoing weights are scaled by 1e-3 / 1)
    groups = np.random.default_rng(2).permutation(64).reshape(4, 16)
    dead_out, never_on, weak, strong = (sorted(g.tolist()) for g in groups)
    layer, nxt = net.layers[i], net.layers[i + 1]
    with torch.no_grad():
        layer.weight[dead_out] *= 10.0
        nxt.weight[:, dead_out] = 0.0
        layer.weight[never_on], layer.bias[never_on] = 0.0, 0.0
        nxt.weight[:, never_on] *= 10.0
        nxt.weight[:, weak] *= 1e-3
    x = torch.as_tensor(obs)
    half = apply(net.clone(), StructuredConfig(amount={i: 0.5}, criterion="importance"), Context(sample_obs=obs))
    assert_kept(net, half, i, sorted(weak + strong))
    torch.testing.assert_close(half(x), net(x))  # what was removed contributed nothing
    quarter = apply(net.clone(), StructuredConfig(amount={i: 0.75}, criterion="importance"), Context(sample_obs=obs))
    assert_kept(net, quarter, i, strong)


def test_full_rank_svd_reproduces_the_layer(net, obs):
    layer = net.layers[1]
    a, b = factorize(layer, 64)
    x = torch.as_tensor(np.tanh(obs @ np.random.default_rng(1).normal(size=(4, 64)).astype(np.float32)))
    torch.testing.assert_close(b(a(x)), layer(x), atol=1e-5, rtol=1e-4)


def test_lowrank_only_where_smaller(net):
    lr = apply(net.clone(), LowRankConfig(rank=8))
    # 4x64 and 64x2 would grow; 64x64 at rank 8 shrinks: 8*(64+64) < 64*64
    assert [(layer.in_features, layer.out_features) for layer in lr.layers] == [(4, 64), (64, 8), (8, 64), (64, 2)]


def test_energy_rank():
    s = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert rank_for_energy(s, 9 / 14) == 1
    assert rank_for_energy(s, 0.9) == 2
    assert rank_for_energy(s, 1.0) == 3


def test_lowrank_config_needs_exactly_one():
    with pytest.raises(ValueError, match="exactly one"):
        LowRankConfig()
    with pytest.raises(ValueError, match="exactly one"):
        LowRankConfig(rank=2, energy=0.5)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_share_codebook_has_at_most_2b_values(net, bits):
    s = apply(net.clone(), ShareConfig(bits=bits))
    for layer in s.layers:
        assert layer.codebook.numel() <= 2 ** bits
        assert len(torch.unique(layer.effective_weight())) <= 2 ** bits


@pytest.mark.parametrize("pruned", [False, True])
def test_share_trains_centroids_only(net, obs, pruned):
    from autocompress.techniques import PruneConfig

    s = net.clone()
    if pruned:
        s = apply(s, PruneConfig(sparsity=0.5))
    s = apply(s, ShareConfig(bits=3))
    before_idx = [layer.indices.clone() for layer in s.layers]
    before_cb = [layer.codebook.detach().clone() for layer in s.layers]
    masks = [None if layer.mask is None else layer.mask.clone() for layer in s.layers]
    assert all(layer.weight is None for layer in s.layers)  # no dense weight left to train
    # a few fine-tune-like gradient steps towards a target the initial net does not produce
    x = torch.as_tensor(obs)
    target = torch.randn(len(obs), 2, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(s.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = (s(x) - target).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    for layer, idx, cb, mask in zip(s.layers, before_idx, before_cb, masks):
        assert torch.equal(layer.indices, idx)  # the assignment of weights to centroids is fixed
        assert layer.codebook.shape == cb.shape and not torch.allclose(layer.codebook, cb)  # centroids moved
        expected = layer.codebook.detach()[idx]
        if pruned:
            assert torch.equal(layer.mask, mask)
            expected = expected * mask
        assert torch.equal(layer.effective_weight().detach(), expected)
        assert len(torch.unique(layer.effective_weight())) <= 8 + pruned  # + the pruned zeros


def test_distill_student_matches_teacher_actions(net, obs):
    # a teacher with a clear preference, so agreement is measurable
    with torch.no_grad():
        net.layers[-1].weight.mul_(20)
    cfg = DistillConfig(hidden=[16], rounds=2, epochs=60, lr=1e-2)
    calls = []

    def rollout(student, n, seed):
        calls.append(n)
        return [np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)]  # one episode

    student = apply(net, cfg, Context(sample_obs=obs, rollout_episodes=rollout, head="discrete"))
    assert isinstance(student, PolicyNet) and student.hidden_widths() == [16]
    assert calls == [cfg.steps_per_round]  # student-visited states were added between rounds
    x = torch.as_tensor(np.random.default_rng(5).normal(size=(500, 4)).astype(np.float32))
    agree = (student(x).argmax(1) == net(x).argmax(1)).float().mean()
    assert agree > 0.9


def test_q_value_distillation_matches_the_argmax_under_a_large_offset(net, obs):
    # DQN-like outputs: a large state-dependent offset shared by both actions, a small gap between them
    with torch.no_grad():
        last = net.layers[-1]
        gap = 0.4 * last.weight[1]
        last.weight[0] *= 100
        last.weight[1] = last.weight[0] + gap
        last.bias[1] = last.bias[0]

    def rollout(student, n, seed):
        return [np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)]  # one episode

    x = torch.as_tensor(np.random.default_rng(5).normal(size=(500, 4)).astype(np.float32))

    def agreement(**loss):
        cfg = DistillConfig(hidden=[16], rounds=2, epochs=60, lr=1e-2, **loss)
        student = apply(net, cfg, Context(sample_obs=obs, rollout_episodes=rollout, head="discrete", q_values=True))
        return (student(x).argmax(1) == net(x).argmax(1)).float().mean().item()

    low_t = agreement()  # the default: KL at a low temperature + a little MSE
    mostly_mse = agreement(q_temperature=10.0, q_mse_weight=1.0)
    assert low_t > 0.9 and low_t > mostly_mse + 0.05
