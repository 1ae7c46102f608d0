"""Compression techniques: each module holds a config, one registered handler, and its
declarations (stage, order, group). Apply any of them with `apply(net, config, ctx)`.

Every module of this package is imported here, so a new technique is one new file:
`TECHNIQUES` (name -> config class, in pipeline order) is built from what registered.
"""

import importlib
import pkgutil

from autocompress.techniques.base import Context, TechniqueConfig, apply, registered
from autocompress.techniques.per_layer import per_layer_fields

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")

#: name used in YAML -> config class; the order is the pipeline's stage order.
TECHNIQUES: dict[str, type[TechniqueConfig]] = {
    c.name: c for c in sorted(registered(), key=lambda c: c.order)
}
#: techniques that may compress PPO's critic (settings separate from the deployed net's)
CRITIC_TECHNIQUES: dict[str, type[TechniqueConfig]] = {n: c for n, c in TECHNIQUES.items() if c.for_critic}
#: techniques with a per-layer setting -> that setting (the first, were there several): what layer
#: sensitivity sweeps one layer at a time
PER_LAYER: dict[str, str] = {n: next(iter(f)) for n, c in TECHNIQUES.items() if (f := per_layer_fields(c))}

from autocompress.techniques.distill import DistillConfig  # noqa: E402
from autocompress.techniques.lowrank import LowRankConfig  # noqa: E402
from autocompress.techniques.prune import PruneConfig  # noqa: E402
from autocompress.techniques.quantize import QuantizeConfig  # noqa: E402
from autocompress.techniques.share import ShareConfig  # noqa: E402
from autocompress.techniques.structured import StructuredConfig  # noqa: E402

__all__ = ["Context", "TechniqueConfig", "apply", "TECHNIQUES", "CRITIC_TECHNIQUES", "PER_LAYER", "DistillConfig",
           "LowRankConfig", "PruneConfig", "QuantizeConfig", "ShareConfig", "StructuredConfig"]
