"""k-bit uniform quantization grids (torch only): the math shared by fake-quant in `nets`, the
exporter's integer codes, and the `quantize` technique. Low level on purpose: nothing here
imports a technique, so `nets` and `artifact` depend on this and not on `techniques`.

Asymmetric: step Δ = (max - min) / (2^k - 1) with an integer zero point; symmetric:
Δ = max|w| / (2^(k-1) - 1) and codes in [-(2^(k-1) - 1), 2^(k-1) - 1]. The range always
includes 0, so pruned (zero) weights stay exactly zero. Per-channel means one Δ per
output row. `spec` is {bits, symmetric, per_channel}, plus `learned: true` for LSQ.

LSQ (Esser et al. 2020, "Learned Step Size Quantization"): Δ is a trained parameter, not the
weights' range; round has a straight-through gradient, and Δ's gradient is scaled by
g = 1/sqrt(weights per Δ · Qp). Asymmetric LSQ also learns its zero point (as LSQ+ learns an
offset), kept an integer in [0, 2^k - 1] by rounding with a straight-through gradient, so the
grid still holds 0 and the artifact stores it as today's uint8 zero point. The initial grid is the
paper's or today's min/max one, per channel the one with less error (see `lsq_init`).
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
    return _value_of(((q - zero) * scale).detach(), w)


def _value_of(exact: torch.Tensor, grad_path: torch.Tensor) -> torch.Tensor:
    """`exact`'s value bit for bit (w + (wq - w) may be 1 ulp off wq), `grad_path`'s gradient."""
    return exact + (grad_path - grad_path.detach())


def round_ste(x: torch.Tensor) -> torch.Tensor:
    return _value_of(torch.round(x).detach(), x)


def _grad_scale(x: torch.Tensor, g: float) -> torch.Tensor:
    """x in the forward pass; its gradient times g."""
    return _value_of(x.detach(), x * g)


# -- LSQ: learned step (and zero point) ---------------------------------------------------

def code_range(spec: dict) -> tuple[int, int]:
    """(qmin, qmax) of the stored integer codes: [-(2^(k-1) - 1), 2^(k-1) - 1] symmetric, [0, 2^k - 1] not."""
    bits = spec["bits"]
    return (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if spec["symmetric"] else (0, 2 ** bits - 1)


def lsq_init(w: torch.Tensor, spec: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Initial (step, zero point) of LSQ, shapes (rows, 1) or (1, 1); the zero point is None for symmetric.

    Per channel, whichever of two grids quantizes the channel with the smaller squared error: the paper's
    Δ = 2·mean|w|/sqrt(Qp) (Qp = 2^(k-1) - 1; asymmetric: zero point 2^(k-1), the paper's integer weights
    -2^(k-1) .. 2^(k-1) - 1) or today's min/max grid (`qparams`). Measured on the Pendulum SAC teacher
    before fine-tuning (10 episodes, teacher -158): the paper's alone clips the few large weights these policies rely on
    (symmetric 3 bits: return -746, min/max -159); min/max alone wastes levels at 2 bits (asymmetric:
    -1157, the better per channel -206); the better per channel matched or beat both at 2-4 bits,
    symmetric 2 bits aside (-1100 vs the paper's -1004, both near a random policy)."""
    w = w.detach()
    mean_abs = w.abs().mean(dim=1, keepdim=True) if spec["per_channel"] else w.abs().mean().reshape(1, 1)
    paper = 2 * mean_abs / _qp(spec) ** 0.5
    paper = torch.where(paper > 0, paper, torch.ones_like(paper))  # an all-zero (pruned) channel
    # asymmetric: the paper's grid for weights, integers -2^(k-1) .. 2^(k-1) - 1
    paper_zero = None if spec["symmetric"] else torch.full_like(paper, float(2 ** (spec["bits"] - 1)))
    minmax, minmax_zero, _, _ = qparams(w, spec)
    minmax_zero = None if spec["symmetric"] else minmax_zero

    def error(step, zero):
        q, scale, z = lsq_codes(w, step, zero, spec)
        err = ((q - z) * scale - w).pow(2)
        return err.sum(dim=1, keepdim=True) if spec["per_channel"] else err.sum().reshape(1, 1)

    use_minmax = error(minmax, minmax_zero) < error(paper, paper_zero)
    step = torch.where(use_minmax, minmax, paper)
    return step, None if spec["symmetric"] else torch.where(use_minmax, minmax_zero, paper_zero)


def lsq_grad_scale(w: torch.Tensor, spec: dict) -> float:
    """The paper's g = 1/sqrt(N · Qp), N the weights sharing one step."""
    n = w.shape[1] if spec["per_channel"] else w.numel()
    return 1.0 / (n * _qp(spec)) ** 0.5


def _qp(spec: dict) -> int:
    return 2 ** (spec["bits"] - 1) - 1


def _lsq_bounds(step: torch.Tensor, zero: torch.Tensor | None, spec: dict, g: float):
    """(Δ, integer zero point, lowest and highest integer weight q - zero) with LSQ's gradients."""
    qmin, qmax = code_range(spec)
    s = _grad_scale(step, g).abs()  # |Δ|: an optimizer step through 0 cannot flip the grid
    s = _value_of(torch.where(s.detach() > 0, s.detach(), torch.ones_like(s)), s)
    if zero is None:
        return s, torch.zeros_like(s), torch.full_like(s, qmin), torch.full_like(s, qmax)
    z = round_ste(torch.clamp(_grad_scale(zero, g), qmin, qmax))
    return s, z, -z, qmax - z


def lsq_fake_quant(w: torch.Tensor, step: torch.Tensor, zero: torch.Tensor | None, spec: dict) -> torch.Tensor:
    """ŵ = round(clamp(w/Δ, -z, qmax - z))·Δ with a straight-through round: w's gradient is 1 inside
    the clip range and 0 outside; Δ's is (round(w/Δ) - w/Δ) inside and the clip bound outside, times g
    (paper eq. 3-5); the zero point's is -Δ on weights clipped, times g."""
    s, _, lo, hi = _lsq_bounds(step, zero, spec, lsq_grad_scale(w, spec))
    v = torch.minimum(torch.maximum(w / s, lo), hi)
    wq = round_ste(v) * s
    q, scale, _ = lsq_codes(w, step, zero, spec)
    return _value_of(((q - _zero_int(zero, spec)) * scale).detach(), wq)


def _zero_int(zero: torch.Tensor | None, spec: dict) -> torch.Tensor:
    if zero is None:
        return torch.zeros(1)
    qmin, qmax = code_range(spec)
    return torch.clamp(torch.round(zero.detach()), qmin, qmax)


def lsq_codes(w: torch.Tensor, step: torch.Tensor, zero: torch.Tensor | None,
              spec: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes q in [qmin, qmax], Δ, zero point) of w on the learned grid: w ≈ (q - zero)·Δ, the
    numbers `lsq_fake_quant` computes its forward value from and the artifact stores."""
    qmin, qmax = code_range(spec)
    s = step.detach().abs()
    s = torch.where(s > 0, s, torch.ones_like(s))
    z = _zero_int(zero, spec).expand_as(s)
    q = torch.clamp(torch.round(w.detach() / s) + z, qmin, qmax)
    return q, s, z
