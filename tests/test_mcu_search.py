"""A search on an MCU target end to end (the committed CartPole PPO teacher, no fine-tuning): every
trial cross-built and emulated on a Cortex-M0+, the front holding an integer-only int8 point with fewer
cycles than the fp32 distilled student; pick constrains on flash; export writes the Makefile it was
measured with. And bad input about targets: one clear error each, before Ray starts."""

import subprocess

import pytest
import yaml
from typer.testing import CliRunner

import autocompress as ac
from autocompress._search.results import feasible
from autocompress.cli import app
from autocompress.errors import ConfigError
from autocompress.runtime import read_artifact
from conftest import ROOT
from test_mcu import require_arm_toolchain

runner = CliRunner()


def write_space(d, **changes) -> str:
    spec = yaml.safe_load((ROOT / "trials" / "cartpole_ppo.yaml").read_text())
    spec.update(finetune={"iterations": 0}, eval={"episodes": 3, "seed": 10000, "heldout_episodes": 5})
    (d / "trial.yaml").write_text(yaml.safe_dump(spec))
    space = yaml.safe_load((ROOT / "search_spaces" / "cartpole_ppo.yaml").read_text())
    space.update({"trial_spec": "trial.yaml", "target": "cortex-m0plus", "budget": {"trials": 6, "parallel": 2},
                  "techniques": {"distill": {"hidden": {"choices": [[16, 16], [32, 32]]}},
                                 "quantize": {"bits": {"low": 6, "high": 8}, "symmetric": True}}, **changes})
    (d / "space.yaml").write_text(yaml.safe_dump(space))
    return str(d / "space.yaml")


@pytest.fixture(scope="module")
def m0_run(tmp_path_factory):
    require_arm_toolchain()
    d = tmp_path_factory.mktemp("m0")
    run = ac.search(write_space(d, constraints=BUDGET), run_dir=d / "run", cache_dir=d / "cache")
    assert run.summary["complete"] >= 6 and run.summary["failed"] == 0
    return run


#: issue 24's M0+ budget; CartPole's [32, 32] student 8-bit integer-only is over it (4,204 B), [16, 16] is not
BUDGET = {"min_return_ratio": 0.9, "max_flash": 4096, "max_ram": 1024}


@pytest.mark.slow
def test_under_a_budget_the_stack_on_the_widest_student_that_fits_meets_it(m0_run):
    trials = m0_run.study.trials
    distill = next(t for t in trials if t.user_attrs.get("baseline") and list(t.user_attrs["config"]) == ["distill"])
    assert distill.user_attrs["config"]["distill"]["hidden"] == [16, 16]  # mcu.fit: the widest that fits
    assert distill.constraints["max_flash"] > 0  # fp32, over the budget: it anchors the stacks all the same
    stack = next(t for t in trials if t.user_attrs.get("stacked") and "quantize" in t.user_attrs["config"])
    assert stack.user_attrs["config"]["distill"] == {"hidden": [16, 16]}
    result = stack.user_attrs["result"]
    assert result["kernels"] == ["iq"] * 3 and result["flash"] <= BUDGET["max_flash"] and feasible(stack)


@pytest.mark.slow
def test_the_front_holds_an_integer_only_point_faster_than_the_fp32_student(m0_run):
    rows = m0_run.rows()
    assert {r["target"] for r in rows} == {"cortex-m0plus"}
    assert all(r["flash"] > 0 and r["ram"] > 0 and r["cycles"] > 0 and r["device_agreement"] == 1.0 for r in rows)
    teacher = next(r for r in rows if not r["config"])
    assert teacher["latency_ratio"] == pytest.approx(1.0)  # the same build and states: the same cycles
    fp32_students = [r for r in rows if list(r["config"]) == ["distill"]]
    assert fp32_students and all(r["kernels"] == ["dense"] * 3 for r in fp32_students)
    int8 = [r for r in m0_run.front() if r.config.get("quantize")]
    assert int8, "no int8 point on the front"
    best = min(int8, key=lambda r: r.cycles)
    assert best.cycles < min(r["cycles"] for r in fp32_students)
    assert m0_run.trial_row(best.trial)["kernels"] == ["iq"] * 3


@pytest.mark.slow
def test_pick_constrains_on_flash_and_says_when_nothing_fits(m0_run):
    smallest = min(r["flash"] for r in m0_run.rows())
    row = m0_run.pick(min_return_ratio=0.0, max_flash=smallest)
    assert row.flash == smallest
    result = runner.invoke(app, ["pick", str(m0_run.run_dir), "--max-flash", str(smallest - 1)])
    assert result.exit_code == 2
    assert f"flash <= {smallest - 1}: met by 0" in result.output


@pytest.mark.slow
def test_export_writes_the_makefile_and_prints_the_measured_figures(m0_run, tmp_path):
    best = min(m0_run.front(), key=lambda r: r.cycles)
    result = runner.invoke(app, ["export", str(m0_run.run_dir), "--trial", str(best.trial), "--format", "c",
                                 "-o", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert f"flash {best.flash:,} B" in result.output and f"{best.cycles:,.0f} cycles per act" in result.output
    built = subprocess.run(["make"], cwd=tmp_path / "c", capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    assert "-mcpu=cortex-m0plus" in (tmp_path / "c" / "Makefile").read_text()
    wrong = runner.invoke(app, ["export", str(m0_run.run_dir), "--trial", str(best.trial), "--format", "c",
                                "--target", "cortex-m4f", "-o", str(tmp_path / "c4")])
    assert wrong.exit_code == 2 and "measured on cortex-m0plus" in wrong.output
    onnx = runner.invoke(app, ["export", str(m0_run.run_dir), "--trial", str(best.trial), "--format", "onnx",
                               "-o", str(tmp_path / "p.onnx")])
    assert onnx.exit_code == 2 and "integer-only" in onnx.output


def test_an_unknown_target_is_one_error_naming_the_known_ones(tmp_path):
    result = runner.invoke(app, ["search", write_space(tmp_path), "--target", "cortex-m3",
                                 "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "cortex-m3" in result.output and "cortex-m0plus" in result.output
    assert not (tmp_path / "run").exists()


def test_flash_limits_need_an_mcu_target(tmp_path):
    with pytest.raises(ConfigError, match="max_flash.*MCU target"):
        ac.search(write_space(tmp_path, target="host", constraints={"max_flash": 4096}), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_flash_limit_reaches_the_trials_kernel_choice(tmp_path):
    from autocompress.space import load_search_space

    _, spec, _ = load_search_space(write_space(tmp_path, constraints={"min_return_ratio": 0.9, "max_flash": 4096}))
    assert spec.latency.target == "cortex-m0plus" and spec.latency.max_flash == 4096  # mcu.device.choose_kernels
    _, spec, _ = load_search_space(write_space(tmp_path))
    assert spec.latency.max_flash is None


def test_a_missing_cross_compiler_names_the_packages_before_ray(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    result = runner.invoke(app, ["search", write_space(tmp_path), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "gcc-arm-none-eabi libnewlib-arm-none-eabi" in result.output
    assert not (tmp_path / "run").exists()


def test_a_conv_net_over_the_targets_ram_is_refused_before_ray(tmp_path):
    require_arm_toolchain()
    spec = yaml.safe_load((ROOT / "trials" / "minatar_breakout_ppo.yaml").read_text())
    spec["teacher"]["conv_filters"] = [[64, 3, 1, "same"], [64, 3, 1, "same"]]  # 64 x 10 x 10 floats, twice
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(spec))
    result = runner.invoke(app, ["compress", str(tmp_path / "trial.yaml"), "--config", str(ROOT / "configs" /
                                 "int8_ptq.yaml"), "--target", "cortex-m0plus", "-o", str(tmp_path / "out"),
                                 "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 2, result.output
    assert "51,200 bytes of RAM" in result.output and "cortex-m0plus" in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_qat_on_a_device_fine_tunes_the_integer_only_net_and_ships_its_scales(tmp_path, monkeypatch):
    """A device trial's QAT fine-tunes with activations rounded as the integer-only net rounds them
    (PolicyNet.iq); the artifact keeps the scales fine-tuning used, and the device runs that net."""
    require_arm_toolchain()
    from autocompress import artifact

    used = []
    scales = artifact.activation_scales
    monkeypatch.setattr(artifact, "activation_scales", lambda *a: used.append(scales(*a)) or used[-1])
    spec = ac.load_trial_spec(ROOT / "trials" / "cartpole_ppo.yaml").updated(
        {"finetune": {"iterations": 1}, "eval": {"episodes": 3, "seed": 10000}})
    logs = []
    result = ac.compress(spec, {"distill": {"hidden": [16, 16]}, "quantize": {"bits": 8, "symmetric": True,
                                                                              "mode": "qat"}},
                         target="cortex-m0plus", output_dir=tmp_path / "out", cache_dir=tmp_path / "cache",
                         log=logs.append)
    assert any("activations rounded as the device's integer-only net" in m for m in logs)
    assert len(used) == 1 and used[0] is not None
    assert read_artifact((tmp_path / "out" / "policy.acz").read_bytes())[0]["iq"] == used[0]
    assert result.kernels in (["iq"] * 3, ["iq4"] * 3) and result.device_agreement == 1.0
