"""One latency per compute signature: nets that run the same kernels on the same shapes (and, for sparse
kernels, the same kept weights) share a signature; a search times the first of them and the others take
its figures, so they tie exactly; the teacher timed against itself gives the search's noise floor."""

import numpy as np
import optuna
import pytest
import torch

from autocompress import measure, native
from autocompress.artifact import to_bytes
from autocompress.nets import PolicyNet
from autocompress.results import TrialResult
from autocompress._search.driver import latency_known, share_latency
from test_export import build
from test_measure import corridor_spec, make_corridor
from test_native import require_compiler

HEAD = {"kind": "discrete", "n": 2}


@pytest.fixture(autouse=True)
def cc():
    require_compiler()


def signature(net: PolicyNet, kernels=None, cfg=None) -> str:
    obs = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    data = to_bytes(build(net, obs, cfg) if cfg else net, HEAD)
    return native.NativePolicy.from_bytes(data, kernels).signature


def mlp(hidden, act="tanh", seed=0) -> PolicyNet:
    torch.manual_seed(seed)
    return PolicyNet.mlp(2, hidden, 2, act)


def test_the_signature_follows_the_compute_not_the_weights():
    dense = ["dense"] * 3
    base = signature(mlp([64, 64]), dense)
    assert signature(mlp([64, 64], seed=1), dense) == base                       # other weights, same work
    assert signature(mlp([64, 64]), dense, {"quantize": {"bits": 6}}) == base    # decoded to fp32: same work
    assert signature(mlp([64, 32]), dense) != base                               # another shape
    assert signature(mlp([64, 64], "relu"), dense) != base                       # another activation
    sym8 = {"quantize": {"bits": 8, "symmetric": True}}
    assert signature(mlp([64, 64]), ["dense", "int8", "dense"], sym8) != signature(mlp([64, 64]), dense, sym8)
    csr = ["dense", "csr", "dense"]
    p80 = signature(mlp([64, 64]), csr, {"prune": {"sparsity": 0.8}})
    assert p80 == signature(mlp([64, 64], seed=2), csr, {"prune": {"sparsity": 0.8}})  # same count kept
    assert p80 != signature(mlp([64, 64]), csr, {"prune": {"sparsity": 0.9}})          # fewer kept: less work


def test_a_known_signature_takes_the_recorded_figures_instead_of_being_timed():
    spec = corridor_spec(episodes=3)
    teacher = to_bytes(mlp([64, 64]), HEAD)
    first = measure.measure_artifacts(spec, to_bytes(mlp([16, 16], seed=1), HEAD), teacher, make_corridor)
    assert first.latency_signature and first.latency_from is None and first.latency_ratio < 1
    known = {first.latency_signature: {"trial": 7, "latency_ms": 1e-3, "latency_p95_ms": 2e-3,
                                       "teacher_latency_ms": 4e-3, "latency_ratio": 0.25}}
    again = measure.measure_artifacts(spec, to_bytes(mlp([16, 16], seed=2), HEAD), teacher, make_corridor,
                                      known=known)
    assert again.latency_signature == first.latency_signature and again.latency_from == 7
    assert (again.latency_ms, again.latency_p95_ms, again.teacher_latency_ms, again.latency_ratio) == \
        (1e-3, 2e-3, 4e-3, 0.25)
    other = measure.measure_artifacts(spec, to_bytes(mlp([16, 8]), HEAD), teacher, make_corridor, known=known)
    assert other.latency_signature != first.latency_signature and other.latency_from is None


def test_the_first_trial_of_a_signature_to_finish_sets_its_figures_for_the_study():
    study = optuna.create_study(directions=["maximize"])
    fig = lambda r: {k: r for k in measure.LATENCY_FIELDS}  # noqa: E731
    r1, r2, r3 = (TrialResult(latency_signature=s, **fig(v)) for s, v in (("a", 0.5), ("a", 0.6), ("b", 0.7)))
    share_latency(study, 1, r1)
    share_latency(study, 2, r2)  # timed while trial 1 ran: takes trial 1's figures
    share_latency(study, 3, r3)
    assert r1.latency_ratio == r2.latency_ratio == 0.5 and r2.latency_from == 1 and r1.latency_from is None
    assert r3.latency_ratio == 0.7 and set(latency_known(study)) == {"a", "b"}
    assert latency_known(study)["a"] == {"trial": 1, **fig(0.5)}
    assert study.user_attrs["latency:a"] == {"trial": 1, **fig(0.5)}  # the key as stored
    share_latency(study, 1, r1)  # recorded again (a resumed driver): its own figures, not "from" itself
    assert r1.latency_from is None
    r4 = TrialResult(latency_signature="a", latency_from=1, **fig(0.5))
    share_latency(study, 4, r4)  # took them in its task already
    assert r4.latency_from == 1


def test_the_teacher_timed_against_itself_is_the_noise_floor():
    floor = measure.latency_noise_floor(corridor_spec(episodes=3), to_bytes(mlp([64, 64]), HEAD), make_corridor,
                                        repeats=4)
    assert len(floor["ratios"]) == 4 and floor["repeats"] == 4 and floor["cpu"]
    assert floor["min"] <= floor["median"] <= floor["max"] and 0.5 < floor["min"] and floor["max"] < 2
