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


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[st.floats(0, 1, allow_nan=False)] * 3), min_size=1, max_size=6))
def test_hypervolume_matches_monte_carlo_grid(pts):
    p = np.array(pts)
    g = (np.arange(20) + 0.5) / 20
    grid = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    covered = np.zeros(len(grid), bool)
    for q in p:
        covered |= np.all(grid >= q, axis=1)
    # grid cell-centre estimate: error bounded by the boundary cells
    assert hypervolume(p, [1, 1, 1]) == pytest.approx(covered.mean(), abs=3 * 3 / 20)


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
