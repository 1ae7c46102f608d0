"""What one artifact costs on an MCU target: its C export cross-built (mcu.build), run in the emulator
(mcu.emulate) on recorded observations: flash, RAM, cycles per act, and the actions it took.

Kernels on a device are chosen by cycles, which are exact here (the same build and observations
give the same count), so the choice is a comparison, not a timing: the integer-only net (autocompress.intq)
where the artifact is calibrated for it, its weights a byte each ('iq') or, where every code fits, 4 bits
('iq4'), whichever takes fewer cycles; otherwise per layer the fp32 form (dense, CSR, q8, packed) with the
fewest cycles, each layer tried with the layers before it as chosen.

With a flash budget (the search's constraints.max_flash), a choice whose build exceeds it is traded for
smaller forms at their cycle cost: the integer-only form with fewer cycles among those that fit, else the
fp32 forms one layer at a time, the swap that costs the fewest cycles per byte of flash it saves, until
the build fits or no swap saves flash (k-bit codes packed k bits a weight go below the integer-only net's);
where not even each layer's smallest form fits, those forms.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autocompress.exports.c import write_c
from autocompress.layers import IQ_BITS, int8_only, layers_of
from autocompress.mcu import emulate
from autocompress.mcu.build import build
from autocompress.runtime import read_artifact
from autocompress.targets import Target

#: observations a kernel choice is compared on (the whole recorded set is then measured)
CHOICE_OBS = 8
#: fp32 kernels a device layer may run (the per-layer dynamic 'int8' needs fp32 scaling at every output:
#: the integer-only net is the int8 path on a device)
DEVICE_KERNELS = ("dense", "csr", "q8", "packed")


@dataclass
class DeviceFigures:
    kernels: list[str]
    flash: int              # text + rodata + data of the linked policy, libm / libgcc helpers included
    ram: int                # data + bss + the stack's high-water mark over every act
    cycles: np.ndarray      # per observation
    instructions: np.ndarray
    actions: np.ndarray     # per observation: the discrete action, or act_dim floats


def measure(data: bytes, kernels: list[str], target: Target, obs: np.ndarray) -> DeviceFigures:
    """Cross-build `data` with `kernels` (one per feed-forward layer; a recurrent cell's matrices take their
    fixed form, RecurrentLayer.kernels) for `target` and run it on every row of `obs`: one stream, a recurrent
    policy's state carried from row to row from the zero state (policy_reset's)."""
    header, blob = read_artifact(data)
    head = header["head"]
    discrete = head["kind"] == "discrete"
    with tempfile.TemporaryDirectory(prefix="acz-mcu-") as d:
        write_c(data, Path(d) / "src", kernels)
        b = build(Path(d) / "src", target, Path(d) / "build")
        r = emulate.run(b.elf, target, np.asarray(obs, np.float32).reshape(len(obs), -1),
                        0 if discrete else int(head["act_dim"]))
    actions = np.asarray(r["ret"] if discrete else r["actions"])
    return DeviceFigures(list(kernels), b.flash, b.ram_static + r["stack_bytes"], np.asarray(r["cycles"]),
                         np.asarray(r["instructions"]), actions)


def choose_kernels(data: bytes, target: Target, obs: np.ndarray, max_flash: int | None = None) -> list[str]:
    """The kernels `data` runs on `target` (see the module docstring), compared on obs[:CHOICE_OBS]."""
    header, blob = read_artifact(data)
    layers = layers_of(header, blob, recurrent=True)  # a recurrent cell: never integer-only (no header `iq`)
    sample = obs[:CHOICE_OBS]
    builds: dict[tuple[str, ...], DeviceFigures] = {}
    flashes: dict[tuple[str, ...], int] = {}

    def build_of(kernels: list[str]) -> DeviceFigures:
        if tuple(kernels) not in builds:
            builds[tuple(kernels)] = measure(data, kernels, target, sample)
            flashes[tuple(kernels)] = builds[tuple(kernels)].flash
        return builds[tuple(kernels)]

    def flash_of(kernels: list[str]) -> int:
        if tuple(kernels) not in flashes:
            flashes[tuple(kernels)] = flash_only(data, kernels, target)
        return flashes[tuple(kernels)]

    integer = [k for k, bits in IQ_BITS.items() if int8_only(layers, bits)] if header.get("iq") is not None else []
    fits = [k for k in integer if max_flash is None or flash_of([k] * len(layers)) <= max_flash]
    if fits:  # one form: nothing to compare, so no run for it here
        best = fits[0] if len(fits) == 1 else min(fits, key=lambda k: build_of([k] * len(layers)).cycles.sum())
        return [best] * len(layers)
    chosen = ["dense"] * len(layers)
    options = [[k for k in layer.kernels() if k in DEVICE_KERNELS] if layer.conv is None else ["dense"]
               for layer in layers]
    if all(ks == ["dense"] for ks in options):  # e.g. an fp32 teacher: nothing to compare
        return chosen
    for i, ks in enumerate(options):
        chosen[i] = min(ks, key=lambda k: build_of(chosen[:i] + [k] + chosen[i + 1:]).cycles.sum())
    if max_flash is not None:
        chosen = _fit_flash(chosen, options, build_of, flash_of, max_flash)
    return chosen


def flash_only(data: bytes, kernels: list[str], target: Target) -> int:
    """The flash of `data`'s build with `kernels` for `target`, without running it (measure's `flash`)."""
    with tempfile.TemporaryDirectory(prefix="acz-mcu-") as d:
        write_c(data, Path(d) / "src", kernels)
        return build(Path(d) / "src", target, Path(d) / "build").flash


def _fit_flash(chosen: list[str], options: list[list[str]], build_of, flash_of, max_flash: int) -> list[str]:
    """`chosen` with single-layer swaps, each the one costing the fewest cycles per byte of flash saved,
    until its build fits `max_flash` or no swap saves flash. Where even each layer's smallest form (against
    the others as chosen) together is over it, those smallest forms: the least flash over the budget (the
    search finds the trial infeasible), found by builds alone: emulating every swap of a teacher-size net
    on the way to a build that cannot fit took minutes a trial on the M0+."""
    if flash_of(chosen) <= max_flash:
        return chosen
    smallest = [min(ks, key=lambda k: flash_of(chosen[:i] + [k] + chosen[i + 1:])) for i, ks in enumerate(options)]
    if flash_of(smallest) > max_flash:
        return smallest
    now = build_of(chosen)
    while now.flash > max_flash:
        swaps = []
        for i, ks in enumerate(options):
            for k in ks:
                trial = chosen[:i] + [k] + chosen[i + 1:]
                saved = now.flash - flash_of(trial)
                if saved > 0:
                    swaps.append(((build_of(trial).cycles.sum() - now.cycles.sum()) / saved, trial))
        if not swaps:
            break
        chosen = min(swaps, key=lambda s: s[0])[1]
        now = build_of(chosen)
    return chosen
