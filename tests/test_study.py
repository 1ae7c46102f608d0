"""Opening the study: its values are named after the objectives (what optuna-dashboard shows)."""

import warnings

import optuna

from autocompress._search.study import JOURNAL, open_study, storage_for

OBJECTIVES = ["return", "latency", "bytes"]


def test_a_new_study_names_its_objectives(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", optuna.exceptions.ExperimentalWarning)
        study = open_study("s", OBJECTIVES, tmp_path, None, "random", 0)
    assert study.metric_names == OBJECTIVES
    assert (tmp_path / JOURNAL).is_file()
    # what optuna-dashboard reads: the journal file, opened afresh
    again = optuna.load_study(study_name="s", storage=storage_for(tmp_path, None))
    assert again.metric_names == OBJECTIVES
    assert again.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE,
                                optuna.study.StudyDirection.MINIMIZE]


def test_resume_and_join_name_a_study_made_without_names(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize"])
    assert optuna.load_study(study_name="s", storage=url).metric_names is None
    assert open_study("s", ["return", "bytes"], tmp_path, url, "random", 0, resume=True).metric_names == \
        ["return", "bytes"]
    joined = open_study("s", ["return", "bytes"], tmp_path, url, "random", 0, join=True)
    assert joined.metric_names == ["return", "bytes"]
    # resuming with other objectives than the study has leaves its names alone (no error from Optuna)
    assert open_study("s", OBJECTIVES, tmp_path, url, "random", 0, resume=True).metric_names == ["return", "bytes"]


def test_a_resumed_or_joined_driver_does_not_replay_the_first_drivers_draws(tmp_path):
    """Re-seeded with the plain seed, a resumed random search would ask the very configs it already ran
    (each answered as a repeat); a driver continuing a study draws a stream of its own."""
    def draws(study, n=4):
        out = []
        for _ in range(n):
            t = study.ask()
            out.append(t.suggest_int("bits", 2, 8) * 100 + t.suggest_int("width", 0, 99))
            study.tell(t, [1.0, 1.0, 1.0])
        return out

    first = draws(open_study("s", OBJECTIVES, tmp_path, None, "random", 0))
    (tmp_path / "other").mkdir()
    fresh = draws(open_study("t", OBJECTIVES, tmp_path / "other", None, "random", 0))
    assert first == fresh  # same seed, new study: the same stream (a search is reproducible)
    resumed = draws(open_study("s", OBJECTIVES, tmp_path, None, "random", 0, resume=True))
    joined = draws(open_study("s", OBJECTIVES, tmp_path, None, "random", 0, join=True))
    assert resumed != first and joined != first and joined != resumed
    # resuming is reproducible: the same study state gives the same stream
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / JOURNAL).write_bytes((tmp_path / JOURNAL).read_bytes())
    a = draws(open_study("s", OBJECTIVES, tmp_path / "copy", None, "random", 0, resume=True))
    assert a == draws(open_study("s", OBJECTIVES, tmp_path, None, "random", 0, resume=True))


def test_the_queue_feeds_one_trial_at_a_time_and_takes_items_at_its_front(tmp_path):
    from optuna.trial import TrialState

    from autocompress._search.study import feed, queue

    def waiting():
        return len(study.get_trials(states=(TrialState.WAITING,)))

    def ask() -> tuple[int, dict]:  # the next trial's x (an enqueued trial's value) and user attrs
        t = study.ask()
        return t.suggest_int("x", 0, 99), t.user_attrs

    study = open_study("q", OBJECTIVES, tmp_path, None, "random", 0)  # journal storage: JSON round trips
    queue(study, [{"params": {"x": i}, "user_attrs": {"baseline": True}} for i in range(3)])
    feed(study)
    feed(study)  # a trial is WAITING already: nothing more is enqueued
    assert waiting() == 1 and [i["params"] for i in study.user_attrs["queue"]] == [{"x": 1}, {"x": 2}]
    assert ask() == (0, {"baseline": True})
    queue(study, [{"params": {"x": 9}, "user_attrs": {"stacked": True}}], front=True)
    feed(study)
    assert ask() == (9, {"stacked": True})  # ahead of the rest
    for x in (1, 2):
        feed(study)
        assert ask() == (x, {"baseline": True})
    feed(study)  # empty: nothing to do
    assert study.user_attrs["queue"] == [] and waiting() == 0
