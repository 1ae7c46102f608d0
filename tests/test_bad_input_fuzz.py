"""Property-based: any mutation of a valid YAML gives either a valid object or one ConfigError
naming a key, never a traceback from deeper down."""

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autocompress.config import CompressConfig, TrialSpec, parse
from autocompress.errors import ConfigError
from autocompress.space import SearchSpace, check_space

ROOT = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((ROOT / "trials" / "cartpole_ppo.yaml").read_text())
SPACE = yaml.safe_load((ROOT / "search_spaces" / "cartpole_ppo.yaml").read_text())
COMBO = yaml.safe_load((ROOT / "configs" / "combo.yaml").read_text())

junk = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


def paths(d, prefix=()):
    for k, v in d.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from paths(v, prefix + (k,))


def mutate(doc: dict, path: tuple, value, delete: bool) -> dict:
    out = yaml.safe_load(yaml.safe_dump(doc))
    node = out
    for k in path[:-1]:
        node = node[k]
    if delete:
        node.pop(path[-1])
    else:
        node[path[-1]] = value
    return out


def mutations(doc):
    return st.tuples(st.sampled_from(sorted(paths(doc), key=str)), junk, st.booleans())


def check(model, doc, extra=None):
    try:
        obj = parse(model, doc, "x.yaml")
        if extra:
            extra(obj)
    except ConfigError as e:
        assert str(e).startswith("x.yaml") or "x.yaml" in str(e)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations(SPEC))
def test_trial_spec_mutations(m):
    check(TrialSpec, mutate(SPEC, *m))


@settings(max_examples=150, deadline=None)
@given(mutations(COMBO))
def test_compress_config_mutations(m):
    spec = parse(TrialSpec, SPEC, "spec.yaml")
    check(CompressConfig, mutate(COMBO, *m), lambda c: c.check_against(spec, "x.yaml"))


@settings(max_examples=150, deadline=None)
@given(mutations(SPACE))
def test_search_space_mutations(m):
    spec = parse(TrialSpec, SPEC, "spec.yaml")
    check(SearchSpace, mutate(SPACE, *m), lambda s: check_space(s, spec, "x.yaml"))
