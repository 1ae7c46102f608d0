"""A search space's entry for one setting, typed: the YAML's nested dicts are read into these once,
when the space is validated (`entry`), and everything that reads a space asks them (sampling, the
baselines and stacks, checking a space against its trial spec, the sensitivity stage's sweep and
guided configs):

    Fixed(value)               anything else: a fixed value (a scalar, a list per layer, a map {layer: value})
    Range(low, high, log)      {low, high[, log]}: sampled as ints when both ends are ints
    Choice(choices)            {choices: [...]}
    PerLayer(each, over, layers)  {per_layer: {<a range or a choice>[, layers]}}: one param per layer

Values in and out of an entry are config values (a student's widths are lists). Optuna categorical
values must be scalars, so a choice of lists goes to Optuna as JSON text: `param` gives the Optuna
param value that stands for a config value, `sample` decodes what Optuna gave.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Union

from autocompress.errors import ConfigError
from autocompress.techniques import TECHNIQUES
from autocompress.techniques.per_layer import layer_index, over_count, per_layer_fields

End = Literal["high", "low"]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def _mean_of_layers(v: Any) -> Any:
    """One number standing for a per-layer list or map of numbers (their mean); other values as given."""
    values = list(v.values()) if isinstance(v, dict) else v
    if isinstance(values, list) and values and all(isinstance(x, (int, float)) for x in values):
        return sum(values) / len(values)
    return v


@dataclass(frozen=True)
class Fixed:
    """A setting the space fixes: no Optuna param."""

    value: Any
    sampled: ClassVar[bool] = False

    def sample(self, trial, name: str) -> Any:
        return self.value

    def middle(self) -> Any:
        return self.value

    def gentle(self, end: End) -> Any:
        return None  # nothing to move: a stack takes a fixed setting as it is

    def ends(self) -> list:
        return [self.value]

    def values(self, default: list | tuple = ()) -> list:
        """Each layer's value (a list's items, a map's values) or the one value."""
        v = self.value
        return list(v.values()) if isinstance(v, dict) else list(v) if isinstance(v, list) else [v]

    def within(self, v: Any) -> bool:
        return v in self.values()


@dataclass(frozen=True)
class Range:
    """{low, high[, log]}: an int range when both ends are ints, else a float range."""

    low: int | float
    high: int | float
    log: bool = False
    sampled: ClassVar[bool] = True

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)

    def sample(self, trial, name: str) -> int | float:
        if self.is_int:
            return trial.suggest_int(name, self.low, self.high, log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)

    def middle(self) -> int | float:
        return (self.low + self.high) // 2 if self.is_int else (self.low + self.high) / 2

    def gentle(self, end: End) -> int | float:
        return self.high if end == "high" else self.low

    def ends(self) -> list:
        return [self.low, self.high]

    def values(self, default: list | tuple = ()) -> list:
        """Every int of an int range; of a float range, `default`'s values inside it and its ends."""
        if self.is_int:
            return list(range(self.low, self.high + 1))
        return [v for v in default if self.low <= v <= self.high] + [float(self.low), float(self.high)]

    def within(self, v: Any) -> bool:
        return self.low - 1e-12 <= v <= self.high + 1e-12

    def param(self, v: Any) -> int | float:
        """The Optuna param for config value v: clipped into the range (a per-layer list or map: its mean)."""
        v = min(max(_mean_of_layers(v), self.low), self.high)
        return int(round(v)) if self.is_int else float(v)


@dataclass(frozen=True)
class Choice:
    """{choices: [...]}: one of the values (numbers, strings, booleans or number lists)."""

    choices: list
    sampled: ClassVar[bool] = True

    def sample(self, trial, name: str) -> Any:
        value = trial.suggest_categorical(name, [_encode(c) for c in self.choices])
        return json.loads(value) if isinstance(value, str) and value.startswith("[") else value

    def middle(self) -> Any:
        return self.choices[len(self.choices) // 2]

    def gentle(self, end: End) -> Any:
        pick = max if end == "high" else min
        return pick(self.choices, key=lambda v: sum(v) if isinstance(v, list) else v)  # widths: the widest

    def ends(self) -> list:
        return list(self.choices)

    def values(self, default: list | tuple = ()) -> list:
        return list(self.choices)

    def within(self, v: Any) -> bool:
        return v in self.choices

    def param(self, v: Any) -> Any:
        """The Optuna param for config value v: v where it is a choice, else the nearest number among
        the choices (a per-layer list or map: to its mean), else the first choice."""
        if v not in self.choices:
            v = _mean_of_layers(v)
            nums = [x for x in self.choices if isinstance(x, (int, float)) and not isinstance(x, bool)]
            v = min(nums, key=lambda x: abs(x - v)) if nums and isinstance(v, (int, float)) else self.choices[0]
        return _encode(v)


def _encode(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, list) else v


@dataclass(frozen=True)
class PerLayer:
    """{per_layer: {...}}: `each` sampled once per layer (params name.0, name.1, ...). `over`: the
    technique config's (all layers, or hidden layers only); `layers`: the net's layer count, `cell`: whether
    one of them is a recurrent cell (both filled in from the trial spec when the space loads)."""

    each: Range | Choice
    over: Literal["layers", "hidden"] = "layers"
    layers: int | None = None
    cell: bool = False
    sampled: ClassVar[bool] = True

    def count(self, student: int | None, where: str) -> int:
        """Params sampled: one per layer (per hidden layer for `over` hidden) of distill's student
        (`student` feed-forward layers, and a cell where the teacher has one) when distill is on, else of
        the teacher (`layers`)."""
        if student is None and self.layers is None:
            raise ConfigError(f"{where}.per_layer.layers: not known (load the space with load_search_space, "
                              "which takes it from the trial spec, or give it)")
        return over_count(self.over, student + self.cell if student is not None else self.layers)

    def sample(self, trial, name: str, n: int) -> list:
        return [self.each.sample(trial, f"{name}.{i}") for i in range(n)]

    def params(self, name: str, values: list) -> dict[str, Any]:
        """The Optuna params (name.0, name.1, ...) for a config's per-layer list."""
        return {f"{name}.{i}": self.each.param(v) for i, v in enumerate(values)}

    def middle(self) -> Any:
        return self.each.middle()

    def gentle(self, end: End) -> Any:
        return self.each.gentle(end)

    def ends(self) -> list:
        return self.each.ends()

    def values(self, default: list | tuple = ()) -> list:
        return self.each.values(default)

    def within(self, v: Any) -> bool:
        return self.each.within(v)


Entry = Union[Fixed, Range, Choice, PerLayer]


def entry(name: str, key: str, p: Any) -> Entry:
    """Technique `name`'s setting `key` as the YAML gives it, typed. ValueError naming `name.key` when a
    range, choice list or per-layer block is malformed (a fixed value is checked later, as a config)."""
    if isinstance(p, (Fixed, Range, Choice, PerLayer)):
        return p
    if isinstance(p, dict) and "per_layer" in p:
        return _per_layer(name, key, p)
    if isinstance(p, dict) and not _is_layer_map(p):
        return _sampled(f"{name}.{key}", p)
    return Fixed(p)


def _is_layer_map(p: dict) -> bool:
    """A fixed per-layer map {layer index: value} (keys as ints, or as strings from JSON)."""
    def is_index(k):
        try:
            return layer_index(k) >= 0
        except ValueError:
            return False
    return bool(p) and all(is_index(k) for k in p)


def _sampled(where: str, p: dict) -> Range | Choice:
    """A range {low, high[, log]} of finite numbers, or {choices: [non-empty list]}."""
    if set(p) == {"choices"}:
        c = p["choices"]
        if not isinstance(c, list) or not c or not all(
                isinstance(x, (bool, int, float, str)) or (isinstance(x, list) and all(_is_number(y) for y in x))
                for x in c):
            raise ValueError(f"{where}: choices must be a non-empty list of values (or of number lists)")
        return Choice(list(c))
    if not (set(p) <= {"low", "high", "log"} and {"low", "high"} <= set(p)):
        raise ValueError(f"{where}: a range is {{low, high[, log]}} and a choice is {{choices: [...]}}")
    if not (_is_number(p["low"]) and _is_number(p["high"])):
        raise ValueError(f"{where}: low and high must be numbers")
    if p["low"] > p["high"]:
        raise ValueError(f"{where}: low {p['low']} > high {p['high']}")
    if not isinstance(p.get("log", False), bool) or (p.get("log") and p["low"] <= 0):
        raise ValueError(f"{where}: log must be true/false, and a log range needs low > 0")
    return Range(p["low"], p["high"], p.get("log", False))


def _per_layer(name: str, key: str, p: dict) -> PerLayer:
    where = f"{name}.{key}.per_layer"
    fields = per_layer_fields(TECHNIQUES[name])  # the config class declares which fields take per-layer values
    if key not in fields:
        known = [f"{n}.{k}" for n, c in TECHNIQUES.items() for k in per_layer_fields(c)]
        raise ValueError(f"{name}.{key}: per_layer is only for {', '.join(known)}")
    if set(p) != {"per_layer"} or not isinstance(p["per_layer"], dict):
        raise ValueError(f"{where}: give {{per_layer: {{low, high[, log][, layers]}}}} or "
                         "{per_layer: {choices: [...][, layers]}}")
    inner = dict(p["per_layer"])
    layers = inner.pop("layers", None)
    if layers is not None and not (isinstance(layers, int) and not isinstance(layers, bool) and layers >= 1):
        raise ValueError(f"{where}.layers: the teacher's number of layers, an int >= 1 (got {layers!r})")
    if layers is not None and over_count(fields[key], layers) < 1:
        raise ValueError(f"{where}.layers: {layers} layer(s) have no hidden layer to remove neurons from")
    return PerLayer(_sampled(where, inner), fields[key], layers)
