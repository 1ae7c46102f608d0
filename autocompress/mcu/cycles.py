"""Cycles per instruction on Cortex-M cores, from the Technical Reference Manuals' tables.

Sources:
  Cortex-M0+  TRM (ARM DDI 0484), "Instruction set summary" (Table 3-1, core instruction timings),
              with the single-cycle multiplier option (MULS 1; the iterative one takes 32).
  Cortex-M4   TRM (ARM DDI 0439), Table 3-1 "Cortex-M4 instruction set summary", and chapter 7
              "Floating Point Unit", its FPU instruction set table (cycle counts of the FPv4 ops).
  Cortex-M7   no published cycle table (it dual-issues and has caches): the M4 table, plus the FPv5
              instructions (VRINT, VSEL, VMAXNM, ...) at 1 cycle. A single-issue estimate: an upper
              bound for code running from zero-wait-state TCM.

Assumptions (the same for every core):
  * zero-wait-state memory for code and data: no flash wait states, no bus contention;
  * a taken branch costs the table's not-taken cycles plus a pipeline refill P, charged when the next
    block executed is not the branch's fall-through. M4: P = 2 (the TRM gives 1 to 3, by target
    alignment and width and whether the address was speculated early), so B / BX / BL taken = 3.
    M0+: the TRM's figures, B taken 2 (not taken 1), BX / BLX 2, BL 3, POP {.., pc} 3+N;
  * LDM / STM / PUSH / POP (and VLDM / VSTM / VPUSH / VPOP) take 1+N for N registers (a double
    register counts 2); LDRD / STRD 1+2; a PC in a POP / LDM list adds the refill;
  * M4 LDR / STR: 2, and a load or store single right after another in the same block 1 (the TRM's
    note on neighbouring loads and stores pipelining their address and data phases; its exceptions,
    e.g. a base register loaded by the previous LDR, are not modelled, so such runs lean low);
  * SDIV / UDIV: 12, the M4's worst case (the TRM gives 2 to 12, early-terminating on the operands);
  * instructions in an IT block whose condition fails cost what they cost when executed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

import capstone

_CONDITIONS = ("eq", "ne", "cs", "hs", "cc", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt", "gt", "le", "al")
_IT = re.compile(r"^it[te]{0,3}$")


@dataclass(frozen=True, eq=False)  # hashed by identity: the tables are module constants
class Core:
    name: str
    cycles: dict[str, int]            # mnemonic (no condition, width or type suffix) -> cycles, not taken
    branches: dict[str, int]          # branch mnemonics -> extra cycles when taken (the refill)
    lists: frozenset[str]             # 1+N register-list transfers
    pop_pc_extra: int                 # extra for a PC in a POP / LDM list
    pipelined: frozenset[str] = field(default_factory=frozenset)  # load/store single: 1 after another


def _table(groups: dict[int, str]) -> dict[str, int]:
    return {m: cyc for cyc, names in groups.items() for m in names.split()}


_LISTS = frozenset("ldm ldmia ldmdb stm stmia stmdb push pop vldm vldmia vldmdb vstm vstmia vstmdb vpush vpop".split())

M0PLUS = Core(
    "cortex-m0plus",
    _table({
        1: "adc add adr and asr bic cmn cmp eor lsl lsr mov mul mvn neg orr rev rev16 revsh ror rsb sbc sub sxtb "
           "sxth tst uxtb uxth nop yield sev cpsid cpsie b bx blx",
        2: "ldr ldrb ldrh ldrsb ldrsh str strb strh bl wfe wfi",
        3: "dmb dsb isb mrs msr",
    }),
    branches={"b": 1, "bx": 1, "blx": 1, "bl": 1},
    lists=_LISTS, pop_pc_extra=2)

_M4_CYCLES = _table({
    1: "adc add addw adr and asr bfc bfi bic clz cmn cmp eor lsl lsr mov movt movw mvn neg orn orr pkhbt pkhtb "
       "rbit rev rev16 revsh ror rrx rsb sbc sbfx sel ssat ssat16 sub subw sxtab sxtab16 sxtah sxtb sxtb16 sxth "
       "teq tst ubfx usat usat16 uxtab uxtab16 uxtah uxtb uxtb16 uxth nop yield sev cpsid cpsie clrex "
       "mul mla mls smull umull smlal umlal umaal smlabb smlabt smlatb smlatt smlad smladx smlal smlalbb "
       "smlalbt smlaltb smlaltt smlald smlaldx smlawb smlawt smlsd smlsdx smlsld smlsldx smmla smmlar smmls "
       "smmlsr smmul smmulr smuad smuadx smulbb smulbt smultb smultt smulwb smulwt smusd smusdx usad8 usada8 "
       "qadd qsub qdadd qdsub qadd8 qadd16 qsub8 qsub16 qasx qsax sadd8 sadd16 ssub8 ssub16 sasx ssax "
       "uadd8 uadd16 usub8 usub16 uasx usax uqadd8 uqadd16 uqsub8 uqsub16 shadd8 shadd16 uhadd8 uhadd16 "
       "b bl bx blx cbz cbnz dmb dsb isb "
       "vabs vadd vsub vmul vnmul vneg vcmp vcmpe vcvt vcvtr vcvtb vcvtt vmov vmrs vmsr",
    2: "ldr ldrb ldrh ldrsb ldrsh ldrt ldrbt ldrht ldrsbt ldrsht ldrex ldrexb ldrexh str strb strh strt strbt "
       "strht strex strexb strexh tbb tbh mrs msr vldr vstr",
    3: "ldrd strd vmla vmls vnmla vnmls vfma vfms vfnma vfnms",
    12: "sdiv udiv",
    14: "vdiv vsqrt",
})
_M4_BRANCHES = {"b": 2, "bl": 2, "bx": 2, "blx": 2, "cbz": 2, "cbnz": 2, "tbb": 2, "tbh": 2}
_M4_PIPELINED = frozenset("ldr ldrb ldrh ldrsb ldrsh str strb strh vldr vstr".split())

M4 = Core("cortex-m4f", _M4_CYCLES, _M4_BRANCHES, _LISTS, 2, _M4_PIPELINED)
M7 = Core("cortex-m7", {**_M4_CYCLES, **_table({1: "vrinta vrintm vrintn vrintp vrintr vrintx vrintz vseleq "
                                                   "vselge vselgt vselvs vmaxnm vminnm vcvta vcvtm vcvtn vcvtp"})},
          _M4_BRANCHES, _LISTS, 2, _M4_PIPELINED)

TABLES = {core.name: core for core in (M0PLUS, M4, M7)}


def _mnemonic(raw: str, core: Core) -> str:
    """capstone's mnemonic -> the table's: width / type suffixes (.w, .f32) dropped, then a condition
    code (IT blocks, conditional branches) and a flag-setting 's', whichever makes a known name."""
    m = raw.split(".")[0]
    if _IT.match(m):
        return "it"
    base = m[:-2] if m[-2:] in _CONDITIONS else m
    for c in (m, base, m.removesuffix("s"), base.removesuffix("s")):  # as is, condition, 's', both dropped
        if c in core.cycles or c in core.lists:
            return c
    raise KeyError(f"{core.name}: no cycle count for instruction {raw!r}")


def _words(op_str: str) -> int:
    """Words in a register list '{r4, r5, lr}' / '{d8, d9}' (a double register is two)."""
    regs = [r.strip() for r in op_str[op_str.index("{") + 1:op_str.index("}")].split(",")]
    return sum(2 if r.startswith("d") else 1 for r in regs)


def _writes_pc(m: str, op_str: str) -> bool:
    return op_str.split(",")[0].strip() == "pc" and m in ("mov", "add", "ldr")


def _instruction(insn, core: Core, after_ldst: bool) -> tuple[int, int]:
    """(cycles when not taken, extra cycles when it branches) of one instruction."""
    m = _mnemonic(insn.mnemonic, core)
    if m == "it":
        return 1, 0
    if m in core.lists:
        pc = "pc" in insn.op_str
        return 1 + _words(insn.op_str), core.pop_pc_extra if pc else 0
    cycles = core.cycles[m]
    if m in core.pipelined and after_ldst:
        cycles = 1
    if m in ("vldr", "vstr") and insn.op_str.startswith("d"):
        cycles = 3  # a 64-bit transfer: two words
    if m == "vmov" and sum(1 for op in insn.op_str.split(",") if op.strip().startswith("r")) == 2:
        cycles = 2  # two core registers to or from two singles / a double
    if m in core.branches:
        return cycles, core.branches[m]
    if _writes_pc(m, insn.op_str):
        return cycles, core.branches["bx"]
    return cycles, 0


@lru_cache(maxsize=None)
def _disassembler() -> capstone.Cs:
    return capstone.Cs(capstone.CS_ARCH_ARM, capstone.CS_MODE_THUMB | capstone.CS_MODE_MCLASS)


def block_cost(code: bytes, address: int, core: Core | str) -> tuple[int, int, int]:
    """(instructions, cycles if the block falls through, extra cycles if its last instruction branches)
    of the straight-line code at `address`. Cached on the code itself: another ELF may hold other code at
    the same address (the emulator keeps its own cache by address and size)."""
    return _block_cost(bytes(code), address, TABLES[core] if isinstance(core, str) else core)


@lru_cache(maxsize=1 << 16)
def _block_cost(code: bytes, address: int, core: Core) -> tuple[int, int, int]:
    n = cycles = extra = 0
    after_ldst = False
    end = address
    for insn in _disassembler().disasm(code, address):
        c, extra = _instruction(insn, core, after_ldst)
        after_ldst = _mnemonic(insn.mnemonic, core) in core.pipelined
        n, cycles, end = n + 1, cycles + c, insn.address + insn.size
    if end != address + len(code):
        raise ValueError(f"{core.name}: cannot disassemble the code at {end:#x}")
    return n, cycles, extra
