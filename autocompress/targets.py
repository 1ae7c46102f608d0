"""Where a policy runs: the host (timed in process, as today) or a Cortex-M core (cross-built and
emulated, autocompress.mcu). A target names the compiler flags for its core, the clock its cycle
count is converted at, and the cycle table (autocompress.mcu.cycles) that counts them.

Clocks and RAM are those of a common part with that core, clocked at its maximum: Cortex-M0+ STM32L0
(STM32L073, 32 MHz, 20 KB SRAM), Cortex-M4F STM32F4 (STM32F407, 168 MHz, 128 KB main SRAM), Cortex-M7
STM32F7 (STM32F746, 216 MHz, 320 KB). The cycle tables
assume zero-wait-state memory, so times at these clocks are what the core itself needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from autocompress.errors import ConfigError

#: every MCU build: no fused multiply-add (a fused result is rounded once, so it would differ from the
#: numpy float32 mirror the actions are checked against), and libm calls without errno side effects
COMMON_CFLAGS = ("-O2", "-ffp-contract=off", "-fno-math-errno")


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    mcu: bool = True
    cflags: tuple[str, ...] = ()   # the core's flags (an MCU's: COMMON_CFLAGS included)
    clock_hz: int = 0              # 0: not an MCU (host latency is measured in time, not cycles)
    fpu: bool = False              # single-precision hardware floats (else soft-float, libgcc)
    dsp: bool = False              # the DSP extension (SIMD multiply-accumulate)
    core: str | None = None        # key of the cycle table in autocompress.mcu.cycles.TABLES
    ram_bytes: int = 0             # the named part's SRAM: a conv net whose activations exceed it is refused


def _mcu(name: str, description: str, core_flags: tuple[str, ...], clock_hz: int, fpu: bool, dsp: bool,
         ram_bytes: int) -> Target:
    return Target(name, description, True, core_flags + COMMON_CFLAGS, clock_hz, fpu, dsp, name, ram_bytes)


TARGETS = {
    # the in-process runtime's flags (autocompress.native), and the C export's Makefile for this machine
    "host": Target("host", "this machine: the in-process runtime, timed", mcu=False,
                   cflags=("-O3", "-march=native", "-ffast-math")),
    "cortex-m0plus": _mcu("cortex-m0plus", "Cortex-M0+ (ARMv6-M, soft-float), e.g. STM32L0 at 32 MHz",
                          ("-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"), 32_000_000, False, False,
                          20 << 10),
    "cortex-m4f": _mcu("cortex-m4f", "Cortex-M4F (ARMv7E-M, FPv4 single precision), e.g. STM32F4 at 168 MHz",
                       ("-mcpu=cortex-m4", "-mthumb", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"), 168_000_000,
                       True, True, 128 << 10),
    "cortex-m7": _mcu("cortex-m7", "Cortex-M7 (ARMv7E-M, FPv5 single precision), e.g. STM32F7 at 216 MHz",
                      ("-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard"), 216_000_000,
                      True, True, 320 << 10),
}


def target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise ConfigError(f"unknown target {name!r}; known targets: {', '.join(TARGETS)}") from None
