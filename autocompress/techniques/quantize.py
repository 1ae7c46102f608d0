"""k-bit uniform quantization of weights (k = 2..8).

Asymmetric: step Δ = (max - min) / (2^k - 1) with an integer zero point; symmetric:
Δ = max|w| / (2^(k-1) - 1) and codes in [-(2^(k-1) - 1), 2^(k-1) - 1]. The range always
includes 0, so pruned (zero) weights stay exactly zero. Per-channel means one Δ per
output row. PTQ quantizes once after fine-tuning; QAT fake-quantizes in every forward
during fine-tuning with a straight-through gradient, then the same grid is exported.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from autocompress.nets import PolicyNet
from autocompress.techniques.base import Context, TechniqueConfig, register


class QuantizeConfig(TechniqueConfig):
    name = "quantize"
    bits: int = Field(8, ge=2, le=8)
    symmetric: bool = False
    per_channel: bool = True
    mode: Literal["ptq", "qat"] = "ptq"


def qparams(w: torch.Tensor, spec: dict) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """(scale Δ, zero point, qmin, qmax); scale and zero point have shape (rows, 1) or (1, 1)."""
    bits = spec["bits"]
    w = w.detach()
    if spec["per_channel"]:
        lo, hi = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)
    else:
        lo, hi = w.min().reshape(1, 1), w.max().reshape(1, 1)
    lo, hi = lo.clamp(max=0.0), hi.clamp(min=0.0)
    if spec["symmetric"]:
        qmax = 2 ** (bits - 1) - 1
        qmin = -qmax
        scale = torch.maximum(-lo, hi) / qmax
        zero = torch.zeros_like(scale)
    else:
        qmin, qmax = 0, 2 ** bits - 1
        scale = (hi - lo) / qmax
        zero = torch.round(-lo / torch.where(scale > 0, scale, torch.ones_like(scale)))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero channel
    return scale, zero, qmin, qmax


def quantize_codes(w: torch.Tensor, spec: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Integer codes q in [qmin, qmax] with w ≈ (q - zero) * scale."""
    scale, zero, qmin, qmax = qparams(w, spec)
    q = torch.clamp(torch.round(w.detach() / scale) + zero, qmin, qmax)
    return q, scale, zero, qmin


def fake_quant(w: torch.Tensor, spec: dict) -> torch.Tensor:
    """Quantize-dequantize in the forward pass; identity gradient (straight-through)."""
    q, scale, zero, _ = quantize_codes(w, spec)
    wq = (q - zero) * scale
    return w + (wq - w).detach()


@register(QuantizeConfig)
def _quantize(net: PolicyNet, cfg: QuantizeConfig, ctx: Context) -> PolicyNet:
    spec = cfg.model_dump(include={"bits", "symmetric", "per_channel"})
    for layer in net.layers:
        if layer.codebook is not None:
            raise ValueError("quantize: layer weights are already shared (codebook); "
                             "enable either 'share' or 'quantize', not both")
        layer.quant = dict(spec)
    return net
