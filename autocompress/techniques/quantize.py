"""k-bit uniform quantization of weights (k = 2..8), on the grid of `autocompress.quantgrid`.

PTQ quantizes once after fine-tuning; QAT fake-quantizes in every forward during fine-tuning
with a straight-through gradient, then the same grid is exported. LSQ (Esser et al. 2020) is QAT
whose step (and, asymmetric, zero point) are parameters trained with the weights, starting per channel
at the paper's 2·mean|w|/sqrt(2^(k-1) - 1) or the min/max grid, whichever fits the channel's weights
better; the learned grid is the exported one (see quantgrid.lsq_init).

`bits` may be per layer (see techniques/per_layer.py): [8, 4, 6] one per layer, or {0: 8, 2: 4} for the
listed layers only (the others stay fp32). Each layer's artifact entry carries its own bit width.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from autocompress.nets import PolicyNet
from autocompress.techniques.base import Context, TechniqueConfig, register
from autocompress.techniques.per_layer import logical_layers, per_layer_type, setting_values

Bits = per_layer_type(int, ge=2, le=8)


class QuantizeConfig(TechniqueConfig):
    name = "quantize"
    stage = "final"
    order = 60
    group = "weight_coding"
    gentle = {"bits": "high"}
    on_device = {"symmetric": True}  # 8-bit codes run integer-only when symmetric (<= 7 bits when not)
    sweep = (8, 7, 6, 5, 4, 3, 2)
    stack_rank = 1
    recurrent = True  # per gate row (per_channel) on an LSTM / GRU layer's ih and hh too
    bits: Bits = Field(8, description="2..8 for all layers, a list (one per layer) or a map {layer: bits} "
                                      "(unlisted layers stay fp32)")
    symmetric: bool = False
    per_channel: bool = True
    mode: Literal["ptq", "qat", "lsq"] = Field("ptq", description=(
        "ptq: quantize after fine-tuning; qat: fake-quant on the weights' min/max grid during fine-tuning; "
        "lsq: QAT with a step per channel (per tensor) learned in fine-tuning (asymmetric: zero point too)"))

    def pipeline_stage(self):
        return "held" if self.mode in ("qat", "lsq") else "final"


@register(QuantizeConfig)
def _quantize(net: PolicyNet, cfg: QuantizeConfig, ctx: Context) -> PolicyNet:
    spec = cfg.model_dump(include={"symmetric", "per_channel"})
    groups = logical_layers(net)
    for layers, bits in zip(groups, setting_values(cfg, "bits", len(groups))):
        if bits is None:  # a layer the map leaves out stays fp32
            continue
        for layer in layers:
            layer.set_quant({"bits": bits, **spec, **({"learned": True} if cfg.mode == "lsq" else {})})
    return net
