"""benchmarks.report: docs/BENCHMARKS.md is what the data renders to, a section without its command or commit
is refused, a section whose code changed is marked stale, and the targets' verdicts come from the data."""

import pytest

from benchmarks import mcu, pareto_quality, recipes, report, search_value
from benchmarks.common import DOC

META = {"command": "python -m benchmarks.fake", "commit": "abc1234", "machine": "a test", "date": "2026-12-07"}


def fake(monkeypatch, tmp_path, data: dict, changed: list[str]) -> None:
    section = report.Section("fake", "Fake section", "fake", ("autocompress/fake.py",),
                             lambda d: f"value {d['value']}", lambda d: [report.Target("value ≥ 1", str(d["value"]),
                                                                                       d["value"] >= 1)])
    monkeypatch.setattr(report, "all_sections", lambda: [section])
    monkeypatch.setattr(report, "load", lambda s: data)
    monkeypatch.setattr(report, "changed_files", lambda commit, paths: changed)
    monkeypatch.setattr(report, "LEGACY", tmp_path / "legacy.md")


def test_checked_in_report_is_what_the_data_renders_to():
    assert DOC.read_text() == report.render(), "docs/BENCHMARKS.md is out of date: run python -m benchmarks.report"


@pytest.mark.parametrize("missing", ["command", "commit"])
def test_a_section_without_its_command_or_commit_is_refused(monkeypatch, tmp_path, missing):
    fake(monkeypatch, tmp_path, {"value": 2, "_meta": {"fake": {k: v for k, v in META.items() if k != missing}}}, [])
    with pytest.raises(ValueError, match=rf"docs/data/fake.json: section 'fake' has no {missing} in its _meta"):
        report.render()


def test_a_section_whose_code_changed_since_its_commit_is_stale(monkeypatch, tmp_path):
    fake(monkeypatch, tmp_path, {"value": 2, "_meta": {"fake": META}}, [])
    fresh = report.render()
    assert "`python -m benchmarks.fake` at commit `abc1234`" in fresh and "| value ≥ 1 | 2 | met |" in fresh
    assert "**Stale**" not in fresh and "met, **stale**" not in fresh
    fake(monkeypatch, tmp_path, {"value": 0, "_meta": {"fake": META}}, ["autocompress/fake.py"])
    stale = report.render()
    assert "**Stale**: changed since `abc1234`: `autocompress/fake.py`." in stale
    assert "| value ≥ 1 | 0 | **missed**, **stale** | [Fake section](#fake) |" in stale


def test_a_section_measured_on_a_dirty_tree_is_stale_whatever_git_says(monkeypatch, tmp_path):
    fake(monkeypatch, tmp_path, {"value": 2, "_meta": {"fake": {**META, "commit": "abc1234+dirty"}}}, [])
    assert "**Stale**: changed since `abc1234+dirty`: `autocompress/fake.py`." in report.render()


def test_legacy_sections_are_carried_below_a_heading_that_says_so(monkeypatch, tmp_path):
    fake(monkeypatch, tmp_path, {"value": 2, "_meta": {"fake": META}}, [])
    (tmp_path / "legacy.md").write_text("## Old numbers\n\ntyped by hand\n")
    text = report.render()
    assert text.index("## Fake section") < text.index("## Measured before the generated report") < \
        text.index("### Old numbers\n\ntyped by hand")


def peer(int8_flash: int, emlearn_flash: int) -> dict:
    return {"int8_flash": int8_flash, "emlearn_flash": emlearn_flash, "int8_cycles": 10.0, "emlearn_cycles": 100.0}


def test_mcu_targets_are_judged_from_the_data():
    peers = mcu.peers_targets({"peers": {"4-[32, 32]-tanh": {"cortex-m4f": peer(4416, 8505), "cortex-m0plus":
                                                               peer(4280, 12805)}}})
    assert [t.met for t in peers] == [False, True] and "highest: 4-[32, 32]-tanh m4f" in peers[0].figure
    assert mcu.peers_targets({"peers": {"n": {"cortex-m4f": peer(4092, 8505)}}})[0].met
    shape = {t: {"fp32": 100.0 * k, "int8": 3.0, "int4": 4.0, "macs": 4} for t, k in
             zip(mcu.MCU, (1.0, 0.1, 0.1))}  # M0+ 33x, M4F 3.3x; 0.75 cycles a MAC on the M4F: within 2x
    assert [t.met for t in mcu.int8_targets({"int8": {"s": shape}})] == [True, True, True]
    shape["cortex-m4f"]["int8"] = shape["cortex-m4f"]["int4"] = 5.0  # 2x; 1.25 cycles a MAC: 2.5x the bound
    assert [t.met for t in mcu.int8_targets({"int8": {"s": shape}})] == [True, False, False]
    found = {"trial": 3, "flash": 2912, "ram": 396, "cycle_ratio": 1 / 3279, "heldout_ratio": 0.99, "fresh_ratio": 1.0}
    assert mcu.search_targets("s", {"s": {"cortex-m0plus": found}})[0].met
    assert not mcu.search_targets("s", {"s": {"cortex-m0plus": {**found, "flash": 4097}}})[0].met
    budget = next(k for k, (_, c) in mcu.SEARCHES.items() if c)  # either M0+ search may meet it; the M4F's does not
    both = mcu.search_targets("s", {"s": {"cortex-m0plus": {**found, "ram": 1025}, budget: found}})[0]
    assert both.met and both.figure.startswith(budget)
    assert not mcu.search_targets("s", {"s": {"cortex-m0plus": {**found, "ram": 1025}, "cortex-m4f": found}})[0].met
    none = mcu.search_targets("s", {"s": {"cortex-m0plus": {"closest": {"heldout_ratio": 0.93}}}})[0]
    assert not none.met and "closest 0.930" in none.figure
    rows = [{"trial": 3, "config": {"q": 8}, "flash": 4096, "ram": 652, "heldout_ratio": 0.917},
            {"trial": 4, "config": {"s": 6}, "flash": 10849, "ram": 685, "heldout_ratio": 0.966}]
    short = mcu.search_targets("s", {"s": {"cortex-m0plus": {"closest": {}}, budget: {"rows": rows}}})[0]
    assert not short.met and "closest: trial 3" in short.figure and "held-out 0.917" in short.figure


def test_a_legacy_block_that_a_rendered_section_replaces_is_dropped(monkeypatch, tmp_path):
    fake(monkeypatch, tmp_path, {"value": 2, "_meta": {"fake": META}}, [])
    (tmp_path / "legacy.md").write_text("<!-- fake -->\n## Fake, old figures\n<!-- /fake -->\n\n## Kept\n")
    text = report.render()
    assert "old figures" not in text and "### Kept" in text


def test_pareto_quality_chooses_on_set_a_and_reports_on_set_b():
    rows = {"1": {"techniques": ["distill"], "ratio_a": 0.99, "bytes_ratio": 0.01, "latency_ratio": 0.3, "front": True},
            "2": {"techniques": ["prune"], "ratio_a": 0.97, "bytes_ratio": 0.05, "latency_ratio": 0.2, "front": True},
            "3": {"techniques": ["share"], "ratio_a": 0.99, "bytes_ratio": 0.5, "latency_ratio": 0.1, "front": True},
            "4": {"techniques": ["quantize"], "ratio_a": 0.80, "bytes_ratio": 0.01, "latency_ratio": 0.1, "front": True}}
    assert pareto_quality.choose(rows, 0.95, 10) == "2"  # 3 too big, 4 too poor on A: the fastest of 1, 2
    data = {"env": "E", "algorithm": "A", "min_ratio": 0.95, "min_shrink": 10, "rows": rows, "chosen": "2",
            "chosen_b": {"return_ratio": 0.90, "return_mean": 90.0, "teacher_return_mean": 100.0}}
    t = pareto_quality.targets("s", data)[0]
    assert not t.met and "0.900 on set B" in t.figure  # 0.97 on A, where it was chosen, does not count
    assert pareto_quality.targets("s", {**data, "chosen_b": {**data["chosen_b"], "return_ratio": 0.96}})[0].met


def test_a_function_level_entry_is_stale_only_where_that_definition_changed(tmp_path, monkeypatch):
    from benchmarks import common

    old = "X = 1\n\n\ndef measure():\n    return X\n\n\ndef render():\n    return 'a'\n"
    monkeypatch.setattr(common, "_source", lambda path, commit: old if commit else old.replace("'a'", "'b'"))
    entries = ["bench.py::measure", "bench.py::X", "bench.py::render", "bench.py::gone"]
    assert common.changed_files("abc", entries) == ["bench.py::render"]


def test_mcu_reports_its_fresh_episodes_on_set_b():
    from benchmarks.common import SET_B_SEED

    assert mcu.FRESH_SEED == SET_B_SEED  # written as a literal there: its measuring code predates the constant


def test_the_imported_searches_choose_on_set_a_and_report_on_set_b():
    from types import SimpleNamespace

    from benchmarks.common import A_SEED, SET_B_SEED, choose_on_a_report_on_b

    class Run:  # a search of three front points whose returns differ between the episode sets
        ratios = {A_SEED: {1: 0.99, 2: 0.96, 3: 0.80}, SET_B_SEED: {1: 0.70, 2: 0.91, 3: 1.00}}

        def front(self):
            return [SimpleNamespace(trial=t, bytes=b, latency_ratio=0.5) for t, b in ((1, 900), (2, 300), (3, 100))]

        def reevaluate(self, trials=None, episodes=0, seed=0):
            return {"teacher": {"return_mean": 100.0},
                    **{t: {"return_ratio": r} for t, r in self.ratios[seed].items() if trials is None or t in trials}}

    out = choose_on_a_report_on_b(Run(), episodes=10)
    assert out["best"] == 2  # 3 is the smallest but fails on A; 2 is smaller than 1
    assert out["on_b"]["return_ratio"] == 0.91 and out["on_a"][2]["return_ratio"] == 0.96


def logged_run(teacher_latency: float | None, latency: float = 0.5) -> dict:
    """A search run's data: the teacher as-is (timed against itself) and one feasible student."""
    trials = [{"trial": 1, "state": "COMPLETE", "config": {"distill": {}}, "baseline": True, "return_ratio": 1.0,
               "latency_ratio": latency, "bytes_ratio": 0.1}]
    if teacher_latency is not None:
        trials.insert(0, {"trial": 0, "state": "COMPLETE", "config": {}, "baseline": True, "return_ratio": 1.0,
                          "latency_ratio": teacher_latency, "bytes_ratio": 1.0})
    return {"trials": trials}


def test_search_value_states_the_teacher_vs_itself_spread_and_a_difference_inside_it():
    space = {"constraints": {"min_return_ratio": 0.9}, "objectives": ["return", "latency", "bytes"]}
    nz = search_value.noise([logged_run(0.9), logged_run(1.1), {"curve": []}], space)  # the last kept no log
    assert (nz["lo"], nz["hi"], nz["n"], nz["of"]) == (0.9, 1.1, 2, 3) and nz["width"] > 0
    words = search_value.noise_words(nz, {"default": [0.5], "random": [0.5 - nz["width"] / 2],
                                          "no early stop": [0.5 - 2 * nz["width"]]})
    assert "0.900-1.100 over 2 runs (of 3; the others kept no trial log)" in words
    assert "random -" in words and "(inside the noise), no early stop" in words and words.endswith("(outside the noise).")
    assert "not in the data" in search_value.noise_words(search_value.noise([{"curve": []}], space), {})
    exact = search_value.noise([logged_run(1.0), logged_run(1.0)], space)
    assert "none in latency" in search_value.noise_words(exact, {"default": [0.5]})


def test_search_value_says_which_arms_were_not_interleaved():
    runs = {f"{arm}/{s}": {} for s in range(3) for arm in ("no early stop", "random")}
    runs.update({f"default/{s}": {} for s in range(3)})
    words = search_value.order_words(runs, ["default", "no early stop", "random"])
    assert "no early stop and random interleaved per seed (seeds 0-2), then default (seeds 0-2)" in words
    assert "default ran in separate rounds" in words
    mixed = {f"{arm}/{s}": {} for s in range(2) for arm in ("default", "random")}
    assert "Not all interleaved" not in search_value.order_words(mixed, ["default", "random"])


def test_recipes_without_their_front_in_the_data_judge_no_coverage():
    rec = {"return_ratio": 1.0, "latency_ratio": 1.0, "bytes_ratio": 0.3}
    text, t = recipes.render({"int8 PTQ": rec}), recipes.targets({"int8 PTQ": rec})[0]
    assert "not judged here (no front in the data)" in text and t.met is None
    front = [{"trial": 3, "config": {}, "heldout": 0.99, "bytes": 0.01, "latency": 1.04}]
    search = {"trials": 2, "wall_s": 1.0, "episodes": 10, "heldout_seed": 1, "runtime": "c", "teacher_return": 1.0,
              "front": front}
    assert recipes.targets({"int8 PTQ": rec, "search": search})[0].met  # latency within 1.05x, smaller, ≥ 0.95
    assert "covered by trial 3" in recipes.render({"int8 PTQ": rec, "search": search})

def floor_data(c_over_numpy: float) -> dict:
    us = {"c": 8.0, "runtime": 16.4, "numpy": 15.3, "torch": 82.3, "onnxruntime": 26.9}
    small = {"c": 15.3 * c_over_numpy, "runtime": 16.1, "numpy": 15.3, "torch": 107.7, "onnxruntime": 28.3,
             "teacher_c": 8.0, "teacher_runtime": 16.4}
    return {"calls": 5000, "nets": {"teacher fp32 [256,256]": us, "distilled-shape [32,32]": small}}


def test_latency_floor_renders_its_figures_and_judges_its_target_from_the_data():
    from benchmarks import latency_floor

    text = latency_floor.render(floor_data(0.32))
    assert "| teacher fp32 [256,256] | 8.00 | 16.40 | 15.30 | 82.30 | 26.90 | 1.07 | 0.52 | 8.00 | 1.00x | 1.00x |" in text
    assert "| distilled-shape [32,32] | 4.90 | 16.10 |" in text and "1.63x |" in text
    t = latency_floor.targets(floor_data(0.32))[0]
    assert t.met and t.figure.startswith("C runtime 0.32-0.52x of bare numpy; numpy runtime 1.05-1.07x")
    assert not latency_floor.targets(floor_data(1.6))[0].met  # a C call 1.6x the bare forward misses it


def test_scaling_renders_its_stages_and_judges_both_targets_from_the_data():
    from benchmarks import scaling

    stages = {scaling.WALL: [20.0, 21.0], "inside the trial task": [20.0, 21.0], "rllib_train": [19.0, 18.6],
              "measure": [0.5, 0.6]}
    data = {"trials": 7, "phase_s": {"1": 124.0, "2": 62.0}, "ray_init_s": 2.5, "teacher_task_s": None,
            "stages": stages}
    text = scaling.render(data)
    assert "124 s vs 62 s of trial phase → **2.00x** (target ≥ 1.7x: met)" in text
    assert "**8.3%** (target ≤ 10%: met)" in text and "teacher load) nan s" in text
    assert "| rllib_train | 18.80 | 92% |" in text and "mean over the 2 technique trials" in text
    assert [t.met for t in scaling.targets(data)] == [True, True]
    slow = {**data, "phase_s": {"1": 124.0, "2": 100.0}, "stages": {**stages, "rllib_train": [15.0, 15.0]}}
    assert [t.met for t in scaling.targets(slow)] == [False, False]


def test_lsq_renders_medians_over_seeds_and_reports_no_verdict():
    from benchmarks import lsq

    runs = lambda *ratios: [{"return_mean": -150.0 - 10 * (1 - r), "return_ratio": r, "teacher_return_mean": -152.7}
                            for r in ratios]  # noqa: E731
    data = {"seeds": [0, 1, 2], "bits": [2], "episodes": 20, "iterations": 2, "training_intensity": 64.0,
            "wall_s": 1296.0,
            "results": {"qat": {"2": runs(0.983, 0.977, 0.989)}, "lsq": {"2": runs(0.994, 0.989, 0.988)}}}
    text = lsq.render(data)
    assert "| 2 | -150.2 [-150.2, -150.1] | 0.983 [0.977, 0.989] |" in text and "+0.011, +0.012, -0.001 |" in text
    assert "(one SGD update of 256 per 4 steps)" in text and "reset seeds 50000..50019" in text
    t = lsq.targets(data)[0]
    assert t.met is None and "2 bits 0.989 vs 0.983" in t.figure and "LSQ better at 2 bits" in t.figure


def test_a_section_appears_only_once_its_data_file_exists(monkeypatch, tmp_path):
    from benchmarks import common, kernels

    monkeypatch.setattr(common, "DATA", tmp_path)
    assert kernels.sections() == []
    (tmp_path / "kernels.json").write_text("{}")
    assert [(s.name, s.data) for s in kernels.sections()] == [("kernels", "kernels")]  # the legacy block's name


def test_results_written_elsewhere_are_printed_not_rendered_into_the_report(monkeypatch, tmp_path, capsys):
    import json

    from benchmarks import common

    monkeypatch.setattr(common, "record_meta", lambda store, section, command, measures:
                        store.setdefault("_meta", {}).setdefault(section, {"command": command}))
    monkeypatch.setattr(report, "main", lambda argv: pytest.fail("the report was re-rendered"))
    out = tmp_path / "trial" / "x.json"
    common.save_results(out, "x", {"value": 3}, "python -m benchmarks.x", (), lambda d: f"value {d['value']}")
    assert json.loads(out.read_text()) == {"value": 3, "_meta": {"x": {"command": "python -m benchmarks.x"}}}
    assert "value 3" in capsys.readouterr().out


def test_md_table():
    from benchmarks.common import md_table

    assert md_table(["a", "b"], [[1, "x"]]) == ["| a | b |", "|---|---|", "| 1 | x |"]
