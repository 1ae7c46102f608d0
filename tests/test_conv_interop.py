"""Conv policies in and out: the ONNX export (fp32 and int8) and the MLflow pyfunc model act like the numpy
runtime on MinAtar-like images; RLlib CNN checkpoints and SB3 CnnPolicy zips import as conv PolicyNets
that act like the source framework."""

import sys

import mlflow
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from autocompress import exports, tracking
from autocompress.artifact import to_bytes
from autocompress.nets import PolicyNet
from autocompress.runtime import NumpyPolicy
from test_export import build
from test_exports import assert_same_actions

DISCRETE = {"kind": "discrete", "n": 3}
TANH = {"kind": "continuous", "act_dim": 2, "low": [-2.0, 0.0], "high": [2.0, 1.0], "squash": "tanh"}
FILTERS = [[16, [3, 3], 1, "same"], [8, 3, 2]]  # 'same' then stride 2 with an odd pad at the bottom / right


def images(n: int, shape=(10, 10, 4), seed: int = 0) -> np.ndarray:
    """MinAtar-like binary images."""
    return (np.random.default_rng(seed).random((n, *shape)) > 0.8).astype(np.float32)


def conv_artifact(layout: str, cfg: dict, head: dict) -> tuple[bytes, np.ndarray]:
    shape = (10, 10, 4) if layout == "hwc" else (4, 10, 10)
    obs = images(1000, shape)
    torch.manual_seed(0)
    net = PolicyNet.cnn(shape, layout, FILTERS, [32], 3 if head["kind"] == "discrete" else 4)
    return to_bytes(build(net, obs[:200], cfg), head), obs


@pytest.mark.parametrize("layout, head", [("hwc", "discrete"), ("chw", "discrete"), ("hwc", "continuous")])
@pytest.mark.parametrize("case", ["teacher", "q4", "prune80+q6"])
def test_onnx_conv_fp32_and_int8_act_like_the_runtime(layout, case, head, tmp_path):
    cfg = {"teacher": {}, "q4": {"quantize": {"bits": 4}},
           "prune80+q6": {"prune": {"sparsity": 0.8}, "quantize": {"bits": 6}}}[case]
    data, obs = conv_artifact(layout, cfg, DISCRETE if head == "discrete" else TANH)
    int8 = exports.int8_kernels(data)
    assert (int8[:2] == ["int8", "int8"]) == (case != "teacher")  # the conv layers really run int8
    for fmt, acts_as in (("onnx", None), ("onnx-int8", int8)):
        path = exports.write(data, fmt, tmp_path / "p.onnx")[0]
        model = onnx.load(str(path))
        assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:] == list(obs.shape[1:])
        ops = [n.op_type for n in model.graph.node]
        int8_convs = 2 if acts_as is not None and case != "teacher" else 0
        assert ops.count("ConvInteger") == int8_convs and ops.count("Conv") == 2 - int8_convs
        assert ("Transpose" in ops) == (layout == "hwc")
        got = ort.InferenceSession(str(path)).run(None, {"obs": obs})[0]
        assert_same_actions(got, NumpyPolicy.from_bytes(data, acts_as), obs, f"{layout} {case} {fmt}")


def test_onnx_int8_conv_filters_are_stored_as_int8(tmp_path):
    data, _ = conv_artifact("hwc", {"quantize": {"bits": 4}}, DISCRETE)
    model = onnx.load(str(exports.write(data, "onnx-int8", tmp_path / "p.onnx")[0]))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "ConvInteger"]
    assert [inits[n.input[1]].shape for n in convs] == [(16, 4, 3, 3), (8, 16, 3, 3)]
    assert all(inits[n.input[1]].dtype == np.int8 for n in convs)
    assert [inits[f"L{i}_qscale"].shape for i in (0, 1)] == [(1, 16, 1, 1), (1, 8, 1, 1)]  # per output channel
    assert not any(v.shape in ((16, 4, 3, 3), (8, 16, 3, 3)) for v in inits.values() if v.dtype != np.int8)
    fp32 = exports.write(data, "onnx", tmp_path / "f.onnx")[0]
    assert (tmp_path / "p.onnx").stat().st_size * 2 < fp32.stat().st_size


@pytest.mark.parametrize("layout", ["hwc", "chw"])
def test_pyfunc_model_of_a_conv_net_takes_images(layout, tmp_path):
    data, obs = conv_artifact(layout, {"quantize": {"bits": 4}}, DISCRETE)
    acz = tmp_path / "policy.acz"
    acz.write_bytes(data)
    path = tracking.save_policy_model(tmp_path / "model", acz, {"runtime": "numpy"})
    model = mlflow.pyfunc.load_model(str(path))
    inputs = model.metadata.get_input_schema().inputs[0]
    assert inputs.type == np.dtype(np.float32) and inputs.shape == (-1, *obs.shape[1:])
    actions = model.predict(obs[:64])
    ref = NumpyPolicy.from_bytes(data)
    assert actions.dtype == np.int64 and (actions == [ref.act(o) for o in obs[:64]]).all()
    with pytest.raises(Exception, match="shape"):  # flat rows do not fit the signature
        model.predict(obs[:4].reshape(4, -1))
