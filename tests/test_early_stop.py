"""Multi-fidelity early stopping (autocompress.pruners + the driver) and repeats that do not
consume the budget (study.duplicate_of / finished, keyed by spec, teacher and runtime)."""

from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from autocompress._search.study import duplicate_of, finished, reuse_key, taken
from autocompress.config import load_trial_spec
from autocompress.pruners import GatePruner, NopPruner, Reporter, TrialStopped, make_pruner

ROOT = Path(__file__).resolve().parents[1]


# -- the gate rule ----------------------------------------------------------------------------

def test_the_floor_stops_a_hopeless_trial_after_the_first_iteration_only():
    gate = GatePruner(min_ratio=0.9, floor=0.25, after=1)
    assert gate.should_stop([(0, 0.01)], []) is None  # compressed, not yet fine-tuned: may recover
    reason = gate.should_stop([(0, 0.01), (1, 0.2)], [])
    assert reason and "below 0.25 x the constraint 0.9" in reason
    assert gate.should_stop([(0, 0.01), (1, 0.3)], []) is None  # above the floor, no history: goes on
    assert gate.should_stop([(0, 0.0), (1, 0.95)], []) is None  # meets the constraint


def test_the_history_stops_a_trial_below_every_feasible_trial_at_that_step():
    gate = GatePruner(min_ratio=0.9, floor=0.25, after=1, min_history=2)
    history = [[(0, 0.5), (1, 0.7), (2, 0.95)], [(0, 0.9), (1, 0.6), (2, 1.0)]]
    assert gate.should_stop([(0, 0.1), (1, 0.65)], history) is None  # not below both
    reason = gate.should_stop([(0, 0.1), (1, 0.55)], history)
    assert reason and "below all 2 feasible trials" in reason and "0.600" in reason
    assert gate.should_stop([(0, 0.1), (1, 0.55)], history[:1]) is None  # one feasible trial is no evidence
    assert gate.should_stop([(0, 0.1), (1, 0.5), (2, 0.5), (3, 0.5)], history) is None  # nobody reached step 3


def test_the_reporter_raises_with_its_reports_and_never_stops_on_the_last_step():
    r = Reporter(GatePruner(min_ratio=0.9), last_step=2)
    r.report(0, 0.0)
    with pytest.raises(TrialStopped) as e:
        r.report(1, 0.1)
    assert e.value.reports == [(0, 0.0), (1, 0.1)] and "constraint" in e.value.reason
    last = Reporter(GatePruner(min_ratio=0.9), last_step=1)
    last.report(0, 0.0)
    last.report(1, 0.0)  # the fine-tune is over: the evaluation judges it
    assert last.reports == [(0, 0.0), (1, 0.0)]


def test_no_constraint_or_kind_none_never_stops():
    assert isinstance(make_pruner("gate", None), NopPruner)
    assert isinstance(make_pruner("none", 0.9), NopPruner)
    assert make_pruner("gate", 0.8, floor=0.5) == GatePruner(min_ratio=0.8, floor=0.5)


def test_finish_at_ends_the_fine_tune_of_a_net_that_matches_the_teacher():
    gate = GatePruner(min_ratio=0.9, finish_at=1.0)
    assert GatePruner(min_ratio=0.9).should_finish([(0, 1.2)]) is None  # off by default
    assert gate.should_finish([(0, 0.99)]) is None
    assert "reached finish_at 1.0" in gate.should_finish([(0, 0.2), (2, 1.0)])
    r = Reporter(gate, last_step=4)
    assert r.report(0, 0.5) is None and "finish_at" in r.report(2, 1.01)
    assert Reporter(gate, last_step=2).report(2, 1.5) is None  # the fine-tune is over anyway
    assert make_pruner("gate", 0.9, finish_at=1.0).finish_at == 1.0
    assert make_pruner("gate", 1.1, finish_at=1.0).finish_at == 1.1  # the default never ends an infeasible net


@pytest.mark.slow
def test_a_net_that_matches_the_teacher_skips_the_fine_tune_but_not_a_later_pruning_round(tmp_path):
    """finish_at: 8-bit weights keep CartPole's 500 before any fine-tune, so no RLlib is built; iterative
    pruning that also keeps it at its first, gentler round still runs its second round's fine-tune."""
    from autocompress.config import CompressConfig
    from autocompress.pipeline import Timings, build_compressed

    spec = yaml.safe_load((ROOT / "trials" / "cartpole_ppo.yaml").read_text())
    spec["finetune"] = {**spec["finetune"], "iterations": 2}
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(spec))
    spec = load_trial_spec(tmp_path / "trial.yaml")

    def run(cfg: dict):
        r, timed = Reporter(GatePruner(min_ratio=0.9, finish_at=1.0), last_step=2), Timings()
        out = build_compressed(spec, CompressConfig.model_validate(cfg), ROOT / "teachers", log=lambda m: None,
                               timed=timed, report=r.report)
        return out.rounds, r.reports, timed

    rounds, reports, timed = run({"quantize": {"bits": 8}})
    assert reports == [(0, 1.0)] and rounds[-1]["ended_at"] == 0
    assert timed["rllib_build"] == timed["rllib_train"] == 0  # no RLlib at all
    rounds, reports, timed = run({"prune": {"sparsity": 0.3, "schedule": "iterative"}})
    assert len(rounds) == 2 and reports[0] == (0, 1.0) and timed["rllib_train"] > 0
    assert [s for s, _ in reports][:2] == [0, 1]  # round 1 fine-tuned although step 0 matched the teacher


@pytest.mark.slow
def test_an_iteration_that_only_fills_the_replay_buffer_is_not_a_fine_tune_step(tmp_path):
    """DQN's first fine-tune iteration (1000 env steps, learning starts at 1000) makes one SGD step:
    it is not reported, so the gate first judges a net that was fine-tuned."""
    from autocompress.config import CompressConfig
    from autocompress.pipeline import build_compressed

    spec = yaml.safe_load((ROOT / "trials" / "cartpole_dqn.yaml").read_text())
    spec["finetune"] = {**spec["finetune"], "iterations": 2}
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(spec))
    reports = []
    build_compressed(load_trial_spec(tmp_path / "trial.yaml"), CompressConfig.model_validate({"prune": {"sparsity": 0.5}}),
                     tmp_path / "cache", log=lambda m: None, report=lambda step, ratio: reports.append(step))
    assert reports == [0, 2]


# -- repeats: keyed, and free up to a bound ----------------------------------------------------

def _complete(study, cfg, key, artifact, values=(1.0, 1.0, 1.0), **attrs):
    t = study.ask()
    for k, v in {"config": cfg, "reuse_key": key, "result": {"artifact": str(artifact)}, **attrs}.items():
        t.set_user_attr(k, v)
    study.tell(t, list(values))
    return t


def test_a_repeat_is_matched_on_config_spec_teacher_and_runtime(tmp_path):
    spec = load_trial_spec(ROOT / "trials" / "cartpole_ppo.yaml")
    key = reuse_key(spec, "cartpole_ppo-4c7e6a3e26d95ad2")
    assert key == reuse_key(spec.updated({"resources": {"num_cpus": 2}}), "cartpole_ppo-4c7e6a3e26d95ad2")
    for changed in (reuse_key(spec.updated({"eval": {"episodes": 7}}), "cartpole_ppo-4c7e6a3e26d95ad2"),
                    reuse_key(spec.updated({"latency": {"runtime": "numpy"}}), "cartpole_ppo-4c7e6a3e26d95ad2"),
                    reuse_key(spec, "cartpole_ppo-0000000000000000")):
        assert changed != key
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    art = tmp_path / "policy.acz"
    art.write_bytes(b"x")
    cfg = {"quantize": {"bits": 4}}
    t = _complete(study, cfg, key, art)
    assert duplicate_of(study, cfg, key).number == t.number
    assert duplicate_of(study, cfg, "another-key") is None  # an edited spec never reuses stale measurements
    assert duplicate_of(study, {"quantize": {"bits": 5}}, key) is None
    art.unlink()
    assert duplicate_of(study, cfg, key) is None  # nothing to copy


def test_free_repeats_do_not_count_in_the_budget(tmp_path):
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    _complete(study, {}, "k", tmp_path)
    _complete(study, {}, "k", tmp_path, free_repeat=True, duplicate_of=0)
    _complete(study, {}, "k", tmp_path, duplicate_of=0)  # a counted repeat (the bound was reached)
    stopped = study.ask()
    study.tell(stopped, state=TrialState.PRUNED)  # a stopped trial spent time: it counts
    assert [t.number for t in finished(study)] == [0, 2, 3] and taken(study) == 3


# -- the real thing --------------------------------------------------------------------------

@pytest.mark.slow
def test_a_search_stops_a_hopeless_trial_and_records_why(tmp_path):
    import autocompress as ac

    spec = yaml.safe_load((ROOT / "trials" / "cartpole_ppo.yaml").read_text())
    spec.update(finetune={"iterations": 3}, eval={"episodes": 3}, latency={"calls": 200})
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(spec))
    # teacher as-is, then 99% pruning alone: CartPole falls from 500 to ~10 and one PPO iteration cannot
    # bring it near the constraint; repeats of that config are answered from the study
    space = {"name": "stops", "trial_spec": "trial.yaml", "constraints": {"min_return_ratio": 0.9},
             "budget": {"trials": 2, "parallel": 1}, "techniques": {"prune": {"sparsity": {"choices": [0.99]}}}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    run = ac.search(tmp_path / "space.yaml", run_dir=tmp_path / "run", cache_dir=ROOT / "teachers")
    trials = run.study.trials
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE, TrialState.PRUNED]
    stopped = trials[1]
    steps = [s for s, _ in stopped.user_attrs["intermediate"]]
    assert steps == [0, 1], stopped.user_attrs  # stopped after its first iteration, not its third
    assert stopped.user_attrs["partial"]["return_ratio"] < 0.25 * 0.9
    assert "below 0.25 x the constraint 0.9" in stopped.user_attrs["stopped"]
    assert stopped.constraints["min_return_ratio"] > 0  # infeasible to the sampler
    assert len(finished(run.study)) == 2
    client = MlflowClient(run.state["tracking_uri"])
    child, = client.search_runs([run.state["experiment_id"]], filter_string="tags.trial = '1'")
    assert child.info.status == "KILLED" and "constraint" in child.data.tags["fail_reason"]


@pytest.mark.slow
def test_a_stack_on_the_first_technique_that_kept_the_return_runs_before_the_other_baselines(tmp_path):
    import autocompress as ac

    spec = yaml.safe_load((ROOT / "trials" / "cartpole_ppo.yaml").read_text())
    spec.update(finetune={"iterations": 1}, eval={"episodes": 3}, latency={"calls": 200})
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(spec))
    # teacher, quantize alone (weight codes run before pruning) keeps CartPole's 500, so the stack
    # quantize + prune runs next, then prune alone
    space = {"name": "stacks", "trial_spec": "trial.yaml", "constraints": {"min_return_ratio": 0.9}, "stack": 1,
             "budget": {"trials": 4, "parallel": 1}, "techniques": {"prune": {"sparsity": {"choices": [0.5]}},
                                                                    "quantize": {"bits": {"choices": [8]}}}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    run = ac.search(tmp_path / "space.yaml", run_dir=tmp_path / "run", cache_dir=ROOT / "teachers")
    trials = run.study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4, [t.user_attrs.get("stopped") for t in trials]
    assert [sorted(t.user_attrs["config"]) for t in trials] == [[], ["quantize"], ["prune", "quantize"], ["prune"]]
    assert trials[2].user_attrs["stacked"] and run.study.user_attrs["stacked"] == 1
    assert not trials[3].user_attrs.get("stacked") and trials[3].user_attrs["baseline"]
    assert trials[2].user_attrs["config"] == {**trials[1].user_attrs["config"], **trials[3].user_attrs["config"]}
    # each stage of a trial timed once: what is left for the techniques is never negative
    assert min(t.user_attrs["result"]["timings"]["techniques"] for t in trials) >= 0
    # the stack is smaller than either technique alone
    assert trials[2].user_attrs["result"]["bytes"] < min(t.user_attrs["result"]["bytes"] for t in (trials[1], trials[3]))
