"""Held-out pick: seed ranges kept apart, pick/pareto on held-out values, re-evaluation of a finished
search (`pareto --reevaluate`), and the fine-tuned teacher as a reference row."""

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import autocompress as ac
from autocompress import measure, seeds
from autocompress.cli import app
from autocompress.config import CompressConfig, TrialSpec, load_trial_spec, parse
from autocompress.errors import ConfigError
from autocompress.nets import PolicyNet
from autocompress.techniques import Context, apply
from autocompress.techniques.distill import DistillConfig
from autocompress._search.study import reuse_key

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "trials" / "cartpole_ppo.yaml"


def spec_dict(**changes) -> dict:
    d = yaml.safe_load(SPEC.read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            d[key] = {**d.get(key, {}), **value}
        else:
            d[key] = value
    return d


# -- seed ranges ---------------------------------------------------------------------------------------

def test_distill_rolls_out_on_the_seeds_the_check_assumes():
    """The seeds distill really resets with (recorded) lie in seeds.ranges' distillation spans: with spec
    seed 2081 its first rollout starts at 10000, the default evaluation seed (the bug the check stops)."""
    seen = []

    def rollout(net, n, seed):
        seen.append((seed, n))
        return [np.zeros((n, 4), np.float32)]  # one episode

    spec = TrialSpec.model_validate(spec_dict(eval={"seed": 50_000}, seed=2081))  # apart: loads
    cfg = DistillConfig(hidden=[8], rounds=3, epochs=1, steps_per_round=10)
    teacher = PolicyNet.mlp(4, [16], 2)
    apply(teacher, cfg, Context(teacher=teacher, sample_obs=np.zeros((20, 4), np.float32), head="discrete",
                                seed=spec.seed, log=lambda m: None, rollout_episodes=rollout))
    assert [s for s, _ in seen] == [10_000, 17_919]
    spans = next(r for r in seeds.ranges(spec, cfg) if r.what == "distillation rollouts").spans
    assert spans == tuple((s, s + n - 1) for s, n in seen)  # episode j of a rollout resets with start + j


def test_shipped_specs_load_and_the_teacher_key_ignores_heldout_settings():
    for path in sorted((ROOT / "trials").glob("*.yaml")):
        load_trial_spec(path)
    spec = load_trial_spec(SPEC)
    assert (spec.eval.heldout_seed, spec.eval.heldout_episodes) == (1_000_000, 100)
    other = spec.updated({"eval": {"heldout_seed": 2_000_000, "heldout_episodes": 7, "seed": 20_000},
                          "finetune": {"teacher_reference": True}})
    assert other.teacher_key() == spec.teacher_key()  # no teacher is trained again for these
    assert (spec.eval.fresh_seed, spec.eval.fresh_episodes) == (5_000_000, 100)
    picks_elsewhere = spec.updated({"eval": {"fresh_seed": 7_000_000, "fresh_episodes": 3}})
    assert reuse_key(picks_elsewhere, "t") == reuse_key(spec, "t")  # only pick reads them: trials are reused


OVERLAPS = [  # (changes, the two parts named, the seeds they share)
    ({"seed": 2081}, ("distillation rollouts", "evaluation"), "10000..10019"),
    ({"eval": {"seed": 1500}}, ("sample_obs collection", "evaluation"), "1500..1519"),
    ({"seed": 10_005, "sample_steps": 10}, ("fine-tuning (RLlib)", "evaluation"), "10005"),
    ({"eval": {"seed": 77_770}}, ("keep_best / teacher checks", "evaluation"), "77777..77781"),
    ({"eval": {"heldout_seed": 10_019}}, ("evaluation", "held-out re-evaluation"), "10019"),
    ({"eval": {"heldout_seed": 77_700}}, ("keep_best / teacher checks", "held-out re-evaluation"), "77777..77781"),
    ({"eval": {"heldout_seed": 15_900}}, ("distillation rollouts", "held-out re-evaluation"), "15900..15999"),
    ({"eval": {"heldout_seed": 0, "heldout_episodes": 1}}, ("fine-tuning (RLlib)", "held-out re-evaluation"), "0"),
    ({"eval": {"heldout_seed": 1999}}, ("sample_obs collection", "held-out re-evaluation"), "1999"),
    ({"sample_steps": 77_800}, ("sample_obs collection", "keep_best / teacher checks"), "77777..77781"),
    # the fine-tune's check over more episodes than the teacher's reaches further
    ({"finetune": {"check_episodes": 30}, "eval": {"seed": 77_800}}, ("keep_best / teacher checks", "evaluation"),
     "77800..77806"),
    ({"eval": {"seed": 300_090}}, ("layer sensitivity", "evaluation"), "300090..300099"),
    ({"eval": {"fresh_seed": 1_000_050}}, ("held-out re-evaluation", "pick's fresh report"), "1000050..1000099"),
    ({"eval": {"fresh_seed": 10_010, "fresh_episodes": 5}}, ("evaluation", "pick's fresh report"), "10010..10014"),
]


@pytest.mark.parametrize("changes, parts, shared", OVERLAPS, ids=[f"{a}|{b}" for _, (a, b), _ in OVERLAPS])
def test_overlapping_seed_ranges_are_one_clear_error(changes, parts, shared):
    with pytest.raises(ConfigError) as e:
        parse(TrialSpec, spec_dict(**changes), "trial.yaml")
    msg = str(e.value)
    assert msg.startswith("trial.yaml: seed ranges overlap: ") and msg.count("\n") == 0
    a, b = parts
    assert f"{a} (" in msg and f"{b} (" in msg and f"share seeds {shared}" in msg, msg
    for part, keys in (("evaluation", "eval.seed + eval.episodes"), ("held-out re-evaluation", "eval.heldout_seed"),
                       ("sample_obs collection", "seed + sample_steps"), ("keep_best / teacher checks", "seed + 77777"),
                       ("pick's fresh report", "eval.fresh_seed + eval.fresh_episodes")):
        if part in parts:
            assert keys in msg, (keys, msg)


def test_training_parts_may_share_seeds_and_a_distill_config_is_checked_exactly():
    spec = load_trial_spec(SPEC)  # fine-tuning and sample_obs both start at seed 0: allowed (training data)
    assert [r.role for r in seeds.ranges(spec)][:3] == ["train"] * 3 and not seeds.overlaps(seeds.ranges(spec))
    # 10 rounds of 7000 steps: rollout 9 (71271..78270) would reach the keep_best check seeds
    cfg = parse(CompressConfig, {"distill": {"hidden": [32], "rounds": 11, "steps_per_round": 7000}}, "config")
    with pytest.raises(ConfigError, match=r"^distill: seed ranges overlap: distillation rollouts .*distill.rounds 11, "
                                          r"distill.steps_per_round 7000.* and keep_best / teacher checks"):
        cfg.check_against(spec)
    parse(CompressConfig, {"distill": {"hidden": [32], "rounds": 11}}, "config").check_against(spec)


def test_reevaluate_with_seeds_that_overlap_is_refused(search_run):
    with pytest.raises(ConfigError, match="evaluation .* and held-out re-evaluation"):
        ac.Run.load(search_run).reevaluate([0], episodes=2, seed=10_000)
    with pytest.raises(ConfigError, match=r"held-out re-evaluation \(eval.heldout_seed.* and pick's fresh report "
                                          r"\(eval.fresh_seed"):
        ac.Run.load(search_run).reevaluate([0], episodes=2, seed=5_000_050)


# -- pareto / pick on held-out values (a real in-memory study, fake measurements) ---------------------------

def fake_run(tmp_path, heldout: dict | None, reference: dict | None = None) -> ac.Run:
    """Two front members: 4 = smaller, 1.00 on the evaluation episodes but 0.90 held-out; 7 = bigger and
    faster, 0.98 and 0.97. A dominated trial 9 (never re-evaluated). The trial spec is the shipped CartPole
    one; each artifact holds b"trial <n>" (episodes are `fake_episodes`')."""
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])

    def add(number, ret, ratio, lat, size):
        art = tmp_path / f"{number}.acz"
        art.write_bytes(f"trial {number}".encode())
        result = {"return_mean": ret, "return_std": 1.0, "return_ratio": ratio, "latency_ms": lat, "latency_ratio": 0.5,
                  "bytes": size, "bytes_ratio": size / 1000, "n_params": 10, "artifact": str(art), "runtime": "numpy"}
        while len(study.trials) < number:
            study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
        study.add_trial(optuna.trial.create_trial(values=[ret, lat, size], user_attrs={
            "result": result, "config": {"quantize": {"bits": 8}}}))

    add(4, 500.0, 1.00, 0.01, 100)
    add(7, 490.0, 0.98, 0.005, 200)
    add(9, 480.0, 0.96, 0.02, 300)
    if heldout is not None:
        study.set_user_attr("heldout", heldout)
    if reference is not None:
        study.set_user_attr("reference", reference)
    return ac.Run(tmp_path, study, {"objectives": ["return", "latency", "bytes"],
                                    "space": str(ROOT / "search_spaces" / "cartpole_ppo.yaml")})


#: returns on the fresh episodes (set B), disagreeing with the held-out ones (set A: 4 -> 0.90, 7 -> 0.97)
FRESH_RETURNS = {b"trial 4": 400.0, b"trial 7": 320.0}


@pytest.fixture
def fake_episodes(monkeypatch) -> list:
    """The episode runner replaced: artifact b"trial <n>" returns FRESH_RETURNS[n] ± 1 per episode, anything
    else (the teacher) 400 ± 1. Returns the calls: (artifact, first seed, episodes)."""
    calls = []

    def run(data, spec, runtime, kernels=None):
        calls.append((data, spec.eval.seed, spec.eval.episodes))
        mean = FRESH_RETURNS.get(data, 400.0)
        return mean + np.resize([-1.0, 1.0], spec.eval.episodes)

    monkeypatch.setattr(measure, "artifact_returns", run)
    return calls



def snapshot(trials: dict) -> dict:
    return {"episodes": 100, "seed": 1_000_000, "runtime": "numpy", "at": 0.0, "reference": None,
            "teacher": {"return_mean": 480.0, "return_std": 3.0, "return_ratio": 1.0},
            "trials": {str(n): {"return_mean": 480.0 * r, "return_std": 2.0, "return_ratio": r} for n, r in trials.items()}}


def test_pick_and_front_go_by_heldout_values_when_every_front_member_has_them(tmp_path, fake_episodes):
    plain = fake_run(tmp_path, None)
    assert plain.heldout() is None and plain.pick(0.95, "bytes").trial == 4
    held = fake_run(tmp_path, snapshot({4: 0.90, 7: 0.97}))
    assert held.heldout()["episodes"] == 100
    assert {r.trial: r.heldout_return_ratio for r in held.front()} == {4: 0.90, 7: 0.97}
    best = held.pick(0.95, "bytes")  # 4 meets 0.95 on the evaluation episodes only
    assert best.trial == 7 and best.heldout_return_ratio == 0.97 and best.heldout_episodes == 100
    # neither 4 nor 7 keeps 0.99 in the snapshot: re-evaluated first (fake_episodes: 4 now keeps 1.00, so the
    # front is enough; test_where_no_front_member_keeps_... goes past it)
    again = held.pick(0.99, "bytes")
    assert again.trial == 4 and held.heldout()["trials"]["4"]["return_ratio"] == 1.0
    with pytest.raises(ConfigError, match=r"heldout_return_ratio >= 1.5: met by 0(.|\n)*3 re-evaluated trials"):
        held.pick(1.5, "bytes")  # every layer re-evaluated (trial 9 too): nothing more to act, only those count
    # a snapshot that lacks a front member (the front changed since): back to the evaluation values
    stale = fake_run(tmp_path, snapshot({7: 0.97}))
    assert stale.heldout() is None and stale.pick(0.95, "bytes").trial == 4


def test_pareto_table_shows_heldout_columns_and_the_reference_row(tmp_path, monkeypatch, fake_episodes):
    ref = {"result": {"return_mean": 510.0, "return_std": 0.0, "return_ratio": 1.17, "latency_ms": 0.02,
                      "latency_ratio": 1.0, "bytes": 1000, "bytes_ratio": 1.0, "n_params": 99}, "artifact": "/x/ref.acz"}
    held = snapshot({4: 0.90, 7: 0.97})
    held["reference"] = {"return_mean": 505.0, "return_std": 1.0, "return_ratio": 1.05}
    run = fake_run(tmp_path, held, ref)
    assert run.reference().return_ratio == 1.17 and run.reference().heldout_return_ratio == 1.05
    monkeypatch.setattr(ac.Run, "load", classmethod(lambda cls, d, s=None: run))
    res = CliRunner().invoke(app, ["pareto", str(tmp_path)], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "held-out return: 100 episodes, seeds 1000000..1000099, teacher 480.0" in " ".join(res.output.split())
    lines = res.output.splitlines()
    row4 = next(line for line in lines if line.strip("│ ").startswith("4 "))
    assert "0.900" in row4 and "1.000" in row4  # held-out and evaluation ratios side by side
    ref_line = next(line for line in lines if "reference, not a trial" in line)
    assert "1.170" in ref_line and "1.050" in ref_line
    res = CliRunner().invoke(app, ["pick", str(tmp_path), "--minimize", "bytes"])
    assert res.exit_code == 0 and "chosen on 100 held-out episodes: ratio 0.970 (return 465.6)" in res.output, \
        res.output
    assert "reference: the teacher fine-tuned with the same budget, no compression: return held-out ×1.050" in \
        res.output


# -- pick chooses on held-out episodes (set A) and reports on fresh ones (set B) ------------------------------

def test_pick_chooses_on_heldout_episodes_and_reports_on_fresh_ones(tmp_path, fake_episodes):
    run = fake_run(tmp_path, snapshot({4: 0.90, 7: 0.97}))
    best = run.pick(0.95, "bytes")
    # chosen on A: 7 (0.97), not the smaller 4 (0.90 < 0.95), though on B 4 does better (1.00 vs 0.80)
    assert best.trial == 7 and best.chosen_on == "held-out" and best.chosen_episodes == 100
    assert best.chosen_return_ratio == best.heldout_return_ratio == 0.97
    # reported on B: 320 against the teacher's 400 on the same fresh episodes, not A's 0.97
    assert best.fresh_return_ratio == pytest.approx(0.80) and best.fresh_return_mean == pytest.approx(320.0)
    assert best.fresh_return_std == pytest.approx(1.0) and best.fresh_teacher_return_mean == pytest.approx(400.0)
    # only the chosen trial and the teacher acted, on B's seeds
    spec = run.trial_spec()
    assert best.fresh_episodes == spec.eval.fresh_episodes == 100
    assert sorted(data == b"trial 7" for data, _, _ in fake_episodes) == [False, True]
    assert {(seed, n) for _, seed, n in fake_episodes} == {(spec.eval.fresh_seed, 100)}


def test_a_second_pick_of_the_same_trial_runs_no_episodes(tmp_path, fake_episodes, monkeypatch):
    run = fake_run(tmp_path, snapshot({4: 0.90, 7: 0.97}))
    first = run.pick(0.95, "bytes")
    assert len(fake_episodes) == 2 and run.study.user_attrs["fresh:7"]["return_ratio"] == first.fresh_return_ratio
    assert ac.Run(tmp_path, run.study, run.state).pick(0.95, "bytes") == first and len(fake_episodes) == 2
    assert run.pick(0.90, "bytes").trial == 4 and len(fake_episodes) == 4  # another trial: measured
    spec = run.trial_spec().updated({"eval": {"fresh_seed": 6_000_000}})  # the spec's fresh episodes changed
    monkeypatch.setattr(run, "trial_spec", lambda: spec)
    assert run.pick(0.95, "bytes").fresh_return_ratio == pytest.approx(0.80)
    assert len(fake_episodes) == 6 and fake_episodes[-1][1] == 6_000_000


def test_without_heldout_values_pick_says_what_it_chose_on_and_still_reports_fresh_episodes(
        tmp_path, fake_episodes, monkeypatch):
    run = fake_run(tmp_path, None)
    best = run.pick(0.95, "bytes")
    assert best.trial == 4 and best.chosen_on == "evaluation" and best.chosen_episodes == 20
    assert best.chosen_return_ratio == 1.0 and best.fresh_return_ratio == pytest.approx(1.0)
    monkeypatch.setattr(ac.Run, "load", classmethod(lambda cls, d, s=None: run))
    res = CliRunner().invoke(app, ["pick", str(tmp_path), "--minimize", "bytes"])
    said = " ".join(res.output.split())
    assert res.exit_code == 0 and "chosen on 20 evaluation episodes: ratio 1.000 (return 500.0); no held-out " \
        "values" in said and "on 100 fresh episodes it was not chosen on: ratio 1.000 (return 400.0 ± 1.0 std, " \
        "teacher 400.0)" in said, res.output
    # eval.fresh_episodes: 0: nothing acts, and pick says its return is the one it chose on
    spec = run.trial_spec().updated({"eval": {"fresh_episodes": 0}})
    monkeypatch.setattr(run, "trial_spec", lambda: spec)
    calls = len(fake_episodes)
    none = run.pick(0.95, "bytes")
    assert none.trial == 4 and none.fresh_episodes is None and none.fresh_return_ratio is None
    assert len(fake_episodes) == calls
    res = CliRunner().invoke(app, ["pick", str(tmp_path), "--minimize", "bytes"])
    assert res.exit_code == 0 and "the return above is the one it was chosen on" in " ".join(res.output.split())


def test_pick_help_says_it_reports_on_fresh_episodes():
    res = CliRunner().invoke(app, ["pick", "--help"], env={"COLUMNS": "200"})
    said = " ".join(res.output.split())
    assert res.exit_code == 0 and "fresh_episodes episodes it was not chosen on" in said, res.output


def test_pick_reports_a_finished_search_on_fresh_episodes(search_run, tmp_path, monkeypatch):
    copy, _ = copy_run(search_run, tmp_path)  # pick keeps its fresh values in the study: the shared run stays as is
    res = CliRunner().invoke(app, ["pick", str(copy), "--min-return-ratio", "0", "--minimize", "bytes", "--json"])
    assert res.exit_code == 0, res.output
    best = json.loads(res.stdout)
    assert best["chosen_on"] == "held-out" and best["chosen_episodes"] == 100 and best["fresh_episodes"] == 100
    run = ac.Run.load(copy)
    row, spec = run.trial_row(best["trial"]), run.trial_spec()
    again = measure.artifact_returns(Path(row["artifact"]).read_bytes(), measure.fresh_spec(spec), row["runtime"],
                                     row["kernels"])  # the trial's runtime and kernels, on B's seeds
    assert best["fresh_return_mean"] == pytest.approx(again.mean())
    assert best["fresh_return_ratio"] == pytest.approx(best["fresh_return_mean"] / best["fresh_teacher_return_mean"])
    monkeypatch.setattr(measure, "artifact_returns", lambda *a, **k: pytest.fail("a second pick ran episodes"))
    assert run.pick(min_return_ratio=0.0, minimize="bytes").to_dict() == best


# -- a finished search, re-evaluated through the CLI --------------------------------------------------------

def copy_run(search_run: Path, tmp_path: Path) -> tuple[Path, str]:
    """A self-contained copy of the shared run dir: its MLflow store (sqlite + artifacts) points at the copy."""
    copy = tmp_path / "run"
    shutil.copytree(search_run, copy)
    with sqlite3.connect(copy / "mlflow.db") as db:
        db.execute("UPDATE experiments SET artifact_location = replace(artifact_location, ?, ?)",
                   (search_run.resolve().as_uri(), copy.resolve().as_uri()))
        db.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, ?, ?)",
                   (search_run.resolve().as_uri(), copy.resolve().as_uri()))
    return copy, f"sqlite:///{(copy / 'mlflow.db').resolve()}"


def test_pareto_reevaluate_stores_heldout_values_in_the_study_and_mlflow(search_run, tmp_path):
    done = ac.Run.load(search_run)  # the search re-evaluated its front as it ended (eval.heldout_episodes: 100)
    assert done.heldout()["episodes"] == 100 and done.heldout()["seed"] == 1_000_000
    assert json.loads((search_run / "pareto" / "heldout.json").read_text())["episodes"] == 100
    copy, uri = copy_run(search_run, tmp_path)
    res = CliRunner().invoke(app, ["pareto", str(copy), "--reevaluate", "5", "--tracking-uri", uri],
                             env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    assert "held-out return: 5 episodes, seeds 1000000..1000004" in " ".join(res.output.split())
    run = ac.Run.load(copy)
    held = run.heldout()
    front = {r.trial for r in run.front()}
    assert held["episodes"] == 5 and held["runtime"] == run.study.user_attrs["runtime"]
    assert set(held["trials"]) == {str(t) for t in front}
    expected = run.reevaluate(sorted(front), episodes=5)  # the same seeds and runtime, measured again
    for t in front:
        assert held["trials"][str(t)]["return_mean"] == pytest.approx(expected[t]["return_mean"])
    assert held["teacher"]["return_mean"] == pytest.approx(expected["teacher"]["return_mean"])
    client = MlflowClient(uri)
    state = json.loads((copy / "search.json").read_text())
    parent = client.get_run(state["parent_run_id"])
    assert parent.data.metrics["heldout_episodes"] == 5 and parent.data.tags["heldout"].startswith("5 episodes")
    for kid in client.search_runs([state["experiment_id"]],
                                  filter_string=f"tags.mlflow.parentRunId = '{state['parent_run_id']}'"):
        number = int(kid.data.tags["trial"])
        if number in front:
            assert kid.data.metrics["heldout_return_mean"] == pytest.approx(held["trials"][str(number)]["return_mean"])
        else:
            assert "heldout_return_mean" not in kid.data.metrics
    table = (copy / "pareto" / "pareto.csv").read_text().splitlines()
    assert "heldout_return_ratio" in table[0] and len(table) == len(front) + 1
    assert ac.Run.load(search_run).heldout()["episodes"] == 100  # the shared run is untouched
    bad = CliRunner().invoke(app, ["pareto", str(copy), "--reevaluate", "0"])
    assert bad.exit_code == 2 and "--reevaluate" in bad.output


# -- the fine-tuned teacher as a reference row ----------------------------------------------------------------

@pytest.mark.slow
def test_a_search_fine_tunes_the_teacher_once_as_a_reference_row(tmp_path):
    from conftest import tiny_cartpole

    trial = tiny_cartpole("tiny_reference", finetune_iterations=1)
    trial["finetune"]["teacher_reference"] = True
    trial["eval"]["heldout_episodes"] = 5
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(trial))
    space = {"name": "tiny_reference", "trial_spec": "trial.yaml", "objectives": ["return", "latency", "bytes"],
             "budget": {"trials": 1, "parallel": 1}, "seed": 0, "baselines": True,
             "techniques": {"quantize": {"bits": {"choices": [8]}}}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    run = ac.search(tmp_path / "space.yaml", run_dir=tmp_path / "run", cache_dir=tmp_path / "cache")
    asked = run.study.get_trials(states=[s for s in optuna.trial.TrialState if s != optuna.trial.TrialState.WAITING])
    assert run.summary["complete"] == 1 and len(asked) == 1  # the reference is no trial (nor in the budget)
    ref = run.study.user_attrs["reference"]
    as_is = next(r for r in run.rows() if not r["config"])
    assert ref["result"]["timings"].get("rllib_train", 0) > 0 and not as_is["timings"].get("rllib_train")
    assert Path(ref["artifact"]).read_bytes() != Path(as_is["artifact"]).read_bytes()  # fine-tuned: new weights
    assert ref["result"]["teacher_return_mean"] == as_is["teacher_return_mean"]  # measured like a trial
    row = run.reference()
    assert row.trial == -1 and row.trial not in {r.trial for r in run.front()}
    held = run.heldout()
    assert held["episodes"] == 5 and held["reference"]["return_mean"] == row.heldout_return_mean
    parent = MlflowClient(run.state["tracking_uri"]).get_run(run.state["parent_run_id"])
    assert parent.data.metrics["reference_return_mean"] == pytest.approx(ref["result"]["return_mean"])
    assert parent.data.metrics["reference_heldout_return_ratio"] == pytest.approx(held["reference"]["return_ratio"])
    res = CliRunner().invoke(app, ["pareto", str(tmp_path / "run")], env={"COLUMNS": "250"})
    assert res.exit_code == 0 and "teacher fine-tuned (reference, not a trial)" in res.output, res.output


def test_where_no_front_member_keeps_the_return_held_out_the_trials_it_dominated_are_re_evaluated(
        tmp_path, monkeypatch):
    """fake_run's front (4, 7) falls to 0.75 on the held-out episodes; trial 9, which it dominated on the
    evaluation episodes, keeps 1.00 there: re-evaluated as the next layer, and `pick` chooses it; where the
    snapshot stopped at the front (no constraint), `pick` at 0.95 re-evaluates the next layer itself."""
    from autocompress._search import heldout

    acted = []

    def run(data, spec, runtime, kernels=None):
        acted.append(data)
        return np.full(spec.eval.episodes, 400.0 if data in (b"trial 9",) or not data.startswith(b"trial") else 300.0)

    monkeypatch.setattr(measure, "artifact_returns", run)
    monkeypatch.setattr(heldout, "teacher_artifact", lambda *a: b"teacher")
    r = fake_run(tmp_path, None)
    spec = r.trial_spec()
    record = heldout.reevaluate(r.study, spec, ["return", "latency", "bytes"], tmp_path, episodes=20, log=print,
                                parallel=False, min_return_ratio=0.95)
    assert {k: v["return_ratio"] for k, v in record["trials"].items()} == {"4": 0.75, "7": 0.75, "9": 1.0}
    assert r.pick(0.95, "bytes").trial == 9
    acted.clear()  # without a return constraint the front alone is re-evaluated
    record = heldout.reevaluate(r.study, spec, ["return", "latency", "bytes"], tmp_path, episodes=20, log=print,
                                parallel=False)
    assert sorted(record["trials"]) == ["4", "7"] and b"trial 9" not in acted
    assert r.pick(0.7, "bytes").trial == 4 and b"trial 9" not in acted  # the front keeps 0.7: nothing more acts
    # a pick above the constraint the snapshot was taken at re-evaluates past the front first
    assert r.pick(0.95, "bytes").trial == 9 and b"trial 9" in acted
    assert sorted(r.heldout()["trials"]) == ["4", "7", "9"]
