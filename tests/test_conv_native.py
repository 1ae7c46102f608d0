"""Conv policies in compiled code at batch 1: the C runtime with each conv kernel forced (direct, im2col,
int8), its own choice by measurement, and the C export compiled and run, all act like the numpy
runtime on 1,000 MinAtar-like binary images, channels-last and channels-first, fp32 and compressed."""


import numpy as np
import pytest
import torch

from autocompress import exports, native
from autocompress.artifact import to_bytes
from autocompress.layers import layers_of
from autocompress.nets import PolicyNet
from autocompress.runtime import NumpyPolicy, read_artifact
from test_exports import assert_same_actions, run_c
from test_native import require_compiler

N_OBS = 1000
FILTERS = [[16, [3, 3], 1, "valid"], [8, 3, 2]]  # the second 'same' at stride 2: padding bottom / right only
SHAPES = {"hwc": (10, 10, 4), "chw": (4, 9, 7)}  # chw not square: a height / width mix-up shows
DISCRETE = {"kind": "discrete", "n": 3}
VARIANTS = ["fp32", "q8", "pruned", "codebook", "pruned+q8"]


@pytest.fixture(autouse=True)
def cc() -> None:
    require_compiler()


def images(shape: tuple[int, ...], n: int = N_OBS, seed: int = 0) -> np.ndarray:
    """MinAtar-like observations: binary channels, one in five cells set."""
    return (np.random.default_rng(seed).random((n, *shape)) > 0.8).astype(np.float32)


def compress(net: PolicyNet, variant: str) -> PolicyNet:
    """Compression put on every layer directly: 8-bit per-channel symmetric quant, a random 60% pruning
    mask, a 16-entry codebook, or mask + quant."""
    torch.manual_seed(5)
    for layer in net.layers:
        w = layer.weight.detach()
        if "pruned" in variant:
            layer.mask = (torch.rand_like(w) > 0.6).float()
        if "q8" in variant:
            layer.set_quant({"bits": 8, "per_channel": True, "symmetric": True})
        if variant == "codebook":
            codebook = torch.linspace(float(w.min()), float(w.max()), 16)
            layer.set_codebook(codebook, (w[..., None] - codebook).abs().argmin(-1))
    return net


def artifact(layout: str, variant: str, out: int = 3, head: dict = DISCRETE) -> bytes:
    torch.manual_seed(1)
    return to_bytes(compress(PolicyNet.cnn(SHAPES[layout], layout, FILTERS, [32], out), variant), head)


def forced(layers, conv_kernels: list[str]) -> list[str]:
    """conv_kernels on the conv layers, dense on the head."""
    return [*conv_kernels, *["dense"] * (len(layers) - len(conv_kernels))]


def acts(policy, obs: np.ndarray) -> np.ndarray:
    return np.array([policy.act(o) for o in obs])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", SHAPES)
def test_each_conv_kernel_forced_acts_like_numpy(layout, variant):
    data, obs = artifact(layout, variant), images(SHAPES[layout])
    layers = layers_of(*read_artifact(data))
    assert [layer.kernels() for layer in layers[:2]] == [["dense", "im2col", "int8"] if "q8" in variant
                                                         else ["dense", "im2col"]] * 2
    for kernel in layers[0].kernels():
        kernels = forced(layers, [kernel, kernel])
        c = native.NativePolicy.from_bytes(data, kernels)
        assert c.kernels == kernels
        assert_same_actions(acts(c, obs), NumpyPolicy.from_bytes(data, kernels), obs, f"C runtime {kernels}")


# each variant once; each layout with int8 and without (the fp32 forms do not depend on the variant)
@pytest.mark.parametrize("layout, variant", [("hwc", "fp32"), ("hwc", "pruned+q8"), ("chw", "q8"), ("chw", "pruned"),
                                             ("chw", "codebook")])
def test_c_export_of_a_conv_net_compiles_warning_free_and_acts_like_numpy(layout, variant, tmp_path):
    data, obs = artifact(layout, variant), images(SHAPES[layout], seed=1)
    layers = layers_of(*read_artifact(data))
    # direct on one conv geometry, im2col on the other (swapped in the other layout), int8 where it may run
    choices = [["dense", "im2col"] if layout == "hwc" else ["im2col", "dense"]] + \
        ([["int8", "int8"]] if "q8" in variant else [])
    for conv_kernels in choices:
        kernels = forced(layers, conv_kernels)
        out = tmp_path / "-".join(conv_kernels)
        exports.write(data, "c", out, kernels)
        first_line = (out / "policy.c").read_text().splitlines()[0]
        assert f"conv {'x'.join(map(str, layers[1].conv['in_shape']))}->8x" in first_line, first_line
        got = run_c(out, obs)
        assert len(got) == N_OBS
        assert_same_actions(got, NumpyPolicy.from_bytes(data, kernels), obs, f"C export {conv_kernels}")


def test_continuous_head_with_normalised_image_obs_within_1e_5(tmp_path):
    """A non-square channels-last image normalised per value (in the env's order) before the transpose."""
    shape = (10, 8, 3)
    rng = np.random.default_rng(3)
    norm = {"mean": rng.random(int(np.prod(shape))).tolist(), "std": (0.5 + rng.random(int(np.prod(shape)))).tolist(),
            "clip": 1.5}
    head = {"kind": "continuous", "act_dim": 2, "low": [-2.0, 0.0], "high": [2.0, 1.0], "squash": "tanh"}
    torch.manual_seed(2)
    net = compress(PolicyNet.cnn(shape, "hwc", FILTERS, [32], 4, act="tanh"), "q8")
    # flat observations: the numpy runtime normalises by the flat mean / std
    data, obs = to_bytes(net, head, norm), images(shape, seed=2).reshape(N_OBS, -1)
    layers = layers_of(*read_artifact(data))
    for conv_kernels in (["dense", "im2col"], ["int8", "int8"]):
        kernels = forced(layers, conv_kernels)
        ref = acts(NumpyPolicy.from_bytes(data, kernels), obs)
        assert ref.shape == (N_OBS, 2) and ref.std(axis=0).min() > 1e-3  # the actions vary with the image
        np.testing.assert_allclose(acts(native.NativePolicy.from_bytes(data, kernels), obs), ref, atol=1e-5)
        exports.write(data, "c", tmp_path / conv_kernels[0], kernels)
        np.testing.assert_allclose(run_c(tmp_path / conv_kernels[0], obs), ref, atol=1e-5)


def test_kernel_choice_by_measurement_covers_conv_layers_and_is_recorded():
    data, obs = artifact("hwc", "q8"), images(SHAPES["hwc"])
    layers = layers_of(*read_artifact(data))
    c = native.NativePolicy.from_bytes(data)
    assert len(c.kernels) == len(c.kernel_ns) == 4
    for layer, kernel, times in list(zip(layers, c.kernels, c.kernel_ns))[:2]:
        assert set(times) == {"dense", "im2col", "int8"} and kernel in times
        fastest = min(times, key=times.get)
        assert times[kernel] <= times[fastest] * native.COMPACT_WITHIN
        assert layer.stored_bytes(kernel) <= layer.stored_bytes(fastest)
    # the recorded choice replays: the numpy runtime given it acts as the C runtime did
    assert_same_actions(acts(c, obs), NumpyPolicy.from_bytes(data, c.kernels), obs, f"chosen {c.kernels}")
    # in-kernel timing takes image observations as the env gives them
    t = native.time_side_by_side({"conv": c}, obs[:16], warmup=10, calls=5, rounds=5)
    assert 0 < t["conv"]["median_ms"] < 10


def test_conv_scratch_covers_the_widest_activation_and_the_patch_matrix():
    layers = layers_of(*read_artifact(artifact("hwc", "fp32")))
    size = native.scratch_sizes(layers, ["im2col", "dense", "dense", "dense"], 400)
    # 16 x 8 x 8 after the first conv; its patch matrix 64 pixels x 36; the second's int8 input + one patch
    assert size == {"width": 16 * 8 * 8, "qbuf": 16 * 8 * 8 + 16 * 3 * 3, "cols": 64 * 36}
    assert native.scratch_sizes(layers, ["dense"] * 4, 400)["cols"] == 0


@pytest.mark.parametrize("shape,layout", [((1, 1, 6), "chw"), ((3, 4, 2), "hwc")])
def test_a_batch_of_images_reads_alike_in_numpy_and_torch(shape, layout):
    """Observations are one rule (conv.batch_dims): a batch (B, *shape) is B images even when the last
    axis holds every value (C·H = 1), where the numpy runtime once kept (B, 1, 1) as batch dims."""
    torch.manual_seed(0)
    net = PolicyNet.cnn(shape, layout, [[4, [1, 2], 1]], [8], 3)
    policy = NumpyPolicy.from_bytes(to_bytes(net, {"kind": "discrete", "n": 3}))
    rng = np.random.default_rng(0)
    for obs, out in (((5, *shape), (5, 3)), ((5, int(np.prod(shape))), (5, 3)), ((int(np.prod(shape)),), (3,))):
        x = rng.standard_normal(obs).astype(np.float32)  # images, flat rows, one flat observation
        with torch.no_grad():
            want = net(torch.as_tensor(x)).numpy()
        got = policy.forward(x)
        assert got.shape == want.shape == out
        np.testing.assert_allclose(got, want, atol=1e-5)
