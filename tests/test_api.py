"""The public API: `autocompress.__all__` is what users import, and every example in the public
docstrings runs here as a doctest (those that need a finished search, or run one, are slow)."""

import copy
import doctest
import io
from pathlib import Path

import numpy as np
import pytest

import autocompress as ac
from autocompress import _api, config, measure, policy
from autocompress._search import run

ROOT = Path(__file__).resolve().parents[1]
NEEDS_RAY = ("RUN_DIR", "ac.search(")


def _doctests():
    finder = doctest.DocTestFinder()
    for module in (_api, policy, run, config, measure):
        for test in finder.find(module, module.__name__):
            if test.examples:
                slow = any(k in (test.docstring or "") for k in NEEDS_RAY)
                yield pytest.param(test, id=test.name, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("test", list(_doctests()))
def test_docstring_examples(test, request, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # examples use the repo's trials/, search_spaces/, configs/
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path / "cache"))
    test = copy.copy(test)
    test.globs = {**test.globs, "tmp": str(tmp_path), "np": np}
    if "RUN_DIR" in test.docstring:
        test.globs["RUN_DIR"] = str(request.getfixturevalue("search_run"))
    out = io.StringIO()
    result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test, out=out.write)
    assert result.failed == 0, out.getvalue()


def test_every_public_name_is_documented_and_importable():
    for name in ac.__all__:
        obj = getattr(ac, name)
        if callable(obj) and not isinstance(obj, dict):
            assert (obj.__doc__ or "").strip(), f"autocompress.{name} has no docstring"
    verbs = ("compress", "search", "teach", "evaluate", "export", "sync", "validate")
    for name in verbs + ("Run", "Policy"):
        assert ">>>" in getattr(ac, name).__doc__, f"autocompress.{name}: no runnable example"


def test_public_names_are_not_shadowed_by_submodules():
    """`autocompress.search` must stay the function even after every submodule is imported (a
    submodule of the same name would replace it in the package namespace)."""
    import importlib
    import pkgutil

    for m in pkgutil.walk_packages(ac.__path__, "autocompress."):
        importlib.import_module(m.name)
    for name in ac.__all__:
        assert not type(getattr(ac, name)).__name__ == "module", f"autocompress.{name} is a module"


def test_errors_carry_their_exit_codes():
    assert [e.exit_code for e in (ac.ConfigError, ac.TeacherError, ac.TrackingError, ac.TrialError)] == [2, 3, 4, 5]
    e = ac.ConfigError("x.yaml: file not found", option="run_dir")
    assert isinstance(e, ac.AutocompressError) and str(e) == "run_dir: x.yaml: file not found"


def test_compress_rejects_bad_input_before_any_work(tmp_path, monkeypatch):
    from autocompress import pipeline

    monkeypatch.setattr(pipeline, "compress_trial", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(ac.ConfigError, match="unknown technique 'prune_typo'"):
        ac.compress(ROOT / "trials" / "cartpole_ppo.yaml", {"prune_typo": {}}, output_dir=tmp_path)
    with pytest.raises(ac.ConfigError, match="not smaller than the teacher"):
        ac.compress(ROOT / "trials" / "cartpole_ppo.yaml", {"distill": {"hidden": [256, 256]}}, output_dir=tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ac.ConfigError) as e:
        ac.compress(ROOT / "trials" / "cartpole_ppo.yaml", {}, output_dir=tmp_path / "f" / "out")
    assert e.value.option == "output_dir"


def test_search_options_are_checked_before_any_work(tmp_path, monkeypatch):
    from autocompress._search import driver

    monkeypatch.setattr(driver, "open_study", lambda *a, **k: pytest.fail("study opened"))
    space = ROOT / "search_spaces" / "cartpole_ppo.yaml"
    with pytest.raises(ac.ConfigError, match="exclude each other"):
        ac.search(space, run_dir=tmp_path / "r", resume=True, join=True)
    with pytest.raises(ac.ConfigError) as e:
        ac.search(space, run_dir=tmp_path / "r", sampler="nope")
    assert e.value.option == "sampler"
    with pytest.raises(ac.ConfigError) as e:
        ac.search(space, run_dir=tmp_path / "r", resume=True)
    assert e.value.option == "resume" and not (tmp_path / "r").exists()
