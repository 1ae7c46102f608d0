"""Search spaces: which techniques may be combined and the range of each setting.

A search space YAML names a trial spec, the objectives, constraints, budget and sampler,
and per technique the ranges to sample:

    techniques:
      quantize: {bits: {low: 2, high: 8}, mode: {choices: [ptq, qat]}, per_channel: true}
      distill:  {hidden: {choices: [[16, 16], [32, 32]]}}

`critic_techniques:` (PPO) has the same form and samples separate settings for the
training-only value net (`critic.*` params; config key `critic`).

A range is `{low, high[, log]}` (int when both ends are ints), a choice list is
`{choices: [...]}`, anything else is a fixed value. The space is conditional: a
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

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from autocompress.algos import ALGOS
from autocompress.config import CompressConfig, TrialSpec, load_trial_spec, parse, read_yaml
from autocompress.errors import ConfigError
from autocompress.samplers import SAMPLERS
from autocompress.techniques import CRITIC_TECHNIQUES, TECHNIQUES
from autocompress.techniques.per_layer import layer_count, layer_index, per_layer_fields

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
    techniques: dict[str, dict[str, Any]] = Field(..., min_length=1)
    critic_techniques: dict[str, dict[str, Any]] = Field({}, description="PPO: separate settings for the "
                                                         "training-only value net; never in the objectives")
    sensitivity: SensitivityStage = Field(SensitivityStage(), description="optional first stage: layer "
                                          "sensitivity, then guided configs (autocompress.layer_sensitivity)")

    @field_validator("target")
    @classmethod
    def _known_target(cls, v):
        from autocompress.targets import target

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
        from autocompress.techniques.per_layer import per_layer_fields

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
        known = TECHNIQUES if info.field_name == "techniques" else CRITIC_TECHNIQUES
        for name, params in v.items():
            if name not in known:
                raise ValueError(f"unknown technique {name!r}; known: {', '.join(known)}")
            for key, p in (params or {}).items():
                if key not in TECHNIQUES[name].model_fields:
                    raise ValueError(f"{name}: unknown setting {key!r}; known: "
                                     f"{', '.join(TECHNIQUES[name].model_fields)}")
                if isinstance(p, dict) and "per_layer" in p:
                    _check_per_layer(name, key, p)
                elif isinstance(p, dict) and not _is_layer_map(p):
                    _check_param(f"{name}.{key}", p)
        return {k: dict(p or {}) for k, p in v.items()}


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def _check_param(where: str, p: dict) -> None:
    """A range {low, high[, log]} of finite numbers, or {choices: [non-empty list]}."""
    if set(p) == {"choices"}:
        c = p["choices"]
        if not isinstance(c, list) or not c or not all(
                isinstance(x, (bool, int, float, str)) or (isinstance(x, list) and all(_is_number(y) for y in x))
                for x in c):
            raise ValueError(f"{where}: choices must be a non-empty list of values (or of number lists)")
        return
    if not (set(p) <= {"low", "high", "log"} and {"low", "high"} <= set(p)):
        raise ValueError(f"{where}: a range is {{low, high[, log]}} and a choice is {{choices: [...]}}")
    if not (_is_number(p["low"]) and _is_number(p["high"])):
        raise ValueError(f"{where}: low and high must be numbers")
    if p["low"] > p["high"]:
        raise ValueError(f"{where}: low {p['low']} > high {p['high']}")
    if not isinstance(p.get("log", False), bool) or (p.get("log") and p["low"] <= 0):
        raise ValueError(f"{where}: log must be true/false, and a log range needs low > 0")


def _is_layer_map(p: Any) -> bool:
    """A fixed per-layer map {layer index: value} (keys as ints, or as strings from JSON)."""
    def is_index(k):
        try:
            return layer_index(k) >= 0
        except ValueError:
            return False
    return isinstance(p, dict) and bool(p) and all(is_index(k) for k in p)


def _per_layer(p: Any) -> dict | None:
    """The inner {low, high[, log]} / {choices} (and `layers`) of a `{per_layer: ...}` setting, else None."""
    return p["per_layer"] if isinstance(p, dict) and "per_layer" in p else None


def _check_per_layer(name: str, key: str, p: dict) -> None:
    where = f"{name}.{key}.per_layer"
    fields = per_layer_fields(TECHNIQUES[name])
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
    if layers is not None and fields[key] == "hidden" and layers < 2:
        raise ValueError(f"{where}.layers: {layers} layer(s) have no hidden layer to remove neurons from")
    _check_param(where, inner)


def _layer_count(name: str, key: str, block: dict, student: int | None) -> int:
    """How many per-layer params `name.key` samples: one per layer (per hidden layer for structured)
    of distill's student (`student` layers) when distill is on, else of the teacher (`layers`, filled in
    from the spec)."""
    if student is not None:
        n = student
    elif block.get("layers") is None:
        raise ConfigError(f"{name}.{key}.per_layer.layers: not known (load the space with load_search_space, "
                          "which takes it from the trial spec, or give it)")
    else:
        n = block["layers"]
    return n - 1 if per_layer_fields(TECHNIQUES[name])[key] == "hidden" else n


def _inner(block: dict) -> dict:
    return {k: v for k, v in block.items() if k != "layers"}


def _param(trial, name: str, p: Any):
    if isinstance(p, dict) and "choices" in p:
        # Optuna categorical values must be scalars: lists (student widths) go as JSON text.
        encoded = [json.dumps(c) if isinstance(c, list) else c for c in p["choices"]]
        value = trial.suggest_categorical(name, encoded)
        return json.loads(value) if isinstance(value, str) and value.startswith("[") else value
    if isinstance(p, dict) and not _is_layer_map(p):
        if isinstance(p["low"], int) and isinstance(p["high"], int) and not isinstance(p["low"], bool):
            return trial.suggest_int(name, p["low"], p["high"], log=p.get("log", False))
        return trial.suggest_float(name, float(p["low"]), float(p["high"]), log=p.get("log", False))
    return p


def groups(techniques: dict) -> dict[str, list[str]]:
    """Exclusive groups (see TechniqueConfig.group) with two or more members in `techniques`:
    each is sampled as one choice param named after the group, e.g. weight_coding: none|share|quantize."""
    out: dict[str, list[str]] = {}
    for name in techniques:
        g = TECHNIQUES[name].group
        if g:
            out.setdefault(g, []).append(name)
    return {g: names for g, names in out.items() if len(names) > 1}


def _suggest_group(trial, techniques: dict, prefix: str = "") -> dict[str, dict[str, Any]]:
    """Sample which of `techniques` are on and their settings (Optuna param names: prefix + name.key)."""
    chosen = {name: trial.suggest_categorical(f"{prefix}{g}", ["none", *names]) == name
              for g, names in groups(techniques).items() for name in names}
    cfg: dict[str, dict[str, Any]] = {}
    for name, params in techniques.items():
        on = chosen[name] if name in chosen else trial.suggest_categorical(f"{prefix}{name}.enabled", [False, True])
        if on:
            cfg[name] = {key: _param(trial, f"{prefix}{name}.{key}", p) for key, p in params.items()
                         if _per_layer(p) is None}
    # per-layer params last: how many depends on the student distill may have sampled above
    # (a conv student's conv layers are its sampled `channels`: a per-layer block with a conv teacher's
    # student that keeps the teacher's channels is counted short, and that trial fails naming the key)
    student = layer_count(len(cfg["distill"].get("channels", [])), cfg["distill"]["hidden"]) if "distill" in cfg \
        else None
    for name in cfg:
        for key, p in techniques[name].items():
            if (block := _per_layer(p)) is not None:
                n = _layer_count(name, key, block, student)
                cfg[name][key] = [_param(trial, f"{prefix}{name}.{key}.{i}", _inner(block)) for i in range(n)]
    return cfg


def suggest(trial, space: SearchSpace) -> dict[str, dict[str, Any]]:
    """Sample one techniques config (the dict form of CompressConfig)."""
    cfg: dict[str, Any] = _suggest_group(trial, space.techniques)
    critic = _suggest_group(trial, space.critic_techniques, "critic.")
    if critic:
        cfg["critic"] = critic
    return cfg


def _middle(p: Any) -> Any:
    """The middle of a range or choice list (an Optuna param value); None for a fixed or per-layer setting."""
    if _per_layer(p) is not None or _is_layer_map(p):
        return None
    if isinstance(p, dict) and "choices" in p:
        c = p["choices"][len(p["choices"]) // 2]
        return json.dumps(c) if isinstance(c, list) else c
    if isinstance(p, dict):
        if isinstance(p["low"], int) and isinstance(p["high"], int):
            return (p["low"] + p["high"]) // 2
        return (p["low"] + p["high"]) / 2
    return None


def _alone(space: SearchSpace, only: str | None) -> dict[str, Any]:
    """Optuna params of one technique alone at a middle setting (None: the teacher as-is)."""
    params: dict[str, Any] = {}
    for prefix, techniques in (("", space.techniques), ("critic.", space.critic_techniques)):
        grouped = groups(techniques)
        for g, names in grouped.items():
            params[f"{prefix}{g}"] = only if prefix == "" and only in names else "none"
        for name, ps in techniques.items():
            if not any(name in names for names in grouped.values()):
                params[f"{prefix}{name}.enabled"] = prefix == "" and name == only
            if prefix == "" and name == only:
                params.update({f"{name}.{k}": _middle(p) for k, p in ps.items() if _middle(p) is not None})
                for k, p in ps.items():  # a per-layer setting: every layer at the middle
                    if (block := _per_layer(p)) is not None:
                        n = _layer_count(name, k, block, None)
                        params.update({f"{name}.{k}.{i}": _middle(_inner(block)) for i in range(n)})
    return params


def stack_order(space: SearchSpace) -> list[str]:
    """The space's techniques by TechniqueConfig.stack_rank (ties as listed): the baselines' run order
    and the order partners join a stack."""
    return sorted(space.techniques, key=lambda n: TECHNIQUES[n].stack_rank)


def baseline_params(space: SearchSpace) -> list[dict[str, Any]]:
    """Optuna params of the anchor trials: teacher as-is, then each technique alone at a middle setting,
    in stack order (a distilled student first: the likely anchor of the stacks)."""
    return [_alone(space, None)] + [_alone(space, name) for name in stack_order(space)]


def _gentle(p: Any, end: str) -> Any:
    """The end of a range or choice list that compresses least (an Optuna param value); None for a
    fixed setting. `end` is the technique's declared direction (TechniqueConfig.gentle)."""
    if isinstance(p, dict) and "choices" in p:
        pick = max if end == "high" else min
        c = pick(p["choices"], key=lambda v: sum(v) if isinstance(v, list) else v)  # widths: the widest
        return json.dumps(c) if isinstance(c, list) else c
    if isinstance(p, dict) and "low" in p and not _is_layer_map(p):
        return p["high"] if end == "high" else p["low"]
    return None


def stacked_params(space: SearchSpace, anchor: str, anchor_params: dict[str, Any]) -> list[dict[str, Any]]:
    """Optuna params of up to `space.stack` two-technique stacks on `anchor`, a technique that kept the
    return alone, at its baseline's `anchor_params`. Each other technique (not of the anchor's
    exclusive group) joins it in stack order, at the gentle end of its ranges (stacked losses
    compound; its other settings as in its own baseline). A partner need not have kept the return at
    its middle setting: 8-bit codes on a student often do where 5-bit codes alone did not."""
    group_of = {name: g for g, names in groups(space.techniques).items() for name in names}
    out = []
    for name in stack_order(space):
        if name == anchor or (name in group_of and group_of[name] == group_of.get(anchor)):
            continue  # one technique per group: e.g. share and quantize do not stack
        params = _alone(space, name)
        merged = {**anchor_params, **{k: v for k, v in params.items() if k.startswith(f"{name}.")}}
        if name in group_of:
            merged[group_of[name]] = name
        for key, end in TECHNIQUES[name].gentle.items():
            p = space.techniques[name].get(key)
            if (block := _per_layer(p)) is not None:  # every layer the baseline set, at the gentle end
                merged.update({k: _gentle(_inner(block), end) for k in params if k.startswith(f"{name}.{key}.")})
            elif (v := _gentle(p, end)) is not None:
                merged[f"{name}.{key}"] = v
        out.append(merged)
    return out[:space.stack]


def check_space(space: SearchSpace, spec: TrialSpec, source: str) -> None:
    """Every range end and choice must itself be a valid setting: try them all now."""
    if space.critic_techniques and not ALGOS[spec.algorithm].own_critic:
        raise ConfigError(f"{source}: critic_techniques: only PPO's value net can be compressed (the trial spec's "
                          f"algorithm is {spec.algorithm})")
    _check_group(space.critic_techniques, spec, f"{source}: critic_techniques", lambda c: {"critic": c})
    _check_group(space.techniques, spec, f"{source}: techniques", lambda c: c)


def _check_group(techniques: dict, spec: TrialSpec, where: str, wrap) -> None:
    def settings(p: Any) -> list:
        """The values to try: a range's ends, every choice (a per-layer one's, as one value for all layers)."""
        q = _inner(_per_layer(p)) if _per_layer(p) is not None else p
        if _is_layer_map(q) or not isinstance(q, dict):
            return [q]
        return q["choices"] if "choices" in q else [q["low"], q["high"]]

    def typical(q: Any) -> Any:
        """A valid value of setting q: a range's or choice list's middle (for all layers), else q as fixed."""
        q = _inner(_per_layer(q)) if _per_layer(q) is not None else q
        m = _middle(q)
        return q if m is None else json.loads(m) if isinstance(m, str) and m.startswith("[") else m

    for name, params in techniques.items():
        for key, p in params.items():
            for v in settings(p):
                others = {k: typical(q) for k, q in params.items() if k != key}
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
        counts = {group: (t.n_layers(critic), t.describe_layers(critic) + " + the output layer")
                  for group, critic in (("techniques", False), ("critic_techniques", True))}
    update = {}
    for group, (n, about) in counts.items():
        techniques = {name: dict(params) for name, params in getattr(space, group).items()}
        for name, params in techniques.items():
            for key, p in params.items():
                if (block := _per_layer(p)) is None:
                    continue
                where, given = f"{source}: {group}.{name}.{key}.per_layer.layers", block.get("layers")
                if n is None and given is None:
                    raise ConfigError(f"{where}: {about}, so its number of layers is not known: give it, e.g. "
                                      "layers: 3 for two hidden layers and the output layer")
                if n is not None and given is not None and given != n:
                    raise ConfigError(f"{where}: {given} given, but the teacher has {n} layers ({about})")
                params[key] = {"per_layer": {**block, "layers": given or n}}
        update[group] = techniques
    return space.model_copy(update=update)


def _imported_layer_counts(space: SearchSpace, spec: TrialSpec) -> dict[str, tuple[int | None, str]]:
    """group -> (layers, what they are) of an imported teacher: its file is loaded (sources.load, which
    checks it against the spec) only where a per-layer block counts layers."""
    if not any(_per_layer(p) is not None for g in ("techniques", "critic_techniques")
               for params in getattr(space, g).values() for p in params.values()):
        return {"techniques": (None, ""), "critic_techniques": (None, "")}
    from autocompress import sources

    imported = sources.load(spec)
    critic = imported.critic
    return {"techniques": (len(imported.actor.layers), f"the imported policy's {', '.join(imported.describe())}"),
            "critic_techniques": (len(critic.layers) if critic is not None else None,
                                  "the imported policy's critic" if critic is not None else
                                  "the imported policy has no critic in its file (one is warmed up)")}
