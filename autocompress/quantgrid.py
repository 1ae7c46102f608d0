"""k-bit uniform quantization grids (torch only): the math shared by fake-quant in `nets`, the
exporter's integer codes, and the `quantize` technique. Low level on purpose: nothing here
imports a technique, so `nets` and `artifact` depend on this and not on `techniques`.

Asymmetric: step Δ = (max - min) / (2^k - 1) with an integer zero point; symmetric:
Δ = max|w| / (2^(k-1) - 1) and codes in [-(2^(k-1) - 1), 2^(k-1) - 1]. The range always
includes 0, so pruned (zero) weights stay exactly zero. Per-channel means one Δ per
output row. `spec` is {bits, symmetric, per_channel}.
"""

from __future__ import annotations

import torch


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
