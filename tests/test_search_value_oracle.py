"""benchmarks.search_value.stop_oracle_seconds: the bound on what stopping trials alone can cut, which the
search-value report gives beside the measured cut (a wrong bound would misstate what a target allows)."""

import pytest

from benchmarks.search_value import stop_oracle_seconds

OBJ = ["return", "latency", "bytes"]


def trial(seconds, ret, lat, size, state="COMPLETE"):
    return {"state": state, "seconds": seconds, "return_ratio": ret, "latency_ratio": lat, "bytes_ratio": size}


def test_the_cheapest_subset_that_reaches_the_level_is_charged():
    from autocompress import pareto

    big = trial(70.0, 1.0, 0.05, 0.02)     # the point that makes the hypervolume
    dominated = trial(3.0, 1.0, 0.99, 0.17)  # feasible, cheap, adds next to nothing
    stopped = trial(45.0, 0.1, 1.0, 0.5, state="PRUNED")
    infeasible = trial(1.0, 0.94, 0.001, 0.001)  # below the constraint 0.95: alone it would reach the level
    level = pareto.normalised_hypervolume([big], OBJ)
    assert pareto.normalised_hypervolume([infeasible], OBJ) >= level
    assert stop_oracle_seconds([stopped, dominated, infeasible, big], level, OBJ, 0.95) == 70.0
    # a level only the two feasible points together reach charges both
    both = pareto.normalised_hypervolume([big, trial(5.0, 1.0, 0.5, 0.001)], OBJ)
    assert stop_oracle_seconds([big, trial(5.0, 1.0, 0.5, 0.001), dominated], both, OBJ, 0.9) == 75.0


def test_a_level_no_feasible_subset_reaches_is_unreachable():
    assert stop_oracle_seconds([trial(10.0, 0.5, 0.1, 0.1)], 0.5, OBJ, 0.9) == pytest.approx(float("inf"))
