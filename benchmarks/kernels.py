"""In-kernel latency: what the deployed compute costs, per kernel, next to a plain C loop and the C export.

    python -m benchmarks.kernels [--rounds 400] [--calls 20]

Nets: CartPole-shaped MLPs (4 observations, tanh, 2 actions), the [256, 256] teacher and compressed
versions made without fine-tuning (weight values do not change the time, shapes and encodings do).
Every policy's act() is timed inside C (`native.time_side_by_side`: all nets in one call, in
alternating rounds, over 256 CartPole states the fp32 teacher visits, every one timed), so ratios to
the teacher are side by side. Also: the int8 kernel in each build (VNNI, AVX2, portable C), the same
policies in onnxruntime, the teacher timed against itself (the search's noise floor, before and after
one latency per compute signature), and the C export built as printed and portably.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import machine, write_section

HEAD = {"kind": "discrete", "n": 2}
SYM8 = {"quantize": {"bits": 8, "symmetric": True}}
VARIANTS = {  # name: (hidden sizes, techniques config)
    "teacher fp32 [256,256]": ([256, 256], {}),
    "int8 [256,256]": ([256, 256], SYM8),
    "4-bit [256,256]": ([256, 256], {"quantize": {"bits": 4}}),
    "90% pruned [256,256]": ([256, 256], {"prune": {"sparsity": 0.9}}),
    "97% pruned [256,256]": ([256, 256], {"prune": {"sparsity": 0.97}}),
    "shared 4-bit [256,256]": ([256, 256], {"share": {"bits": 4}}),
    "fp32 [64,64]": ([64, 64], {}),
    "fp32 [32,32]": ([32, 32], {}),
    "int8 [32,32]": ([32, 32], SYM8),
    "fp32 [16,16]": ([16, 16], {}),
}
PORTABLE = ("-std=c99", "-O2")  # what a binary for any x86-64 builds with (the export's Makefile says how)
BUILDS = {"this CPU (-march=native)": (), "AVX2, no VNNI": ("-mno-avx512vnni",), "SSE2 (-mno-avx2)": ("-mno-avx2",),
          "plain C (-DACZ_PORTABLE)": ("-DACZ_PORTABLE",)}
NOISE_REPEATS = 20  # teacher-vs-itself timings per protocol
ALTERNATIONS = 5  # in-process kernel and C export timed in turn this many times; medians compared

TIMER_MAIN = r"""
#define _POSIX_C_SOURCE 199309L  /* clock_gettime under -std=c99 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "policy.h"
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }
static int cmp(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }
int main(int argc, char **argv) {
    int n = atoi(argv[2]), calls = atoi(argv[3]), rounds = atoi(argv[4]);
    float *obs = malloc(sizeof(float) * n * POLICY_OBS_DIM), action[8];
    FILE *f = fopen(argv[1], "rb");
    if (fread(obs, sizeof(float), n * POLICY_OBS_DIM, f) != (size_t)(n * POLICY_OBS_DIM)) return 1;
    double *t = malloc(sizeof(double) * rounds);
    long sink = 0;
    for (int c = 0; c < calls; c++) sink += policy_act(obs + (c % n) * POLICY_OBS_DIM, action);
    for (int r = 0; r < rounds; r++) {
        double t0 = now();
        for (int c = 0; c < calls; c++) sink += policy_act(obs + (c % n) * POLICY_OBS_DIM, action);
        t[r] = (now() - t0) / calls;
    }
    qsort(t, rounds, sizeof(double), cmp);
    printf("%f %ld\n", t[rounds / 2], sink);
    return 0;
}
"""


def plain_c(net, out_dir: Path) -> Path:
    """The teacher as a plain C loop: per layer y = b, then y[j] += W[k][j] * x[k] over inputs k (the
    loop over outputs vectorises), then tanhf over y; argmax. What one writes by hand for speed."""
    lines = ['#include <math.h>', '#include "policy.h"']
    layers = []
    for i, layer in enumerate(net.layers):
        w, b = layer.effective_weight().detach().numpy().T, layer.bias.detach().numpy()  # W[in][out]
        rows = ",\n".join("{" + ",".join(f"{v:.9e}f" for v in row) + "}" for row in w)
        lines.append(f"static const float W{i}[{w.shape[0]}][{w.shape[1]}] = {{{rows}}};")
        lines.append(f"static const float B{i}[{w.shape[1]}] = {{{','.join(f'{v:.9e}f' for v in b)}}};")
        layers.append((i, w.shape[0], w.shape[1], layer.act))
    width = max(o for _, _, o, _ in layers)
    body = [f"int policy_act(const float *obs, float *action) {{ static float a[{width}], b[{width}]; "
            "const float *x = obs; float *y = a; (void)action;"]
    for i, n_in, n_out, act in layers:
        body.append(f"  for (int j = 0; j < {n_out}; j++) y[j] = B{i}[j];")
        body.append(f"  for (int k = 0; k < {n_in}; k++) for (int j = 0; j < {n_out}; j++) y[j] += W{i}[k][j] * x[k];")
        if act == "tanh":
            body.append(f"  for (int j = 0; j < {n_out}; j++) y[j] = tanhf(y[j]);")
        body.append("  x = y; y = (y == a) ? b : a;")
    body.append(f"  int best = 0; for (int j = 1; j < {layers[-1][2]}; j++) if (x[j] > x[best]) best = j; "
                "return best; }")
    (out_dir / "policy.c").write_text("\n".join(lines + body) + "\n")
    (out_dir / "policy.h").write_text("#define POLICY_OBS_DIM 4\nint policy_act(const float *obs, float *action);\n")
    return out_dir


def time_c_dir(c_dir: Path, obs: np.ndarray, calls: int, rounds: int, flags=None) -> float:
    """Median ns per policy_act of a C policy directory, built with `flags` (default: the export's
    Makefile's, exports.c.HOST_CFLAGS: the in-process kernels' own)."""
    from autocompress.exports.c import HOST_CFLAGS

    (c_dir / "timer.c").write_text(TIMER_MAIN)
    (c_dir / "obs.bin").write_bytes(np.ascontiguousarray(obs, np.float32).tobytes())
    cc = shutil.which("cc") or "gcc"
    subprocess.run([cc, *(flags or HOST_CFLAGS), "timer.c", "policy.c", "-lm", "-o", "timer"], cwd=c_dir, check=True)
    out = subprocess.run([str(c_dir / "timer"), str(c_dir / "obs.bin"), str(len(obs)), str(calls), str(rounds)],
                         capture_output=True, text=True, check=True).stdout
    return float(out.split()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=400, help="in-kernel timing: rounds, every net in turn")
    ap.add_argument("--calls", type=int, default=20, help="acts per net per round")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import torch

    import autocompress as ac
    from autocompress import exports, native
    from autocompress.layers import layers_of
    from autocompress.runtime import read_artifact

    torch.manual_seed(0)
    nets, pols, datas = {}, {}, {}
    for name, (hidden, cfg) in VARIANTS.items():
        base = ac.PolicyNet.mlp(4, hidden, 2)
        nets[name] = ac.compress_net(base, cfg) if cfg else base
        datas[name] = ac.Policy.from_net(nets[name], HEAD, "numpy").data
        pols[name] = native.NativePolicy.from_bytes(datas[name])
    obs = recorded_states(nets["teacher fp32 [256,256]"])
    kernel = native.time_side_by_side(pols, obs, warmup=2000, calls=args.calls, rounds=args.rounds)
    call = ac.latency({n: p.act for n, p in pols.items()}, obs[0], warmup=500, calls=10_000, rounds=20)
    us = {n: kernel[n]["median_ms"] * 1e3 for n in pols}
    teacher = "teacher fp32 [256,256]"
    lines = ["## In-kernel latency, per-layer kernels and the C export (batch 1, 1 thread)", "",
             f"`python -m benchmarks.kernels --rounds {args.rounds} --calls {args.calls}` on {machine()}. "
             "CartPole-shaped nets (4 observations, tanh, 2 actions), compressed without fine-tuning. "
             "**in-kernel**: median over rounds of the mean µs per `act()` in a C loop over 256 recorded "
             f"observations, every net in one call, {args.calls} acts per net per round, rounds alternating; "
             "teacher / this: median of the per-round ratios (what the search's latency objective measures); "
             "**Python call**: one ctypes `act()` from Python (10,000 calls), the secondary figure. "
             "Kernels: each layer's fastest, measured at load (dense fp32, csr, int8 integer, q8 byte codes, "
             f"packed k-bit; within {native.COMPACT_WITHIN:.2f}x of the fastest the smaller stored form wins).", "",
             "| net | kernels chosen | MACs | in-kernel µs | teacher / this | GMAC/s | Python call µs | "
             "teacher / this (call) |", "|---|---|---|---|---|---|---|---|"]
    for name, p in pols.items():
        macs = sum(int((layer.w != 0).sum()) for layer in layers_of(*read_artifact(datas[name])))
        lines.append(f"| {name} | {' '.join(p.kernels)} | {macs:,} | {us[name]:.3f} | "
                     f"{1 / native.round_ratio(kernel, name, teacher):.1f}x | "
                     f"{macs / us[name] / 1e3:.1f} | {call[name]['median_ms'] * 1e3:.2f} | "
                     f"{call[teacher]['median_ms'] / call[name]['median_ms']:.1f}x |")
        print(lines[-1], flush=True)
    lines += ["", "Per-kernel time of each layer, measured at load (ns per layer call, median of "
              f"{native.CHOICE_ROUNDS} rounds of {native.CHOICE_CALLS}, candidates in turn within each round; "
              "the chosen one in bold):", "",
              "| net | layer 0 (4→h) | layer 1 (h→h) | layer 2 (h→2) |", "|---|---|---|---|"]
    for name, p in pols.items():
        if any(p.kernel_ns):
            cells = [" ".join((f"**{k} {v:.0f}**" if k == ch else f"{k} {v:.0f}") for k, v in t.items()) or ch
                     for ch, t in zip(p.kernels, p.kernel_ns)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", *build_table(pols, datas)]
    lines += ["", *ort_table(pols, datas, obs)]
    lines += ["", *noise_floor_lines(datas[teacher], obs, args.calls, args.rounds)]
    # the plain C loop and the C export, each built with the kernel's flags and timed in its own process
    from autocompress.exports.c import HOST_CFLAGS

    rows = ["", "The teacher as a plain C loop (`y[j] += W[k][j] * x[k]`, then tanhf, argmax) and the C export "
            "(`autocompress export --format c`), built as its Makefile and printed line build it "
            f"(`cc {' '.join(HOST_CFLAGS)}`, the in-process kernels' flags) and portably (`cc {' '.join(PORTABLE)}`), "
            f"timed by a C main over the same observations, {ALTERNATIONS} times in turn with the in-process "
            "kernel, medians; flash = `size` of policy.o (text: code + const weights) built as the Makefile does:", "",
            "| net | in-process kernel µs | C export µs (as printed) | export / in-process | C export µs "
            f"(`{' '.join(PORTABLE)}`) | portable / in-process | export kernels | artifact bytes | flash (text) bytes "
            "| RAM (bss) bytes |", "|---|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        plain = time_c_dir(plain_c(nets[teacher], (d / "plain").mkdir() or d / "plain"), obs, args.calls,
                           args.rounds) / 1e3
        again = native.time_side_by_side({"t": pols[teacher]}, obs, 2000, args.calls, args.rounds)
        t_again = again["t"]["median_ms"] * 1e3
        for name in ("teacher fp32 [256,256]", "int8 [256,256]", "4-bit [256,256]", "90% pruned [256,256]",
                     "fp32 [32,32]", "int8 [32,32]"):
            p, out = pols[name], d / name.replace(" ", "_").replace("%", "").replace("[", "").replace("]", "")
            exports.write(datas[name], "c", out, p.kernels)  # what `export --format c` writes for the trial
            inprocs, exps, ports = [], [], []
            for _ in range(ALTERNATIONS):  # separate processes: alternate them so load drift hits both alike
                inprocs.append(native.time_side_by_side({"x": p}, obs, 2000, args.calls,
                                                        args.rounds)["x"]["median_ms"] * 1e3)
                exps.append(time_c_dir(out, obs, args.calls, args.rounds) / 1e3)
                ports.append(time_c_dir(out, obs, args.calls, args.rounds, PORTABLE) / 1e3)
            inproc, exp, port = (float(np.median(v)) for v in (inprocs, exps, ports))
            size = exports.flash_size(out)
            rows.append(f"| {name} | {inproc:.3f} | {exp:.3f} | {exp / inproc:.2f} | {port:.3f} | {port / inproc:.2f} "
                        f"| {' '.join(p.kernels)} | {len(datas[name]):,} | {size['text']:,} | {size['bss']:,} |")
            print(rows[-1], flush=True)
    lines += rows + ["", f"Teacher: in-kernel {t_again:.3f} µs vs the plain C loop {plain:.3f} µs "
                     f"(ratio {t_again / plain:.2f}; {65_536 + 4 * 256 + 512:,} MACs: "
                     f"{(65_536 + 1536) / t_again / 1e3:.1f} vs {(65_536 + 1536) / plain / 1e3:.1f} GMAC/s)."]
    write_section("kernels", "\n".join(lines))


def recorded_states(net, n: int = 256) -> np.ndarray:
    """n CartPole states the fp32 teacher net visits (what the search times on: the teacher's states)."""
    from autocompress import envs, measure
    from autocompress.nets import torch_act

    return measure.collect_obs(torch_act(net, HEAD), envs.env_creator("CartPole-v1"), n, seed=0)


def build_table(pols: dict, datas: dict) -> list[str]:
    """The hidden layer's dense and int8 time in each build of the kernels (int8 sums exact in all)."""
    from autocompress import native
    from autocompress.layers import layers_of
    from autocompress.runtime import read_artifact

    out = ["The int8 kernel per build (the hidden h→h layer, ns per call, measured as at load; "
           "kernels.c: VNNI `vpdpbusd` on w + 128, AVX2 sign-extend + `vpmaddwd`, SSE2 the same in 128 bits, the plain "
           "C loop; the fp32 dense kernel is auto-vectorised for whatever the build targets; the "
           "int8 sums are exact in all three, tests/test_int8_kernel.py):", "",
           "| net | build | dense fp32 ns | int8 ns | dense / int8 |", "|---|---|---|---|---|"]
    for name in ("int8 [256,256]", "int8 [32,32]"):
        header, blob = read_artifact(datas[name])
        layers = layers_of(header, blob)
        inputs = native._layer_inputs(header, layers)
        for build, flags in BUILDS.items():
            _, times = native.choose_kernels(layers[1:2], inputs[1:2], flags)
            t = times[0]
            out.append(f"| {name} | {build} | {t['dense']:.0f} | {t['int8']:.0f} | {t['dense'] / t['int8']:.2f}x |")
            print(out[-1], flush=True)
    return out


def ort_table(pols: dict, datas: dict, obs: np.ndarray) -> list[str]:
    """The same policies in onnxruntime (the ONNX int8 export: MatMulInteger), against this runtime, both as a
    Python call per act (ORT has no in-process loop to time inside), 1 thread, side by side."""
    import onnxruntime as ort

    import autocompress as ac
    from autocompress import exports

    out = ["The same policies in onnxruntime " + ort.__version__ + " (`export --format onnx-int8`: int8 weights, "
           "MatMulInteger; fp32 `--format onnx` for the teacher), 1 intra-op thread, against this runtime's "
           "`act()`; both timed as the Python call (10,000 calls, side by side; ORT has no loop to time inside):", "",
           "| net | onnxruntime µs / call | this runtime µs / call | onnxruntime / this |", "|---|---|---|---|"]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as d:
        for name, fmt in (("teacher fp32 [256,256]", "onnx"), ("int8 [256,256]", "onnx-int8"),
                          ("int8 [32,32]", "onnx-int8")):
            path = exports.write(datas[name], fmt, Path(d) / f"{len(out)}.onnx",
                                 exports.int8_kernels(datas[name]) if fmt == "onnx-int8" else None)[0]
            sess = ort.InferenceSession(str(path), opts)
            x = obs[:1].astype(np.float32)
            fns = {"ort": lambda o, s=sess: s.run(None, {"obs": x}), "ours": pols[name].act}
            t = ac.latency(fns, obs[0], warmup=500, calls=10_000, rounds=20)
            o, m = t["ort"]["median_ms"] * 1e3, t["ours"]["median_ms"] * 1e3
            out.append(f"| {name} | {o:.2f} | {m:.2f} | {o / m:.1f}x |")
            print(out[-1], flush=True)
    return out


def noise_floor_lines(teacher_data: bytes, obs: np.ndarray, calls: int, rounds: int) -> list[str]:
    """The teacher timed against itself: as one trial timed it before (one load of each, the trial protocol),
    as a search times a new compute signature now (3 fresh loads, the median), and as a search reports
    same-signature nets now (they take the first one's figures: equal by construction)."""
    from types import SimpleNamespace

    from autocompress import measure, native

    lp = SimpleNamespace(warmup=200, kernel_calls=calls, kernel_rounds=rounds)
    first = native.NativePolicy.from_bytes(teacher_data)
    load = lambda: native.NativePolicy.from_bytes(teacher_data, first.kernels)  # noqa: E731
    one, three = [], []
    for _ in range(NOISE_REPEATS):
        for loads, ratios in ((1, one), (measure.SIGNATURE_LOADS, three)):
            ratios.append(measure.in_kernel_latency(load(), load(), teacher_data, teacher_data, obs, lp,
                                                    loads)["latency_ratio"])
    row = lambda what, r: f"| {what} | {min(r):.3f} | {max(r):.3f} | {np.std(r):.3f} |"  # noqa: E731
    return [f"The teacher [256,256] timed against itself, {NOISE_REPEATS} times per protocol ({rounds} rounds of "
            f"{calls} acts, in turn; each time both copies loaded afresh):", "",
            "| protocol | min ratio | max ratio | std |", "|---|---|---|---|",
            row("one load each (every trial, before)", one),
            row(f"median of {measure.SIGNATURE_LOADS} loads (a new compute signature, now)", three),
            "| same compute signature within a search (now: the first trial's figures taken over) | 1.000 | 1.000 "
            "| 0 |"]


if __name__ == "__main__":
    main()
