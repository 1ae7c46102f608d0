"""In-kernel time of each conv kernel (direct fp32, im2col fp32, int8) per layer, and of whole act() calls.

    python -m benchmarks.conv_kernels [--calls 200] [--rounds 41]

Net: the MinAtar-shaped conv policy PolicyNet.cnn((10, 10, 4), "hwc", [[16, [3, 3], 1, "valid"], [8, 3, 2]],
[32], 3), every layer 8-bit per-channel symmetric (so int8 may run), on 256 MinAtar-like binary images.
Per conv layer the three kernels run in turn within every round on the layer's real inputs (kernels.c's
acz_time_layer, the loop the runtime's kernel choice uses); the table gives the median over rounds of the
mean µs per call. Then whole act() calls (native.time_side_by_side) with every conv layer on one kernel, the
head dense, and with the runtime's own choice. Prints a table; writes nothing.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from autocompress import native
from autocompress.artifact import to_bytes
from autocompress.conv import to_chw
from autocompress.layers import layers_of
from autocompress.nets import PolicyNet
from autocompress.runtime import _ACT, _conv, read_artifact

SHAPE, FILTERS = (10, 10, 4), [[16, [3, 3], 1, "valid"], [8, 3, 2]]
KERNELS = ("dense", "im2col", "int8")


def conv_artifact() -> bytes:
    torch.manual_seed(0)
    net = PolicyNet.cnn(SHAPE, "hwc", FILTERS, [32], 3)
    for layer in net.layers:
        layer.set_quant({"bits": 8, "per_channel": True, "symmetric": True})
    return to_bytes(net, {"kind": "discrete", "n": 3})


def layer_inputs(header: dict, layers, obs: np.ndarray) -> list[np.ndarray]:
    """Each conv layer's inputs (flat CHW, fp32) when the net acts on obs."""
    x, out = to_chw(obs.reshape(len(obs), -1), header["input"]), []
    for layer in layers:
        if layer.conv is None:
            break
        out.append(np.ascontiguousarray(x, np.float32))
        x = _ACT[layer.act](_conv(x, layer.w, layer.b, None, layer.conv))
    return out


def time_layer(layer, xs: np.ndarray, calls: int, rounds: int) -> dict[str, float]:
    """Median µs per call of each kernel on this layer, the kernels taking turns within each round."""
    size = native.scratch_sizes([layer], None, 0)
    y, qbuf = np.zeros(size["width"], np.float32), np.zeros(size["qbuf"], np.int8)
    cols = np.zeros(size["cols"], np.float32)
    ptr, c_layers, out = native._Arrays(), (native._Layer * len(KERNELS))(), np.zeros((rounds, len(KERNELS)))
    for k, c in zip(KERNELS, c_layers):
        native.fill_layer(c, layer, k, ptr)
    native._library().acz_time_layer(c_layers, len(KERNELS), xs.ctypes.data, len(xs), calls, rounds, y.ctypes.data,
                                     qbuf.ctypes.data, cols.ctypes.data, out.ctypes.data)
    return {k: float(v) / 1e3 for k, v in zip(KERNELS, np.median(out, axis=0))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=41)
    args = ap.parse_args()
    data = conv_artifact()
    header, blob = read_artifact(data)
    layers = layers_of(header, blob)
    obs = (np.random.default_rng(0).random((256, *SHAPE)) > 0.8).astype(np.float32)

    print(f"{'conv layer':<28} {'MACs':>7} " + " ".join(f"{k + ' µs':>11}" for k in KERNELS))
    for i, (layer, xs) in enumerate(zip(layers, layer_inputs(header, layers, obs))):
        (oh, ow), (n_out, n_in) = layer.out_hw, layer.shape
        t = time_layer(layer, xs, args.calls, args.rounds)
        name = f"{i}: {'x'.join(map(str, layer.conv['in_shape']))} -> {n_out}x{oh}x{ow}"
        print(f"{name:<28} {n_out * n_in * oh * ow:>7} " + " ".join(f"{t[k]:>11.2f}" for k in KERNELS))

    n_conv = sum(layer.conv is not None for layer in layers)
    policies = {f"all conv {k}": native.NativePolicy.from_bytes(data, [k] * n_conv + ["dense"] * (len(layers) - n_conv))
                for k in KERNELS}
    chosen = native.NativePolicy.from_bytes(data)
    policies[f"chosen {chosen.kernels}"] = chosen
    timed = native.time_side_by_side(policies, obs, warmup=200, calls=20, rounds=200)
    print(f"\n{'whole act()':<50} {'median µs':>10} {'p95 µs':>8}")
    for name, t in timed.items():
        print(f"{name:<50} {t['median_ms'] * 1e3:>10.2f} {t['p95_ms'] * 1e3:>8.2f}")


if __name__ == "__main__":
    main()
