import pytest
import torch

from autocompress.pipeline import compress_net
from autocompress.config import CompressConfig
from autocompress.techniques import Context, PruneConfig, apply


@pytest.mark.parametrize("target", [0.3, 0.5, 0.9, 0.97])
def test_magnitude_reaches_exact_sparsity_per_layer(net, target):
    p = apply(net.clone(), PruneConfig(sparsity=target))
    for layer in p.layers:
        w = layer.raw_weight()
        assert int((w == 0).sum()) == round(target * w.numel())


def test_magnitude_prunes_the_smallest(net):
    p = apply(net.clone(), PruneConfig(sparsity=0.5))
    for orig, layer in zip(net.layers, p.layers):
        kept = orig.weight.detach().abs()[layer.mask.bool()]
        dropped = orig.weight.detach().abs()[~layer.mask.bool()]
        assert kept.min() >= dropped.max()


def test_threshold_prunes_below_theta(net):
    p = apply(net.clone(), PruneConfig(method="threshold", threshold=0.05))
    for orig, layer in zip(net.layers, p.layers):
        w = orig.weight.detach()
        assert torch.equal(layer.mask.bool(), w.abs() >= 0.05)


def test_sparsity_survives_training_steps(net, obs):
    """Masks are part of the forward: an optimizer (Adam, with momentum) cannot revive a weight."""
    p = apply(net.clone(), PruneConfig(sparsity=0.8))
    opt = torch.optim.Adam(p.parameters(), lr=1e-2)
    x = torch.as_tensor(obs)
    for _ in range(20):
        loss = (p(x) - 1.0).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert p.sparsity() == pytest.approx(0.8, abs=1e-3)


def test_iterative_schedule_rises_to_target_and_never_revives(net):
    cfg = CompressConfig(prune=PruneConfig(sparsity=0.9, schedule="iterative", steps=4))
    seen = []

    def finetune(n, i, rounds):
        seen.append((i, rounds, n.sparsity(), [layer.mask.clone() for layer in n.layers]))
        with torch.no_grad():  # perturb weights like a fine-tune would
            for layer in n.layers:
                layer.weight.add_(torch.randn_like(layer.weight) * 0.01)

    out = compress_net(net, cfg, Context(), finetune)
    levels = [s for _, _, s, _ in seen]
    assert levels == sorted(levels) and len(levels) == 4
    assert levels[-1] == pytest.approx(0.9, abs=1e-3) and out.sparsity() == pytest.approx(0.9, abs=1e-3)
    for (_, _, _, a), (_, _, _, b) in zip(seen, seen[1:]):
        for ma, mb in zip(a, b):
            assert not ((ma == 0) & (mb == 1)).any()


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="sparsity"):
        PruneConfig(sparsity=1.5)
    with pytest.raises(ValueError, match="threshold"):
        PruneConfig(method="threshold")


def test_share_after_a_layer_is_pruned_to_nothing(net, obs):
    """Global pruning can empty a small layer; sharing then gives it a one-entry codebook instead of
    asking k-means for 0 clusters (found by a LunarLander search)."""
    from autocompress.artifact import to_bytes
    from autocompress.runtime import NumpyPolicy
    from autocompress.techniques import Context, ShareConfig, apply

    net.layers[2].mask = torch.zeros_like(net.layers[2].weight)
    shared = apply(net, ShareConfig(bits=3), Context(sample_obs=obs))
    assert shared.layers[2].codebook.numel() == 1
    policy = NumpyPolicy.from_bytes(to_bytes(shared, {"kind": "discrete", "n": 2}))
    assert policy.forward(obs[:4]).shape == (4, 2)
