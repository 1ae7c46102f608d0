"""`search --warm-start RUN_DIR`: trials of the same spec and teacher are copied in, the front of
another spec is enqueued and re-measured, a run of another env or algorithm is refused."""

import json

import pytest
import yaml
from optuna.trial import TrialState

import autocompress as ac
from autocompress._search.study import finished
from autocompress.errors import ConfigError


def _space(search_run):
    d = search_run.parent
    return d / "space.yaml", d / "cache"


@pytest.mark.slow
def test_same_spec_copies_trials_and_an_edited_spec_remeasures_the_front(search_run, tmp_path):
    space, cache = _space(search_run)
    old = ac.Run.load(search_run)
    old_complete = [t for t in old.study.trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    run = ac.search(space, trials=1, run_dir=tmp_path / "same", cache_dir=cache, warm_start=search_run)
    copies = [t for t in run.study.trials if "copied_from" in t.user_attrs]
    assert sorted(json.dumps(t.user_attrs["config"], sort_keys=True) for t in copies) == \
        sorted(json.dumps(t.user_attrs["config"], sort_keys=True) for t in old_complete)
    for t in copies:
        src = old.study.trials[int(t.user_attrs["copied_from"].rsplit("#", 1)[1])]
        assert t.values == src.values and t.user_attrs["result"] == src.user_attrs["result"]
    assert len(finished(run.study)) == 1  # copies do not use the new budget
    # the new front is chosen among the copies too: it is at least as good as the old one
    assert {t.number for t in copies} <= {r["trial"] for r in run.rows()}
    assert run.hypervolume() >= old.hypervolume()

    # an edited spec (another evaluation) never reuses stale measurements: the old front runs again
    spec = yaml.safe_load((space.parent / "trial.yaml").read_text())
    spec["eval"]["episodes"] = 2
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(spec))
    edited = yaml.safe_load(space.read_text())
    edited.update(trial_spec="trial.yaml", baselines=False)
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(edited))
    front = {r.trial: r for r in old.front()}
    run2 = ac.search(tmp_path / "space.yaml", trials=len(front), run_dir=tmp_path / "edited", cache_dir=cache,
                     warm_start=search_run)
    trials = run2.study.trials
    assert not any("copied_from" in t.user_attrs for t in trials)
    rerun = {int(t.user_attrs["warm_start"].rsplit("#", 1)[1]): t for t in trials if "warm_start" in t.user_attrs}
    assert set(rerun) == set(front)
    for number, t in rerun.items():
        assert t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs
        assert t.user_attrs["config"] == front[number].config
        assert t.user_attrs["result"]["trial_seconds"] > 0  # measured again, not answered from the old study


def test_a_run_of_another_env_or_no_run_is_refused(search_run, tmp_path):
    space, cache = _space(search_run)
    other = tmp_path / "other"
    other.mkdir()
    (other / "search.json").write_text(json.dumps({"study_name": "x", "spec": {"env": "Pendulum-v1",
                                                                                "algorithm": "SAC"}}))
    with pytest.raises(ConfigError, match="searched env 'Pendulum-v1'.*'CartPole-v1'") as e:
        ac.search(space, run_dir=tmp_path / "new", cache_dir=cache, warm_start=other)
    assert e.value.option == "warm_start" and not (tmp_path / "new").exists()
    with pytest.raises(ConfigError, match="not a search run dir") as e:
        ac.search(space, run_dir=tmp_path / "new", cache_dir=cache, warm_start=tmp_path)
    assert e.value.option == "warm_start"
    with pytest.raises(ConfigError, match="excludes resume") as e:
        ac.search(space, run_dir=search_run, cache_dir=cache, warm_start=search_run, resume=True)
