"""Latency floor: the exported artifact in our runtimes (C kernel, numpy) vs the same weights
in a bare numpy forward, torch eager and onnxruntime — batch 1, one thread, side by side, each
`act()` called from Python (the in-kernel objective is benchmarks/kernels.py).

    python -m benchmarks.latency_floor [--calls 20000] [--data PATH]

Artifacts: the CartPole PPO teacher (fp32 [256, 256]) and compressed versions made
without fine-tuning (the weights' values do not change latency, only shapes do).
Results: docs/data/latency_floor.json (benchmarks.report renders them).
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch

from benchmarks.common import RUNTIME_CODE, benchmark_parser, command_of, data_sections, md_table, save_results
from benchmarks.report import Target

VARIANTS = {
    "teacher fp32 [256,256]": {},
    "int8 PTQ [256,256]": {"quantize": {"bits": 8}},
    "90% pruned [256,256]": {"prune": {"sparsity": 0.9}},
    "structured 50% [128,128]": {"structured": {"amount": 0.5, "criterion": "l1"}},
    "distilled-shape [32,32]": {"structured": {"amount": 0.875, "criterion": "l1"}},
}


def decoded(net):
    """(W input-major, b, act) per layer: the weights as deployed (mask, codebook, k-bit grid applied)."""
    with torch.no_grad():
        return [(layer.effective_weight().numpy().T.copy(), layer.bias.numpy().copy(),
                 None if layer.act == "none" else layer.act) for layer in net.layers]


def bare_numpy(layers):
    """The floor: the same decoded weights, one matmul + bias + activation per layer, nothing else."""
    (w1, b1, _), (w2, b2, _), (w3, b3, _) = layers

    def act(obs):
        return int(np.argmax(np.tanh(np.tanh(obs @ w1 + b1) @ w2 + b2) @ w3 + b3))

    return act


def torch_eager(layers):
    mods = []
    for w, b, a in layers:
        lin = torch.nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w.T.copy()))
            lin.bias.copy_(torch.from_numpy(b))
        mods += [lin] + ([torch.nn.Tanh()] if a is not None else [])
    net = torch.nn.Sequential(*mods).eval()

    def act(obs):
        with torch.no_grad():
            return int(net(torch.from_numpy(obs)).argmax())

    return act, net


def onnx_runtime(net, obs_dim):
    import onnxruntime as ort

    buf = io.BytesIO()
    torch.onnx.export(net, (torch.zeros(1, obs_dim),), buf, dynamo=False, input_names=["obs"], output_names=["out"])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])

    def act(obs):
        return int(np.argmax(sess.run(None, {"obs": obs[None]})[0]))

    return act


#: what produced the section: the package, and this script's measuring code (its rendering aside)
MEASURED_BY = (*RUNTIME_CODE, *(f"benchmarks/latency_floor.py::{n}" for n in (
    "VARIANTS", "decoded", "bare_numpy", "torch_eager", "onnx_runtime", "measure")))
#: the runtimes' columns, as ac.latency names them: µs per act()
COLUMNS = ("c", "runtime", "numpy", "torch", "onnxruntime")


def measure(args) -> dict:
    """Per net, the median µs per act() of each runtime (COLUMNS), and after the first net the teacher's
    (`teacher_c`, `teacher_runtime`) timed again beside it."""
    torch.set_num_threads(1)
    import autocompress as ac

    torch.manual_seed(0)
    teacher = ac.PolicyNet.mlp(4, [256, 256], 2)
    obs = np.array([0.01, -0.02, 0.03, 0.04], np.float32)
    head = {"kind": "discrete", "n": 2}
    nets: dict[str, dict[str, float]] = {}
    first: dict = {}
    for name, cfg in VARIANTS.items():
        net = ac.compress_net(teacher, cfg)
        layers = decoded(net)
        t_act, t_net = torch_eager(layers)
        fns = {"c": ac.Policy.from_net(net, head, "c").act, "runtime": ac.Policy.from_net(net, head, "numpy").act,
               "numpy": bare_numpy(layers), "torch": t_act, "onnxruntime": onnx_runtime(t_net, 4)}
        if first:  # the teacher, timed again beside this net: speed-ups are ratios taken side by side
            fns.update(teacher_c=first["c"], teacher_runtime=first["runtime"])
        res = ac.latency(fns, obs, warmup=500, calls=args.calls, rounds=20)
        nets[name] = {k: v["median_ms"] * 1000 for k, v in res.items()}
        first = first or {"c": fns["c"], "runtime": fns["runtime"]}
        print(name, nets[name], flush=True)
    return {"calls": args.calls, "nets": nets}


def render(data: dict) -> str:
    rows, speed = [], {"c": [], "runtime": []}
    for name, us in data["nets"].items():
        for k in speed:
            speed[k].append(us.get(f"teacher_{k}", us[k]) / us[k])
        rows.append([name, *(f"{us[k]:.2f}" for k in COLUMNS), f"{us['runtime'] / us['numpy']:.2f}",
                     f"{us['c'] / us['numpy']:.2f}", f"{us.get('teacher_c', us['c']):.2f}", f"{speed['c'][-1]:.2f}x",
                     f"{speed['runtime'][-1]:.2f}x"])
    return "\n".join([
        "Median µs per `act(obs)` (forward + argmax) over the calls, all runtimes timed in alternating blocks in one "
        "process. Each row is timed on its own, so compare within a row: the teacher is timed again beside each net "
        "(its C µs in that row's \"teacher beside it\" column), and the speed-ups are taken from those side-by-side "
        "figures.", "",
        *md_table(["net", "C runtime", "numpy runtime", "bare numpy", "torch eager", "onnxruntime",
                   "numpy runtime / bare numpy", "C / bare numpy", "teacher beside it, C", "teacher / this net (C)",
                   "teacher / this net (numpy)"], rows), "",
        "Every column here times one `act()` called from Python: the figure a Python caller pays, and the search's "
        "secondary `latency_call_ms`. The latency objective itself is timed inside the C runtime's kernel (section "
        "\"In-kernel latency\"), because from Python a small net's call overhead hides its arithmetic: here no net "
        f"gets more than {max(speed['c']):.2f}x below the teacher in C, and {max(speed['runtime']):.2f}x in numpy "
        "(last columns)."])


def targets(data: dict) -> list[Target]:
    nets = data["nets"].values()
    c = [us["c"] / us["numpy"] for us in nets]
    rt = [us["runtime"] / us["numpy"] for us in nets]
    return [Target("Latency floor: exported policy within 1.5x of a bare numpy forward",
                   f"C runtime {min(c):.2f}-{max(c):.2f}x of bare numpy; numpy runtime {min(rt):.2f}-{max(rt):.2f}x",
                   max(c + rt) <= 1.5)]


def sections() -> list:
    return data_sections("latency_floor", "Latency floor (batch 1, 1 thread)", MEASURED_BY, render, targets)


def main() -> None:
    ap = benchmark_parser(__doc__, "latency_floor")
    ap.add_argument("--calls", type=int, default=20000)
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    save_results(args.data, "latency_floor", measure(args), command_of("latency_floor", args, ("calls",)),
                 MEASURED_BY, render)


if __name__ == "__main__":
    main()
