"""Error types by cause. Each has the exit code the CLI ends with (documented in docs/guides/tune-a-search.md).

    ConfigError   2  bad input: YAML, options, files, URLs, a run dir that does not fit
    TeacherError  3  the teacher could not be trained or loaded (e.g. a corrupted cache entry)
    TrackingError 4  MLflow could not be reached or refused to log (the study keeps every result)
    TrialError    5  a single trial (`compress`) failed: diverged, raised inside RLlib, ...
    SearchError   6  a search's driver stopped on an unexpected error (every finished trial is kept: --resume)

Inside a search a failing trial is not an error: it is recorded FAIL with its reason and the
search goes on. Anything else (a bug) is left as the Python exception it is.
"""

from __future__ import annotations


class AutocompressError(Exception):
    """Base of autocompress's own errors: one message meant for the user, no traceback."""

    exit_code = 1

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        #: the keyword argument (CLI flag without dashes, e.g. 'run_dir') the message is about, if one
        self.option = option

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{self.option}: {msg}" if self.option else msg


class ConfigError(AutocompressError, ValueError):
    """Bad user input (YAML, options, missing files): one message naming what is wrong."""

    exit_code = 2


class TeacherError(AutocompressError):
    """The teacher could not be trained or loaded."""

    exit_code = 3


class TrackingError(AutocompressError):
    """MLflow was unreachable or failed; the Optuna study still holds every result."""

    exit_code = 4


class TrialError(AutocompressError):
    """A single trial run on its own failed."""

    exit_code = 5


class SearchError(AutocompressError):
    """A search's driver stopped on an unexpected error; the study keeps every finished trial, and
    resuming the search continues it."""

    exit_code = 6
