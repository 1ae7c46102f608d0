"""quantize.mode: lsq — learned step size quantization (Esser et al. 2020): the step of each output
channel is a parameter trained with the weights, and the artifact is exported on that learned grid."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from autocompress.artifact import to_bytes
from autocompress.config import CompressConfig
from autocompress.nets import PolicyNet
from autocompress.pipeline import compress_net
from autocompress.quantgrid import lsq_fake_quant, lsq_grad_scale, lsq_init, qparams
from autocompress.runtime import NumpyPolicy
from autocompress.techniques import Context, QuantizeConfig, apply

ROOT = Path(__file__).resolve().parents[1]
HEAD = {"kind": "discrete", "n": 2}


def lsq(net, bits=3, **kw):
    return apply(net.clone(), QuantizeConfig(bits=bits, mode="lsq", **kw))


def train_a_little(net, obs, steps=20, lr=1e-2):
    """A few Adam steps towards other outputs: weights and steps both move."""
    x = torch.as_tensor(obs)
    target = torch.randn(len(obs), net.out_dim, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (net(x) - target).pow(2).mean().backward()
        opt.step()
    return net


@pytest.mark.parametrize("symmetric", [True, False])
def test_step_is_a_parameter_per_channel_initialised_from_the_better_grid(net, symmetric):
    q = lsq(net, bits=3, symmetric=symmetric)
    names = dict(q.named_parameters())
    spec = {"bits": 3, "symmetric": symmetric, "per_channel": True}
    for i, layer in enumerate(q.layers):
        assert names[f"layers.{i}.step"] is layer.step and layer.step.shape == (layer.out_features, 1)
        assert (f"layers.{i}.zero_point" in names) == (not symmetric)
        w = layer.weight.detach()
        # per channel: the paper's Δ = 2·mean|w|/sqrt(Qp) (Qp = 2^(k-1) - 1 = 3) or the min/max grid's,
        # whichever quantizes the channel with less error
        paper, minmax = 2 * w.abs().mean(dim=1, keepdim=True) / 3 ** 0.5, qparams(w, spec)[0]
        is_paper, is_minmax = torch.isclose(layer.step, paper), torch.isclose(layer.step, minmax)
        assert (is_paper | is_minmax).all()
        err = (layer.effective_weight() - w).pow(2).sum(dim=1)
        other = lsq(net, bits=3, symmetric=symmetric).layers[i]
        for step in (paper, minmax):
            other.step.data.copy_(step)
            if not symmetric:
                other.zero_point.data.copy_(qparams(w, spec)[1] if step is minmax else
                                            torch.full_like(paper, 4.0))
            assert (err <= (other.effective_weight() - w).pow(2).sum(dim=1) + 1e-6).all()
    per_tensor = lsq(net, per_channel=False)
    assert all(layer.step.shape == (1, 1) for layer in per_tensor.layers)
    assert all(layer.step is None for layer in apply(net.clone(), QuantizeConfig(bits=3, mode="qat")).layers)


@pytest.mark.parametrize("symmetric", [True, False])
def test_init_takes_the_papers_step_on_heavy_tails_and_min_max_on_uniform_rows(symmetric):
    torch.manual_seed(0)
    uniform, laplace = torch.rand(4, 1024) * 2 - 1, torch.distributions.Laplace(0.0, 0.1).sample((4, 1024))
    spec = {"bits": 3, "symmetric": symmetric, "per_channel": True}
    step, _ = lsq_init(torch.cat([uniform, laplace]), spec)
    torch.testing.assert_close(step[:4], qparams(uniform, spec)[0])
    torch.testing.assert_close(step[4:], 2 * laplace.abs().mean(dim=1, keepdim=True) / 3 ** 0.5)


def test_step_gradient_is_the_papers_scaled_by_g():
    torch.manual_seed(0)
    spec = {"bits": 3, "symmetric": True, "per_channel": True, "learned": True}
    w = torch.randn(4, 50)
    step = torch.full((4, 1), 0.3, requires_grad=True)
    wt = w.clone().requires_grad_(True)
    lsq_fake_quant(wt, step, None, spec).sum().backward()
    v = w / 0.3
    # paper eq. 3: -v + round(v) inside [-Qn, Qp], the clip bound outside; times g = 1/sqrt(N·Qp)
    d = torch.where(v <= -3, torch.tensor(-3.0), torch.where(v >= 3, torch.tensor(3.0), torch.round(v) - v))
    g = 1 / (50 * 3) ** 0.5
    assert lsq_grad_scale(w, spec) == pytest.approx(g)
    torch.testing.assert_close(step.grad, g * d.sum(dim=1, keepdim=True))
    # the weights: straight-through inside the clip range, none outside
    assert torch.equal(wt.grad, ((v > -3) & (v < 3)).float())


def test_asymmetric_zero_point_learns_from_clipped_weights():
    spec = {"bits": 2, "symmetric": False, "per_channel": True, "learned": True}
    w = torch.tensor([[-5.0, 0.2, 0.9, 4.0]])
    step, zero = torch.tensor([[1.0]], requires_grad=True), torch.tensor([[1.0]], requires_grad=True)
    wq = lsq_fake_quant(w, step, zero, spec)
    # grid: (q - 1)·Δ, q in 0..3 -> {-1, 0, 1, 2}
    assert wq.tolist() == [[-1.0, 0.0, 1.0, 2.0]]
    wq.sum().backward()
    g = 1 / (4 * 1) ** 0.5
    assert zero.grad.item() == pytest.approx(-g * 2)  # -Δ for each of the two clipped weights


@pytest.mark.parametrize("symmetric", [True, False])
def test_fake_quant_lies_on_the_learned_grid(net, obs, symmetric):
    q = train_a_little(lsq(net, bits=3, symmetric=symmetric), obs)
    for layer in q.layers:
        w = layer.effective_weight().detach()
        ratio = w / layer.step.detach().abs()
        ints = torch.round(ratio)
        assert (ratio - ints).abs().max() < 1e-5  # integer multiples of the learned step
        z = 0 if symmetric else torch.round(layer.zero_point.detach())
        assert (ints + z).min() >= (-3 if symmetric else 0) and (ints + z).max() <= (3 if symmetric else 7)
        assert (ints + z).min() == (-3 if symmetric else 0)  # the grid's ends are used: it clips


def test_pruned_weights_stay_exactly_zero(net, obs):
    q = compress_net(net, CompressConfig.model_validate({"prune": {"sparsity": 0.8},
                                                         "quantize": {"bits": 2, "mode": "lsq"}}),
                     Context(sample_obs=obs), None)
    train_a_little(q, obs)
    for layer in q.layers:
        assert (layer.effective_weight()[layer.mask == 0] == 0).all()


@pytest.mark.parametrize("cfg", [{"bits": 3}, {"bits": 2, "symmetric": True}, {"bits": 4, "per_channel": False},
                                 {"bits": 8, "symmetric": True}])
def test_artifact_acts_like_the_trained_torch_net(net, obs, cfg):
    q = lsq(net, **cfg)
    before = [layer.step.detach().clone() for layer in q.layers]
    train_a_little(q, obs)
    assert all(not torch.equal(b, layer.step) for b, layer in zip(before, q.layers))  # the steps were learned
    policy = NumpyPolicy.from_bytes(to_bytes(q, HEAD))
    for (w, *_), layer in zip(policy.layers, q.layers):  # decoded weights (in x out): the fake-quant's, bit for bit
        assert np.array_equal(w, layer.effective_weight().detach().numpy().T)
    with torch.no_grad():
        expected = q(torch.as_tensor(obs)).numpy()
    np.testing.assert_allclose(policy.forward(obs), expected, atol=1e-5, rtol=1e-5)
    assert [policy.act(o) for o in obs] == list(expected.argmax(1))


@pytest.mark.parametrize("symmetric", [True, False])
def test_spec_round_trip_keeps_the_learned_grid(net, obs, symmetric):
    """The RLlib module is rebuilt from the spec on a worker: same keys, and the state dict carries the steps."""
    q = train_a_little(lsq(net, bits=3, symmetric=symmetric), obs)
    rebuilt = PolicyNet.from_spec(q.spec())
    assert rebuilt.state_dict().keys() == q.state_dict().keys()
    assert "layers.0.step" in rebuilt.state_dict()
    rebuilt.load_state_dict(q.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(torch.as_tensor(obs)), q(torch.as_tensor(obs)))


def test_lsq_is_held_through_fine_tuning():
    assert QuantizeConfig(mode="lsq").pipeline_stage() == "held"
    with pytest.raises(ValueError, match="mode"):
        QuantizeConfig(mode="lsqplus")


@pytest.mark.slow
def test_compress_cartpole_lsq_learns_steps_and_exports_them(tmp_path):
    """Real RLlib fine-tune of the committed teacher (the trial `compress` runs, up to the export):
    the steps move, and the artifact acts exactly as the fine-tuned torch net."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from autocompress import measure, pipeline
    from autocompress.config import load_trial_spec
    from autocompress.nets import torch_act

    spec = load_trial_spec(ROOT / "trials" / "cartpole_ppo.yaml").updated({"finetune": {"iterations": 1}})
    cfg = CompressConfig.model_validate({"quantize": {"bits": 3, "mode": "lsq"}})
    out = pipeline.build_compressed(spec, cfg, tmp_path / "cache", log=lambda m: None)
    assert out.teacher.path.name in os.listdir(ROOT / "teachers")  # the committed teacher, not a new one
    initial = apply(out.teacher.actor.clone(), cfg.quantize)  # the steps as LSQ initialises them
    for a, b in zip(initial.layers, out.net.layers):
        assert b.step.shape == (b.out_features, 1) and not torch.equal(a.step, b.step)
    head = out.teacher.info["head"]
    policy = NumpyPolicy.from_bytes(to_bytes(out.net, head))
    act = torch_act(out.net, head)
    obs = measure.collect_obs(act, spec.env_creator(), 300, 123)
    assert [policy.act(o) for o in obs] == [act(o) for o in obs]
