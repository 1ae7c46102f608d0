"""Unstructured pruning: zero individual weights by magnitude (to a target sparsity) or
below a threshold θ. One-shot, or iterative: the pipeline calls `apply` with a rising
sparsity between fine-tune rounds (`schedule`). Masks live in the net (`CLinear.mask`),
so fine-tuning keeps pruned weights at zero; `l1` adds an L1 penalty during fine-tune.

`sparsity` may be per layer (see techniques/per_layer.py): [0.5, 0.9, 0.2] one per layer, or
{1: 0.9} for the listed layers only (the others are not pruned, by either method); an iterative
schedule ramps every layer's sparsity alike.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from autocompress.nets import PolicyNet
from autocompress.techniques.base import Context, TechniqueConfig, register
from autocompress.techniques.per_layer import logical_layers, per_layer_type, setting_values

Sparsity = per_layer_type(float, ge=0.0, lt=1.0)


class PruneConfig(TechniqueConfig):
    name = "prune"
    stage = "held"
    order = 40
    gentle = {"sparsity": "low", "threshold": "low"}
    sweep = (0.5, 0.7, 0.9, 0.95)
    sweep_base = {"method": "magnitude"}  # a threshold ignores the swept sparsity
    stack_rank = 2
    recurrent = True  # masks on an LSTM / GRU layer's ih and hh too
    method: Literal["magnitude", "threshold"] = "magnitude"
    sparsity: Sparsity = Field(0.5, description="fraction of each layer's weights zeroed (magnitude): one for all "
                                                "layers, a list (one per layer) or a map {layer: sparsity}")
    threshold: float = Field(0.0, ge=0.0, description="|w| below this is zeroed (threshold)")
    schedule: Literal["oneshot", "iterative"] = "oneshot"
    steps: int = Field(3, ge=1, le=20, description="prune -> fine-tune rounds when iterative")
    l1: float = Field(0.0, ge=0.0, le=1.0, description="L1 penalty weight during fine-tune")

    @model_validator(mode="after")
    def _threshold_given(self):
        if self.method == "threshold" and self.threshold <= 0:
            raise ValueError("method 'threshold' needs threshold > 0")
        return self

    def schedule_sparsities(self) -> list:
        """Target sparsity after each round: cubic ramp (Zhu & Gupta 2017), last = target (per layer
        when the sparsity is: each layer's target scaled by the same ramp)."""
        if self.schedule == "oneshot" or self.method == "threshold":
            return [self.sparsity]
        n = self.steps
        return [_scaled(self.sparsity, 1 - (1 - (i + 1) / n) ** 3) for i in range(n)]

    def round_configs(self) -> list["PruneConfig"]:
        """One config per fine-tune round, each pruning to that round's scheduled sparsity."""
        return [self.model_copy(update={"sparsity": s}) for s in self.schedule_sparsities()]


def _scaled(sparsity, f: float):
    if isinstance(sparsity, list):
        return [s * f for s in sparsity]
    if isinstance(sparsity, dict):
        return {i: s * f for i, s in sparsity.items()}
    return sparsity * f


def magnitude_mask(w: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Mask with exactly round(sparsity * numel) zeros at the smallest |w| (ties by index)."""
    k = int(round(sparsity * w.numel()))
    mask = torch.ones(w.numel())
    if k:
        order = torch.argsort(w.detach().abs().flatten(), stable=True)
        mask[order[:k]] = 0.0
    return mask.reshape(w.shape)


@register(PruneConfig)
def _prune(net: PolicyNet, cfg: PruneConfig, ctx: Context) -> PolicyNet:
    groups = logical_layers(net)
    sparsities = setting_values(cfg, "sparsity", len(groups))
    with torch.no_grad():
        for layer, sparsity in ((layer, s) for layers, s in zip(groups, sparsities) for layer in layers):
            if sparsity is None:  # a layer the map leaves out is not pruned
                continue
            w = layer.raw_weight()
            if cfg.method == "magnitude":
                mask = magnitude_mask(w, sparsity)
            else:
                mask = (w.abs() >= cfg.threshold).float()
            if layer.mask is None:
                layer.mask = mask
            else:  # iterative: never revive a weight pruned in an earlier round
                layer.mask.copy_(layer.mask * mask if cfg.method == "threshold" else mask)
            if layer.weight is not None:
                layer.weight.mul_(layer.mask)
    return net
