"""Compression techniques: each module holds a config, one registered handler, and
what the search may vary. Apply any of them with `apply(net, config, ctx)`."""

from autocompress.techniques.base import Context, TechniqueConfig, apply
from autocompress.techniques.distill import DistillConfig
from autocompress.techniques.lowrank import LowRankConfig
from autocompress.techniques.prune import PruneConfig
from autocompress.techniques.quantize import QuantizeConfig
from autocompress.techniques.share import ShareConfig
from autocompress.techniques.structured import StructuredConfig

#: name used in YAML -> config class; the order is the pipeline's stage order.
TECHNIQUES: dict[str, type[TechniqueConfig]] = {
    c.name: c for c in (DistillConfig, StructuredConfig, LowRankConfig, PruneConfig, ShareConfig, QuantizeConfig)
}

__all__ = ["Context", "TechniqueConfig", "apply", "TECHNIQUES", "DistillConfig", "LowRankConfig",
           "PruneConfig", "QuantizeConfig", "ShareConfig", "StructuredConfig"]
