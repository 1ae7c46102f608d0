"""README's main job and 5-minute tour, run as written: each `autocompress` line of README, in README's
order, in a directory laid out as the repo (search_spaces/, trials/, teachers/), with the search cut to 3
trials and `--trial 11` pointed at a trial those 3 made. `mlflow ui` (a server) is not started: its store is
opened instead."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def readme_commands() -> list[str]:
    """README's command lines that run autocompress (indented code), `.venv/bin/` as written."""
    lines = [line.strip() for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("    ")]
    return [line for line in lines if re.match(r"(RAY_AUTH_MODE=disabled )?\.venv/bin/autocompress ", line)]


def test_readme_names_the_main_job_and_the_tour():
    commands = [shlex.split(c.split("#")[0])[1 if c.startswith("RAY") else 0:][1] for c in readme_commands()]
    assert commands[0] == "search" and {"pareto", "pick", "export", "compress"} <= set(commands), commands


@pytest.mark.slow
def test_readme_main_job_and_tour_run_as_written(tmp_path):
    for d in ("search_spaces", "trials", "teachers"):
        (tmp_path / d).symlink_to(ROOT / d)
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "bin").symlink_to(BIN)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    for line in readme_commands():
        command = line.split("   #")[0]  # README's trailing comments
        if " search " in command:
            command += " --trials 3"
        command = command.replace("--trial 11", "--trial 2")
        r = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"{command}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    assert (tmp_path / "runs" / "cartpole_ppo" / "mlflow.db").is_file()  # what README's `mlflow ui` opens
    assert (tmp_path / "policy.acz").is_file() and (tmp_path / "policy_c" / "policy.c").is_file()
