"""autocompress: compress deep-RL policies automatically.

The public API is what `__all__` lists; every other module is internal and may change
(the Optuna way). A session in five lines:

    import autocompress as ac
    result = ac.compress("trials/cartpole_ppo.yaml", {"quantize": {"bits": 8}})   # one trial
    run = ac.search("search_spaces/cartpole_ppo.yaml")                             # a search
    best = run.pick(min_return_ratio=0.95, minimize="bytes")
    ac.Policy.load(run.export(best.trial, "policy.acz")).act(obs)
"""

from autocompress._api import (compress, compress_net, default_cache, evaluate, export, inspect_import, search,
                               sensitivity, sync, teach, validate)
from autocompress.config import CompressConfig, TrialSpec, load_compress_config, load_trial_spec
from autocompress.measure import latency
from autocompress.nets import PolicyNet
from autocompress.policy import Policy
from autocompress.errors import AutocompressError, ConfigError, SearchError, TeacherError, TrackingError, TrialError
from autocompress.results import FrontRow, TrialResult
from autocompress.samplers import SAMPLERS
from autocompress.space import SearchSpace, load_search_space
from autocompress.techniques import TECHNIQUES

__all__ = [
    # verbs
    "compress", "search", "teach", "evaluate", "export", "sync", "validate", "compress_net", "latency", "inspect_import",
    "sensitivity",
    # results, nets and artifacts
    "Run", "Policy", "PolicyNet", "TrialResult", "FrontRow",
    # inputs
    "TrialSpec", "CompressConfig", "SearchSpace", "load_trial_spec", "load_compress_config", "load_search_space",
    "TECHNIQUES", "SAMPLERS", "default_cache",
    # errors (exit codes in docs/guides/tune-a-search.md)
    "AutocompressError", "ConfigError", "SearchError", "TeacherError", "TrackingError", "TrialError",
]


def __getattr__(name: str):
    """`Run` is loaded on first use: its module (autocompress/_search/run.py) imports Optuna and MLflow."""
    if name == "Run":
        from autocompress._search.run import Run

        globals()["Run"] = Run
        return Run
    raise AttributeError(f"module 'autocompress' has no attribute {name!r}")
