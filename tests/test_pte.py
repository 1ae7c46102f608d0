"""The ExecuTorch export (autocompress/exports/pte.py) in ExecuTorch's own Python runtime, on 1,000 observations:
the numpy runtime's actions (discrete: all but near-ties; continuous: within 1e-5), for MLPs (tanh, relu; the
teacher and compressed nets) and conv nets in both image layouts.

int8 ('pte-int8', XNNPACK's dynamic int8): the runtime's with its int8 kernels (exports.int8_kernels) up to the
layers' input rounding (XNNPACK: asymmetric, (max - min) / 255; kernels.c: symmetric, max|x| / 127), i.e. the
ONNX int8 rule for discrete actions (at most 1% of the clear ones differ; measured 0.2 - 0.7%) and, continuous,
within 1% of each dimension's action range (measured: at most 0.41%)."""

import json
import shutil
import struct

import numpy as np
import optuna
import pytest
import torch

pytest.importorskip("executorch")

import autocompress as ac  # noqa: E402
from autocompress import exports  # noqa: E402
from autocompress.layers import layers_of  # noqa: E402
from autocompress.artifact import to_bytes  # noqa: E402
from autocompress.exports.pte import run_pte, to_pte  # noqa: E402
from autocompress.nets import PolicyNet  # noqa: E402
from autocompress.runtime import NumpyPolicy, read_artifact  # noqa: E402
from test_export import CONFIGS, build  # noqa: E402
from test_exports import CONTINUOUS, DISCRETE, HEADS, assert_same_actions  # noqa: E402


@pytest.fixture(scope="module")
def observations() -> np.ndarray:
    return (np.random.default_rng(13).standard_normal((1000, 4)) * 2).astype(np.float32)


def mlp(act: str, head: dict, obs: np.ndarray, cfg=None, hidden=(64, 64)) -> bytes:
    torch.manual_seed(5)
    net = PolicyNet.mlp(4, list(hidden), 3 if head["kind"] == "discrete" else 4, act)
    return to_bytes(build(net, obs, cfg or {}), head)


def check(data: bytes, obs: np.ndarray, tmp_path, what: str) -> bytes:
    """Write the .pte through exports.write, run it in ExecuTorch's runtime, compare with the numpy runtime's."""
    model = exports.write(data, "pte", tmp_path / "p.pte")[0].read_bytes()
    assert b"XnnpackBackend" in model, what  # the layers are delegated to XNNPACK
    assert_same_actions(run_pte(model, obs), NumpyPolicy.from_bytes(data), obs, what)
    return model


@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("head", [DISCRETE, CONTINUOUS], ids=["discrete", "continuous"])
def test_fp32_acts_like_the_runtime_in_executorch(observations, act, head, tmp_path):
    check(mlp(act, head, observations), observations, tmp_path, f"pte {act}")


@pytest.mark.parametrize("case", ["prune90+q4", "int8", "lowrank"])
@pytest.mark.parametrize("head", ["discrete", "continuous-clip", "continuous-raw"])
def test_compressed_nets_act_like_the_runtime(observations, case, head, tmp_path):
    data = mlp("silu", HEADS[head], observations, CONFIGS[case])
    model = check(data, observations, tmp_path, f"pte {case} {head}")
    if case == "prune90+q4":  # the decoded fp32 weights: a pruned 4-bit net is no smaller as a .pte
        assert len(model) > 4 * 64 * 64


@pytest.mark.parametrize("layout", ["hwc", "chw"])
def test_conv_nets_act_like_the_runtime_in_the_envs_image_layout(layout, tmp_path):
    shape = (10, 10, 4) if layout == "hwc" else (4, 10, 10)
    images = (np.random.default_rng(1).random((1000, *shape)) > 0.7).astype(np.float32)
    torch.manual_seed(0)
    head = DISCRETE if layout == "hwc" else CONTINUOUS
    # [8, 3, 2] on 10 x 10: 'same' padding of 0 top, 1 bottom (an explicit pad); [8, 3, 1]: 1 each side
    net = PolicyNet.cnn(shape, layout, [[8, 3, 2], [8, 3, 1]], [16], 3 if head is DISCRETE else 4)
    norm = {"mean": np.full(int(np.prod(shape)), 0.3).tolist(), "std": np.full(int(np.prod(shape)), 0.5).tolist(),
            "clip": 5.0}
    data = to_bytes(build(net, images, {"quantize": {"bits": 6}}), {**head, "obs_norm": norm})
    check(data, images, tmp_path, f"pte conv {layout}")


INT8 = {"quantize": {"bits": 8, "symmetric": True}}
#: int8 actions differing from the runtime's int8 kernels', at most (discrete: share of the clear ones;
#: continuous: share of the action range), see the module's docstring
INT8_TOL = 0.01


def check_int8(data: bytes, obs: np.ndarray, tmp_path, what: str) -> bytes:
    model = exports.write(data, "pte-int8", tmp_path / "p8.pte")[0].read_bytes()
    assert len(model) < 0.7 * len(to_pte(data)), what  # the weights a byte each
    got = run_pte(model, obs)
    ref = NumpyPolicy.from_bytes(data, exports.int8_kernels(data))
    assert set(ref.kernels) == {"int8"}, what
    want = np.array([ref.act(o) for o in obs])
    if ref.head["kind"] == "discrete":
        top = np.sort(ref.forward(obs), axis=1)
        clear = top[:, -1] - top[:, -2] > 1e-4
        assert (got[clear] != want[clear]).mean() <= INT8_TOL, (what, (got[clear] != want[clear]).mean())
    else:
        span = np.subtract(ref.head["high"], ref.head["low"])
        assert (np.abs(got - want) / span).max() <= INT8_TOL, (what, (np.abs(got - want) / span).max(0))
    return model


@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("head", [DISCRETE, CONTINUOUS], ids=["discrete", "continuous"])
@pytest.mark.parametrize("case", ["int8", "prune90+q4"])
def test_int8_acts_like_the_runtimes_int8_kernels(observations, act, head, case, tmp_path):
    cfg = INT8 if case == "int8" else {"prune": {"sparsity": 0.9}, "quantize": {"bits": 4, "symmetric": True}}
    check_int8(mlp(act, head, observations, cfg), observations, tmp_path, f"pte-int8 {case} {act}")


def test_int8_conv_net(tmp_path):
    shape = (10, 10, 4)
    images = (np.random.default_rng(1).random((1000, *shape)) > 0.7).astype(np.float32)
    torch.manual_seed(0)
    net = PolicyNet.cnn(shape, "hwc", [[8, 3, 2], [8, 3, 1]], [16], 3)
    check_int8(to_bytes(build(net, images, INT8), DISCRETE), images, tmp_path, "pte-int8 conv")


def with_header(data: bytes, **changes) -> bytes:
    """The artifact with its header's entries replaced (layer 0's activation: key act)."""
    header, blob = read_artifact(data)
    if "act" in changes:
        header["layers"][0]["act"] = changes.pop("act")
    header.update(changes)
    raw = json.dumps(header).encode()
    return data[:4] + struct.pack("<I", len(raw)) + raw + bytes(blob)


def test_what_the_pte_export_cannot_write_is_one_clear_error(observations, tmp_path):
    data = mlp("tanh", DISCRETE, observations, hidden=(8,))
    with pytest.raises(ValueError, match=r"activation 'gelu': not in the pte export \(tanh, relu, silu"):
        to_pte(with_header(data, act="gelu"))
    fp32 = mlp("tanh", DISCRETE, observations, {"prune": {"sparsity": 0.5}}, hidden=(8,))
    assert all(layer.int8() is None for layer in layers_of(*read_artifact(fp32)))
    with pytest.raises(ValueError, match=r"pte-int8 needs every layer int8-representable .* export 'pte' \(fp32\)"):
        exports.write(fp32, "pte-int8", tmp_path / "p.pte")
    with pytest.raises(ValueError, match="not an autocompress artifact"):
        exports.write(b"not an artifact", "pte", tmp_path / "p.pte")


@pytest.mark.slow
def test_pte_export_from_a_run_and_its_errors(search_run, tmp_path, observations):
    run_dir = tmp_path / "run"
    shutil.copytree(search_run, run_dir)
    run = ac.Run.load(run_dir)
    row = next(r for r in run.rows() if r["config"])
    path = ac.export(run_dir, row["trial"], tmp_path / "p.pte", format="pte")
    obs = observations[:200]
    data = open(row["artifact"], "rb").read()
    assert_same_actions(run_pte(path.read_bytes(), obs), NumpyPolicy.from_bytes(data), obs, "pte from a run")
    run.study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL,
                                                  user_attrs={"fail_reason": "Traceback ...\nValueError: diverged"}))
    failed = len(run.study.trials) - 1
    with pytest.raises(ac.ConfigError, match=rf"trial {failed} is FAIL, not COMPLETE: ValueError: diverged"):
        ac.export(run_dir, failed, tmp_path / "x.pte", format="pte")
    with pytest.raises(ac.ConfigError, match=r"no trial 99 in .* \(trials 0\.\.3\)"):
        ac.export(run_dir, 99, tmp_path / "x.pte", format="pte")
    (tmp_path / "file").write_text("")
    with pytest.raises(ac.ConfigError) as e:
        ac.export(run_dir, row["trial"], tmp_path / "file" / "x.pte", format="pte")
    assert e.value.option == "output"
