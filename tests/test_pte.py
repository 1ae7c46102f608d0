"""The ExecuTorch export (autocompress/exports/pte.py) in ExecuTorch's own Python runtime, on 1,000 observations:
the numpy runtime's actions (discrete: all but near-ties; continuous: within 1e-5), for MLPs (tanh, relu; the
teacher and compressed nets) and conv nets in both image layouts."""

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
