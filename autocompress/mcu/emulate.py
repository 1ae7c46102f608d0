"""Run a cross-built policy (mcu.build) in unicorn, counting instructions, cycles and stack use.

The ELF's PT_LOAD segments are written at their run addresses (.data straight into RAM, .bss left
zero: what a device's startup code does before main). policy_act is called as a C function: r0 the
observation and r1 the action buffer, both in an I/O region outside the policy's memory, LR a stop
address in that region. Counting is per translated block (UC_HOOK_BLOCK): each block's cost comes
from mcu.cycles once, cached, so the emulator runs at millions of instructions a second; a
per-instruction hook is ~7x slower. A branch's taken-cycles are charged when the next block is not
the previous one's fall-through. The counts depend only on the path executed: the same ELF and
observation give the same numbers.

Stack use: the stack region is filled with a pattern before the first act; the deepest byte no
longer holding it is the high-water mark over every act since.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from elftools.elf.elffile import ELFFile
from unicorn import UC_ARCH_ARM, UC_HOOK_BLOCK, UC_MODE_MCLASS, UC_MODE_THUMB, Uc
from unicorn import arm_const as arm

from autocompress.mcu.build import FLASH, RAM
from autocompress.mcu.cycles import TABLES, block_cost
from autocompress.targets import Target

#: the emulated CPU per core: an instruction outside the core's ISA faults instead of running
_CPU = {"cortex-m0plus": arm.UC_CPU_ARM_CORTEX_M0, "cortex-m4f": arm.UC_CPU_ARM_CORTEX_M4,
        "cortex-m7": arm.UC_CPU_ARM_CORTEX_M7}
IO, IO_BYTES = 0x3000_0000, 1 << 20  # the caller's buffers: stop address, then observation, then action
_PATTERN = 0xA5


class Emulator:
    def __init__(self, elf_path: str | Path, target: Target):
        self.core = TABLES[target.core]
        with open(elf_path, "rb") as f:
            elf = ELFFile(f)
            symbols = {s.name: s["st_value"] for s in elf.get_section_by_name(".symtab").iter_symbols()}
            segments = [(seg["p_vaddr"], seg.data()) for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD"]
        self.entry = symbols["policy_act"] & ~1
        self.reset_entry = symbols.get("policy_reset")  # a recurrent policy's (exports.c)
        self.stack_top, self.stack_limit = symbols["__stack_top"], symbols["__stack_limit"]
        self.uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
        self.uc.ctl_set_cpu_model(_CPU[target.core])
        for base, size in (FLASH, RAM, (IO, IO_BYTES)):
            self.uc.mem_map(base, size)
        for addr, data in segments:
            self.uc.mem_write(addr, data)
        self.uc.mem_write(self.stack_limit, bytes([_PATTERN]) * (self.stack_top - self.stack_limit))
        self.stop, self.obs_addr = IO, IO + 16
        self.uc.mem_write(self.stop, b"\x00\xbf" * 8)  # NOPs: never run, the emulation ends on arrival
        self._state = [0, 0, -1, 0]  # instructions, cycles, fall-through address, pending taken-extra
        self._costs: dict[tuple[int, int], tuple[int, int, int]] = {}  # (address, size): no re-read per block
        self.uc.hook_add(UC_HOOK_BLOCK, self._block)

    def _block(self, uc, address, size, _):
        st = self._state
        cost = self._costs.get((address, size))
        if cost is None:
            cost = self._costs[(address, size)] = block_cost(bytes(uc.mem_read(address, size)), address, self.core)
        n, cycles, extra = cost
        if address != st[2]:
            st[1] += st[3]
        st[0] += n
        st[1] += cycles
        st[2], st[3] = address + size, extra

    def act(self, obs: np.ndarray, act_dim: int) -> tuple[int, np.ndarray, int, int]:
        """(policy_act's return, act_dim float32 actions, instructions, cycles) for one observation."""
        obs = np.ascontiguousarray(obs, np.float32).ravel()
        action_addr = self.obs_addr + 4 * obs.size
        if action_addr + 4 * act_dim > IO + IO_BYTES:
            raise ValueError(f"observation and action ({obs.size} + {act_dim} floats) exceed the I/O region")
        self.uc.mem_write(self.obs_addr, obs.tobytes())
        self.uc.mem_write(action_addr, bytes(4 * max(act_dim, 1)))
        n, cycles = self._call(self.entry, self.obs_addr, action_addr)
        ret = self.uc.reg_read(arm.UC_ARM_REG_R0)
        action = np.frombuffer(bytes(self.uc.mem_read(action_addr, 4 * act_dim)), np.float32).copy()
        return ret - (1 << 32) if ret >= 1 << 31 else ret, action, n, cycles

    def reset(self) -> None:
        """policy_reset(): a recurrent policy's state back to zero, as at an episode's start (the state starts
        zero: .bss). ValueError for a policy without state."""
        if self.reset_entry is None:
            raise ValueError("this policy has no policy_reset (it is not recurrent)")
        self._call(self.reset_entry & ~1, 0, 0)

    def _call(self, entry: int, r0: int, r1: int) -> tuple[int, int]:
        """Run the C function at `entry` with arguments r0, r1 until it returns: (instructions, cycles)."""
        for reg, v in ((arm.UC_ARM_REG_SP, self.stack_top), (arm.UC_ARM_REG_R0, r0),
                       (arm.UC_ARM_REG_R1, r1), (arm.UC_ARM_REG_LR, self.stop | 1)):
            self.uc.reg_write(reg, v)
        self._state[:] = [0, 0, -1, 0]
        self.uc.emu_start(entry | 1, self.stop)
        n, cycles, _, extra = self._state
        return n, cycles + extra  # the return to the caller is a taken branch

    @property
    def stack_bytes(self) -> int:
        """The deepest stack use over every act so far (bytes below __stack_top)."""
        stack = np.frombuffer(bytes(self.uc.mem_read(self.stack_limit, self.stack_top - self.stack_limit)), np.uint8)
        used = np.flatnonzero(stack != _PATTERN)
        if used.size and used[0] == 0:
            raise RuntimeError("the policy overflowed its stack region (mcu.build.STACK_BYTES)")
        return int(stack.size - used[0]) if used.size else 0


def run(elf: str | Path, target: Target, obs: np.ndarray, act_dim: int) -> dict:
    """Every observation (rows of `obs`) through policy_act: returns, actions, per-act instructions and
    cycles, and the stack's high-water mark."""
    obs = np.asarray(obs, np.float32).reshape(len(obs), -1)
    emu = Emulator(elf, target)
    rows = [emu.act(o, act_dim) for o in obs]
    return {"ret": np.array([r[0] for r in rows]), "actions": np.array([r[1] for r in rows]).reshape(len(obs), act_dim),
            "instructions": np.array([r[2] for r in rows]), "cycles": np.array([r[3] for r in rows]),
            "stack_bytes": emu.stack_bytes}
