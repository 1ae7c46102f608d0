"""k-bit uniform quantization of weights (k = 2..8), on the grid of `autocompress.quantgrid`.

PTQ quantizes once after fine-tuning; QAT fake-quantizes in every forward during fine-tuning
with a straight-through gradient, then the same grid is exported. LSQ (Esser et al. 2020) is QAT
whose step (and, asymmetric, zero point) are parameters trained with the weights, starting at
2·mean|w|/sqrt(2^(k-1) - 1); the learned grid is the exported one (see quantgrid).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from autocompress.nets import PolicyNet
from autocompress.techniques.base import Context, TechniqueConfig, register


class QuantizeConfig(TechniqueConfig):
    name = "quantize"
    stage = "final"
    order = 60
    group = "weight_coding"
    bits: int = Field(8, ge=2, le=8)
    symmetric: bool = False
    per_channel: bool = True
    mode: Literal["ptq", "qat", "lsq"] = Field("ptq", description=(
        "ptq: quantize after fine-tuning; qat: fake-quant on the weights' min/max grid during fine-tuning; "
        "lsq: QAT with a step per channel (per tensor) learned in fine-tuning (asymmetric: zero point too)"))

    def pipeline_stage(self):
        return "held" if self.mode in ("qat", "lsq") else "final"


@register(QuantizeConfig)
def _quantize(net: PolicyNet, cfg: QuantizeConfig, ctx: Context) -> PolicyNet:
    spec = cfg.model_dump(include={"bits", "symmetric", "per_channel"})
    for layer in net.layers:
        layer.set_quant({**spec, **({"learned": True} if cfg.mode == "lsq" else {})})
    return net
