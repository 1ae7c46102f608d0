"""Parameter sharing: cluster each layer's weights (1-D k-means) into a codebook of at
most 2^bits values. Deployed as b-bit indices + the fp32 codebook; during fine-tune the
indices are fixed and the centroids are trained (gradients of a centroid are summed over
the weights that share it). Pruned weights (mask 0) are left out of the clustering.

`bits` may be per layer (see techniques/per_layer.py): [4, 2, 6] one per layer, or {0: 3} for the
listed layers only (the others keep their own fp32 weights).
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from autocompress.nets import CLinear, PolicyNet
from autocompress.techniques.base import Context, TechniqueConfig, register
from autocompress.techniques.per_layer import logical_layers, per_layer_type, setting_values

Bits = per_layer_type(int, ge=1, le=8)


class ShareConfig(TechniqueConfig):
    name = "share"
    stage = "held"
    order = 50
    group = "weight_coding"
    gentle = {"bits": "high"}
    sweep = (6, 5, 4, 3, 2)
    stack_rank = 1
    recurrent = True  # a codebook for each of an LSTM / GRU layer's ih and hh too
    bits: Bits = Field(4, description="codebook of 2^bits centroids per layer: one for all layers, a list "
                                      "(one per layer) or a map {layer: bits} (unlisted layers are not shared)")


def cluster(values: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(codebook (k',), labels) with k' = min(k, distinct values); a layer pruned to nothing gets
    the one-entry codebook [0] (its weights are all masked)."""
    if values.size == 0:
        return np.zeros(1, np.float32), np.zeros(0, np.int64)
    from sklearn.cluster import KMeans  # imported here: scikit-learn takes seconds to import

    k = min(k, len(np.unique(values)))
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(values.reshape(-1, 1).astype(np.float64))
    return km.cluster_centers_.ravel().astype(np.float32), km.labels_


@register(ShareConfig)
def _share(net: PolicyNet, cfg: ShareConfig, ctx: Context) -> PolicyNet:
    groups = logical_layers(net)
    for layers, bits in zip(groups, setting_values(cfg, "bits", len(groups))):
        if bits is None:  # a layer the map leaves out keeps its fp32 weights
            continue
        for layer in layers:
            if layer.codebook is None:  # shared once: later rounds keep the codebook being fine-tuned
                share_layer(layer, bits, ctx.seed)
    return net


def share_layer(layer: CLinear, bits: int, seed: int) -> None:
    """Replace the layer's weight by a codebook of at most 2^bits centroids and per-weight indices."""
    w = layer.raw_weight().detach()
    keep = (layer.mask.bool() if layer.mask is not None else torch.ones_like(w, dtype=torch.bool)).numpy()
    codebook, labels = cluster(w.numpy()[keep], 2 ** bits, seed)
    indices = np.zeros(w.shape, dtype=np.int64)
    indices[keep] = labels
    layer.set_codebook(torch.from_numpy(codebook), torch.from_numpy(indices))
