"""In-kernel latency: what the deployed compute costs, per kernel, next to a plain C loop and the C export.

    python -m benchmarks.kernels [--rounds 400] [--calls 20]

Nets: CartPole-shaped MLPs (4 observations, tanh, 2 actions), the [256, 256] teacher and compressed
versions made without fine-tuning (weight values do not change the time, shapes and encodings do).
Every policy's act() is timed inside C (`native.time_side_by_side`: all nets in one call, in
alternating rounds, over 256 recorded observations), so ratios to the teacher are side by side.
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
CFLAGS = ["-O3", "-march=native", "-ffast-math"]  # the in-process kernel's flags: like for like
ALTERNATIONS = 5  # in-process kernel and C export timed in turn this many times; medians compared

TIMER_MAIN = r"""
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


def time_c_dir(c_dir: Path, obs: np.ndarray, calls: int, rounds: int) -> float:
    """Median ns per policy_act of a C policy directory, built with the kernel's own flags."""
    (c_dir / "timer.c").write_text(TIMER_MAIN)
    (c_dir / "obs.bin").write_bytes(np.ascontiguousarray(obs, np.float32).tobytes())
    cc = shutil.which("cc") or "gcc"
    subprocess.run([cc, *CFLAGS, "timer.c", "policy.c", "-lm", "-o", "timer"], cwd=c_dir, check=True)
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
    obs = (np.random.default_rng(0).standard_normal((256, 4)) * 0.5).astype(np.float32)
    nets, pols, datas = {}, {}, {}
    for name, (hidden, cfg) in VARIANTS.items():
        base = ac.PolicyNet.mlp(4, hidden, 2)
        nets[name] = ac.compress_net(base, cfg) if cfg else base
        datas[name] = ac.Policy.from_net(nets[name], HEAD, "numpy").data
        pols[name] = native.NativePolicy.from_bytes(datas[name])
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
    # the plain C loop and the C export, each built with the kernel's flags and timed in its own process
    rows = ["", "The teacher as a plain C loop (`y[j] += W[k][j] * x[k]`, then tanhf, argmax; "
            f"`cc {' '.join(CFLAGS)}`) and the C export (`autocompress export --format c`; the same flags, "
            f"timed by a C main over the same observations, {ALTERNATIONS} times in turn with the in-process "
            "kernel, medians); flash = `size` of "
            "policy.o (text: code + const weights) built `-std=c99 -O2`:", "",
            "| net | in-process kernel µs | C export µs | export / in-process | export kernels | artifact bytes | "
            "flash (text) bytes | RAM (bss) bytes |", "|---|---|---|---|---|---|---|---|"]
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
            ks = p.kernels
            inprocs, exps = [], []
            for _ in range(ALTERNATIONS):  # separate processes: alternate them so load drift hits both alike
                inprocs.append(native.time_side_by_side({"x": p}, obs, 2000, args.calls,
                                                        args.rounds)["x"]["median_ms"] * 1e3)
                exps.append(time_c_dir(out, obs, args.calls, args.rounds) / 1e3)
            inproc, exp = float(np.median(inprocs)), float(np.median(exps))
            size = exports.flash_size(out)
            rows.append(f"| {name} | {inproc:.3f} | {exp:.3f} | {exp / inproc:.2f} | {' '.join(ks)} | "
                        f"{len(datas[name]):,} | {size['text']:,} | {size['bss']:,} |")
            print(rows[-1], flush=True)
    lines += rows + ["", f"Teacher: in-kernel {t_again:.3f} µs vs the plain C loop {plain:.3f} µs "
                     f"(ratio {t_again / plain:.2f}; {65_536 + 4 * 256 + 512:,} MACs: "
                     f"{(65_536 + 1536) / t_again / 1e3:.1f} vs {(65_536 + 1536) / plain / 1e3:.1f} GMAC/s)."]
    lines += ["", _why(pols, datas)]
    write_section("kernels", "\n".join(lines))


def _why(pols: dict, datas: dict) -> str:
    """Why compressed layers are (not) faster here, with this run's per-kernel times of the hidden layer."""
    from autocompress.layers import layers_of
    from autocompress.runtime import read_artifact

    t8 = pols["int8 [256,256]"].kernel_ns[1]
    sp = pols["97% pruned [256,256]"].kernel_ns[1]
    kept = int((layers_of(*read_artifact(datas["97% pruned [256,256]"]))[1].w != 0).sum())
    dense_per_w, csr_per_kept = t8["dense"] / 65_536, sp["csr"] / kept
    return (f"Why quantized, shared and 90%-pruned layers are not faster on this CPU (hidden 256→256 layer, this run): "
            f"int8 takes {t8['int8'] / t8['dense']:.1f}x and q8 {t8['q8'] / t8['dense']:.1f}x the time of fp32 dense. "
            "The CPU has AVX2 and FMA but no AVX-512 or VNNI, i.e. no int8 dot-product instruction: fp32 dense does 8 "
            "multiply-adds per FMA (the weight load folded in) on two FMA pipes, while an int8 multiply-add needs a "
            "sign extension, pmaddwd and an add, plus a horizontal sum per output in the int8 kernel; q8 converts "
            "each byte code to fp32 before its FMA. The teacher's 270 KB of fp32 weights fit in this core's 512 KB "
            "L2, so 4x fewer weight bytes buy no bandwidth. CSR's scatter costs "
            f"{csr_per_kept:.2f} ns per kept weight against {dense_per_w:.3f} ns per weight for vectorised dense, so "
            f"it wins on this layer only below ~{100 * dense_per_w / csr_per_kept:.0f}% of weights kept (97% pruned: "
            "yes; 90%: no). Latency falls here with smaller shapes (distillation, structured pruning, low rank); "
            "quantization, sharing and moderate pruning buy bytes. The choice is measured at load, so on a CPU with "
            "VNNI, or a device whose memory is the bottleneck, the same code picks int8 / q8 where they win.")


if __name__ == "__main__":
    main()
