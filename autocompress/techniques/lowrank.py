"""Low-rank factorization: W (out×in) ≈ A·B with A = U_r·√S_r (out×r), B = √S_r·V_rᵀ (r×in),
deployed as two Linear layers (in→r without bias or activation, then r→out). The rank
is given directly or as the smallest r whose singular values keep `energy` of ΣS².
A layer is factorized only where r·(in+out) < in·out, i.e. where it gets smaller.

A conv layer's W is its out×(C·kh·kw) filter matrix, so the same SVD gives a conv of r filters
(B: same kernel, stride and padding, no bias or activation) followed by a 1×1 conv (A: r -> out
channels per pixel) with the original bias and activation.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from autocompress.nets import CLinear, PolicyNet
from autocompress.techniques.base import Context, TechniqueConfig, register


class LowRankConfig(TechniqueConfig):
    name = "lowrank"
    stage = "structural"
    order = 30
    gentle = {"rank": "high", "energy": "high"}
    rank: int | None = Field(None, ge=1, description="fixed rank per layer")
    energy: float | None = Field(None, gt=0.0, le=1.0, description="kept fraction of squared singular values")

    @model_validator(mode="after")
    def _one_of(self):
        if (self.rank is None) == (self.energy is None):
            raise ValueError("give exactly one of 'rank' or 'energy'")
        return self


def rank_for_energy(s: torch.Tensor, energy: float) -> int:
    e = torch.cumsum(s ** 2, 0) / (s ** 2).sum()
    return int(torch.searchsorted(e, torch.tensor(energy) - 1e-7).item()) + 1


def factorize(layer: CLinear, rank: int) -> tuple[CLinear, CLinear]:
    if layer.mask is not None or layer.codebook is not None:
        raise ValueError("low-rank must run before masks/codebooks are set up")
    w = layer.weight.detach()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    r = min(rank, s.numel())
    root = s[:r].sqrt()
    pointwise = None if layer.conv is None else {"in_shape": [r, *layer.out_hw], "kernel": [1, 1], "stride": [1, 1],
                                                 "pad": [0, 0, 0, 0]}
    first = CLinear(layer.in_features, r, bias=False, act="none", conv=layer.conv)
    second = CLinear(r, layer.out_features, bias=layer.bias is not None, act=layer.act, conv=pointwise)
    with torch.no_grad():
        first.weight.copy_(root[:, None] * vh[:r])
        second.weight.copy_(u[:, :r] * root[None, :])
        if layer.bias is not None:
            second.bias.copy_(layer.bias.detach())
    return first, second


@register(LowRankConfig)
def _lowrank(net: PolicyNet, cfg: LowRankConfig, ctx: Context) -> PolicyNet:
    layers: list[CLinear] = []
    for layer in net.layers:
        n_in, n_out = layer.in_features, layer.out_features
        if cfg.rank is not None:
            r = cfg.rank
        else:
            r = rank_for_energy(torch.linalg.svdvals(layer.weight.detach()), cfg.energy)
        if r * (n_in + n_out) < n_in * n_out:
            layers.extend(factorize(layer, r))
            ctx.log(f"lowrank: {n_in}x{n_out} -> rank {r}")
        else:
            layers.append(layer)
    return PolicyNet(layers, net.input)
