"""README's main job and 5-minute tour, run as written: each `autocompress` line of README, in README's
order, in a directory laid out as the repo (search_spaces/, trials/, teachers/), with the search cut to 3
trials and `--trial 11` pointed at a trial those 3 made (conftest's `readme_tour`). `mlflow ui` (a server) is not
started: its store is opened instead."""

import shlex

import pytest

from conftest import readme_commands


def test_readme_names_the_main_job_and_the_tour():
    commands = [shlex.split(c.split("#")[0])[1 if c.startswith("RAY") else 0:][1] for c in readme_commands()]
    assert commands[0] == "search" and {"pareto", "pick", "export", "compress"} <= set(commands), commands


@pytest.mark.slow
def test_readme_main_job_and_tour_run_as_written(readme_tour):
    assert (readme_tour / "runs" / "cartpole_ppo" / "mlflow.db").is_file()  # what README's `mlflow ui` opens
    assert (readme_tour / "policy.acz").is_file() and (readme_tour / "policy_c" / "policy.c").is_file()
