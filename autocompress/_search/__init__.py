"""The only Optuna adapter: a multi-objective study whose trials run as Ray tasks.

    study     storage, heartbeats, orphaned trials, repeats, budget
    record    what the study keeps per trial (TrialRecord) and of its own (StudyAttrs): every attr name
    tasks     the Ray tasks (teacher, trial) and the fault-injection test hook
    driver    SearchOptions, the Driver (launch / record / poll) and run_search
    guided    the optional first stage: layer sensitivity, then guided configs enqueued
    results   rows, front, constraints, the Pareto files, load_run
    sync      log to MLflow what it missed
The sampler table is `autocompress.samplers` (space validation reads it without Optuna).
"""

from autocompress._search.driver import Driver, SearchOptions, run_search
from autocompress._search.results import STATE_FILE, current_front, load_run, rows
from autocompress.samplers import SAMPLERS, make_sampler
from autocompress._search.sync import sync_run

__all__ = ["Driver", "SearchOptions", "run_search", "STATE_FILE", "current_front", "load_run", "rows", "SAMPLERS",
           "make_sampler", "sync_run"]
