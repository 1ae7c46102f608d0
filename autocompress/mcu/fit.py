"""Which distilled student a device budget leaves room for: the search's distill baseline under a flash or
RAM budget (constraints.max_flash / max_ram on an MCU target).

Why: the baseline is a search's anchor, and the stacks on it add weight codes at their gentle end (8 bits,
symmetric on a device: a byte a weight, run integer-only). Where the middle width cannot fit the budget
even so coded, every stack on it is over budget and the budget is met, if at all, by the sampler's luck.
So the baseline takes the widest width whose student, 8-bit symmetric and integer-only (autocompress.intq),
builds within the budget: measured, not estimated, by the same cross-build and emulation as a trial
(mcu.device.measure), on a random-weight student (flash and RAM depend on the shape, not the values).
"""

from __future__ import annotations

import numpy as np
import torch

from autocompress import artifact
from autocompress.layers import IQ
from autocompress.mcu import device
from autocompress.nets import PolicyNet
from autocompress.targets import Target
from autocompress.techniques import DistillConfig, QuantizeConfig, apply
from autocompress.techniques.distill import student_net

#: the codes the probe stores: a stack's gentle end on a device (see module docstring)
PROBE_CODES = QuantizeConfig(bits=8, symmetric=True)


def student_fits(teacher: PolicyNet, head: dict, hidden: list[int], target: Target, max_flash: int | None,
                 max_ram: int | None) -> bool:
    """Whether `teacher`'s distilled student of widths `hidden`, 8-bit symmetric integer-only, builds for
    `target` within `max_flash` and `max_ram` bytes (None: no limit)."""
    torch.manual_seed(0)
    student = apply(student_net(teacher, DistillConfig(hidden=hidden)), PROBE_CODES)
    obs = np.random.default_rng(0).standard_normal((2, teacher.in_dim)).astype(np.float32)
    data = artifact.calibrate(artifact.to_bytes(student, head), obs)
    f = device.measure(data, [IQ] * len(student.layers), target, obs[:1])
    return (max_flash is None or f.flash <= max_flash) and (max_ram is None or f.ram <= max_ram)


def fitting(teacher: PolicyNet, head: dict, choices: list[list[int]], target: Target, max_flash: int | None,
            max_ram: int | None) -> list[list[int]]:
    """Those of `choices` whose student fits (student_fits), narrowest (by total width) first."""
    return [h for h in sorted(choices, key=sum) if student_fits(teacher, head, h, target, max_flash, max_ram)]


def widest_fitting(teacher: PolicyNet, head: dict, choices: list[list[int]], target: Target,
                   max_flash: int | None, max_ram: int | None) -> tuple[list[int], list[int] | None]:
    """The widest of `choices` whose student fits (the narrowest where none does), and the next narrower one
    that fits (None: no other fits)."""
    fits = fitting(teacher, head, choices, target, max_flash, max_ram)
    return (fits[-1], fits[-2] if len(fits) > 1 else None) if fits else (min(choices, key=sum), None)
