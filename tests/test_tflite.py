"""The TFLite export (autocompress/exports/tflite.py) in LiteRT's and TensorFlow Lite Micro's interpreters, on
1,000 observations. fp32: the numpy runtime's actions (discrete: all but near-ties; continuous: within 1e-5).
int8: the integer-only numpy mirror's (intq.forward) up to TFLite's own requantization rounding: an activation
there may land an int8 step or two from intq's (31- vs 15-bit multipliers, halves away from zero vs up, tanh
on TFLite's fixed 1/128 grid vs intq's max|tanh| / 127; measured: the last hidden layer within 1.9 steps
(tanh), 1 step (relu)). So a continuous action is within two steps of every last hidden activation (the
head's half range x that scale x the widest row's L1 norm), and a discrete action differs only where two
logits are that close: 0.2 - 0.5% of these observations, 1% allowed."""

import numpy as np
import pytest
import torch

pytest.importorskip("ai_edge_litert")
pytest.importorskip("tflite_micro")

from autocompress import exports, intq  # noqa: E402
from autocompress.artifact import calibrate, int8_activation_scales, to_bytes  # noqa: E402
from ai_edge_litert import schema_py_generated as fb  # noqa: E402
from autocompress.exports.tflite import run_litert, run_tflm, tflm_arena_bytes, to_tflite  # noqa: E402
from autocompress.layers import layers_of  # noqa: E402
from autocompress.nets import PolicyNet  # noqa: E402
from autocompress.runtime import NumpyPolicy, read_artifact  # noqa: E402
from test_export import build  # noqa: E402
from test_exports import CONTINUOUS, DISCRETE, assert_same_actions  # noqa: E402

INT8 = {"quantize": {"bits": 8, "symmetric": True}}
#: int8 actions agreeing with the integer-only mirror's, at least (see the module's docstring)
AGREE = 0.99


@pytest.fixture(scope="module")
def observations() -> np.ndarray:
    return (np.random.default_rng(11).standard_normal((1000, 4)) * 2).astype(np.float32)


def policy(act: str, head: dict, obs: np.ndarray, cfg=None, hidden=(64, 64)) -> bytes:
    """A calibrated artifact (calibrate leaves one that cannot run integer-only as it is)."""
    torch.manual_seed(5)
    net = PolicyNet.mlp(4, list(hidden), head.get("n", 4), act)
    return calibrate(to_bytes(build(net, obs, cfg or {}), head), obs[:500])


@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("head", [DISCRETE, CONTINUOUS], ids=["discrete", "continuous"])
def test_fp32_acts_like_the_runtime_in_litert_and_tflm(observations, act, head, tmp_path):
    data = policy(act, head, observations)
    path = exports.write(data, "tflite", tmp_path / "p.tflite")[0]
    model = path.read_bytes()
    ref = NumpyPolicy.from_bytes(data)
    for run in (run_litert, run_tflm):
        assert_same_actions(run(model, observations), ref, observations, f"tflite {run.__name__}")


@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("head", [DISCRETE, CONTINUOUS], ids=["discrete", "continuous"])
def test_int8_acts_like_the_integer_only_mirror_in_litert_and_tflm(observations, act, head, tmp_path):
    data = policy(act, head, observations, INT8)
    model = exports.write(data, "tflite-int8", tmp_path / "p.tflite")[0].read_bytes()
    assert len(model) < 0.6 * len(to_tflite(data))  # int8 hidden weights: a byte each
    header, blob = read_artifact(data)
    layers = layers_of(header, blob)
    mirror = NumpyPolicy.from_bytes(data, ["iq"] * len(layers))  # intq.forward, then the head
    want = np.array([mirror.act(o) for o in observations])
    scale = max(float(header["iq"]["p"][-1]) if act == "relu" else intq.activation_table(act, header["iq"]["p"][-1])[1],
                1 / 128)  # the last hidden activations' step: intq's or TFLite's, the larger
    half = np.max(np.subtract(head.get("high", 0), head.get("low", 0))) / 2
    tol = half * 2 * scale * np.abs(layers[-1].w).sum(0).max()
    got = {run.__name__: run(model, observations) for run in (run_litert, run_tflm)}
    for name, actions in got.items():
        if head["kind"] == "discrete":
            assert (actions == want).mean() >= AGREE, name
        else:
            assert np.abs(actions - want).max() <= tol, (name, np.abs(actions - want).max(), tol)
    # the two interpreters differ only in that same rounding (LiteRT's XNNPACK requantizes in fp32)
    a, b = got["run_litert"], got["run_tflm"]
    assert (a == b).mean() >= AGREE if head["kind"] == "discrete" else np.abs(a - b).max() <= tol


def test_tflm_arena_is_positive_and_grows_with_width(observations):
    for int8 in (False, True):
        arena = [tflm_arena_bytes(to_tflite(policy("relu", DISCRETE, observations, INT8, hidden), int8))
                 for hidden in ((32, 32), (256, 256))]
        assert 0 < arena[0] < arena[1], (int8, arena)


def conv_policy(layout: str, cfg: dict, n: int = 1000) -> tuple[bytes, np.ndarray]:
    """A conv net on MinAtar-like binary images in the env's layout (normalised), and n such images. Its three
    conv layers: TFLite's SAME padding (0 top, 1 bottom on 10 x 10, stride 2), VALID, and pads set by hand
    (an explicit PAD)."""
    shape = (10, 10, 4) if layout == "hwc" else (4, 10, 10)
    images = (np.random.default_rng(1).random((n, *shape)) > 0.7).astype(np.float32)
    torch.manual_seed(0)
    head = DISCRETE if layout == "hwc" else CONTINUOUS
    net = PolicyNet.cnn(shape, layout, [[8, 3, 2], [8, 2, 1, "valid"], [8, 3, 1, [0, 2, 1, 0]]], [16],
                        3 if head is DISCRETE else 4)
    size = int(np.prod(shape))
    norm = {"mean": np.full(size, 0.3).tolist(), "std": np.full(size, 0.5).tolist(), "clip": 5.0}
    return to_bytes(build(net, images, cfg), {**head, "obs_norm": norm}), images


@pytest.mark.parametrize("layout", ["hwc", "chw"])
def test_conv_fp32_acts_like_the_runtime_in_litert_and_tflm(layout, tmp_path):
    data, images = conv_policy(layout, {"quantize": {"bits": 6}})
    model = exports.write(data, "tflite", tmp_path / "p.tflite")[0].read_bytes()
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    ops = {names[c.builtinCode] for c in fb.ModelT.InitFromPackedBuf(model).operatorCodes}
    assert {"CONV_2D", "PAD", "TRANSPOSE", "RESHAPE"} <= ops, ops
    ref = NumpyPolicy.from_bytes(data)
    for run in (run_litert, run_tflm):
        assert_same_actions(run(model, images), ref, images, f"tflite conv {layout} {run.__name__}")


@pytest.mark.parametrize("layout", ["hwc", "chw"])
def test_conv_int8_acts_like_the_runtime_up_to_int8_rounding(layout, tmp_path):
    """Scales from the fp32 net's activations on the first 500 images (artifact.int8_activation_scales); on all
    1,000, the fp32 runtime's actions up to int8 rounding: a discrete action differs only where the two best
    logits are within two steps of every last hidden activation (that scale x the widest row's L1 norm;
    measured: within 0.35 of one step, 2 - 2.4% of this untrained net's near-tied actions), a continuous one
    within 1% of each action's range (measured 0.1%)."""
    data, images = conv_policy(layout, INT8)
    with pytest.raises(ValueError, match=r"a conv net: pass those observations"):
        to_tflite(data, int8=True)
    model = exports.write(data, "tflite-int8", tmp_path / "p.tflite", obs=images[:500])[0].read_bytes()
    assert len(model) < 0.7 * len(to_tflite(data))  # (the 400 x 2 normalisation floats stay fp32)
    header, blob = read_artifact(data)
    layers = layers_of(header, blob)
    step = int8_activation_scales(header, layers, images[:500])["p"][-1] * np.abs(layers[-1].w).sum(0).max()
    ref = NumpyPolicy.from_bytes(data)
    logits = ref.forward(images)
    want = np.array([ref.act(o) for o in images])
    got = {run.__name__: run(model, images) for run in (run_litert, run_tflm)}
    for name, actions in got.items():
        if layout == "hwc":
            top = np.sort(logits, axis=1)
            differ = actions != want
            assert (top[differ, -1] - top[differ, -2] <= 2 * step).all() and differ.mean() < 0.05, name
        else:
            span = np.subtract(CONTINUOUS["high"], CONTINUOUS["low"])
            assert (np.abs(actions - want) / span).max() <= 0.01, (name, (np.abs(actions - want) / span).max())
    assert tflm_arena_bytes(model) > 0  # (not below fp32's here: the fp32 normalised image and per-channel data)


def test_int8_scales_from_observations_are_calibrates(observations):
    """An uncalibrated MLP given observations: the same file as calibrating it first."""
    raw = to_bytes(build(PolicyNet.mlp(4, [8], 3), observations, INT8), DISCRETE)
    assert to_tflite(raw, True, observations[:500]) == to_tflite(calibrate(raw, observations[:500]), True)


def test_what_the_tflite_export_cannot_write_is_one_clear_error(observations, tmp_path):
    with pytest.raises(ValueError, match="tflite-int8 needs every layer int8-representable"):
        exports.write(policy("tanh", DISCRETE, observations), "tflite-int8", tmp_path / "p.tflite")
    uncalibrated = to_bytes(build(PolicyNet.mlp(4, [8], 3), observations, INT8), DISCRETE)
    with pytest.raises(ValueError, match=r"run autocompress\.artifact\.calibrate\(data, obs\)"):
        to_tflite(uncalibrated, int8=True)
