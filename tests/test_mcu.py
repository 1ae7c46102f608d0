"""Cortex-M targets: the cycle model against the TRMs' figures, and C exports cross-built for every
MCU target and run in the emulator, acting like the numpy runtime, with deterministic counts and
the flash / RAM that arm-none-eabi-size reports.

The cross-building tests skip without arm-none-eabi-gcc, unless AUTOCOMPRESS_REQUIRE_CC=1 (set by CI):
then they fail, as the host C runtime's tests do (test_native.require_compiler). The cycle-model and
error tests need no toolchain and always run."""

import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

from autocompress.artifact import calibrate, to_bytes
from autocompress.errors import ConfigError
from autocompress.exports.c import write_c
from autocompress.layers import check_kernels, layers_of, runs_iq
from autocompress.mcu import build as mcu_build
from autocompress.mcu import device
from autocompress.mcu.cycles import block_cost
from autocompress.mcu.emulate import run
from autocompress.nets import PolicyNet
from autocompress.runtime import NumpyPolicy, read_artifact
from autocompress.targets import TARGETS, target
from test_export import build as compress

MCU = [name for name, t in TARGETS.items() if t.mcu]
N_OBS = 300


def require_arm_toolchain() -> None:
    if shutil.which("arm-none-eabi-gcc"):
        return
    msg = "no arm-none-eabi-gcc (apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi): MCU builds untested"
    if os.environ.get("AUTOCOMPRESS_REQUIRE_CC") == "1":
        pytest.fail(f"{msg}, and AUTOCOMPRESS_REQUIRE_CC=1 requires it", pytrace=False)
    pytest.skip(msg)


# -- the cycle model, on instructions encoded by arm-none-eabi-as ---------------------------------

ADDS = bytes.fromhex("0130")                    # adds r0, #1
MUL = bytes.fromhex("01fb02f0")                 # mul.w r0, r1, r2
SDIV = bytes.fromhex("91fbf2f0")                # sdiv r0, r1, r2
VMLA = bytes.fromhex("00ee810a")                # vmla.f32 s0, s1, s2
PUSH = bytes.fromhex("f0b5")                    # push {r4, r5, r6, r7, lr}
LDR, LDR4 = bytes.fromhex("0868"), bytes.fromhex("4a68")  # ldr r0, [r1]; ldr r2, [r1, #4]
B = bytes.fromhex("fee7")                       # b.n .
BL = bytes.fromhex("fff7feff")                  # bl .
POP_PC = bytes.fromhex("10bd")                  # pop {r4, pc}
VMOV2 = bytes.fromhex("51ec100b")               # vmov r0, r1, d0


@pytest.mark.parametrize("code, want", [
    (ADDS * 5, (5, 5, 0)), (MUL, (1, 1, 0)), (SDIV, (1, 12, 0)), (VMLA, (1, 3, 0)), (PUSH, (1, 6, 0)),
    (LDR, (1, 2, 0)), (LDR + LDR4, (2, 3, 0)),   # the second load pipelines behind the first
    (ADDS + B, (2, 2, 2)), (BL, (1, 1, 2)), (POP_PC, (1, 3, 2)), (VMOV2, (1, 2, 0)),
])
def test_cortex_m4_cycles_follow_the_trm(code, want):
    assert block_cost(code, 0x1000, "cortex-m4f") == want
    assert block_cost(code, 0x1000, "cortex-m7") == want  # M7: the M4 table


@pytest.mark.parametrize("code, taken", [(B, 2), (LDR, 2), (LDR + LDR4, 4), (BL, 3), (POP_PC, 5), (ADDS * 3, 3)])
def test_cortex_m0plus_cycles_follow_the_trm(code, taken):
    """M0+: B taken 2, LDR 2 (no pipelining), BL 3, POP {r4, pc} 3+N."""
    n, cycles, extra = block_cost(code, 0x2000, "cortex-m0plus")
    assert cycles + extra == taken


def test_an_instruction_outside_the_table_is_an_error():
    with pytest.raises(KeyError, match="sdiv"):
        block_cost(SDIV, 0x3000, "cortex-m0plus")  # ARMv6-M has no divide


def test_unknown_target_names_the_known_ones():
    with pytest.raises(ConfigError, match="cortex-m0plus, cortex-m4f, cortex-m7"):
        target("cortex-m3")
    assert target("cortex-m4f").fpu and not target("cortex-m0plus").fpu and not target("host").mcu


def test_missing_toolchain_names_the_packages(monkeypatch, tmp_path):
    monkeypatch.setattr(mcu_build.shutil, "which", lambda _: None)
    with pytest.raises(ConfigError, match="apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi"):
        mcu_build.build(tmp_path, target("cortex-m4f"), tmp_path / "out")


@pytest.mark.parametrize("require", [None, "1"])
def test_a_missing_toolchain_skips_unless_required(monkeypatch, require):
    monkeypatch.setattr(shutil, "which", lambda _: None)
    monkeypatch.delenv("AUTOCOMPRESS_REQUIRE_CC", raising=False)
    if require:
        monkeypatch.setenv("AUTOCOMPRESS_REQUIRE_CC", require)
    with pytest.raises(pytest.fail.Exception if require else pytest.skip.Exception):
        require_arm_toolchain()


# -- exports cross-built and emulated --------------------------------------------------------------

CONTINUOUS = {"kind": "continuous", "act_dim": 2, "low": [-2.0, 0.0], "high": [2.0, 1.0], "squash": "tanh",
              "obs_norm": {"mean": [0.5, -1.0, 2.0, 0.0], "std": [2.0, 0.5, 3.0, 1.0], "clip": 3.0}}
#: (head, activation, compression, kernels per layer): fp32 dense; k-bit codes in int8, packed and q8
CASES = {
    "discrete-dense": ({"kind": "discrete", "n": 3}, "tanh", {}, ["dense"] * 3),
    "discrete-q4": ({"kind": "discrete", "n": 3}, "silu", {"prune": {"sparsity": 0.5}, "quantize": {"bits": 4}},
                    ["int8", "packed", "q8"]),
    "continuous": (CONTINUOUS, "tanh", {"prune": {"sparsity": 0.7}}, ["csr", "dense", "dense"]),
    # integer-only int8 (autocompress/intq.py), calibrated on the observations
    "discrete-iq": ({"kind": "discrete", "n": 3}, "silu", {"quantize": {"bits": 8, "symmetric": True}}, ["iq"] * 3),
    "continuous-iq": (CONTINUOUS, "tanh", {"prune": {"sparsity": 0.5}, "quantize": {"bits": 5, "symmetric": True}},
                      ["iq"] * 3),
    "discrete-dense-relu": ({"kind": "discrete", "n": 3}, "relu", {}, ["dense"] * 3),
    "discrete-iq-relu": ({"kind": "discrete", "n": 3}, "relu", {"quantize": {"bits": 8, "symmetric": True}},
                         ["iq"] * 3),
    # the same arithmetic, 4-bit codes stored two a byte
    "discrete-iq4": ({"kind": "discrete", "n": 3}, "relu", {"quantize": {"bits": 4, "symmetric": True}}, ["iq4"] * 3),
    "continuous-iq4": (CONTINUOUS, "silu", {"prune": {"sparsity": 0.5}, "quantize": {"bits": 3, "symmetric": True}},
                       ["iq4"] * 3),
}


@pytest.fixture(scope="module")
def observations() -> np.ndarray:
    return (np.random.default_rng(5).standard_normal((N_OBS, 4)) * 2).astype(np.float32)


@pytest.fixture(scope="module")
def builds(tmp_path_factory, observations):
    """Artifact, kernels and lazily built ELF per (case, target), shared by the tests below."""
    root, done = tmp_path_factory.mktemp("mcu"), {}

    def get(case: str, name: str):
        require_arm_toolchain()
        if (case, name) not in done:
            head, act, cfg, kernels = CASES[case]
            torch.manual_seed(3)
            net = PolicyNet.mlp(4, [16, 16], 3 if head["kind"] == "discrete" else 4, act)
            data = to_bytes(compress(net, observations, cfg), head)
            if runs_iq(kernels):
                data = calibrate(data, observations[:100])
            check_kernels(layers_of(*read_artifact(data)), kernels)  # each allowed for its layer
            write_c(data, root / case / "src", kernels)
            done[case, name] = data, kernels, mcu_build.build(root / case / "src", target(name), root / case / name)
        return done[case, name]

    return get


@pytest.mark.parametrize("name", MCU)
@pytest.mark.parametrize("case", CASES)
def test_mcu_build_acts_like_the_numpy_runtime(builds, observations, case, name):
    data, kernels, built = builds(case, name)
    ref = NumpyPolicy.from_bytes(data, kernels)
    act_dim = ref.head.get("act_dim", 0) if ref.head["kind"] == "continuous" else 0
    got = run(built.elf, target(name), observations, act_dim)
    if ref.head["kind"] == "discrete":
        logits = np.sort(ref.forward(observations), axis=1)
        clear = logits[:, -1] - logits[:, -2] > 1e-4  # float rounding may only flip near-ties
        assert clear.mean() > 0.95
        want = np.array([ref.act(o) for o in observations])
        assert (got["ret"][clear] == want[clear]).all(), f"{(got['ret'][clear] != want[clear]).sum()} actions differ"
    else:  # fp32 sums in another order than numpy's, and newlib's tanhf: a few ulps apart
        assert (got["ret"] == -1).all()
        np.testing.assert_allclose(got["actions"], [ref.act(o) for o in observations], atol=1e-5)
    assert got["instructions"].min() > 1000 and (got["cycles"] >= got["instructions"]).all()
    assert 0 < got["stack_bytes"] < mcu_build.STACK_BYTES


@pytest.mark.parametrize("name", MCU)
def test_counts_are_deterministic_and_sizes_match_arm_size(builds, observations, name):
    data, kernels, built = builds("discrete-q4", name)
    first, second = (run(built.elf, target(name), observations[:20], 0) for _ in range(2))
    for key in ("instructions", "cycles", "ret"):
        np.testing.assert_array_equal(first[key], second[key])
    assert first["stack_bytes"] == second["stack_bytes"]
    out = subprocess.run(["arm-none-eabi-size", str(built.elf)], capture_output=True, text=True, check=True).stdout
    text, data_, bss = (int(v) for v in out.splitlines()[1].split()[:3])
    assert (built.flash, built.ram_static) == (text + data_, data_ + bss)
    # only the kernels the layers run are linked, and no newlib reentrancy struct (1,080 B of .data)
    symbols = subprocess.run(["arm-none-eabi-nm", str(built.elf)], capture_output=True, text=True,
                             check=True).stdout.split()
    assert {"acz_int8", "acz_packed", "acz_q8"} <= set(symbols)
    assert not {"acz_dense", "acz_csr", "_impure_ptr"} & set(symbols)
    assert built.data < 64


@pytest.mark.parametrize("name", MCU)
@pytest.mark.parametrize("case", ["discrete-iq", "continuous-iq", "discrete-iq4", "continuous-iq4"])
def test_integer_only_build_is_exactly_the_numpy_mirror(builds, observations, case, name):
    """Integer sums in any order are the same integers: every discrete action equal, no tie excused
    (continuous: the head's tanhf, newlib's vs numpy's, a few ulps)."""
    data, kernels, built = builds(case, name)
    ref = NumpyPolicy.from_bytes(data, kernels)
    if ref.head["kind"] == "discrete":
        got = run(built.elf, target(name), observations, 0)
        assert (got["ret"] == [ref.act(o) for o in observations]).all()
    else:
        got = run(built.elf, target(name), observations, 2)
        np.testing.assert_allclose(got["actions"], [ref.act(o) for o in observations], atol=1e-5)
    # no fp32 layer path and no libm activation in its flash
    symbols = subprocess.run(["arm-none-eabi-nm", str(built.elf)], capture_output=True, text=True,
                             check=True).stdout.split()
    assert "acz_iq_forward" in symbols and not {"acz_layer", "acz_dense", "expf"} & set(symbols)


@pytest.mark.parametrize("name", MCU)
def test_4_bit_storage_puts_half_the_weight_bytes_in_flash(builds, name):
    """The same net's 4-bit codes stored a byte each ('iq') and two a byte ('iq4'): the linked read-only
    data differs by exactly the weight arrays' bytes (intq.c_layers), half the codes' byte count but the
    4-bit first layer's padding to 8 inputs."""
    from autocompress import intq

    data, _, iq4 = builds("discrete-iq4", name)
    write_c(data, (d := iq4.elf.parent.parent / "as-iq") / "src", ["iq"] * 3)
    iq = mcu_build.build(d / "src", target(name), d / name)
    plan = intq.plan(*read_artifact(data)[:1], layers_of(*read_artifact(data)))
    stored = {bits: sum(f["q"][0].size for f in intq.c_layers(plan, bits)) for bits in (8, 4)}
    assert stored == {8: 16 * 4 + 16 * 16 + 3 * 16, 4: (16 * 8 + 16 * 16 + 3 * 16) // 2}
    assert iq.rodata - iq4.rodata == stored[8] - stored[4]


@pytest.mark.parametrize("name, least", [("cortex-m0plus", 10.0), ("cortex-m4f", 1.5)])
def test_integer_only_int8_takes_fewer_cycles_than_fp32(builds, observations, name, least):
    """The same [16, 16] relu net, fp32 vs integer-only int8, on 20 observations: soft-float on the M0+
    is what int8 saves most; on the M4F, SMLAD against the FPU."""
    cycles = {case: run(builds(case, name)[2].elf, target(name), observations[:20], 0)["cycles"].mean()
              for case in ("discrete-dense-relu", "discrete-iq-relu")}
    assert cycles["discrete-dense-relu"] / cycles["discrete-iq-relu"] >= least, cycles


def test_a_flash_budget_buys_smaller_forms_at_their_cycle_cost(observations):
    """2-bit codes: integer-only with 4-bit storage ('iq4') is fastest on the M4F; a budget below its flash
    makes the choice trade cycles for the fp32 forms' smaller storage (packed: 2 bits a weight); a budget
    nothing meets leaves each layer's smallest form (the search then finds the trial over it)."""
    require_arm_toolchain()
    torch.manual_seed(3)
    net = PolicyNet.mlp(4, [128, 128], 3, "tanh")
    data = calibrate(to_bytes(compress(net, observations, {"quantize": {"bits": 2, "symmetric": True}}),
                              {"kind": "discrete", "n": 3}), observations[:100])
    m4, sample = target("cortex-m4f"), observations[:device.CHOICE_OBS]
    iq, iq4, packed = (device.measure(data, [k] * 3, m4, sample) for k in ("iq", "iq4", "packed"))
    assert iq4.flash < iq.flash and iq4.cycles.sum() < iq.cycles.sum()  # half the weight bytes, fewer loads
    assert device.choose_kernels(data, m4, observations) == ["iq4"] * 3
    assert device.choose_kernels(data, m4, observations, max_flash=iq.flash - 1) == ["iq4"] * 3
    assert packed.flash < iq4.flash
    budget = (packed.flash + iq4.flash) // 2
    fits = device.choose_kernels(data, m4, observations, max_flash=budget)
    got = device.measure(data, fits, m4, sample)
    assert not set(fits) & {"iq", "iq4"} and got.flash <= budget and got.cycles.sum() > iq4.cycles.sum()
    over = device.choose_kernels(data, m4, observations, max_flash=100)
    assert device.measure(data, over, m4, sample).flash <= got.flash


def test_the_widest_student_that_fits_a_budget_is_found_by_its_build():
    """mcu.fit: a student of the committed CartPole teacher, 8-bit symmetric integer-only, fits exactly up to
    its own build's flash and RAM; the widest fitting width is chosen, the narrowest where none fits."""
    from autocompress.mcu.fit import PROBE_CODES, fitting, student_fits, widest_fitting
    from autocompress.techniques import DistillConfig, apply
    from autocompress.techniques.distill import student_net
    from autocompress.config import load_trial_spec
    from autocompress.teacher import available_teacher
    from conftest import ROOT

    require_arm_toolchain()
    committed = available_teacher(load_trial_spec(ROOT / "trials" / "cartpole_ppo.yaml"), ROOT / "teachers")
    teacher, head = committed.actor, committed.info["head"]
    m0 = target("cortex-m0plus")
    student = apply(student_net(teacher, DistillConfig(hidden=[32, 32])), PROBE_CODES)
    obs = np.random.default_rng(1).standard_normal((4, teacher.in_dim)).astype(np.float32)
    built = device.measure(calibrate(to_bytes(student, head), obs), ["iq"] * 3, m0, obs[:1])
    assert student_fits(teacher, head, [32, 32], m0, built.flash, built.ram)
    assert not student_fits(teacher, head, [32, 32], m0, built.flash - 1, None)
    assert not student_fits(teacher, head, [32, 32], m0, None, built.ram - 1)
    choices = [[64, 64], [16, 16], [32, 32]]
    assert widest_fitting(teacher, head, choices, m0, built.flash, None) == ([32, 32], [16, 16])  # and the next
    assert widest_fitting(teacher, head, choices, m0, None, None) == ([64, 64], [32, 32])
    assert widest_fitting(teacher, head, choices, m0, 100, None) == ([16, 16], None)  # none fits: the narrowest
    assert fitting(teacher, head, choices, m0, built.flash, None) == [[16, 16], [32, 32]]  # narrowest first


@pytest.mark.parametrize("name", MCU)
@pytest.mark.parametrize("variant, conv_kernels", [("fp32", ["dense", "im2col"]), ("q8", ["int8", "dense"])])
def test_a_conv_policy_cross_built_acts_like_the_numpy_runtime(tmp_path, name, variant, conv_kernels):
    """The conv head: a MinAtar-like net (channels-last binary images), fp32 direct / im2col and int8
    conv kernels, on 10 images (soft-float conv on the M0+ emulates at ~1 s an act)."""
    require_arm_toolchain()
    from test_conv_native import artifact, forced, images

    data = artifact("hwc", variant)
    kernels = forced(layers_of(*read_artifact(data)), conv_kernels)
    write_c(data, tmp_path / "src", kernels)
    built = mcu_build.build(tmp_path / "src", target(name), tmp_path / "build")
    obs = images((10, 10, 4), 10, seed=3)
    ref = NumpyPolicy.from_bytes(data, kernels)
    got = run(built.elf, target(name), obs, 0)
    logits = np.sort(ref.forward(obs.reshape(len(obs), -1)), axis=1)
    clear = logits[:, -1] - logits[:, -2] > 1e-4
    want = np.array([ref.act(o) for o in obs])
    assert clear.mean() > 0.9 and (got["ret"][clear] == want[clear]).all()


@pytest.fixture(scope="module")
def conv_builds(tmp_path_factory):
    """The integer-only conv net (test_intq.conv_calibrated: MinAtar-like, channels-last, relu) cross-built per
    target, its calibration images' second half to act on."""
    from test_intq import conv_calibrated

    root, done = tmp_path_factory.mktemp("mcu-conv"), {}
    data, images = conv_calibrated("hwc", n=1000)

    def get(name: str):
        require_arm_toolchain()
        if name not in done:
            write_c(data, root / "src", ["iq"] * 4)
            done[name] = mcu_build.build(root / "src", target(name), root / name)
        return data, images[500:], done[name]

    return get


@pytest.mark.parametrize("name", ["cortex-m0plus", "cortex-m4f"])
def test_integer_only_conv_build_is_exactly_the_numpy_mirror(conv_builds, name):
    """acz_iq_conv on Thumb-1 and with SMLAD: every action the mirror's on 40 images; deterministic counts;
    flash and RAM as arm-none-eabi-size reports; no fp32 conv kernel or soft-float linked."""
    data, obs, built = conv_builds(name)
    ref = NumpyPolicy.from_bytes(data, ["iq"] * 4)
    first, second = (run(built.elf, target(name), obs[:40], 0) for _ in range(2))
    assert (first["ret"] == [ref.act(o) for o in obs[:40]]).all()
    for key in ("instructions", "cycles", "ret", "stack_bytes"):
        np.testing.assert_array_equal(first[key], second[key])
    out = subprocess.run(["arm-none-eabi-size", str(built.elf)], capture_output=True, text=True, check=True).stdout
    text, data_, bss = (int(v) for v in out.splitlines()[1].split()[:3])
    assert (built.flash, built.ram_static) == (text + data_, data_ + bss)
    symbols = subprocess.run(["arm-none-eabi-nm", str(built.elf)], capture_output=True, text=True,
                             check=True).stdout.split()
    assert "acz_iq_forward" in symbols
    assert not {"acz_layer", "acz_conv_direct", "acz_conv_im2col", "acz_conv_int8", "__aeabi_fmul", "expf"} & set(symbols)
    # the scratch in static RAM: two activation buffers of the widest (16 x 8 x 8) and the patch (C·kh·kw = 144)
    from autocompress import intq

    size = intq.scratch(intq.plan(read_artifact(data)[0], layers_of(*read_artifact(data))))
    assert (size["x"], size["cols"]) == (16 * 8 * 8, 144)
    assert built.ram_static >= (2 * size["x"] + size["cols"]) * (2 if target(name).dsp else 4) + 4 * size["acc"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cortex-m0plus", "cortex-m4f"])
def test_integer_only_conv_build_acts_as_the_mirror_on_1000_images(conv_builds, name):
    """The same on 500 further images, then the calibration's 500 (~20 s each core)."""
    data, obs, built = conv_builds(name)
    from test_intq import conv_calibrated

    images = np.concatenate([obs, conv_calibrated("hwc", n=1000)[1][:500]])
    ref = NumpyPolicy.from_bytes(data, ["iq"] * 4)
    assert (run(built.elf, target(name), images, 0)["ret"] == [ref.act(o) for o in images]).all()


def test_a_calibrated_conv_net_runs_integer_only_on_a_device():
    """device.choose_kernels: an int8 conv net calibrated for it runs integer-only, conv layers included."""
    from test_intq import conv_calibrated

    data, images = conv_calibrated("chw", n=100)
    assert device.choose_kernels(data, target("cortex-m0plus"), images) == ["iq"] * 4
