"""Search spaces: which techniques may be combined and the range of each setting.

A search space YAML names a trial spec, the objectives, constraints, budget and sampler,
and per technique the ranges to sample:

    techniques:
      quantize: {bits: {low: 2, high: 8}, mode: {choices: [ptq, qat]}, per_channel: true}
      distill:  {hidden: {choices: [[16, 16], [32, 32]]}}

`critic_techniques:` (PPO) has the same form and samples separate settings for the
training-only value net (`critic.*` params; config key `critic`).

A range is `{low, high[, log]}` (int when both ends are ints), a choice list is
`{choices: [...]}`, anything else is a fixed value; each is read once, when the space is validated,
into a typed entry (autocompress.space_entries: `Range`, `Choice`, `PerLayer`, `Fixed`) that samples
itself and knows its middle and gentle values. The space is conditional: a
technique's settings are sampled only when it is enabled (define-by-run), and since
techniques of one exclusive group (`share` and `quantize`) exclude each other they are
drawn as one choice named after the group (`weight_coding`).
`suggest(trial, space)` works with any object that has Optuna's suggest_* methods.

Per-layer settings (`quantize.bits`, `prune.sparsity`, `share.bits`, `structured.amount`, see
techniques/per_layer.py) may be fixed per layer (`bits: [8, 4, 8]`, `bits: {0: 8}`) or sampled per layer:

      quantize: {bits: {per_layer: {low: 2, high: 8}}}          # params quantize.bits.0, .1, ...
      structured: {amount: {per_layer: {choices: [0.25, 0.5]}}} # one per HIDDEN layer

one param per layer, giving a list. The layers are the trial spec's teacher's (`teacher.hidden` + the
output layer), or distill's student's in a trial where distill is on (sampled after distill.hidden, so a
shallower student samples fewer). An imported teacher's (`teacher.from`) are read from its file when
the space loads; `per_layer: {..., layers: N}` states the count (checked), and is needed only for an
imported PPO policy's critic that its file does not hold.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SkipValidation, field_validator

from autocompress import sources
from autocompress.algos import ALGOS
from autocompress.config import CompressConfig, TrialSpec, load_trial_spec, parse, read_yaml
from autocompress.errors import ConfigError
from autocompress.samplers import SAMPLERS
from autocompress.space_entries import Entry, PerLayer, entry
from autocompress.targets import target
from autocompress.techniques import CRITIC_TECHNIQUES, TECHNIQUES
from autocompress.techniques.per_layer import layer_count, per_layer_fields

OBJECTIVE_NAMES = ("return", "latency", "bytes")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Budget(_Strict):
    trials: int = Field(12, ge=1, description="finished trials wanted (baselines included)")
    parallel: int = Field(2, ge=1, description="trials running at once")


class Constraints(_Strict):
    min_return_ratio: float | None = Field(None, ge=0.0, le=2.0)
    max_bytes: int | None = Field(None, ge=1)
    max_latency_ms: float | None = Field(None, gt=0)
    max_flash: int | None = Field(None, ge=1, description="an MCU target: flash bytes of the linked policy")
    max_ram: int | None = Field(None, ge=1, description="an MCU target: RAM bytes (data + bss + stack)")


class PrunerSettings(_Strict):
    """Early stopping of trials that cannot reach `constraints.min_return_ratio` (see
    autocompress.pruners: the rule, and why it is not an Optuna pruner). Needs that constraint."""

    kind: Literal["gate", "none"] = Field("gate", description="gate: stop hopeless trials during fine-tuning; "
                                                             "none: every trial runs its whole fine-tune")
    floor: float = Field(0.25, ge=0.0, le=1.0, description="stop below floor x min_return_ratio (no history needed)")
    after: int = Field(1, ge=1, description="fine-tune iterations a trial runs before it may be stopped")
    min_history: int = Field(2, ge=1, description="feasible trials' reports needed at a step before a trial "
                                                  "below all of them is stopped")
    finish_at: float | None = Field(1.0, gt=0.0, description="end a trial's fine-tune early once its check "
                                                             "return ratio reaches this (1.0: the teacher's; never "
                                                             "below min_return_ratio); null: every trial that is "
                                                             "not stopped fine-tunes to the end")


class SensitivityStage(_Strict):
    """Optional first stage of a search (autocompress.layer_sensitivity): before the trials, measure each
    layer's sensitivity to each setting of the space's per-layer techniques (once; cached in the run
    dir), then enqueue guided configs: per layer, the most aggressive setting whose drop stays within
    max_drop, for each such technique alone and for them together."""

    enabled: bool = Field(False, description="run the sensitivity pass and enqueue its guided configs")
    max_drop: float = Field(0.05, ge=0.0, le=1.0, description="largest drop a layer's setting may cost")
    metric: Literal["max", "action", "return"] = Field(
        "max", description="the drop: 'action' 1 - agreement with the teacher on its visited states, 'return' "
                           "1 - return ratio on `episodes` episodes, 'max' the larger of the two")
    episodes: int = Field(5, ge=0, le=100, description="seeded episodes per (layer, setting); 0: actions only")


class SearchSpace(_Strict):
    """What a search varies: the trial spec it runs, objectives, constraints, budget, sampler and the
    ranges of each technique's settings (a search_spaces/*.yaml file; `load_search_space(path)`)."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    trial_spec: str
    objectives: list[Literal["return", "latency", "bytes"]] = list(OBJECTIVE_NAMES)
    target: str | None = Field(None, description="where the policy runs (autocompress.targets; the trial spec's "
                                                 "latency.target, default host): on an MCU target latency is "
                                                 "cycles per act and flash / RAM are measured")
    constraints: Constraints = Constraints()
    budget: Budget = Budget()
    sampler: str = Field("tpe", description="one of autocompress.samplers.SAMPLERS")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    baselines: bool = Field(True, description="run teacher-as-is and each technique alone first (in stack order)")
    stack: int = Field(2, ge=0, description="once a technique has kept the return alone (its baseline), run up "
                       "to this many stacks of it with another technique at that one's gentle end, ahead of the "
                       "remaining baselines; 0: none")
    pruner: PrunerSettings = PrunerSettings()
    #: technique -> setting -> its Entry: given as YAML (a range, choices, per_layer or a value), read by
    #: `_techniques` (SkipValidation: pydantic takes the YAML as it is and leaves it to that validator)
    techniques: dict[str, dict[str, SkipValidation[Entry]]] = Field(..., min_length=1)
    critic_techniques: dict[str, dict[str, SkipValidation[Entry]]] = Field({}, description="PPO: separate settings for the "
                                                         "training-only value net; never in the objectives")
    sensitivity: SensitivityStage = Field(SensitivityStage(), description="optional first stage: layer "
                                          "sensitivity, then guided configs (autocompress.layer_sensitivity)")

    @field_validator("target")
    @classmethod
    def _known_target(cls, v):
        if v is not None:
            target(v)  # ConfigError naming the known targets
        return v

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v):
        if not v or len(set(v)) != len(v) or "return" not in v:
            raise ValueError("give distinct objectives including 'return', e.g. [return, latency, bytes]")
        return v

    @field_validator("pruner")
    @classmethod
    def _pruner(cls, v, info):
        least = getattr(info.data.get("constraints"), "min_return_ratio", None)
        given = "finish_at" in v.model_fields_set  # the default is raised to the constraint (make_pruner)
        if given and v.finish_at is not None and least is not None and v.finish_at < least:
            raise ValueError(f"finish_at {v.finish_at} is below constraints.min_return_ratio {least}: a trial "
                             "would end its fine-tune while it still misses the constraint")
        return v

    @field_validator("sensitivity")
    @classmethod
    def _sensitivity(cls, v, info):
        techniques = info.data.get("techniques") or {}
        if v.enabled and techniques and not any(per_layer_fields(TECHNIQUES[n]) for n in techniques if n in TECHNIQUES):
            raise ValueError("enabled, but none of the space's techniques has a per-layer setting (quantize, prune, "
                             "share, structured): nothing to measure")
        return v

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, v):
        if v not in SAMPLERS:
            raise ValueError(f"unknown sampler {v!r}; choose {', '.join(SAMPLERS)}")
        return v

    @field_validator("techniques", "critic_techniques")
    @classmethod
    def _techniques(cls, v, info):
        """Each setting read into its typed entry (autocompress.space_entries), once."""
        known = TECHNIQUES if info.field_name == "techniques" else CRITIC_TECHNIQUES
        out: dict[str, dict[str, Entry]] = {}
        for name, params in v.items():
            if name not in known:
                raise ValueError(f"unknown technique {name!r}; known: {', '.join(known)}")
            out[name] = {}
            for key, p in (params or {}).items():
                if key not in TECHNIQUES[name].model_fields:
                    raise ValueError(f"{name}: unknown setting {key!r}; known: "
                                     f"{', '.join(TECHNIQUES[name].model_fields)}")
                out[name][key] = entry(name, key, p)
        return out


def groups(techniques: dict) -> dict[str, list[str]]:
    """Exclusive groups (see TechniqueConfig.group) with two or more members in `techniques`:
    each is sampled as one choice param named after the group, e.g. weight_coding: none|share|quantize."""
    out: dict[str, list[str]] = {}
    for name in techniques:
        g = TECHNIQUES[name].group
        if g:
            out.setdefault(g, []).append(name)
    return {g: names for g, names in out.items() if len(names) > 1}


def switches(techniques: dict, on: Collection[str] = (), prefix: str = "") -> dict[str, Any]:
    """The Optuna params that turn `techniques` on or off, with those in `on` on: an exclusive group's
    choice (see `groups`), else `name.enabled`."""
    grouped = groups(techniques)
    params: dict[str, Any] = {f"{prefix}{g}": next((n for n in names if n in on), "none") for g, names in grouped.items()}
    in_group = {n for names in grouped.values() for n in names}
    params.update({f"{prefix}{n}.enabled": n in on for n in techniques if n not in in_group})
    return params


def setting_params(name: str, entries: dict[str, Entry], values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The Optuna params that stand for technique `name`'s config `values` (key -> value; a key not
    given: its entry's middle), as `suggest` names them: one per sampled setting, one per layer of a
    per-layer one (one value: every layer at it). A value outside its entry: the nearest it allows."""
    params: dict[str, Any] = {}
    for key, e in entries.items():
        v = values.get(key, e.middle())
        if isinstance(e, PerLayer):
            params.update(e.params(f"{prefix}{name}.{key}",
                                   v if isinstance(v, list) else [v] * e.count(None, f"{name}.{key}")))
        elif e.sampled:
            params[f"{prefix}{name}.{key}"] = e.param(v)
    return params


def _suggest_group(trial, techniques: dict[str, dict[str, Entry]], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Sample which of `techniques` are on and their settings (Optuna param names: prefix + name.key)."""
    chosen = {name: trial.suggest_categorical(f"{prefix}{g}", ["none", *names]) == name
              for g, names in groups(techniques).items() for name in names}
    cfg: dict[str, dict[str, Any]] = {}
    for name, entries in techniques.items():
        on = chosen[name] if name in chosen else trial.suggest_categorical(f"{prefix}{name}.enabled", [False, True])
        if on:
            cfg[name] = {key: e.sample(trial, f"{prefix}{name}.{key}") for key, e in entries.items()
                         if not isinstance(e, PerLayer)}
    # per-layer params last: how many depends on the student distill may have sampled above
    # (a conv student's conv layers are its sampled `channels`: a per-layer block with a conv teacher's
    # student that keeps the teacher's channels is counted short, and that trial fails naming the key)
    student = layer_count(len(cfg["distill"].get("channels", [])), cfg["distill"]["hidden"]) if "distill" in cfg \
        else None
    for name in cfg:
        for key, e in techniques[name].items():
            if isinstance(e, PerLayer):
                cfg[name][key] = e.sample(trial, f"{prefix}{name}.{key}", e.count(student, f"{name}.{key}"))
    return cfg


def suggest(trial, space: SearchSpace) -> dict[str, dict[str, Any]]:
    """Sample one techniques config (the dict form of CompressConfig)."""
    cfg: dict[str, Any] = _suggest_group(trial, space.techniques)
    critic = _suggest_group(trial, space.critic_techniques, "critic.")
    if critic:
        cfg["critic"] = critic
    return cfg


def check_space(space: SearchSpace, spec: TrialSpec, source: str) -> None:
    """Every range end and choice must itself be a valid setting: try them all now."""
    if space.critic_techniques and not ALGOS[spec.algorithm].own_critic:
        raise ConfigError(f"{source}: critic_techniques: only PPO's value net can be compressed (the trial spec's "
                          f"algorithm is {spec.algorithm})")
    _check_group(space.critic_techniques, spec, f"{source}: critic_techniques", lambda c: {"critic": c})
    _check_group(space.techniques, spec, f"{source}: techniques", lambda c: c)


def _check_group(techniques: dict[str, dict[str, Entry]], spec: TrialSpec, where: str, wrap) -> None:
    """Each entry's ends (every choice; a per-layer one's as one value for all layers) with the
    technique's other settings at their middle."""
    for name, entries in techniques.items():
        for key, e in entries.items():
            for v in e.ends():
                others = {k: q.middle() for k, q in entries.items() if k != key}
                cfg = parse(CompressConfig, wrap({name: {**others, key: v}}), where)
                try:
                    cfg.check_against(spec)
                except ConfigError as e:
                    raise ConfigError(f"{where}.{name}.{key} = {v!r}: {e}") from None


def load_search_space(path: str | Path, target: str | None = None) -> tuple[SearchSpace, TrialSpec, Path]:
    """The space, the trial spec it names and that spec's path (relative paths are relative
    to the space file, so a search runs the same from any working directory). The spec's
    latency.target is the space's `target` (or `target`, e.g. a --target flag) where one is given."""
    path = Path(path)
    data = read_yaml(path)
    if target is not None:
        data["target"] = target
    space = parse(SearchSpace, data, str(path))
    spec_path = Path(space.trial_spec)
    if not spec_path.is_absolute():
        spec_path = path.parent / spec_path
    spec = load_trial_spec(spec_path)
    # the space's target, and its flash limit that kernels are chosen to fit (mcu.device.choose_kernels)
    latency = {k: v for k, v in (("target", space.target), ("max_flash", space.constraints.max_flash)) if v is not None}
    if latency:
        spec = spec.updated({"latency": latency})  # validated once
    device = [k for k in ("max_flash", "max_ram") if getattr(space.constraints, k) is not None]
    if device and spec.latency.target == "host":
        raise ConfigError(f"{path}: constraints.{device[0]}: flash and RAM are measured on an MCU target; give "
                          "target: cortex-m0plus (or another, see autocompress.targets)")
    space = with_layer_counts(space, spec, str(path))
    check_space(space, spec, str(path))
    return space, spec, spec_path


def with_layer_counts(space: SearchSpace, spec: TrialSpec, source: str) -> SearchSpace:
    """The space with every `per_layer` block's `layers` filled in from the trial spec's teacher (an
    imported teacher's file is read for it, only when a per-layer block needs it). ConfigError naming
    the key."""
    t = spec.teacher
    if t.from_:
        counts = _imported_layer_counts(space, spec)
    else:
        counts = {group: (t.n_layers(critic), t.describe_layers(critic) + " + the output layer", t.rnn is not None)
                  for group, critic in (("techniques", False), ("critic_techniques", True))}
    update = {}
    for group, (n, about, cell) in counts.items():
        techniques = {name: dict(entries) for name, entries in getattr(space, group).items()}
        for name, entries in techniques.items():
            for key, e in entries.items():
                if not isinstance(e, PerLayer):
                    continue
                where, given = f"{source}: {group}.{name}.{key}.per_layer.layers", e.layers
                if n is None and given is None:
                    raise ConfigError(f"{where}: {about}, so its number of layers is not known: give it, e.g. "
                                      "layers: 3 for two hidden layers and the output layer")
                if n is not None and given is not None and given != n:
                    raise ConfigError(f"{where}: {given} given, but the teacher has {n} layers ({about})")
                entries[key] = replace(e, layers=given or n, cell=cell)
        update[group] = techniques
    return space.model_copy(update=update)


def _imported_layer_counts(space: SearchSpace, spec: TrialSpec) -> dict[str, tuple[int | None, str, bool]]:
    """group -> (layers, what they are, whether one is a recurrent cell) of an imported teacher: its file is
    loaded (sources.load, which checks it against the spec) only where a per-layer block counts layers."""
    if not any(isinstance(e, PerLayer) for g in ("techniques", "critic_techniques")
               for entries in getattr(space, g).values() for e in entries.values()):
        return {"techniques": (None, "", False), "critic_techniques": (None, "", False)}
    imported = sources.load(spec, recurrent=True)  # a search takes a recurrent teacher (ac.search checks the spec)
    critic, actor = imported.critic, imported.actor
    n = len(actor.layers) + (actor.rnn is not None)  # a recurrent layer is one layer (per_layer.logical_layers)
    return {"techniques": (n, f"the imported policy's {', '.join(imported.describe())}", actor.rnn is not None),
            "critic_techniques": (len(critic.layers) if critic is not None else None,
                                  "the imported policy's critic" if critic is not None else
                                  "the imported policy has no critic in its file (one is warmed up)", False)}
