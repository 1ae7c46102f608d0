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
from autocompress.artifact import calibrate, to_bytes  # noqa: E402
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


def test_what_the_tflite_export_cannot_write_is_one_clear_error(observations, tmp_path):
    torch.manual_seed(0)
    images = (np.random.default_rng(0).random((50, 10, 10, 4)) > 0.8).astype(np.float32)
    conv = to_bytes(build(PolicyNet.cnn((10, 10, 4), "hwc", [[8, 3, 2]], [16], 3), images, {}), DISCRETE)
    with pytest.raises(ValueError, match="conv policies: not yet in the tflite export"):
        to_tflite(conv)
    with pytest.raises(ValueError, match="tflite-int8 needs every layer int8-representable"):
        exports.write(policy("tanh", DISCRETE, observations), "tflite-int8", tmp_path / "p.tflite")
    uncalibrated = to_bytes(build(PolicyNet.mlp(4, [8], 3), observations, INT8), DISCRETE)
    with pytest.raises(ValueError, match=r"run autocompress\.artifact\.calibrate\(data, obs\)"):
        to_tflite(uncalibrated, int8=True)
