"""Recurrent policies (LSTM / GRU, issue 28) in the C runtime, the C export and the ONNX export: each acts as the
numpy runtime over whole CartPole episodes (>= 256 steps), the state carried within an episode and reset at each
episode's start, uncompressed and compressed; feed-forward exports stay as they were; what still refuses a
recurrent net says so.

Tolerance: equal actions at every step; the carried state (h, and c for an LSTM) within STATE_ATOL of numpy's.
"""

import shutil
import subprocess

import gymnasium as gym
import numpy as np
import pytest

import autocompress as ac
from autocompress import exports
from autocompress.artifact import to_bytes
from autocompress.exports import measure as export_measure
from autocompress.exports.c import HOST_CFLAGS
from autocompress.native import NativePolicy, time_side_by_side
from autocompress.nets import PolicyNet
from autocompress.runtime import NumpyPolicy
from test_native import require_compiler
from test_recurrent import CELLS, HEAD, STEPS, recurrent_net

CONFIGS = {"fp32": {}, "prune-q8": {"prune": {"sparsity": 0.5}, "quantize": {"bits": 8}},
           "share4": {"share": {"bits": 4}}}
#: the largest difference allowed between a runtime's carried state and numpy's (fp32 sums in another order,
#: libm's tanhf vs numpy's tanh)
STATE_ATOL = 1e-5


def artifact(cell: str, config: str) -> bytes:
    net = recurrent_net(cell)[0]
    return to_bytes(ac.compress_net(net, CONFIGS[config]) if CONFIGS[config] else net, HEAD)


def episodes(data: bytes, kernels: list[str] | None = None, steps: int = STEPS) -> list[dict]:
    """Whole CartPole episodes acted by the numpy runtime (`kernels`, as another runtime ran its layers), until
    `steps` are done: per episode its observations, actions and the state after each step."""
    ref, env, out, n = NumpyPolicy.from_bytes(data, kernels), gym.make("CartPole-v1"), [], 0
    while n < steps:
        obs, _ = env.reset(seed=len(out))
        state, ep, done = ref.initial_state(), {"obs": [], "actions": [], "states": []}, False
        while not done:
            action, state = ref.act(obs, state)
            for k, v in (("obs", obs), ("actions", action), ("states", state)):
                ep[k].append(v)
            obs, _, term, trunc, _ = env.step(action)
            done, n = term or trunc, n + 1
        out.append({k: np.array(v) for k, v in ep.items()})
    return out


def assert_acts_alike(act, state, eps: list[dict], reset) -> None:
    """act(obs) over every episode, reset() before each: numpy's actions, and state() within STATE_ATOL."""
    for e, ep in enumerate(eps):
        reset()
        for t, obs in enumerate(ep["obs"]):
            assert act(obs) == ep["actions"][t], (e, t)
            np.testing.assert_allclose(state(), ep["states"][t], atol=STATE_ATOL, rtol=0, err_msg=f"{e}, {t}")


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("cell", CELLS)
def test_c_runtime_acts_as_numpy_over_whole_episodes(cell, config):
    require_compiler()
    data = artifact(cell, config)
    policy = NativePolicy.from_bytes(data)  # its layers' kernels chosen by timing (int8 allowed): numpy repeats them
    eps = episodes(data, policy.kernels)
    assert sum(len(ep["obs"]) for ep in eps) >= STEPS and len(eps) > 1
    assert_acts_alike(policy.act, lambda: policy._state, eps, policy.reset)
    # the stateless form, on the first episode, leaves the carried state alone
    carried, state = policy._state.copy(), policy.initial_state()
    for t, obs in enumerate(eps[0]["obs"]):
        action, state = policy.act(obs, state)
        assert action == eps[0]["actions"][t]
        np.testing.assert_allclose(state, eps[0]["states"][t], atol=STATE_ATOL, rtol=0)
    np.testing.assert_array_equal(policy._state, carried)
    if CONFIGS[config]:  # the cell's compressed matrices run in a compressed form, not decoded to fp32
        assert set(policy.rnn.kernels()) <= {"q8", "csr"}
    # Policy: 'auto' runs it in C now, and evaluate resets it per episode
    auto = ac.Policy.from_bytes(data)
    assert auto.runtime == "c" and auto.recurrent


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("cell", CELLS)
def test_c_export_compiles_warning_free_and_acts_as_numpy_over_whole_episodes(cell, config, tmp_path):
    require_compiler()
    data = artifact(cell, config)
    eps = episodes(data)
    lines = "".join("reset\n" + "".join(" ".join(repr(float(v)) for v in o) + "\n" for o in ep["obs"]) for ep in eps)
    want = np.concatenate([ep["actions"] for ep in eps])
    for smallest in (False, True):  # the cell's matrices in their fast forms, then packed (the smallest flash)
        out = tmp_path / f"c-{smallest}"
        exports.write(data, "c", out, smallest=smallest)
        src = (out / "policy.c").read_text()
        assert "#define ACZ_USE_RNN 1" in src and "void policy_reset(void);" in (out / "policy.h").read_text()
        if CONFIGS[config] and smallest:
            assert "#define ACZ_USE_PACKED 1" in src
        subprocess.run([shutil.which("cc") or "gcc", *HOST_CFLAGS, "-Wall", "-Wextra", "-Werror", "main.c", "policy.c",
                        "-lm", "-o", "policy"], cwd=out, check=True, capture_output=True, text=True)
        got = subprocess.run([str(out / "policy")], input=lines, capture_output=True, text=True, check=True).stdout
        np.testing.assert_array_equal(np.array(got.split(), int), want)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("cell", CELLS)
def test_onnx_takes_and_returns_the_state_and_acts_as_numpy(cell, config, tmp_path):
    data = artifact(cell, config)
    path = exports.write(data, "onnx", tmp_path / "p.onnx")[0]
    act = export_measure.actor("onnx", path)  # onnxruntime, the state fed back from `state_out`
    assert act.state_size == NumpyPolicy.from_bytes(data).initial_state().size
    assert_acts_alike(lambda o: int(act(o)[0]), lambda: act.state[0], episodes(data), act.reset)


def test_export_measure_carries_the_state_and_times_a_step(tmp_path):
    require_compiler()
    data = artifact("lstm", "prune-q8")
    obs = np.concatenate([ep["obs"] for ep in episodes(data, steps=64)])
    path = exports.write(data, "onnx", tmp_path / "p.onnx")[0]
    assert export_measure.agreement("onnx", path, data, obs) == {"agree": 1.0}  # one stream from zeros, both
    r = export_measure.report("onnx", path, data, obs, calls=200)
    assert r["acz_runtime"] == "c runtime" and r["latency_ms"] > 0 and r["acz_latency_ms"] > 0
    # the in-kernel timing loop runs a recurrent net as any other: per step, its state update included
    mlp = NativePolicy.from_bytes(to_bytes(PolicyNet.mlp(4, [32, 16], 2), HEAD))
    t = time_side_by_side({"lstm": NativePolicy.from_bytes(data), "mlp": mlp}, obs, calls=10, rounds=20)
    assert all(0 < t[k]["median_ms"] < 1 for k in t)


def test_feed_forward_exports_leave_the_cell_out(tmp_path):
    data = to_bytes(PolicyNet.mlp(4, [32, 16], 2), HEAD)
    exports.write(data, "c", tmp_path / "c")
    files = {p.name: p.read_text() for p in (tmp_path / "c").iterdir()}
    for text in files.values():
        assert "RNN" not in text and "reset" not in text
    got = NumpyPolicy.from_bytes(data)
    assert NativePolicy.from_bytes(data).initial_state().size == got.initial_state().size == 0
    import onnx

    graph = onnx.load(exports.write(data, "onnx", tmp_path / "p.onnx")[0]).graph
    assert [i.name for i in graph.input] == ["obs"] and [o.name for o in graph.output] == ["action"]


def test_what_does_not_run_a_recurrent_net_says_so(tmp_path):
    data = artifact("gru", "fp32")
    for fmt in ("onnx-int8", "tflite", "tflite-int8", "pte", "pte-int8"):
        with pytest.raises(ValueError, match=f"format '{fmt}': a recurrent \\(gru\\) net exports as acz, c or onnx"):
            exports.write(data, fmt, tmp_path / fmt)
    for make in (NumpyPolicy.from_bytes, NativePolicy.from_bytes):
        with pytest.raises(ValueError, match="integer-only net \\('iq'\\) does not run a recurrent artifact"):
            make(data, ["iq", "iq"])
    with pytest.raises(ValueError, match="integer-only net \\('iq'\\) does not run a recurrent artifact"):
        exports.write(data, "c", tmp_path / "iq", ["iq", "iq"])


#: steps per target: the M4F over whole episodes; the soft-float M0+ (~1.3M cycles a step) and the M7 a prefix
MCU_STEPS = {"cortex-m4f": STEPS, "cortex-m0plus": 24, "cortex-m7": 24}


@pytest.mark.parametrize("target_name", MCU_STEPS)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("config", ["fp32", "prune-q8"])
def test_mcu_build_acts_as_numpy_with_the_state_carried_and_reset(cell, config, target_name, tmp_path):
    """The C export cross-built for each Cortex-M target (-Werror), emulated: numpy's actions at every step, the
    state carried within an episode and policy_reset() at each start; the same counts on a second run."""
    from autocompress.mcu.build import build
    from autocompress.mcu.emulate import Emulator
    from autocompress.targets import target
    from test_mcu import require_arm_toolchain

    require_arm_toolchain()
    data = artifact(cell, config)
    exports.write(data, "c", tmp_path / "src", target=target_name)
    elf = build(tmp_path / "src", target(target_name), tmp_path / "build").elf
    eps = episodes(data, steps=MCU_STEPS[target_name])
    emu, counts = Emulator(elf, target(target_name)), []
    for ep in eps:
        emu.reset()
        for obs, want in zip(ep["obs"], ep["actions"]):
            got, _, n, cycles = emu.act(obs, 0)
            assert got == want
            counts.append((n, cycles))
    again = Emulator(elf, target(target_name))
    again.reset()
    assert [again.act(o, 0)[2:] for o in eps[0]["obs"][:3]] == counts[:3]
