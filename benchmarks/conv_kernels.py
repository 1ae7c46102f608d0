"""In-kernel time of each conv kernel (direct fp32, im2col fp32, int8) per layer, and of whole act() calls.

    python -m benchmarks.conv_kernels [--calls 200] [--rounds 41] [--data PATH]

Net: the committed MinAtar Breakout teacher (trials/minatar_breakout_ppo.yaml: conv 16 and 32 3x3 'valid',
[128], 3 logits), every layer 8-bit per-channel symmetric (so int8 may run), on 256 states the teacher visits.
Per conv layer the three kernels run in turn within every round on the layer's real inputs (kernels.c's
acz_time_layer, the loop the runtime's kernel choice uses); the table gives the median over rounds of the
mean µs per call. Then whole act() calls (native.time_side_by_side) with every conv layer on one kernel, the
head dense, and with the runtime's own choice. Results: docs/data/conv_kernels.json (benchmarks.report renders
them).
"""

from __future__ import annotations

import numpy as np

from autocompress import native
from autocompress.artifact import to_bytes
from autocompress.conv import to_chw
from autocompress.layers import layers_of
from autocompress.runtime import ACTIVATIONS, NumpyPolicy, conv_layer, read_artifact
from benchmarks.common import ROOT, RUNTIME_CODE, benchmark_parser, command_of, data_sections, md_table, save_results
from benchmarks.report import Target

KERNELS = ("dense", "im2col", "int8")
SPEC = ROOT / "trials" / "minatar_breakout_ppo.yaml"
MEASURED_BY = (*RUNTIME_CODE, "autocompress/envs.py", "autocompress/minatar_env.py", "autocompress/teacher.py",
               "trials/minatar_breakout_ppo.yaml", "teachers",
               *(f"benchmarks/conv_kernels.py::{n}" for n in ("KERNELS", "SPEC", "conv_artifact", "layer_inputs",
                                                              "time_layer", "measure")))


def conv_artifact() -> tuple[bytes, np.ndarray]:
    """(the teacher, int8 per channel, as an artifact; 256 states the teacher visits)."""
    import autocompress as ac
    from autocompress import measure

    spec = ac.load_trial_spec(SPEC)
    teacher = ac.teach(spec)
    net = teacher.actor.clone()
    for layer in net.layers:
        layer.set_quant({"bits": 8, "per_channel": True, "symmetric": True})
    data = to_bytes(net, teacher.info["head"])
    obs = measure.collect_obs(NumpyPolicy.from_bytes(data).act, spec.env_creator(), 256, spec.eval.seed)
    return data, obs


def layer_inputs(header: dict, layers, obs: np.ndarray) -> list[np.ndarray]:
    """Each conv layer's inputs (flat CHW, fp32) when the net acts on obs."""
    x, out = to_chw(obs.reshape(len(obs), -1), header["input"]), []
    for layer in layers:
        if layer.conv is None:
            break
        out.append(np.ascontiguousarray(x, np.float32))
        x = ACTIVATIONS[layer.act](conv_layer(x, layer.w, layer.b, None, layer.conv))
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


def measure(args) -> dict:
    """Per conv layer its shapes, multiply-adds and µs per call of each kernel; whole act() µs (median, p95) with
    every conv layer on one kernel, and with the runtime's own choice (`chosen`: its kernels)."""
    data, obs = conv_artifact()
    header, blob = read_artifact(data)
    layers = layers_of(header, blob)
    conv = []
    for layer, xs in zip(layers, layer_inputs(header, layers, obs)):
        (oh, ow), (n_out, n_in) = layer.out_hw, layer.shape
        conv.append({"in_shape": list(layer.conv["in_shape"]), "out_shape": [n_out, oh, ow],
                     "macs": n_out * n_in * oh * ow, "us": time_layer(layer, xs, args.calls, args.rounds)})
    n_conv = sum(layer.conv is not None for layer in layers)
    policies = {k: native.NativePolicy.from_bytes(data, [k] * n_conv + ["dense"] * (len(layers) - n_conv))
                for k in KERNELS}
    chosen = native.NativePolicy.from_bytes(data)
    policies["chosen"] = chosen
    timed = native.time_side_by_side(policies, obs, warmup=200, calls=20, rounds=200)
    return {"calls": args.calls, "rounds": args.rounds, "layers": conv, "chosen": list(chosen.kernels),
            "whole": {k: {"median_us": t["median_ms"] * 1e3, "p95_us": t["p95_ms"] * 1e3} for k, t in timed.items()}}


def render(data: dict) -> str:
    n_conv = len(data["layers"])
    label = lambda k: f"chosen {data['chosen']}" if k == "chosen" else f"all conv {k}"  # noqa: E731
    return "\n".join([
        "The committed MinAtar Breakout CNN teacher, every layer 8-bit per channel (so int8 may run), on 256 states it "
        "visits. Per conv layer the three kernels take turns within every round (the loop the runtime's own choice "
        "uses; median over rounds of µs per call); then whole `act()` calls with every conv layer on one kernel (head "
        "dense), and the runtime's own per-layer choice, timed side by side.", "",
        *md_table(["conv layer", "multiply-adds", *(f"{k} µs" for k in KERNELS)],
                  [[f"{i}: {'x'.join(map(str, c['in_shape']))} -> {'x'.join(map(str, c['out_shape']))}", c["macs"],
                    *(f"{c['us'][k]:.2f}" for k in KERNELS)] for i, c in enumerate(data["layers"])]), "",
        *md_table(["whole act()", "median µs", "p95 µs"],
                  [[label(k), f"{t['median_us']:.2f}", f"{t['p95_us']:.2f}"] for k, t in data["whole"].items()]), "",
        "Why direct convolution loses, a likely reason, not profiled: its inner loops are short (kernel rows of 3, "
        "output rows of 6-8), while im2col and int8 run one contiguous dot product of C·kh·kw (36, 144) per filter "
        "and pixel; int8 does it 32 bytes per instruction where the CPU has VNNI (four filters per read of the "
        "patch, the last C·kh·kw % 32 by masked loads), and rounds the whole input once per call. The per-layer "
        f"choice at load picks {' '.join(data['chosen'][:n_conv])} for the conv layers here."])


def targets(data: dict) -> list[Target]:
    us = [c["us"] for c in data["layers"]]
    fmt = lambda k: " / ".join(f"{u[k]:.2f}" for u in us)  # noqa: E731
    whole = data["whole"]
    return [Target("Conv kernels at batch 1 (direct vs im2col vs int8, chosen by measurement); int8 beats fp32 on "
                   "the MinAtar conv layers (issue 25)",
                   f"int8 {fmt('int8')} µs vs im2col {fmt('im2col')}, direct {fmt('dense')} per conv layer; whole "
                   f"act() {whole['chosen']['median_us']:.1f} µs with the runtime's choice "
                   f"({', '.join(data['chosen'][:len(us)])}), {whole['im2col']['median_us']:.1f} all im2col",
                   all(u["int8"] < min(u["dense"], u["im2col"]) for u in us))]


def sections() -> list:
    return data_sections("conv_kernels", "Conv kernels at batch 1", MEASURED_BY, render, targets)


def main() -> None:
    ap = benchmark_parser(__doc__, "conv_kernels")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=41)
    args = ap.parse_args()
    save_results(args.data, "conv_kernels", measure(args), command_of("conv_kernels", args, ("calls", "rounds")),
                 MEASURED_BY, render)


if __name__ == "__main__":
    main()
