"""Which RUNNING trials a driver may take over: only those whose own driver is gone."""

import os
import socket
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from autocompress._search import study as search


X = {"x": optuna.distributions.FloatDistribution(0, 1)}


def running_trial(study, driver):
    t = study.ask(X)
    if driver is not None:
        t.set_user_attr("driver", driver)
    return t


@pytest.fixture
def study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(directions=["maximize", "minimize"])


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_only_trials_of_gone_drivers_fail_and_are_asked_again(study):
    here, now = socket.gethostname(), time.time()
    me = f"{here}:{os.getpid()}"
    alive_elsewhere, silent_elsewhere, dead_here = "node-a:11", "node-b:12", f"{here}:{dead_pid()}"
    study.set_user_attr(f"heartbeat:{alive_elsewhere}", now)
    study.set_user_attr(f"heartbeat:{silent_elsewhere}", now - search.STALE_AFTER_S - 5)
    study.set_user_attr(f"heartbeat:{dead_here}", now)  # fresh, but its pid is gone
    mine = running_trial(study, me)
    kept = running_trial(study, alive_elsewhere)
    silent = running_trial(study, silent_elsewhere)
    dead = running_trial(study, dead_here)
    unowned = running_trial(study, None)

    assert search.fail_orphans(study, me) == 2
    state = {t.number: t.state for t in study.trials}
    assert state[mine.number] == state[kept.number] == state[unowned.number] == TrialState.RUNNING
    assert state[silent.number] == state[dead.number] == TrialState.FAIL
    failed = study.trials[silent.number]
    assert failed.user_attrs["interrupted"] and silent_elsewhere in failed.user_attrs["fail_reason"]
    # their params go back in the queue, so the budget still gets them
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 2
    asked_again = [study.ask(X) for _ in range(2)]
    assert sorted(t.params["x"] for t in asked_again) == sorted([silent.params["x"], dead.params["x"]])
    for t in asked_again:
        study.tell(t, [0.0, 0.0])

    # --resume also takes trials whose driver never said who it was
    assert search.fail_orphans(study, me, include_unowned=True) == 1
    assert study.trials[unowned.number].state == TrialState.FAIL
    assert study.trials[kept.number].state == TrialState.RUNNING
