"""C export: a self-contained policy.c + policy.h (C99, no malloc, libm only) and an example main.c.

policy.c is kernels.c's portable part (the very kernels the C runtime times) followed by the
weights as `static const` arrays in the form each layer's kernel reads (kernels.c): fp32 for
dense, kept values + indices for CSR, int8 + row scales for int8, one byte per code for q8, and
for packed the artifact's own k-bit codes / codebook indices with their scales, zero points,
codebooks and bitmaps; a conv layer's fp32 filter matrix (output-major) for direct or im2col
convolution, or its int8 filters. The observation normalisation, an image observation's
transpose to channel-first, and the action head are inside: `int policy_act(const float *obs,
float *action)`.

A recurrent net's cell (kernels.c's AczRnn) comes with it: its two matrices in their smallest fp32 form
(RecurrentLayer.kernels, as the C runtime runs them), its state in a static buffer that policy_act carries
from call to call, and `void policy_reset(void)` to zero it at an episode's start; main.c reads the word
`reset` as an episode's start. A feed-forward net's policy.c leaves the cell's code out altogether
(kernels.c's ACZ_USE_RNN blocks), so it is what it was before the cell existed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from autocompress import intq
from autocompress.conv import c_fields
from autocompress.layers import compact_kernels  # noqa: F401 (moved to layers.py; imported from here too)
from autocompress.layers import IQ_BITS, Layer, layers_of, recurrent_of, runs_iq
from autocompress.native import (ACT_CODES, CELL_CODES, KIND_CODES, SOURCE, SQUASH_CODES, TIMING_MARKER, input_fields,
                                 out_size, scratch_sizes)
from autocompress.recurrent import state_size
from autocompress.runtime import read_artifact
from autocompress.targets import target

#: the export's build for this machine: the flags the in-process kernels are built and timed with
HOST_CFLAGS = ("-std=c99", *target("host").cflags)
BUILD = f"cc {' '.join(HOST_CFLAGS)} main.c policy.c -lm -o policy"

#: arrays start on a cache line under GCC and Clang, as the in-process kernel's copies do; not on a Cortex-M
#: (M profile), which has no data cache or a 32-byte line (M7): there the padding would only cost flash
_ALIGN = ("#if defined(__GNUC__) && !(defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M')\n"
          "#define ACZ_ALIGNED __attribute__((aligned(64)))\n#else\n#define ACZ_ALIGNED\n#endif")

#: kernels.c's recurrent blocks (`#if... ACZ_USE_RNN` to `#endif  /* ACZ_USE_RNN */`, a blank line after it too),
#: cut from a feed-forward net's policy.c: the preprocessor would drop them anyway, and its source stays byte for
#: byte as it was before the cell existed
_RNN_BLOCK = re.compile(r"^#if[^\n]*ACZ_USE_RNN[^\n]*\n.*?^#endif  /\* ACZ_USE_RNN \*/\n\n?", re.S | re.M)

_C_TYPES = {np.float32: "float", np.int32: "int32_t", np.uint16: "uint16_t", np.int8: "int8_t", np.uint8: "uint8_t",
            np.int16: "int16_t", np.int64: "int64_t", np.uint32: "uint32_t"}


def _literal(v, ctype: str) -> str:
    if ctype == "float":  # the shortest text that reads back as the same float32
        return np.format_float_positional(np.float32(v), unique=True, trim="0") + "f"
    return str(int(v))


class _Arrays:
    """Collects `static const` arrays; returns the name to point at (NULL for None)."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, name: str, a, dtype) -> str:
        if a is None:
            return "NULL"
        a = np.asarray(a, dtype=dtype).ravel()
        ctype = _C_TYPES[dtype]
        if a.size == 0:
            a = np.zeros(1, dtype)  # C99 has no empty arrays
        items = [_literal(v, ctype) for v in a]
        per_line = 8 if ctype == "float" else 24
        body = ",\n  ".join(",".join(items[i:i + per_line]) for i in range(0, len(items), per_line))
        self.lines.append(f"static const {ctype} {name}[{a.size}] ACZ_ALIGNED = {{\n  {body}\n}};")
        return name


def _layer_init(i: int | str, layer: Layer, kernel: str, arr: _Arrays) -> str:
    """Layer i's AczLayer initializer (its arrays named L<i>_...)."""
    n_out, n_in = layer.shape
    f = {"in": n_in, "out": n_out, "act": ACT_CODES[layer.act], "kind": KIND_CODES[kernel],
         "b": arr(f"L{i}_b", layer.b, np.float32)}
    if layer.conv is not None:
        f["cv"] = _struct(c_fields(layer.conv))
        if kernel == "int8":
            q, scale = layer.int8()
            f.update(q=arr(f"L{i}_q", q, np.int8), qscale=arr(f"L{i}_qscale", scale, np.float32))
        else:  # direct and im2col: the fp32 filter matrix, output-major
            f.update(w=arr(f"L{i}_w", layer.w.T, np.float32), wpad=n_out)
    elif kernel == "dense":
        w, f["wpad"], wt = layer.dense()
        # fewer than 8 outputs (a small action head) are all read from wt: no second copy in flash
        f["w"] = arr(f"L{i}_w", w, np.float32) if f["wpad"] >= 8 else "NULL"
        f["wt"] = arr(f"L{i}_wt", wt, np.float32)
    elif kernel == "csr":
        ptr, idx, val = layer.csr()
        f.update(ptr=arr(f"L{i}_ptr", ptr, np.int32), idx=arr(f"L{i}_idx", idx, np.uint16),
                 val=arr(f"L{i}_val", val, np.float32))
    elif kernel == "int8":
        q, scale = layer.int8()
        f.update(q=arr(f"L{i}_q", q, np.int8), qscale=arr(f"L{i}_qscale", scale, np.float32))
    elif kernel == "q8":
        codes, table = layer.q8()
        pk = layer.packed()
        f.update(codes8=arr(f"L{i}_codes8", codes, np.uint8), table=arr(f"L{i}_table", table, np.float32),
                 scale=arr(f"L{i}_scale", pk["scale"], np.float32), zero=arr(f"L{i}_zero", pk["zero"], np.uint8),
                 qmin=pk["qmin"], enc=int(pk["enc"] == "codebook"), per_row=int(pk["per_row"]))
    else:
        pk = layer.packed()
        f.update(codes=arr(f"L{i}_codes", pk["codes"], np.uint8), bitmap=arr(f"L{i}_bitmap", pk["bitmap"], np.uint8),
                 zero=arr(f"L{i}_zero", pk["zero"], np.uint8), scale=arr(f"L{i}_scale", pk["scale"], np.float32),
                 table=arr(f"L{i}_table", pk["table"], np.float32), bits=pk["bits"], qmin=pk["qmin"],
                 enc=int(pk["enc"] == "codebook"), per_row=int(pk["per_row"]))
    return "  {" + ", ".join(f".{k} = {v}" for k, v in f.items()) + "}"


def _iq_structs(plan: intq.IQPlan, bits: int, arr: _Arrays) -> list[str]:
    """The integer-only net's definitions (kernels.c's AczIQLayer array, scratch, AczIQNet IQ)."""
    inits = []
    for i, f in enumerate(intq.c_layers(plan, bits)):
        fields = {k: ACT_CODES[v] if k == "act" else v if isinstance(v, int) else "NULL" if v is None else
                  _struct(v) if k == "cv" else arr(f"IQ{i}_{k}", *v) for k, v in f.items()}
        inits.append("  {" + ", ".join(f".{k} = {v}" for k, v in fields.items()) + "}")
    size = intq.scratch(plan, bits)
    return [f"static const AczIQLayer IQ_LAYERS[{len(inits)}] = {{\n" + ",\n".join(inits) + "\n};",
            f"static acz_iqx_t IQ_X0[{size['x']}], IQ_X1[{size['x']}];",
            f"static int32_t IQ_ACC[{size['acc']}];",
            *([f"static acz_iqx_t IQ_COLS[{size['cols']}];"] if size["cols"] else []),
            f"static const AczIQNet IQ = {{.n_layers = {len(inits)}, .layers = IQ_LAYERS, "
            + "".join(f".{k} = {v if isinstance(v, int) else arr(f'IQ_{k.upper()}', *v)}, "
                      for k, v in intq.c_input(plan).items())
            + ".x0 = IQ_X0, .x1 = IQ_X1, .acc = IQ_ACC" + (", .cols = IQ_COLS" if size["cols"] else "") + "};"]


def _struct(fields: dict[str, int]) -> str:
    """A C struct initializer of named int fields."""
    return "{" + ", ".join(f".{k} = {v}" for k, v in fields.items()) + "}"


def _layer_shape(layer: Layer) -> str:
    """How the generated file's first line names a layer: in->out, or conv CxHxW->C'xH'xW'."""
    if layer.conv is None:
        return f"{layer.shape[1]}->{layer.shape[0]}"
    (oh, ow), shape = layer.out_hw, "x".join(str(v) for v in layer.conv["in_shape"])
    return f"conv {shape}->{layer.shape[0]}x{oh}x{ow}"


def kernel_defines(layers: list[Layer], kernels: list[str]) -> list[str]:
    """kernels.c's ACZ_USE_<kernel> switches for the kernels these layers run (conv layers: CONV_<kernel>)."""
    return sorted({f"#define ACZ_USE_{'CONV_' if layer.conv is not None else ''}{k.upper()} 1"
                   for layer, k in zip(layers, kernels)})


def _rnn_struct(rnn, kernels: list[str], arr: _Arrays) -> list[str]:
    """The recurrent cell's definitions: its matrices (arrays Lih_..., Lhh_...), state and scratch, AczRnn RNN."""
    width, size = out_size(rnn.ih), state_size(rnn.cell, rnn.hidden)
    ih, hh = (_layer_init(name, m, k, arr).strip() for name, m, k in (("ih", rnn.ih, kernels[0]),
                                                                       ("hh", rnn.hh, kernels[1])))
    return [f"static float RNN_STATE[{size}], RNN_GI[{width}], RNN_GH[{width}];  /* the state: h, then c (LSTM) */",
            f"static const AczRnn RNN = {{.cell = {CELL_CODES[rnn.cell]}, .at = {rnn.at}, .hidden = {rnn.hidden}, "
            f".ih = {ih}, .hh = {hh}, .state = RNN_STATE, .gi = RNN_GI, .gh = RNN_GH}};"]


def write_c(data: bytes, out_dir: str | Path, kernels: list[str], rnn_kernels: list[str] | None = None) -> list[Path]:
    """Write policy.h, policy.c and main.c for the artifact `data`, each layer in `kernels` (a recurrent cell's
    matrices in `rnn_kernels`, default RecurrentLayer.kernels())."""
    header, blob = read_artifact(data)
    layers, rnn = layers_of(header, blob, recurrent=True), recurrent_of(header, blob)
    if rnn is not None and runs_iq(kernels):
        raise ValueError("kernels: the integer-only net ('iq') does not run a recurrent artifact")
    rnn_kernels = rnn_kernels or (rnn.kernels() if rnn is not None else [])
    head, norm = header["head"], header.get("obs_norm") or {}
    obs_dim, discrete = int(header["obs_dim"]), head["kind"] == "discrete"
    act_dim = 0 if discrete else int(head["act_dim"])
    arr = _Arrays()
    iq = runs_iq(kernels)
    if iq:  # the integer-only net runs instead of the fp32 layers: only its arrays go to flash
        size = {"width": max(layer.shape[0] for layer in layers), "qbuf": 1, "cols": 0}
        plan, bits = intq.plan(header, layers), IQ_BITS[kernels[0]]
        structs = _iq_structs(plan, bits, arr)
        defines = ["#define ACZ_USE_IQ 1", "#define ACZ_IQ_ONLY 1", f"#define ACZ_IQ_W{bits} 1",
                   *(f"#define ACZ_IQ_{form} 1" for form in sorted(intq.activation_forms(plan))),
                   *(["#define ACZ_IQ_CONV 1"] if intq.has_conv(plan) else [])]
    else:
        size = scratch_sizes(layers, kernels, obs_dim)
        inits = [_layer_init(i, layer, k, arr) for i, (layer, k) in enumerate(zip(layers, kernels))]
        structs = [f"static const AczLayer LAYERS[{len(layers)}] = {{\n" + ",\n".join(inits) + "\n};"]
        defines = kernel_defines(layers, kernels)
        if rnn is not None:
            structs += _rnn_struct(rnn, rnn_kernels, arr)
            defines = [*kernel_defines([*layers, rnn.ih, rnn.hh], [*kernels, *rnn_kernels]), "#define ACZ_USE_RNN 1"]
    net = {"n_layers": len(layers), "obs_dim": obs_dim, "kind": 0 if discrete else 1, "act_dim": act_dim,
           "squash": SQUASH_CODES[head.get("squash", "none")], "layers": "NULL" if iq else "LAYERS",
           # integer-only: the normalisation is folded into the input's quantisation (IQ_IN_A, IQ_IN_C)
           "mean": "NULL" if iq else arr("OBS_MEAN", norm.get("mean"), np.float32),
           "std": "NULL" if iq else arr("OBS_STD", norm.get("std"), np.float32),
           "low": arr("ACT_LOW", head.get("low"), np.float32), "high": arr("ACT_HIGH", head.get("high"), np.float32),
           "clip": _literal(norm.get("clip") or 0.0, "float"), "buf0": "BUF0", "buf1": "BUF1", "qbuf": "QBUF",
           **input_fields(header), "cols": "COLS" if size["cols"] else "NULL", "iq": "&IQ" if iq else "NULL",
           **({"rnn": "&RNN"} if rnn is not None else {})}
    kernel_src = SOURCE.split(TIMING_MARKER)[0]
    shapes = [f"{_layer_shape(layer)} {k}" for layer, k in zip(layers, kernels)]
    if rnn is None:
        kernel_src = _RNN_BLOCK.sub("", kernel_src)
    else:
        shapes.insert(rnn.at, f"{rnn.cell} {rnn.ih.shape[1]}->{rnn.hidden} {'/'.join(rnn_kernels)}")
    shapes = ", ".join(shapes)
    c = "\n".join([
        f"/* Generated by autocompress: a {'discrete' if discrete else 'continuous'} policy, layers {shapes}.",
        " * C99, no malloc, libm only. Build: " + BUILD + " */",
        '#include "policy.h"',
        "/* compile only the kernels these layers run (kernels.c) */",
        "#define ACZ_ONLY",
        *defines,
        *(["#define ACZ_HEAD_DISCRETE 1"] if discrete else []),
        kernel_src,
        "/* ---- this policy's weights, in the form each layer's kernel reads ---- */",
        _ALIGN,
        *arr.lines,
        *structs,
        f"static float BUF0[{size['width']}], BUF1[{size['width'] if not iq else 1}];",
        f"static int8_t QBUF[{size['qbuf']}];",
        *([f"static float COLS[{size['cols']}];"] if size["cols"] else []),
        "static const AczNet NET = {" + ", ".join(f".{k} = {v}" for k, v in net.items()) + "};",
        "",
        "int policy_act(const float *obs, float *action) { return acz_act(&NET, obs, action); }",
        *(["void policy_reset(void) { acz_reset(&NET); }"] if rnn is not None else []),
        ""])
    h = _policy_h(obs_dim, discrete, act_dim, int(head.get("n", 0)) if discrete else 0, rnn)
    main = _main_c(rnn is not None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "policy.h", out_dir / "policy.c", out_dir / "main.c"]
    for p, text in zip(paths, (h, c, main)):
        p.write_text(text)
    return paths


def _policy_h(obs_dim: int, discrete: bool, act_dim: int, n_actions: int, rnn) -> str:
    """policy.h: the policy's sizes and policy_act (and, for a recurrent policy, policy_reset)."""
    reset = "" if rnn is None else f"""
/* A recurrent ({rnn.cell}) policy: its state ({state_size(rnn.cell, rnn.hidden)} floats, static) carries from one
 * policy_act to the next; policy_reset() zeroes it. Call it before each episode's first observation. */
#define POLICY_RECURRENT 1
void policy_reset(void);
"""
    return f"""/* Generated by autocompress. C99; see policy.c. */
#ifndef AUTOCOMPRESS_POLICY_H
#define AUTOCOMPRESS_POLICY_H

#define POLICY_OBS_DIM {obs_dim}
#define POLICY_DISCRETE {int(discrete)}
#define POLICY_ACT_DIM {act_dim}  /* continuous: floats written to `action`; discrete: 0 */
#define POLICY_N_ACTIONS {n_actions}

/* The deterministic action for one observation (POLICY_OBS_DIM floats, as the env gives them, an
 * image in its own layout: normalisation and the transpose the layers need are inside).
 * Discrete: returns the action index; `action` is not used (may be NULL).
 * Continuous: writes POLICY_ACT_DIM floats (within the env's bounds) to `action`, returns -1.
 * Not reentrant: one policy_act at a time (it uses static scratch buffers, no malloc). */
int policy_act(const float *obs, float *action);
{reset}
#endif
"""


def _main_c(recurrent: bool) -> str:
    """main.c: an example that acts on observations read from stdin (a recurrent policy: `reset` starts an
    episode)."""
    return """/* Example: reads observations from stdin (POLICY_OBS_DIM numbers each, whitespace separated)
 * and prints one action per line.""" + ("" if not recurrent else """ The word `reset` starts an episode: policy_reset().
 *""") + """ Build: """ + BUILD + """ */
#include <stdio.h>
#include "policy.h"

int main(void) {
    float obs[POLICY_OBS_DIM], action[POLICY_ACT_DIM > 0 ? POLICY_ACT_DIM : 1];
    for (;;) {
""" + ("" if not recurrent else """        int n = 0;  /* `reset` (no number starts with r: a number is left unread) */
        if (scanf(" reset%n", &n) == EOF) return 0;
        if (n > 0) { policy_reset(); continue; }
""") + """        for (int i = 0; i < POLICY_OBS_DIM; i++)
            if (scanf("%f", &obs[i]) != 1) return 0;
        int a = policy_act(obs, action);
        if (POLICY_DISCRETE) { printf("%d\\n", a); continue; }
        for (int j = 0; j < POLICY_ACT_DIM; j++) printf(j ? " %.9g" : "%.9g", action[j]);
        printf("\\n");
    }
}
"""


def write_makefile(out_dir: str | Path, target_name: str) -> Path:
    """The Makefile that builds the export with the flags its figures were measured with: on the host,
    `policy` (main.c's example) and policy.o with the in-process kernels' flags; on an MCU target,
    policy.o with the core's flags (autocompress.targets), to link into the firmware."""
    t = target(target_name)
    path = Path(out_dir) / "Makefile"
    if not t.mcu:
        path.write_text(f"""# Generated by autocompress. `make` builds `policy` (main.c: observations on stdin, one action per
# line), `make policy.o` the object to link into your program, both with the flags the trial's latency
# was measured with (autocompress.native builds its kernels the same way; -march=native: this CPU's
# vector instructions, e.g. AVX2 / AVX-512 VNNI for int8 layers). On another CPU, build it there; for a
# binary that runs anywhere: make CFLAGS="-std=c99 -O2" (plain C kernels, slower: README, "Exporting").
CC = cc
CFLAGS = {' '.join(HOST_CFLAGS)}

policy: main.c policy.c policy.h
\t$(CC) $(CFLAGS) main.c policy.c -lm -o policy

policy.o: policy.c policy.h
\t$(CC) $(CFLAGS) -c policy.c -o policy.o

clean:
\trm -f policy policy.o

.PHONY: clean
""")
        return path
    from autocompress.mcu.build import CFLAGS  # deferred: pyelftools, for MCU targets only

    flags = " ".join([*CFLAGS, *t.cflags])
    path.write_text(f"""# Generated by autocompress for {t.name}: {t.description}.
# `make` builds policy.o to link into your firmware; its flash, RAM and cycles per act were measured
# from this source built with these flags (arm-none-eabi-gcc, linked with -Wl,--gc-sections -lm).
CC = arm-none-eabi-gcc
CFLAGS = {flags}

policy.o: policy.c policy.h
\t$(CC) $(CFLAGS) -c policy.c -o policy.o

size: policy.o
\tarm-none-eabi-size policy.o

clean:
\trm -f policy.o

.PHONY: size clean
""")
    return path
