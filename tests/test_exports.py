"""Every export format acts like the .acz runtime with the same kernels: the C source compiled with
`cc -std=c99 -O3 -march=native -ffast-math -Wall -Wextra -Werror` (its Makefile's flags) and run, and both ONNX graphs run by onnxruntime, on 1,000
observations (discrete: except near-ties; continuous: within 1e-5)."""

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pytest
import torch

from typer.testing import CliRunner

import autocompress as ac
from autocompress import exports, native
from autocompress.cli import app
from autocompress.artifact import to_bytes
from autocompress.exports.c import BUILD, HOST_CFLAGS, compact_kernels
from autocompress.layers import layers_of
from autocompress.nets import PolicyNet
from autocompress.runtime import NumpyPolicy, read_artifact
from test_export import CONFIGS, build
from test_native import require_compiler

N_OBS = 1000
DISCRETE = {"kind": "discrete", "n": 3}
CONTINUOUS = {"kind": "continuous", "act_dim": 2, "low": [-2.0, 0.0], "high": [2.0, 1.0], "squash": "tanh",
              "obs_norm": {"mean": [0.5, -1.0, 2.0, 0.0], "std": [2.0, 0.5, 3.0, 1.0], "clip": 3.0}}
HEADS = {"discrete": DISCRETE, "continuous": CONTINUOUS,
         "continuous-clip": {**CONTINUOUS, "squash": "clip"}, "continuous-raw": {**CONTINUOUS, "squash": "none"}}
CASES = ["teacher", "int8", "prune90", "prune90+q4", "share3", "lowrank", "all-structural"]


@pytest.fixture(scope="module")
def observations() -> np.ndarray:
    return (np.random.default_rng(7).standard_normal((N_OBS, 4)) * 2).astype(np.float32)


def artifact(cfg: dict, head: dict, obs: np.ndarray) -> bytes:
    torch.manual_seed(3)
    net = PolicyNet.mlp(4, [64, 64], 3 if head["kind"] == "discrete" else 4, "silu")
    return to_bytes(build(net, obs, cfg), head)


def assert_same_actions(got: np.ndarray, ref: NumpyPolicy, obs: np.ndarray, what: str) -> None:
    want = np.array([ref.act(o) for o in obs])
    if ref.head["kind"] == "discrete":
        top = np.sort(ref.forward(obs), axis=1)
        clear = top[:, -1] - top[:, -2] > 1e-4  # float rounding may only flip near-ties
        assert clear.mean() > 0.95, what
        # ...and, where an int8 layer follows an fp32 one, move that layer's input across a rounding step
        # on a rare observation (one step there moved a logit by 5e-3): 1% of them at most
        ks = ref.kernels or []
        allowed = int(0.01 * clear.sum()) if any(a != "int8" and b == "int8" for a, b in zip(ks, ks[1:])) else 0
        differ = (got[clear] != want[clear]).sum()
        assert differ <= allowed, f"{what}: {differ} actions differ ({allowed} allowed)"
    else:
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=what)


def run_c(c_dir: Path, obs: np.ndarray) -> np.ndarray:
    """Build the exported policy as its Makefile does (the in-process kernels' flags: this CPU's vector
    paths), strictly (every warning an error), and act on obs."""
    cc = shutil.which("cc") or "gcc"
    subprocess.run([cc, *HOST_CFLAGS, "-Wall", "-Wextra", "-Werror", "main.c", "policy.c", "-lm", "-o", "policy"],
                   cwd=c_dir, check=True, capture_output=True, text=True)
    return act_c(c_dir, obs)


def act_c(c_dir: Path, obs: np.ndarray) -> np.ndarray:
    """The actions of a built ./policy (main.c) on obs."""
    lines = "\n".join(" ".join(repr(float(v)) for v in o) for o in obs.reshape(len(obs), -1))  # images: env order
    out = subprocess.run([str(c_dir / "policy")], input=lines, capture_output=True, text=True, check=True).stdout
    return np.array([[float(v) for v in line.split()] for line in out.splitlines()]).squeeze()


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("case", CASES)
def test_c_export_compiles_warning_free_and_acts_like_the_runtime(head, case, observations, tmp_path):
    require_compiler()
    data = artifact(CONFIGS[case], HEADS[head], observations)
    layers = layers_of(*read_artifact(data))
    for measured in (None, exports.int8_kernels(data), [layer.kernels()[-1] for layer in layers]):
        kernels = measured or compact_kernels(layers)
        exports.write(data, "c", tmp_path / "c", measured)
        got = run_c(tmp_path / "c", observations)
        assert len(got) == N_OBS
        assert_same_actions(got, NumpyPolicy.from_bytes(data, kernels), observations, f"C {kernels}")


@pytest.mark.parametrize("head", ["discrete", "continuous"])
@pytest.mark.parametrize("case", CASES)
def test_onnx_fp32_and_int8_act_like_the_runtime(head, case, observations, tmp_path):
    data = artifact(CONFIGS[case], HEADS[head], observations)
    int8 = exports.int8_kernels(data)
    for fmt, recorded, acts_as in (("onnx", None, None), ("onnx", int8, int8), ("onnx-int8", None, int8)):
        path = exports.write(data, fmt, tmp_path / "p.onnx", recorded)[0]
        got = ort.InferenceSession(str(path)).run(None, {"obs": observations})[0]
        assert_same_actions(got, NumpyPolicy.from_bytes(data, acts_as), observations, f"{fmt} {acts_as}")


def test_stored_forms_are_compressed(observations, tmp_path):
    """C keeps k-bit codes as codes (its flash shrinks with them); int8 ONNX stores int8 weights."""
    require_compiler()
    dense, q4 = artifact({}, DISCRETE, observations), artifact({"quantize": {"bits": 4}}, DISCRETE, observations)
    assert compact_kernels(layers_of(*read_artifact(q4))) == ["q8"] * 3
    size = {}
    for name, data in (("dense", dense), ("q4", q4)):
        exports.write(data, "c", tmp_path / name, ["dense"] * 3 if name == "dense" else ["packed"] * 3)
        size[name] = exports.flash_size(tmp_path / name)
        size[name + "-onnx"] = exports.write(data, "onnx-int8", tmp_path / f"{name}.onnx")[0].stat().st_size
    # flash shrinks by what the weights' stored forms save (19 kB of floats vs 2.4 kB of 4-bit codes)
    saved = sum(layer.stored_bytes("dense") - layer.stored_bytes("packed") for layer in layers_of(*read_artifact(q4)))
    assert saved > 15_000
    # (each export compiles only its own kernel: dense's unrolled blocks are ~1.4 kB more code than packed's)
    assert abs(size["dense"]["text"] - size["q4"]["text"] - saved) < 0.05 * saved + 2048, (size, saved)
    assert size["q4"]["text"] > len(q4) // 2 and size["q4"]["bss"] >= 64 * 4  # weights in flash, scratch in RAM
    assert size["q4-onnx"] * 2 < size["dense-onnx"]  # int8 weights: 1 byte each (graph overhead aside)


def test_the_c_export_compiles_only_the_kernels_its_layers_run(observations, tmp_path):
    """policy.c defines ACZ_USE_<kernel> for its layers' kernels only, so no other kernel's code takes flash."""
    require_compiler()
    if not shutil.which("nm"):
        pytest.skip("no nm")
    q4 = artifact({"quantize": {"bits": 4}}, DISCRETE, observations)
    kernel_names = ("acz_dense", "acz_csr", "acz_int8", "acz_q8", "acz_packed", "acz_conv_direct", "acz_conv_im2col",
                    "acz_conv_int8")
    for kernels in (["dense"] * 3, ["q8", "packed", "dense"], ["int8", "int8", "q8"]):
        out = tmp_path / "-".join(kernels)
        exports.write(q4, "c", out, kernels)
        subprocess.run(["cc", "-std=c99", "-O2", "-c", str(out / "policy.c"), "-o", str(out / "policy.o")], check=True)
        symbols = subprocess.run(["nm", "--defined-only", str(out / "policy.o")], capture_output=True, text=True,
                                 check=True).stdout.split()
        kernel_fns = {s for s in symbols if s in kernel_names}
        assert kernel_fns == {f"acz_{k}" for k in kernels}, (kernels, kernel_fns)
        assert "policy_act" in symbols
    # the in-process runtime still compiles every kernel: it chooses among them at load
    lib = native._library()
    assert all(getattr(lib, name, None) is not None for name in kernel_names)


# -- through a search's run dir (the tiny session search in conftest) ---------------------------

@pytest.mark.slow
def test_export_every_format_from_a_run(search_run, tmp_path, observations):
    require_compiler()
    run = ac.Run.load(search_run)
    row = next(r for r in run.rows() if r["config"])  # a quantized trial (trial 0 is the teacher as-is)
    assert row["kernels"] and row["runtime"] == "c" and row["cpu"]
    data = Path(row["artifact"]).read_bytes()
    ref = NumpyPolicy.from_bytes(data, row["kernels"])
    obs = observations[:200]
    assert_same_actions(run_c(run.export(row["trial"], tmp_path / "c", "c"), obs), ref, obs, "C")
    for fmt in ("onnx", "onnx-int8"):
        path = run.export(row["trial"], tmp_path / f"p-{fmt}.onnx", fmt)
        got = ort.InferenceSession(str(path)).run(None, {"obs": obs})[0]
        kernels = exports.int8_kernels(data) if fmt == "onnx-int8" else row["kernels"]
        assert_same_actions(got, NumpyPolicy.from_bytes(data, kernels), obs, fmt)
    assert run.export(row["trial"], tmp_path / "p.acz").read_bytes() == data
    if importlib.util.find_spec("ai_edge_litert"):  # the [tflite] extra
        from autocompress.exports.tflite import run_litert

        got = run_litert(run.export(row["trial"], tmp_path / "p.tflite", "tflite").read_bytes(), obs)
        assert_same_actions(got, NumpyPolicy.from_bytes(data), obs, "tflite")
    # the CLI: --smallest packs the k-bit codes as the artifact does, and says the flash it takes
    res = CliRunner().invoke(app, ["export", str(search_run), "--trial", str(row["trial"]), "--format", "c",
                                   "--smallest", "-o", str(tmp_path / "small")])
    assert res.exit_code == 0, res.output
    first_line = (tmp_path / "small" / "policy.c").read_text().splitlines()[0]  # lists each layer's kernel
    n_int8 = row["kernels"].count("int8")  # int8 layers stay int8 (as fast and as small as packed 8-bit)
    assert "bytes of flash" in res.output and first_line.count(" packed") == 3 - n_int8, first_line
    assert_same_actions(run_c(tmp_path / "small", obs), ref, obs, "C --smallest")
    # the build it prints runs as printed (one line however long the path), and equals the Makefile's
    out_dir = tmp_path / ("a-directory-name-long-enough-that-a-wrapped-line-would-split-the-command" * 2)
    res = CliRunner().invoke(app, ["export", str(search_run), "--trial", str(row["trial"]), "--format", "c",
                                   "-o", str(out_dir)])
    assert res.exit_code == 0, res.output
    line = next(line for line in res.output.splitlines() if "&& make" in line)
    make, build = line.split("# = ")
    assert build.strip() == BUILD and f"CFLAGS = {' '.join(HOST_CFLAGS)}" in (out_dir / "Makefile").read_text()
    # ...and the portable build docs/guides/ship-it.md gives for another CPU (SSE2 int8 sums on any x86-64) acts alike
    for cmd in (make, f"cd {out_dir} && {build}", f'{make.strip()} -B CFLAGS="-std=c99 -O2"'):
        subprocess.run(f"rm -f {out_dir}/policy && {cmd}", shell=True, check=True, capture_output=True)
        assert_same_actions(act_c(out_dir, obs), ref, obs, cmd)


@pytest.mark.slow
def test_export_bad_input_is_one_clear_error(search_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(search_run, run_dir)
    run = ac.Run.load(run_dir)
    run.study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL,
                                                  user_attrs={"fail_reason": "Traceback ...\nValueError: diverged"}))
    failed = len(run.study.trials) - 1
    with pytest.raises(ac.ConfigError, match=rf"trial {failed} is FAIL, not COMPLETE: ValueError: diverged"):
        run.export(failed, tmp_path / "x.acz")
    with pytest.raises(ac.ConfigError, match=r"no trial 99 in .* \(trials 0\.\.3\)") as e:
        run.export(99, tmp_path / "x.acz")
    assert e.value.option == "trial"
    with pytest.raises(ac.ConfigError, match="format 'tfjs': choose one of acz, c, onnx, onnx-int8, tflite, "
                                             "tflite-int8"):
        ac.export(run_dir, 0, tmp_path / "x", format="tfjs")
    (tmp_path / "file").write_text("")
    for fmt, out in (("acz", tmp_path / "file" / "x.acz"), ("c", tmp_path / "file"), ("onnx", tmp_path),
                     ("tflite", tmp_path / "file" / "x.tflite")):
        with pytest.raises(ac.ConfigError) as e:
            ac.export(run_dir, 0, out, format=fmt)
        assert e.value.option == "output", (fmt, e.value)
    # a full-integer TFLite file needs int8 layers and the integer-only calibration (an MCU search's): one error
    with pytest.raises(ac.ConfigError, match="trial 0: tflite-int8 needs every layer int8-representable") as e:
        ac.export(run_dir, 0, tmp_path / "x.tflite", format="tflite-int8")
    assert e.value.option == "format"


@pytest.mark.slow
def test_tflite_int8_of_an_uncalibrated_trial_calibrates_on_the_teachers_states(search_run, tmp_path):
    """A host search's int8 trial has no `iq` scales: Run.export takes them from the states the teacher visits in
    the trial's spec (spec.sample_steps from spec.seed), i.e. the file of the artifact calibrated on those."""
    pytest.importorskip("ai_edge_litert")
    from autocompress.artifact import calibrate
    from autocompress.exports.tflite import run_litert, to_tflite
    from autocompress.teacher import load_teacher

    run_dir = tmp_path / "run"
    shutil.copytree(search_run, run_dir)
    run = ac.Run.load(run_dir)
    t = run.study.trials[0]  # the teacher as-is, re-added as a trial of its int8 (8-bit symmetric) artifact
    teacher = load_teacher(Path(t.user_attrs["result"]["teacher_path"]))
    obs = run.teacher_obs(300)
    data = to_bytes(build(teacher.actor, obs, {"quantize": {"bits": 8, "symmetric": True}}), teacher.info["head"])
    assert "iq" not in read_artifact(data)[0]
    (tmp_path / "int8.acz").write_bytes(data)
    result = {**t.user_attrs["result"], "artifact": str(tmp_path / "int8.acz"), "kernels": None}
    run.study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, values=t.values,
                                                  params=t.params, distributions=t.distributions,
                                                  user_attrs={**t.user_attrs, "result": result}))
    trial = len(run.study.trials) - 1
    path = ac.export(run_dir, trial, tmp_path / "p.tflite", format="tflite-int8")
    spec = run.trial_spec()
    visited = run.teacher_obs()
    assert len(visited) == spec.sample_steps and np.array_equal(visited[:300], obs)
    assert path.read_bytes() == to_tflite(calibrate(data, visited), int8=True)
    # actions: the fp32 runtime's but where the two best logits are within two int8 steps of every last hidden
    # activation (TFLite's tanh step 1/128 x the widest row's L1 norm; 97% agree with the integer-only mirror)
    differ = run_litert(path.read_bytes(), obs) != NumpyPolicy.from_bytes(data).forward(obs).argmax(1)
    top = np.sort(NumpyPolicy.from_bytes(data).forward(obs), axis=1)
    step = np.abs(layers_of(*read_artifact(data))[-1].w).sum(0).max() / 128
    assert (top[differ, -1] - top[differ, -2] <= 2 * step).all(), (top[differ, -1] - top[differ, -2]) / step


def test_each_format_is_timed_in_its_own_runtime_beside_the_acz(observations, tmp_path):
    """exports.measure: one act adapter per format (its actions those the format's tests check) and the report
    `export` prints: bytes, batch-1 latency in that runtime and the .acz C runtime's on the same observations."""
    from autocompress.exports import measure as em

    from autocompress.artifact import calibrate

    data = calibrate(artifact({"quantize": {"bits": 8, "symmetric": True}}, DISCRETE, observations), observations)
    obs = observations[:50]
    fmts = ["acz", "onnx", "onnx-int8"] + [f for f, extra in (("tflite", "ai_edge_litert"), ("tflite-int8", "ai_edge_litert"),
                                                            ("pte", "executorch"), ("pte-int8", "executorch"))
                                           if importlib.util.find_spec(extra)]
    for fmt in fmts:
        path = exports.write(data, fmt, tmp_path / f"p.{fmt}")[0]
        r = em.report(fmt, path, data, obs, calls=100)
        assert r["bytes"] == path.stat().st_size and r["acz_bytes"] == len(data), r
        assert 0 < r["latency_ms"] < 50 and 0 < r["acz_latency_ms"] < 50, r
        assert ("arena_bytes" in r) == fmt.startswith("tflite") and r["runtime"] in em.words(r)
        # (int8 formats round otherwise than the kernels the C runtime chose: their own tests bound how often)
        assert em.agreement(fmt, path, data, observations[:200])["agree"] >= (0.9 if "int8" in fmt else 0.98), fmt
    with pytest.raises(ValueError, match="format 'c': no runtime here to act it in"):
        em.actor("c", tmp_path)


@pytest.mark.slow
def test_export_prints_bytes_latency_and_arena(search_run, tmp_path):
    pytest.importorskip("ai_edge_litert")
    row = next(r for r in ac.Run.load(search_run).rows() if r["config"])
    for fmt, says in (("tflite", r"in LiteRT vs \.acz [\d.]+ µs in its c runtime .*; TFLite Micro arena [\d,]+ bytes"),
                      ("onnx", r"in onnxruntime vs \.acz [\d.]+ µs in its c runtime"), ("acz", r"in c runtime \(median")):
        res = CliRunner().invoke(app, ["export", str(search_run), "--trial", str(row["trial"]), "--format", fmt,
                                       "-o", str(tmp_path / f"p.{fmt}")])
        assert res.exit_code == 0, res.output
        assert re.search(r"\([\d,]+ bytes\) from trial \d+\n  batch-1 latency [\d.]+ µs " + says, res.output), res.output
        assert "over 200 teacher-visited states" in res.output, res.output
    res = CliRunner().invoke(app, ["export", str(search_run), "--trial", str(row["trial"]), "--format", "c",
                                   "-o", str(tmp_path / "c")])  # a host trial: its sections here and the build line
    assert res.exit_code == 0, res.output
    assert re.search(r"from trial \d+: [\d,]+ bytes of flash \(code \+ weights\), [\d,]+ of RAM; build it", res.output)
    assert f"cd {tmp_path / 'c'} && make    # = cc -std=c99" in res.output, res.output
