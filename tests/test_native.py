"""The C runtime acts like the numpy runtime on every kind of artifact, and is chosen (or not)
as the trial spec says."""

import os

import numpy as np
import pytest
import torch

from autocompress import native
from autocompress.artifact import to_bytes
from autocompress.nets import PolicyNet, torch_act
from autocompress.measure import policy_runtime
from autocompress.layers import KERNELS, layers_of
from autocompress.runtime import NumpyPolicy, obs_normalizer, read_artifact
from test_export import CONFIGS, HEAD, build


def require_compiler() -> None:
    """Skip where no C compiler is found, unless AUTOCOMPRESS_REQUIRE_CC=1 (set by CI): then fail, so a
    CI image without a compiler cannot pass by skipping every C-runtime test."""
    if native.available():
        return
    msg = "no C compiler found (cc, gcc, clang or $CC): the C runtime is untested"
    if os.environ.get("AUTOCOMPRESS_REQUIRE_CC") == "1":
        pytest.fail(f"{msg}, and AUTOCOMPRESS_REQUIRE_CC=1 requires it", pytrace=False)
    pytest.skip(msg)


@pytest.fixture
def cc() -> None:
    require_compiler()


@pytest.mark.parametrize("name", CONFIGS)
def test_discrete_actions_equal_numpy_runtime(cc, net, obs, name):
    data = to_bytes(build(net, obs, CONFIGS[name]), HEAD)
    ref, c = NumpyPolicy.from_bytes(data), native.NativePolicy.from_bytes(data)
    logits = ref.forward(obs)
    gap = np.sort(logits, axis=1)[:, -1] - np.sort(logits, axis=1)[:, -2]
    clear = gap > 1e-4  # float rounding may only flip near-ties
    assert clear.mean() > 0.9
    assert [c.act(o) for o in obs[clear]] == [ref.act(o) for o in obs[clear]]


@pytest.mark.parametrize("squash", ["tanh", "clip", "none"])
@pytest.mark.parametrize("clip", [None, 1.5])
def test_continuous_actions_and_obs_norm_equal_numpy_runtime_and_torch(cc, squash, clip):
    torch.manual_seed(1)
    net = PolicyNet.mlp(3, [64, 64], 4, "relu")
    norm = {"mean": [0.5, -1.0, 2.0], "std": [2.0, 0.5, 3.0], "clip": clip}
    # a teacher's head carries its normalisation; the artifact takes it from there
    head = {"kind": "continuous", "act_dim": 2, "low": [-2.0, 0.0], "high": [2.0, 1.0], "squash": squash,
            "obs_norm": norm}
    obs = np.random.default_rng(2).normal(size=(200, 3)) * 3  # float64, as MuJoCo gives
    if clip:
        assert (np.abs(obs_normalizer(norm)(obs)) == clip).any()  # some observations are clipped
    for cfg in ({}, {"prune": {"sparsity": 0.8}, "quantize": {"bits": 6}}):
        built = build(net, obs.astype(np.float32), cfg)
        data = to_bytes(built, head)
        # the fp32 kernels on every layer: left to choose by timing, a layer may take int8 (tested elsewhere)
        ref, c = NumpyPolicy.from_bytes(data), native.NativePolicy.from_bytes(data, ["dense"] * len(built.layers))
        assert "obs_norm" not in ref.head and ref.obs_norm["clip"] == clip
        got = np.stack([c.act(o) for o in obs])
        np.testing.assert_allclose(got, np.stack([ref.act(o) for o in obs]), atol=1e-4)
        np.testing.assert_allclose(got, np.stack([torch_act(built, head)(o) for o in obs]), atol=1e-4)
        assert (got >= np.array(head["low"]) - 1e-6).all() and (got <= np.array(head["high"]) + 1e-6).all()


def _clear(logits: np.ndarray, gap: float = 1e-4) -> np.ndarray:
    """Observations whose best action leads the second by more than `gap` (float rounding may flip near-ties)."""
    top = np.sort(logits, axis=1)
    return top[:, -1] - top[:, -2] > gap


@pytest.mark.parametrize("name", CONFIGS)
def test_every_kernel_a_layer_may_run_acts_like_the_numpy_runtime(cc, net, obs, name):
    """dense, csr and packed compute the decoded fp32 net; int8 rounds inputs exactly as the numpy
    runtime's int8 path does. Each kernel is forced on every layer that may run it."""
    data = to_bytes(build(net, obs, CONFIGS[name]), HEAD)
    layers = layers_of(*read_artifact(data))
    for kernel in KERNELS:
        kernels = [kernel if kernel in layer.kernels() else "dense" for layer in layers]
        if kernel != "dense" and kernels == ["dense"] * len(layers):
            continue
        ref, c = NumpyPolicy.from_bytes(data, kernels), native.NativePolicy.from_bytes(data, kernels)
        assert c.kernels == kernels
        clear = _clear(ref.forward(obs), 1e-3 if kernel == "int8" else 1e-4)
        assert clear.mean() > 0.9
        assert [c.act(o) for o in obs[clear]] == [ref.act(o) for o in obs[clear]], kernel


def test_kernels_offered_follow_the_encoding(net, obs):
    layers = lambda cfg: layers_of(*read_artifact(to_bytes(build(net, obs, cfg), HEAD)))  # noqa: E731
    assert [layer.kernels() for layer in layers({})] == [["dense"]] * 3
    assert {tuple(layer.kernels()) for layer in layers({"prune": {"sparsity": 0.9}})} == {("dense", "csr")}
    sym8 = layers({"quantize": {"bits": 8, "symmetric": True}})
    assert {tuple(layer.kernels()) for layer in sym8} == {("dense", "int8", "q8", "packed")}
    # asymmetric 8-bit: q - zero spans up to 255 values, more than int8 holds
    assert all("int8" not in layer.kernels() for layer in layers({"quantize": {"bits": 8, "symmetric": False}}))
    assert {tuple(layer.kernels()) for layer in layers({"share": {"bits": 3}})} == {("dense", "q8", "packed")}
    # a pruned 8-bit codebook would need a 257th entry (0) for the pruned weights: no q8
    for layer in layers({"prune": {"sparsity": 0.3}, "share": {"bits": 8}}):
        w = layer.meta["w"]
        assert ("q8" in layer.kernels()) == (not (w["sparse"] and w["bits"] == 8)), w


def test_the_fastest_kernel_is_chosen_per_layer_and_recorded(cc, obs):
    wide = PolicyNet.mlp(obs.shape[1], [256, 256], 2)
    pruned = native.NativePolicy.from_bytes(to_bytes(build(wide, obs, {"prune": {"sparsity": 0.97}}), HEAD))
    assert len(pruned.kernel_ns) == 3
    for kernel, times in zip(pruned.kernels, pruned.kernel_ns):
        fastest = min(times, key=times.get)
        assert set(times) == {"dense", "csr"}
        # the fastest, or a smaller form within COMPACT_WITHIN of it
        assert kernel == fastest or times[kernel] <= times[fastest] * native.COMPACT_WITHIN
    # at 3% density the scatter loop skips 97% of the work: it wins on the wide hidden layer (2,000 kept
    # weights: ~1.6 µs vs ~3.4 µs dense here; on a 64-wide layer the two are too close to call)
    assert pruned.kernels[1] == "csr", pruned.kernel_ns


def test_a_wrong_kernel_list_is_refused(cc, net):
    data = to_bytes(net, HEAD)
    for runtime in (NumpyPolicy, native.NativePolicy):
        with pytest.raises(ValueError, match="3 layers"):
            runtime.from_bytes(data, ["dense"])
        with pytest.raises(ValueError, match=r"kernels\[1\] = 'int8'"):
            runtime.from_bytes(data, ["dense", "int8", "dense"])


def test_in_kernel_timing_orders_nets_by_their_work(cc, obs):
    big = native.NativePolicy.from_bytes(to_bytes(PolicyNet.mlp(obs.shape[1], [256, 256], 2), HEAD))
    small = native.NativePolicy.from_bytes(to_bytes(PolicyNet.mlp(obs.shape[1], [16], 2), HEAD))
    t = native.time_side_by_side({"big": big, "small": small}, obs, warmup=100, calls=20, rounds=50)
    assert set(t) == {"big", "small"} and set(t["big"]) == {"median_ms", "p95_ms", "rounds_ms"}
    assert t["big"]["rounds_ms"].shape == (50,) and t["big"]["median_ms"] == np.median(t["big"]["rounds_ms"])
    # 67k vs 0.1k multiply-adds: no timer noise on a shared machine closes a gap this wide
    assert t["small"]["median_ms"] * 5 < t["big"]["median_ms"] <= t["big"]["p95_ms"]
    assert t["big"]["median_ms"] < 1.0  # milliseconds, per act
    assert native.round_ratio(t, "small", "big") < 0.2 and native.round_ratio(t, "big", "big") == 1.0


def test_in_kernel_timing_visits_every_recorded_observation(cc):
    """Round r times observations r * calls onwards, the same ones for every net: 13 rounds of 20 acts
    cover 256 observations (and 4 of them twice), for each of the two nets."""
    obs = np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32)
    p = native.NativePolicy.from_bytes(to_bytes(PolicyNet.mlp(4, [16], 2), HEAD))
    seen = np.zeros(len(obs), np.int64)
    native.time_side_by_side({"a": p, "b": p}, obs, warmup=10, calls=20, rounds=13, seen=seen)
    assert seen.sum() == 2 * 13 * 20 and (seen >= 2).all()
    assert (seen == 4).sum() == 4 and (seen[:4] == 4).all()  # the cursor wrapped around to the start
    with pytest.raises(ValueError, match="int64"):
        native.time_side_by_side({"a": p}, obs, 1, 1, 1, seen=np.zeros(len(obs), np.int32))


def test_runtime_choice(cc, monkeypatch):
    assert policy_runtime("numpy") == ("numpy", NumpyPolicy)
    assert policy_runtime("auto") == ("c", native.NativePolicy)
    monkeypatch.setattr(native, "available", lambda: False)
    assert policy_runtime("auto") == ("numpy", NumpyPolicy)


def test_no_compiler_is_a_clear_error(monkeypatch, tmp_path):  # needs no compiler: runs everywhere
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("AUTOCOMPRESS_NATIVE_CACHE", str(tmp_path))
    native._library.cache_clear()
    try:
        assert not native.available()
        with pytest.raises((RuntimeError, OSError)):
            native.NativePolicy.from_bytes(to_bytes(PolicyNet.mlp(4, [8], 2), HEAD))
    finally:
        native._library.cache_clear()


def test_loading_the_kernel_leaves_float_semantics_alone(cc):
    """A library linked with -ffast-math would switch on flush-to-zero for the whole process
    (numpy, torch, hypothesis all saw subnormals vanish): the kernel must not."""
    native._library()
    tiny = np.float64(5e-324)
    assert tiny * np.float64(1.0) > 0 and np.float32(1e-40) * np.float32(1.0) > 0


@pytest.mark.parametrize("require", [None, "0", "1"])
def test_a_missing_compiler_skips_unless_required(monkeypatch, require):
    monkeypatch.setattr(native, "available", lambda: False)
    if require is None:
        monkeypatch.delenv("AUTOCOMPRESS_REQUIRE_CC", raising=False)
    else:
        monkeypatch.setenv("AUTOCOMPRESS_REQUIRE_CC", require)
    with pytest.raises((pytest.fail.Exception if require == "1" else pytest.skip.Exception)):
        require_compiler()
    monkeypatch.setattr(native, "available", lambda: True)
    require_compiler()  # a compiler: neither


@pytest.mark.parametrize("hidden", [[89, 40], [9, 33], [7, 3]])
def test_odd_widths_padded_to_whole_blocks_act_like_numpy(cc, obs, hidden):
    """Dense layers wider than 8 run on zero-padded columns (whole blocks of 32); the padding must
    change nothing but the time."""
    torch.manual_seed(0)
    data = to_bytes(PolicyNet.mlp(obs.shape[1], hidden, 3, "relu"), {"kind": "discrete", "n": 3})
    wpads = [layer.dense()[1] for layer in layers_of(*read_artifact(data))]
    assert all(p % 32 == 0 or p <= 8 for p in wpads) and wpads[0] >= hidden[0]
    ref, c = NumpyPolicy.from_bytes(data), native.NativePolicy.from_bytes(data, ["dense"] * 3)
    clear = _clear(ref.forward(obs))
    assert [c.act(o) for o in obs[clear]] == [ref.act(o) for o in obs[clear]]
