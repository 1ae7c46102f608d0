"""Per-layer settings: `quantize.bits`, `prune.sparsity`, `structured.amount` and `share.bits` may be
given for every layer, per layer, or for some layers only:

    quantize: {bits: 4}              every layer (a scalar);
    quantize: {bits: [8, 4, 6]}      one value per layer, in order (a list; its length must fit);
    quantize: {bits: {0: 8, 2: 4}}   only the listed layers; the others are left as they are
                                     (fp32 / unpruned / not shared / keeping all their neurons).

Layer i is the i-th layer of the net the technique compresses: the teacher's architecture
(its conv layers (`teacher.conv_filters`), `teacher.hidden`, then the output layer), or distill's
student when distill is on (`DistillConfig.n_layers`). A layer that low-rank split into two factors
(conv: a conv of r filters + a 1x1 conv) keeps its index: both factors take its setting, so the count
is known before any training. A recurrent layer (LSTM / GRU) is one layer in its place: both its matrices take
its setting. `structured.amount` is per HIDDEN layer (only those lose neurons;
conv layers are hidden layers: they lose filters).
Map keys may be strings ("2"): JSON (Optuna user attrs, Ray) turns int keys into strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, Field, TypeAdapter, ValidationError

from autocompress.errors import ConfigError
from autocompress.nets import CLinear, PolicyNet


@dataclass(frozen=True)
class PerLayer:
    """Marks a config field that may be given per layer; `over`: all layers, or hidden layers only."""

    over: Literal["layers", "hidden"] = "layers"


def layer_count(conv_layers: int, hidden: Sequence[int]) -> int:
    """Layers per-layer settings index in a net of `conv_layers` conv layers, then `hidden` widths, then
    the output layer: an MLP or conv policy, a critic, a distilled student alike."""
    return conv_layers + len(hidden) + 1


def per_layer_type(scalar: type, over: Literal["layers", "hidden"] = "layers", **bounds):
    """The field type of a per-layer setting whose single value is `scalar` within `bounds` (Field's ge/le/...)."""
    one = Annotated[scalar, Field(**bounds)]
    adapter = TypeAdapter(one)

    def value(x: Any, where: str) -> Any:
        if isinstance(x, (list, dict)):
            raise ValueError(f"{where}a number is expected, not a {type(x).__name__}")
        try:
            return adapter.validate_python(x)
        except ValidationError as e:
            got = f" (got {x!r})" if where else ""  # a scalar: the config loader shows what was given
            raise ValueError(f"{where}{e.errors()[0]['msg']}{got}") from None

    def normalize(v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            if not v:
                raise ValueError("an empty list: give one value per layer, one value for all, or a map {layer: value}")
            return [value(x, f"layer {i}: ") for i, x in enumerate(v)]
        if isinstance(v, dict):
            if not v:
                raise ValueError("an empty map: give {layer index: value, ...}")
            out: dict[int, Any] = {}
            for k, x in v.items():
                i = layer_index(k)
                if i in out:
                    raise ValueError(f"layer {i} is given twice (as {i} and as {str(i)!r}?)")
                out[i] = value(x, f"layer {i}: ")
            return dict(sorted(out.items()))
        return value(v, "")

    return Annotated[Union[one, list[one], dict[int, one]], BeforeValidator(normalize), PerLayer(over)]


def layer_index(key: Any) -> int:
    """A map key: a layer index >= 0, as an int or its decimal string (what JSON gives back)."""
    if isinstance(key, str) and key.strip().isdigit():
        return int(key)
    if isinstance(key, int) and not isinstance(key, bool) and key >= 0:
        return key
    raise ValueError(f"map keys are layer indices 0, 1, ..., not {key!r}")


def per_layer_fields(config_cls) -> dict[str, str]:
    """{field name: 'layers' | 'hidden'} of the fields of a technique config that take per-layer values."""
    return {name: m.over for name, f in config_cls.model_fields.items() for m in f.metadata if isinstance(m, PerLayer)}


def over_count(over: str, n_layers: int) -> int:
    """How many values a per-layer setting over `over` takes in a net of `n_layers` layers: the output
    layer has no neurons to remove, so a setting over hidden layers takes one fewer."""
    return n_layers - 1 if over == "hidden" else n_layers


def is_per_layer(v: Any) -> bool:
    return isinstance(v, (list, dict))


def layer_values(v: Any, n: int, key: str, over: str = "layers", about: str = "") -> list[Any]:
    """The setting of each of `n` layers (None: that layer is left as it is). ConfigError naming `key`
    when a list's length or a map's index does not fit the net (`about`: where its hidden layers come from,
    e.g. "teacher.hidden [256, 256]")."""
    what = "hidden layers" if over == "hidden" else "layers"
    about = "" if not about else f" ({about})" if over == "hidden" else f" ({about} + the output layer)"
    if isinstance(v, list):
        if len(v) != n:
            raise ConfigError(f"{key}: a list of {len(v)} values for a net of {n} {what}{about}: give {n} "
                              f"values (one per {what[:-1]}), one value for all, or a map {{layer: value}}")
        return list(v)
    if isinstance(v, dict):
        bad = [i for i in v if i >= n]
        if bad:
            raise ConfigError(f"{key}: layer {bad[0]} is out of range: the net has {n} {what}{about}, "
                              f"numbered 0..{n - 1}")
        return [v.get(i) for i in range(n)]
    return [v] * n


def setting_values(cfg, name: str, n_layers: int, about: str = "") -> list[Any]:
    """Per-layer setting `name` of technique config `cfg` for a net of `n_layers` (logical) layers, over the
    layers its annotation declares (per_layer_type's `over`): what a technique's handler applies."""
    over = per_layer_fields(type(cfg))[name]
    return layer_values(getattr(cfg, name), over_count(over, n_layers), f"{cfg.name}.{name}", over, about)


def check_counts(cfg, n_layers: int, about: str = "") -> None:
    """Every per-layer setting of technique config `cfg` against a net of `n_layers` layers."""
    for name in per_layer_fields(type(cfg)):
        setting_values(cfg, name, n_layers, about)


def logical_layers(net: PolicyNet) -> list[list[CLinear]]:
    """The net's layers as per-layer settings index them: a bias-free, activation-free layer followed
    by another (the first factor of a low-rank pair, Linear or conv) is one layer with the layer after it;
    a recurrent layer is one layer, its two matrices (ih, hh) in its place."""
    out: list[list[CLinear]] = []
    pending: list[CLinear] = []
    for i, layer in enumerate(net.layers):
        if net.rnn is not None and i == net.rnn.at:
            out.extend([pending] if pending else [])
            out.append([net.rnn.ih, net.rnn.hh])
            pending = []
        pending.append(layer)
        if layer.bias is None and layer.act == "none" and i + 1 < len(net.layers):
            continue
        out.append(pending)
        pending = []
    return out
