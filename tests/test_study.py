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
