import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autocompress.pareto import (NothingQualifies, dominates, front, hypervolume, non_dominated,
                                 nondominated_sort, normalised_hypervolume, pick)


def brute_front(p):
    return np.array([not any(dominates(p[j], p[i]) for j in range(len(p)) if j != i) for i in range(len(p))])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(*[st.integers(0, 4)] * 3), min_size=1, max_size=25))
def test_front_matches_brute_force_with_ties_and_duplicates(pts):
    p = np.array(pts, dtype=float)
    assert np.array_equal(non_dominated(p), brute_front(p))
    ranks = nondominated_sort(p)
    for i, j in itertools.permutations(range(len(p)), 2):
        if dominates(p[i], p[j]):
            assert ranks[i] < ranks[j]


def test_duplicates_both_stay_on_front():
    p = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 3.0]])
    assert non_dominated(p).tolist() == [True, True, False]


def test_hypervolume_known_values():
    # 2-D staircase: (1,3), (2,2), (3,1) with ref (4,4): 3 + 2 + 1 = 6
    assert hypervolume(np.array([[1, 3], [2, 2], [3, 1]]), [4, 4]) == pytest.approx(6.0)
    # 3-D: one point at origin, ref (1,2,3) -> box 6; two disjoint-ish boxes by inclusion-exclusion
    assert hypervolume(np.array([[0, 0, 0]]), [1, 2, 3]) == pytest.approx(6.0)
    p = np.array([[0, 1, 1], [1, 0, 1]])
    # boxes [0,2]x[1,2]x[1,2] = 2 and [1,2]x[0,2]x[1,2] = 2, overlap [1,2]x[1,2]x[1,2] = 1 -> 3
    assert hypervolume(p, [2, 2, 2]) == pytest.approx(3.0)
    assert hypervolume(np.array([[5, 5]]), [4, 4]) == 0.0  # outside the reference box


def test_hypervolume_more_hand_computed_values():
    # 3-D, three mutually non-dominated boxes against ref (4,4,4), by inclusion-exclusion:
    # |A|=3*2*1=6, |B|=2*3*2=12, |C|=1*1*3=3; |AB|=2*2*1=4, |AC|=1*1*1=1, |BC|=1*1*2=2, |ABC|=1 -> 15
    p = np.array([[1, 2, 3], [2, 1, 2], [3, 3, 1]])
    assert hypervolume(p, [4, 4, 4]) == pytest.approx(15.0, abs=1e-12)
    # a dominated point and a point on the reference boundary add nothing
    assert hypervolume(np.vstack([p, [[3, 3, 3], [0, 0, 4]]]), [4, 4, 4]) == pytest.approx(15.0, abs=1e-12)
    # 2-D with non-integer coordinates: (0.5,2.5) and (1.5,1) vs ref (3,3): 2.5*0.5 + 1.5*2 - 1.5*0.5 = 3.5
    assert hypervolume(np.array([[0.5, 2.5], [1.5, 1.0]]), [3, 3]) == pytest.approx(3.5, abs=1e-12)
    # 1-D and a 4-D box
    assert hypervolume(np.array([[2.0], [3.0]]), [5]) == pytest.approx(3.0, abs=1e-12)
    assert hypervolume(np.array([[0, 1, 2, 3]]), [4, 4, 4, 4]) == pytest.approx(4 * 3 * 2 * 1, abs=1e-12)


def test_normalised_hypervolume_hand_computed():
    # to_min(RATIOS): (-return_ratio, latency_ratio, bytes_ratio), ref (0, 1, 1)
    a = {"return_ratio": 0.8, "latency_ratio": 0.5, "bytes_ratio": 0.25}
    b = {"return_ratio": 0.5, "latency_ratio": 0.25, "bytes_ratio": 0.5}
    # |a| = 0.8*0.5*0.75 = 0.3, |b| = 0.5*0.75*0.5 = 0.1875, |a∩b| = 0.5*0.5*0.5 = 0.125
    assert normalised_hypervolume([a, b], ["return", "latency", "bytes"]) == pytest.approx(0.3625, abs=1e-12)
    # only return and bytes: 0.8*0.75 + 0.5*0.5 - 0.5*0.5 = 0.6
    assert normalised_hypervolume([a, b], ["return", "bytes"]) == pytest.approx(0.6, abs=1e-12)
    # a row worse than the teacher in one ratio adds nothing
    assert normalised_hypervolume([{**a, "bytes_ratio": 1.5}], ["return", "latency", "bytes"]) == 0.0
    assert normalised_hypervolume([], ["return", "latency", "bytes"]) == 0.0


def _cells(n: int, dim: int) -> np.ndarray:
    """Integer lower corners of the n^dim unit cells of [0, n]^dim."""
    return np.stack(np.meshgrid(*[np.arange(n)] * dim, indexing="ij"), -1).reshape(-1, dim)


@settings(max_examples=120, deadline=None)
@given(st.integers(2, 4).flatmap(lambda d: st.lists(st.tuples(*[st.integers(0, 6)] * d), min_size=1, max_size=7)))
def test_hypervolume_equals_exact_lattice_count(pts):
    # Points on the integer lattice, ref (6, ..., 6): the dominated region is a union of whole unit
    # cells, so counting the cells whose centre is dominated gives the volume exactly.
    p = np.array(pts, dtype=float)
    n, dim = 6, p.shape[1]
    centres = _cells(n, dim) + 0.5
    covered = np.zeros(len(centres), bool)
    for q in p:
        covered |= np.all(centres >= q, axis=1)
    assert hypervolume(p, [n] * dim) == pytest.approx(float(covered.sum()), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[st.floats(0, 1, allow_nan=False)] * 3), min_size=1, max_size=6))
def test_hypervolume_within_grid_bounds(pts):
    # Off the lattice, a grid of m^3 cells brackets the volume: cells lying wholly inside some
    # point's box are a lower bound, cells meeting some box with positive volume an upper bound.
    # The region is upward closed, so along each diagonal chain of cells (+1,+1,+1) at most one cell
    # is partly covered: at most m^3 - (m-1)^3 < 3*m^2 cells, so the bracket is under 3/m wide.
    p = np.array(pts)
    m = 24
    lo = _cells(m, 3) / m
    hi = lo + 1.0 / m
    inside = np.zeros(len(lo), bool)
    meets = np.zeros(len(lo), bool)
    for q in p:
        inside |= np.all(lo >= q, axis=1)
        meets |= np.all(hi > q, axis=1)
    lower, upper = inside.mean(), meets.mean()
    assert upper - lower < 3 / m
    hv = hypervolume(p, [1, 1, 1])
    assert lower - 1e-12 <= hv <= upper + 1e-12


def row(t, ret, lat, b, rr=None):
    return {"trial": t, "return_mean": ret, "latency_ms": lat, "bytes": b,
            "return_ratio": rr if rr is not None else ret / 500, "latency_ratio": lat / 0.01, "bytes_ratio": b / 1000}


ROWS = [row(0, 500, 0.010, 1000), row(1, 490, 0.006, 300), row(2, 400, 0.004, 100), row(3, 480, 0.007, 350),
        row(4, 500, 0.009, 120)]


def test_front_of_rows():
    assert [r["trial"] for r in front(ROWS, ["return", "latency", "bytes"])] == [1, 2, 4]  # 4 dominates the teacher-like 0, 1 dominates 3
    assert [r["trial"] for r in front(ROWS, ["return", "bytes"])] == [2, 4]


def test_normalised_hypervolume_grows_with_better_points():
    base = normalised_hypervolume(ROWS[:1], ["return", "latency", "bytes"])
    more = normalised_hypervolume(ROWS, ["return", "latency", "bytes"])
    assert base == 0.0 and 0 < more <= 1.0


def test_pick_respects_every_constraint():
    assert pick(ROWS, min_return_ratio=0.95, minimize="latency")["trial"] == 1
    assert pick(ROWS, min_return_ratio=0.95, minimize="bytes")["trial"] == 4
    assert pick(ROWS, min_return_ratio=0.7, minimize="latency")["trial"] == 2
    assert pick(ROWS, min_return_ratio=0.95, minimize="latency", max_bytes=200)["trial"] == 4
    assert pick(ROWS, min_return_ratio=0.9, minimize="bytes", max_latency_ms=0.0065)["trial"] == 1


def test_pick_says_when_nothing_qualifies():
    with pytest.raises(NothingQualifies) as e:
        pick(ROWS, min_return_ratio=0.99, minimize="latency", max_latency_ms=0.005)
    assert "return_ratio >= 0.99: met by 2" in str(e.value) and "latency_ms <= 0.005: met by 1" in str(e.value)


def test_pick_excludes_each_failing_constraint_at_its_bound():
    rows = [row(0, 450, 0.001, 900, rr=0.90),   # fastest, but return too low
            row(1, 480, 0.002, 800, rr=0.96),   # next fastest, too big for max_bytes=500
            row(2, 490, 0.004, 500, rr=0.98),   # exactly at max_bytes: meets it
            row(3, 495, 0.003, 501, rr=0.99)]   # one byte over
    assert pick(rows, min_return_ratio=0.95)["trial"] == 1  # default minimize: latency
    assert pick(rows, min_return_ratio=0.90)["trial"] == 0  # ratio at the bound meets it
    assert pick(rows, min_return_ratio=0.95, max_bytes=500)["trial"] == 2
    assert pick(rows, min_return_ratio=0.0, minimize="bytes")["trial"] == 2
    assert pick(rows, min_return_ratio=0.0, minimize="bytes", max_latency_ms=0.003)["trial"] == 3
    assert pick(rows, min_return_ratio=0.0, minimize="bytes", max_latency_ms=0.0029)["trial"] == 1
    # the default min_return_ratio (0) still drops a trial worse than random
    assert pick([row(0, -5, 0.001, 10, rr=-0.1), row(1, 5, 0.002, 20, rr=0.1)])["trial"] == 1


def test_pick_constrains_flash_and_ram_and_never_counts_an_unmeasured_one():
    rows = [{**row(0, 490, 0.001, 900, rr=0.99), "flash": 5000, "ram": 400},
            {**row(1, 490, 0.002, 800, rr=0.99), "flash": 4096, "ram": 1200},
            {**row(2, 490, 0.003, 700, rr=0.99), "flash": 4096, "ram": 1024},
            {**row(3, 490, 0.0001, 10, rr=0.99), "flash": None, "ram": None}]  # a host trial: not measured
    assert pick(rows, max_flash=4096)["trial"] == 1
    assert pick(rows, max_flash=4096, max_ram=1024)["trial"] == 2
    with pytest.raises(NothingQualifies, match="flash <= 4000: met by 0"):
        pick(rows, max_flash=4000)


def test_pick_tie_breaks():
    # same latency: fewer bytes wins (over a higher return); same latency and bytes: higher return wins
    rows = [row(0, 450, 0.002, 300, rr=1), row(1, 400, 0.002, 200, rr=1), row(2, 420, 0.002, 200, rr=1),
            row(3, 500, 0.003, 100, rr=1)]
    assert pick(rows, minimize="latency")["trial"] == 2
    assert pick(rows[:2], minimize="latency")["trial"] == 1
    # minimize bytes: same bytes -> lower latency wins (over a higher return), then higher return
    rows = [row(0, 450, 0.003, 100, rr=1), row(1, 400, 0.002, 100, rr=1), row(2, 420, 0.002, 100, rr=1),
            row(3, 500, 0.001, 200, rr=1)]
    assert pick(rows, minimize="bytes")["trial"] == 2
    assert pick(list(reversed(rows)), minimize="bytes")["trial"] == 2  # not by order
    assert pick(rows[:2], minimize="bytes")["trial"] == 1


def test_pick_rejects_unknown_objective():
    with pytest.raises(ValueError, match="minimize"):
        pick(ROWS, minimize="return")


def test_nothing_qualifies_counts_every_constraint():
    with pytest.raises(NothingQualifies) as e:
        pick(ROWS, min_return_ratio=0.97, minimize="bytes", max_bytes=150, max_latency_ms=0.0065)
    msg = str(e.value)
    # rr: 1.0, 0.98, 0.8, 0.96, 1.0; bytes: 1000, 300, 100, 350, 120; latency: .010 .006 .004 .007 .009
    assert "(5 completed trials)" in msg
    assert "return_ratio >= 0.97: met by 3" in msg
    assert "bytes <= 150: met by 2" in msg
    assert "latency_ms <= 0.0065: met by 2" in msg
    # constraints not given are not listed
    with pytest.raises(NothingQualifies) as e:
        pick(ROWS, min_return_ratio=2.0)
    assert "met by 0" in str(e.value) and "bytes <=" not in str(e.value) and "latency_ms <=" not in str(e.value)
    with pytest.raises(NothingQualifies, match=r"\(0 completed trials\)"):
        pick([], min_return_ratio=0.0)


# -- the search's read side: a real in-memory Optuna study ---------------------------------------------------

OBJ3 = ["return", "latency", "bytes"]


def _study(trials):
    """trials: (return_mean, latency_ms, bytes, {constraint: value}) -> COMPLETE trials; None -> a FAIL trial."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for spec in trials:
        t = study.ask()
        if spec is None:
            study.tell(t, state=TrialState.FAIL)
            continue
        ret, lat, b, cons = spec
        t.set_user_attr("config", {"prune": {"sparsity": t.number / 10}})
        t.set_user_attr("result", {"return_mean": ret, "return_std": 0.0, "return_ratio": ret / 500,
                                   "latency_ms": lat, "latency_ratio": lat / 0.01, "bytes": b,
                                   "bytes_ratio": b / 1000, "n_params": b // 4,
                                   "artifact": f"trials/{t.number}/policy.acz"})
        for k, v in cons.items():
            t.set_constraint(k, v)
        study.tell(t, [ret, lat, b])
    return study


def test_current_front_is_over_feasible_trials_when_any_is_feasible():
    from autocompress._search.results import current_front, rows

    study = _study([
        (500, 0.010, 1000, {"min_return_ratio": -0.05}),                 # 0 feasible, on the feasible front
        (450, 0.005, 500, {"min_return_ratio": 0.0, "max_bytes": -1}),  # 1 feasible (0 is feasible)
        (499, 0.001, 100, {"min_return_ratio": -0.05, "max_bytes": 3}),  # 2 infeasible: dominates every trial
        (400, 0.010, 1000, {"min_return_ratio": -0.01}),                 # 3 feasible, dominated by 0
        None,                                                           # 4 FAIL: not a row
        (300, 0.005, 600, {"max_latency_ms": 0.5}),                      # 5 infeasible, dominated by 1
    ])
    rs = rows(study)
    assert [r["trial"] for r in rs] == [0, 1, 2, 3, 5]
    assert [r["feasible"] for r in rs] == [True, True, False, True, False]
    got = current_front(study, OBJ3)
    assert [r["trial"] for r in got] == [0, 1]
    assert all(r["feasible"] for r in got)
    assert got[1]["config"] == {"prune": {"sparsity": 0.1}} and got[1]["bytes"] == 500
    assert [r["trial"] for r in current_front(study, ["return"])] == [0]
    assert [r["trial"] for r in current_front(study, ["bytes"])] == [1]


def test_current_front_falls_back_to_all_trials_when_none_is_feasible():
    from autocompress._search.results import current_front

    study = _study([
        (500, 0.010, 1000, {"min_return_ratio": 0.01}),
        (499, 0.001, 100, {"max_bytes": 3}),
        (400, 0.002, 100, {"max_bytes": 2, "min_return_ratio": -1}),  # dominated by 1
        (300, 0.0005, 900, {"max_latency_ms": 0.1}),
    ])
    assert [r["trial"] for r in current_front(study, OBJ3)] == [0, 1, 3]
    assert current_front(_study([]), OBJ3) == []


def _run(study):
    from pathlib import Path

    import autocompress

    from autocompress.config import load_trial_spec

    run = autocompress.Run(run_dir=Path("x"), study=study, state={"objectives": OBJ3})
    # the choice alone: no fresh episodes to report it on (tests/test_heldout.py covers those)
    spec = load_trial_spec(Path(__file__).resolve().parents[1] / "trials" / "cartpole_ppo.yaml")
    run.trial_spec = lambda: spec.updated({"eval": {"fresh_episodes": 0}})
    return run


def test_run_pick_and_front_on_a_study():
    study = _study([
        (500, 0.010, 1000, {"min_return_ratio": -0.05}),
        (480, 0.004, 500, {"min_return_ratio": -0.01}),
        (300, 0.001, 100, {"min_return_ratio": 0.3}),  # infeasible for the search, but pick has its own bounds
    ])
    run = _run(study)
    assert [r.trial for r in run.front()] == [0, 1]
    best = run.pick(min_return_ratio=0.95)
    assert (best.trial, best.bytes, best.config) == (1, 500, {"prune": {"sparsity": 0.1}})
    assert run.pick(min_return_ratio=0.5).trial == 2
    assert run.pick(min_return_ratio=0.95, max_latency_ms=0.005, minimize="bytes").trial == 1
    assert run.pick(min_return_ratio=0.0, max_bytes=100).trial == 2


def test_run_pick_errors_are_config_errors():
    import autocompress

    run = _run(_study([(500, 0.010, 1000, {}), (480, 0.004, 500, {})]))
    with pytest.raises(autocompress.ConfigError) as e:
        run.pick(min_return_ratio=0.97, max_bytes=600)
    assert e.value.option is None and not isinstance(e.value, NothingQualifies)
    assert "return_ratio >= 0.97: met by 1" in str(e.value) and "bytes <= 600: met by 1" in str(e.value)
    assert "(2 completed trials)" in str(e.value)
    with pytest.raises(autocompress.ConfigError) as e:
        run.pick(minimize="speed")
    assert e.value.option == "minimize" and "speed" in str(e.value)
    with pytest.raises(autocompress.ConfigError) as e:
        run.pick(min_return_ratio=float("nan"))
    assert e.value.option == "min_return_ratio"
    with pytest.raises(autocompress.ConfigError) as e:
        run.pick(max_bytes=-1)
    assert e.value.option == "max_bytes"
