"""A search's optional first stage: layer sensitivity (autocompress.layer_sensitivity measures it),
turned into guided configs that the driver enqueues ahead of the sampler, beside the baselines and
stacks (_search/stacking.py).

Per layer, a guided config takes the most aggressive setting whose drop stays within
`sensitivity.max_drop`, within the space's entry for that setting; the Optuna params that stand for
it in the study are named and valued as the space's own (space.switches / setting_params).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from autocompress import layer_sensitivity as sens
from autocompress.errors import ConfigError
from autocompress.space import setting_params, switches
from autocompress.space_entries import PerLayer
from autocompress.techniques import PER_LAYER, TECHNIQUES
from autocompress.techniques.per_layer import over_count

if TYPE_CHECKING:
    from autocompress.config import TrialSpec
    from autocompress.space import SearchSpace


def space_base(space: SearchSpace) -> dict[str, dict]:
    """Per swept technique of the space, its settings other than the swept one: fixed values as given,
    ranges and choices at their middle (as the baselines), and what its config's `sweep_base` fixes."""
    return {t: {**{k: e.middle() for k, e in entries.items() if k != PER_LAYER[t]}, **TECHNIQUES[t].sweep_base}
            for t, entries in space.techniques.items() if t in PER_LAYER}


def space_settings(space: SearchSpace) -> dict[str, list]:
    """The settings a search's sensitivity stage sweeps: per swept technique of the space, the values its
    entry allows (every int of an int range, the default grid inside a float range plus its ends, the
    choices, the fixed values); the default grid where the space leaves the setting to the technique."""
    out = {}
    for t, entries in space.techniques.items():
        if t in PER_LAYER:
            e = entries.get(PER_LAYER[t])
            out[t] = sens.gentlest_first(t, sens.DEFAULT_SETTINGS[t] if e is None else e.values(sens.DEFAULT_SETTINGS[t]))
    return out


def safe_settings(table: dict, max_drop: float, metric: str = "max",
                  allowed: dict[str, Any] | None = None) -> dict[str, dict[int, Any]]:
    """technique -> {layer: the most aggressive setting whose drop stays within max_drop}. Settings are
    walked from least to most aggressive and the walk stops at the first one over max_drop (a noisy
    2-bit pass after a 3-bit failure is not trusted); a layer where even the mildest fails is left
    out. `allowed`: technique -> the space's entry (None: any) the setting must lie in."""
    field = sens.METRICS[metric]
    out: dict[str, dict[int, Any]] = {}
    for t, info in table["techniques"].items():
        gentle_first = TECHNIQUES[t].gentlest_first(info["key"])
        entry = (allowed or {}).get(t)
        by_layer: dict[int, list[dict]] = {}
        for r in table["rows"]:
            if r["technique"] == t and (entry is None or entry.within(r["setting"])):
                by_layer.setdefault(r["layer"], []).append(r)
        chosen = {}
        for layer, rows in sorted(by_layer.items()):
            for r in sorted(rows, key=lambda r: gentle_first(r["setting"])):
                d = r.get(field)
                if d is None or not d <= max_drop:
                    break
                chosen[layer] = r["setting"]
        if chosen:
            out[t] = chosen
    return out


def guided_configs(sensitivity_table: dict, space: SearchSpace) -> list[dict]:
    """Sensitivity-guided configs (CompressConfig dict form) for a search to try first: each per-layer
    technique of the space alone, every layer at its most aggressive setting within
    `space.sensitivity.max_drop` (see `safe_settings`), then those techniques together (one per
    exclusive group: the space's first) when more than one. Settings stay within the space's entries,
    the technique's other settings as `space_base`. A layer with no setting within max_drop is left as
    it is (a map {layer: value}); where the space samples per layer (`per_layer:`) the config is the
    list of every layer's setting, such a layer at the mildest the space allows, so that the config is
    exactly what the space's per-layer params give."""
    stage = space.sensitivity
    entries = {t: p.get(PER_LAYER[t]) for t, p in space.techniques.items() if t in PER_LAYER}
    safe = safe_settings(sensitivity_table, stage.max_drop, stage.metric, entries)
    base = space_base(space)
    per_tech = {}
    for t, entry in entries.items():
        if t not in safe:
            continue
        value: Any = safe[t]
        if isinstance(entry, PerLayer):
            mildest = next(v for v in sensitivity_table["techniques"][t]["settings"] if entry.within(v))
            n = over_count(entry.over, len(sensitivity_table["layers"]))
            value = [safe[t].get(i, mildest) for i in range(n)]
        per_tech[t] = {**base[t], PER_LAYER[t]: value}
    configs = [{t: c} for t, c in per_tech.items()]
    together, groups = {}, set()
    for t, c in per_tech.items():
        g = TECHNIQUES[t].group
        if g is None or g not in groups:
            together[t] = c
            groups.add(g)
    if len(together) > 1:
        configs.append(together)
    return configs


def guided_params(cfg: dict, space: SearchSpace) -> dict[str, Any]:
    """Optuna params that stand for a guided config in the study: which techniques are on, each setting
    as the config has it; a `per_layer:` entry one param per layer (`quantize.bits.0`, ...: exact); a
    per-layer map where the space samples one value for all layers: its mean (rounded for ints, clipped
    to the range; the nearest choice). The config itself travels beside them (the driver runs it); the
    params are what the sampler learns from."""
    params = {**switches(space.techniques, cfg), **switches(space.critic_techniques, (), "critic.")}
    for name, values in cfg.items():
        params.update(setting_params(name, space.techniques[name], values))
    return params


def guided_trials(sensitivity_table: dict, space: SearchSpace) -> list[tuple[dict, dict]]:
    """(Optuna params, config) of each guided config, for the driver to enqueue."""
    return [(guided_params(cfg, space), cfg) for cfg in guided_configs(sensitivity_table, space)]


def search_stage(space: SearchSpace, spec: TrialSpec, cache_root: str | Path, run_dir: Path,
                 log: Callable[[str], None] = print) -> tuple[dict, list[Path]]:
    """The sensitivity pass of a search: measured once and cached in RUN_DIR/sensitivity/ (measured
    again only if the teacher, the settings or the episodes changed). Returns (table, its files)."""
    stage = space.sensitivity
    settings, base = space_settings(space), space_base(space)
    if not settings:
        raise ConfigError("sensitivity: the space has none of the per-layer techniques "
                          f"({', '.join(PER_LAYER)})")
    out_dir = Path(run_dir) / "sensitivity"
    key = sens.table_key(spec, settings, base, stage.episodes)
    cached = sens.read(out_dir / sens.FILE)
    if cached is not None and cached.get("key") == key:
        log(f"sensitivity: cached in {out_dir / sens.FILE}")
        return cached, [out_dir / sens.FILE, out_dir / sens.PLOT]
    n = sum(len(v) for v in settings.values())
    log(f"sensitivity: {n} settings × each layer, {stage.episodes} episodes each, before the trials ...")
    last = [0.0]

    def progress(done: int, total: int, what: str) -> None:
        if time.time() - last[0] > 15 or done == total:
            last[0] = time.time()
            log(f"sensitivity: {done}/{total} measured")

    table = sens.run(spec, Path(cache_root), settings=settings, base=base, episodes=stage.episodes, progress=progress)
    files = sens.write(table, out_dir)
    log(f"sensitivity: {len(table['rows'])} measurements in {table['seconds']:.0f} s -> {out_dir / sens.FILE}")
    return table, files
