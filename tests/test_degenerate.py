"""Degenerate measurements never crash a search: a teacher no better than random (equal, worse, within
noise) is one clear error before any work, at validate and search, leaving no run dir; inside a search no
non-finite value is told to Optuna; a plot that cannot be drawn is skipped."""

import math

import gymnasium as gym
import numpy as np
import optuna
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import autocompress as ac
from autocompress import measure
from autocompress.cli import app
from autocompress.config import TrialSpec
from autocompress.results import TrialResult
from autocompress.space import SearchSpace
from autocompress._search.results import finalize, told_values


class Coin(gym.Env):
    """One-step episodes: reward = noise (drawn from the reset seed) + bonus if the action is 1. A policy that
    always plays 1 leads a uniform-random one by bonus / 2 on average, on the very same noise."""

    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, config: dict | None = None):
        self.bonus, self.scale = (config or {}).get("bonus", 0.0), (config or {}).get("scale", 1.0)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.noise = float(self.np_random.normal()) * self.scale
        return np.array([0.5], np.float32), {}

    def step(self, action):
        return np.array([0.5], np.float32), self.noise + self.bonus * int(action), True, False, {}


def spec(bonus: float, scale: float = 1.0, episodes: int = 20, **eval_) -> TrialSpec:
    return TrialSpec.model_validate({"name": "coin", "env": "test_degenerate:Coin", "algorithm": "DQN",
                                     "env_config": {"bonus": bonus, "scale": scale},
                                     "eval": {"episodes": episodes, "seed": 50_000, **eval_}})


def always_one(obs):
    return 1


def make(s: TrialSpec):
    return lambda: Coin(s.env_config)


@pytest.mark.parametrize("bonus, scale, says", [
    (0.0, 1.0, "no better than a uniform-random policy's"),   # the very same returns
    (-1.0, 1.0, "worse than a uniform-random policy's"),
    (0.05, 1.0, "within noise of a uniform-random policy's"),  # leads by ~0.025, the standard error is ~0.3
    (1.0, math.inf, "the env gave non-finite returns"),
])
def test_a_teacher_that_does_not_clearly_beat_random_is_one_clear_error(bonus, scale, says):
    s = spec(bonus, scale)
    with pytest.raises(ac.TeacherError, match=says) as e:
        measure.check_teacher_margin(s, always_one, make(s))
    msg = str(e.value)
    assert "teacher " in msg and "baseline " in msg and "eval.reference_return" in msg and "Traceback" not in msg


def test_a_clear_margin_passes_and_a_reference_return_replaces_random():
    s = spec(1.0, 0.1)
    m = measure.check_teacher_margin(s, always_one, make(s))
    assert m["ok"] and m["margin"] > 0.4 and m["baseline"] == "a uniform-random policy"
    # the user knows a useless policy scores -1 here: the teacher (noise around 0) clearly beats that
    s = spec(0.0, 0.1, reference_return=-1.0)
    m = measure.check_teacher_margin(s, always_one, make(s))
    assert m["ok"] and m["baseline"] == "eval.reference_return" and m["baseline_std"] == 0
    assert measure.return_ratio(-0.5, 0.0, s, make(s)) == pytest.approx(0.5)  # (r - ref) / (teacher - ref)


def _torch_teacher(tmp_path, bonus: float, action: int = 1):
    """An imported torch MLP whose action never changes (always `action`), on Coin."""
    torch.save({"fc.weight": torch.zeros(2, 1), "fc.bias": torch.tensor([1.0 - action, float(action)])},
               tmp_path / "pi.pt")
    (tmp_path / "pi.yaml").write_text(yaml.safe_dump({"algorithm": "DQN", "layers": ["fc"], "activation": "tanh",
                                                       "head": "discrete"}))
    trial = {"name": "coin", "env": "test_degenerate:Coin", "algorithm": "DQN", "env_config": {"bonus": bonus},
             "teacher": {"from": str(tmp_path / "pi.pt")}, "eval": {"episodes": 20, "seed": 50_000},
             "training": {"num_steps_sampled_before_learning_starts": 100}}
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(trial))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump({
        "name": "coin", "trial_spec": "trial.yaml", "budget": {"trials": 2, "parallel": 1},
        "techniques": {"quantize": {"bits": {"low": 4, "high": 8}}}}))


@pytest.mark.parametrize("bonus, action, says", [(0.0, 1, "no better than"), (1.0, 0, "worse than"),
                                                 (0.05, 1, "within noise of")])
def test_validate_and_search_refuse_such_a_teacher_before_any_work(tmp_path, bonus, action, says):
    _torch_teacher(tmp_path, bonus, action)
    runner = CliRunner()
    for args in (["validate", str(tmp_path / "trial.yaml")], ["validate", str(tmp_path / "space.yaml")],
                 ["search", str(tmp_path / "space.yaml"), "--run-dir", str(tmp_path / "run")]):
        r = runner.invoke(app, args)
        assert r.exit_code == 3, (args, r.output)
        assert f"{says} a uniform-random policy's" in " ".join(r.output.split()) and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()
    # the file alone is still checkable
    assert runner.invoke(app, ["validate", str(tmp_path / "trial.yaml"), "--episodes", "0"]).exit_code == 0


SPACE = SearchSpace.model_validate({"name": "x", "trial_spec": "t.yaml", "objectives": ["return", "latency", "bytes"],
                                    "constraints": {"min_return_ratio": 0.9, "max_bytes": 1000},
                                    "techniques": {"quantize": {"bits": 8}}})
anything = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1.0, -1.0]))


@settings(max_examples=300, deadline=None)
@given(ret=anything, teacher=anything, rand=anything, latency=anything, nbytes=anything)
def test_nothing_non_finite_is_ever_told(ret, teacher, rand, latency, nbytes):
    """Any returns through the ratio, the constraints and tell: either every told value is finite, or the
    trial is FAIL with the reason; nothing else comes out."""
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    result = {"return_mean": ret, "return_ratio": measure.ratio_to(ret, teacher, rand) if teacher == teacher else
              float("nan"), "latency_ms": latency, "latency_ratio": latency, "bytes": nbytes, "bytes_ratio": nbytes}
    trial = study.ask()
    try:
        values, constraints = told_values(SPACE, TrialResult.from_dict(result))
    except FloatingPointError as e:
        assert str(e).startswith("non-finite ")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    assert all(math.isfinite(v) for v in [*values, *constraints.values()])
    for k, v in constraints.items():
        trial.set_constraint(k, v)
    study.tell(trial, values)


def test_a_plot_that_cannot_be_drawn_is_skipped_with_a_warning(tmp_path, monkeypatch):
    from autocompress import plots

    def broken(*args):
        raise ValueError("Data cannot be log-scaled because all values are <= 0")

    monkeypatch.setattr(plots, "pareto_png", broken)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    trial = study.ask()
    trial.set_user_attr("result", {"return_mean": 1.0, "return_ratio": 1.0, "latency_ms": 1.0, "latency_ratio": 1.0,
                                   "bytes": 10, "bytes_ratio": 1.0})
    study.tell(trial, [1.0, 1.0, 10])
    warnings: list[str] = []
    summary = finalize(study, ["return", "latency", "bytes"], None, tmp_path, [(1, 0.5)], warnings.append)
    assert summary["complete"] == 1 and (tmp_path / "pareto" / "pareto.csv").exists()
    assert (tmp_path / "pareto" / "pareto.html").exists() and not (tmp_path / "pareto" / "pareto.png").exists()
    assert len(warnings) == 1 and "pareto.png not drawn" in warnings[0] and "log-scaled" in warnings[0]
