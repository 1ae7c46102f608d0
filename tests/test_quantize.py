import pytest
import torch

from autocompress.techniques import QuantizeConfig, apply
from autocompress.quantgrid import fake_quant, qparams, quantize_codes


def spec(bits, symmetric=False, per_channel=True):
    return {"bits": bits, "symmetric": symmetric, "per_channel": per_channel}


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("per_channel", [False, True])
def test_error_within_half_step_and_at_most_2k_levels(bits, symmetric, per_channel):
    torch.manual_seed(bits)
    w = torch.randn(16, 32) * torch.linspace(0.1, 3, 16)[:, None] + 0.3
    s = spec(bits, symmetric, per_channel)
    scale, _, _, _ = qparams(w, s)
    wq = fake_quant(w, s)
    assert ((wq - w).abs() <= scale / 2 + 1e-6).all()
    rows = wq if per_channel else wq.reshape(1, -1)
    for row in rows:
        assert len(torch.unique(row)) <= 2 ** bits


def test_asymmetric_step_is_range_over_levels():
    w = torch.tensor([[-1.0, 0.5, 2.0]])
    scale, zero, qmin, qmax = qparams(w, spec(3))
    assert scale.item() == pytest.approx(3.0 / 7)
    assert (qmin, qmax) == (0, 7)


def test_zero_stays_exactly_zero():
    w = torch.randn(8, 8)
    w[w.abs() < 0.5] = 0.0
    for symmetric in (False, True):
        wq = fake_quant(w, spec(3, symmetric))
        assert (wq[w == 0] == 0).all()


def test_per_channel_beats_per_tensor_on_uneven_channels():
    torch.manual_seed(1)
    w = torch.randn(8, 64) * torch.tensor([0.01, 0.02, 0.05, 0.1, 1, 2, 5, 10])[:, None]
    err_c = (fake_quant(w, spec(4, per_channel=True)) - w).pow(2).mean()
    err_t = (fake_quant(w, spec(4, per_channel=False)) - w).pow(2).mean()
    assert err_c < err_t


def test_straight_through_gradient_is_identity():
    w = torch.randn(4, 4, requires_grad=True)
    fake_quant(w, spec(2)).sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_codes_fit_in_bits():
    w = torch.randn(10, 10)
    for sym in (False, True):
        q, _, _, qmin = quantize_codes(w, spec(5, sym))
        assert (q - qmin).min() >= 0 and (q - qmin).max() <= 31


def test_config_rejects_bits_out_of_range():
    with pytest.raises(ValueError, match="bits"):
        QuantizeConfig(bits=9)
    with pytest.raises(ValueError, match="bits"):
        QuantizeConfig(bits=1)


def test_apply_sets_fake_quant_on_every_layer(net, obs):
    before = net(torch.as_tensor(obs))
    q = apply(net.clone(), QuantizeConfig(bits=2, per_channel=False))
    assert all(layer.quant["bits"] == 2 for layer in q.layers)
    assert not torch.allclose(q(torch.as_tensor(obs)), before)
