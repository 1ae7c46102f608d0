"""Typed search-space entries (autocompress/space_entries.py): each samples within its bounds with a real
Optuna trial under the param names stored studies hold, knows its middle and gentle values, a per-layer
entry expands to one param per layer (per hidden layer where its technique's config says so), and what
a technique sweeps per layer is read from its config class."""

import json

import optuna
import pytest

from autocompress import layer_sensitivity as sens
from autocompress.nets import PolicyNet
from autocompress.space_entries import Choice, Fixed, PerLayer, Range, entry
from autocompress.techniques import PER_LAYER, TECHNIQUES, StructuredConfig
from autocompress.techniques.per_layer import per_layer_fields


def trials(n=40, seed=0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        t = study.ask()
        yield t
        study.tell(t, 0.0)


def test_a_range_samples_within_its_bounds_as_int_or_float():
    ints, floats = entry("quantize", "bits", {"low": 2, "high": 8}), entry("prune", "sparsity", {"low": 0.5, "high": 0.9})
    assert ints == Range(2, 8) and floats == Range(0.5, 0.9)
    for t in trials():
        b, s = ints.sample(t, "quantize.bits"), floats.sample(t, "prune.sparsity")
        assert isinstance(b, int) and 2 <= b <= 8 and isinstance(s, float) and 0.5 <= s <= 0.9
        assert t.distributions["quantize.bits"] == optuna.distributions.IntDistribution(2, 8)
        assert t.distributions["prune.sparsity"] == optuna.distributions.FloatDistribution(0.5, 0.9)
    log = entry("lowrank", "energy", {"low": 0.5, "high": 0.99, "log": True})
    t = next(trials())
    assert 0.5 <= log.sample(t, "lowrank.energy") <= 0.99 and t.distributions["lowrank.energy"].log


def test_a_choice_of_lists_goes_to_optuna_as_json_and_comes_back_as_lists():
    widths = entry("distill", "hidden", {"choices": [[16, 16], [32, 32], [64, 64]]})
    assert isinstance(widths, Choice)
    for t in trials(20):
        v = widths.sample(t, "distill.hidden")
        assert v in widths.choices and t.params["distill.hidden"] == json.dumps(v)
    assert widths.param([32, 32]) == "[32, 32]"


def test_middle_and_gentle_ends():
    assert Range(2, 8).middle() == 5 and Range(0.2, 0.6).middle() == pytest.approx(0.4)
    assert Choice(["ptq", "qat", "lsq"]).middle() == "qat"
    assert Range(2, 8).gentle("high") == 8 and Range(0.5, 0.9).gentle("low") == 0.5
    assert Choice([[16, 16], [64, 64], [32, 32]]).gentle("high") == [64, 64]  # the widest student
    assert Fixed(4).gentle("high") is None and Fixed(4).middle() == 4
    # a per-layer config value as one Optuna param: the nearest the entry holds
    assert Range(2, 8).param({0: 4, 1: 2}) == 3 and Range(2, 8).param(12) == 8
    assert Choice([0.25, 0.5, 0.75]).param([0.5, 0.7]) == 0.5


def test_within_and_the_values_a_sweep_takes():
    assert Range(3, 8).within(3) and not Range(3, 8).within(2)
    assert Range(3, 5).values() == [3, 4, 5]
    assert Range(0.6, 0.92).values([0.5, 0.7, 0.9, 0.95]) == [0.7, 0.9, 0.6, 0.92]
    assert Fixed({0: 8, 2: 4}).values() == [8, 4] and Fixed([8, 4, 8]).within(4) and not Fixed(4).within(8)


def test_a_per_layer_entry_samples_one_param_per_layer():
    bits = entry("quantize", "bits", {"per_layer": {"low": 2, "high": 8, "layers": 3}})
    assert bits == PerLayer(Range(2, 8), "layers", 3)
    t = next(trials())
    values = bits.sample(t, "quantize.bits", bits.count(None, "quantize.bits"))
    assert len(values) == 3 and all(2 <= v <= 8 for v in values)
    assert [k for k in t.params] == ["quantize.bits.0", "quantize.bits.1", "quantize.bits.2"]
    assert bits.count(2, "quantize.bits") == 2  # a distilled student's layers
    assert bits.params("quantize.bits", [4, 9]) == {"quantize.bits.0": 4, "quantize.bits.1": 8}
    # structured.amount is over hidden layers: its config class says so, and the entry counts one fewer
    amount = entry("structured", "amount", {"per_layer": {"choices": [0.25, 0.5], "layers": 3}})
    assert amount.over == "hidden" and amount.count(None, "structured.amount") == 2
    with pytest.raises(Exception, match=r"quantize.bits.per_layer.layers: not known"):
        PerLayer(Range(2, 8)).count(None, "quantize.bits")


@pytest.mark.parametrize("key,p,needle", [
    ("bits", {"lo": 2}, "quantize.bits: a range is"),
    ("bits", {"low": 8, "high": 2}, "quantize.bits: low 8 > high 2"),
    ("bits", {"choices": []}, "quantize.bits: choices must be a non-empty list"),
    ("symmetric", {"per_layer": {"choices": [True]}}, "quantize.symmetric: per_layer is only for"),
    ("bits", {"per_layer": {"low": 2, "high": 8, "layers": 0}}, r"quantize.bits.per_layer.layers: .*int >= 1"),
])
def test_a_malformed_entry_names_its_key(key, p, needle):
    with pytest.raises(ValueError, match=needle):
        entry("quantize", key, p)
    assert entry("quantize", "bits", {0: 8, "2": 4}) == Fixed({0: 8, "2": 4})  # a fixed layer map


def test_what_a_technique_sweeps_comes_from_its_config_class(monkeypatch):
    assert PER_LAYER == {n: next(iter(per_layer_fields(c))) for n, c in TECHNIQUES.items() if per_layer_fields(c)}
    assert PER_LAYER == {"structured": "amount", "prune": "sparsity", "share": "bits", "quantize": "bits"}
    assert sens.DEFAULT_SETTINGS["quantize"] == list(TECHNIQUES["quantize"].sweep)
    assert {n for n, c in TECHNIQUES.items() if c.sweep} == set(PER_LAYER)  # what --help lists as sweepable
    assert sens.gentlest_first("quantize", [2, 8, 4]) == [8, 4, 2]      # QuantizeConfig.gentle: high bits
    assert sens.gentlest_first("prune", [0.9, 0.5]) == [0.5, 0.9]       # PruneConfig.gentle: low sparsity
    net = PolicyNet.mlp(4, [8, 8], 2)
    assert sens.layer_indices(net, "quantize") == [0, 1, 2] and sens.layer_indices(net, "structured") == [0, 1]
    # the direction is the config's declaration, not a table of its own: flip it and the order follows
    monkeypatch.setattr(StructuredConfig, "gentle", {"amount": "high"})
    assert sens.gentlest_first("structured", [0.25, 0.5]) == [0.5, 0.25]
