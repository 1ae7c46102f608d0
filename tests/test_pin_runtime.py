"""A study measures latency in one runtime: 'auto' resolves once and is kept in the study; a later
driver asking for another runtime, or a machine without a compiler asked for 'c', is refused."""

import optuna
import pytest

from autocompress import native
from autocompress._search.study import pin_runtime
from autocompress.config import load_trial_spec
from autocompress.errors import ConfigError

SPEC = "trials/cartpole_ppo.yaml"


@pytest.fixture
def study():
    return optuna.create_study(directions=["maximize", "minimize", "minimize"])


@pytest.fixture
def spec(monkeypatch):
    monkeypatch.chdir(__file__.rsplit("/tests/", 1)[0])
    return load_trial_spec(SPEC)


def test_auto_resolves_once_and_the_study_keeps_it(study, spec, monkeypatch):
    monkeypatch.setattr(native, "available", lambda: True)
    assert pin_runtime(study, spec).latency.runtime == "c" and study.user_attrs["runtime"] == "c"
    # a later driver on a machine without a compiler: 'auto' still means the study's runtime, and fails
    monkeypatch.setattr(native, "available", lambda: False)
    with pytest.raises(ConfigError, match="'c' needs a C compiler"):
        pin_runtime(study, spec)


def test_a_study_never_mixes_runtimes(study, spec, monkeypatch):
    monkeypatch.setattr(native, "available", lambda: False)
    assert pin_runtime(study, spec).latency.runtime == "numpy"
    monkeypatch.setattr(native, "available", lambda: True)
    assert pin_runtime(study, spec).latency.runtime == "numpy"  # auto: what the study measured in
    with pytest.raises(ConfigError, match="measured latency in the 'numpy' runtime.*asks for 'c'") as e:
        pin_runtime(study, spec.updated({"latency": {"runtime": "c"}}))
    assert "latency.runtime" in str(e.value)
