"""The search's anchor trials, queued ahead of the sampler: the baselines (teacher as-is, then each
technique alone at a middle setting) and the stacks (two techniques, once the first kept the return
alone). Their Optuna params are named and valued as the space's own (space.switches / setting_params),
so the sampler learns from them as from its own trials; the sensitivity stage's guided configs
(_search/guided.py) are queued the same way.
"""

from __future__ import annotations

from typing import Any

from autocompress.space import SearchSpace, groups, setting_params, switches
from autocompress.targets import target
from autocompress.techniques import TECHNIQUES


def _alone(space: SearchSpace, only: str | None, values: dict[str, Any]) -> dict[str, Any]:
    """Optuna params of one technique alone at `values` (a key not given: its middle; every layer of a
    per-layer setting at its middle; None: the teacher as-is). The critic is never compressed here."""
    params = {**switches(space.techniques, [only] if only else []), **switches(space.critic_techniques, (), "critic.")}
    if only is not None:
        params.update(setting_params(only, space.techniques[only], values))
    return params


def stack_order(space: SearchSpace) -> list[str]:
    """The space's techniques by TechniqueConfig.stack_rank (ties as listed): the baselines' run order
    and the order partners join a stack."""
    return sorted(space.techniques, key=lambda n: TECHNIQUES[n].stack_rank)


def baseline_params(space: SearchSpace, settings: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Optuna params of the anchor trials: teacher as-is, then each technique alone at a middle setting
    (or as `settings` gives it, technique -> key -> value: e.g. the student a device budget leaves room
    for, mcu.fit), in stack order (a distilled student first: the likely anchor of the stacks)."""
    settings = settings or {}
    return [_alone(space, None, {})] + [_alone(space, name, settings.get(name, {})) for name in stack_order(space)]


def stacked_params(space: SearchSpace, anchor: str, anchor_params: dict[str, Any],
                   also_at: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Optuna params of up to `space.stack` two-technique stacks on `anchor`, a technique that kept the
    return alone, at its baseline's `anchor_params`. Each other technique (not of the anchor's
    exclusive group) joins it in stack order, at the gentle end of its ranges (stacked losses
    compound; its other settings as in its own baseline, and on an MCU target as its `on_device` says
    where the space allows it). A partner need not have kept the return at its middle setting: 8-bit
    codes on a student often do where 5-bit codes alone did not.

    `also_at` (anchor key -> value; an MCU target only): the anchor's settings at which the stacks whose
    partner has on-device codes run once more, after the others: under a device budget, the next narrower
    student that fits (mcu.fit), since the widest sits at the budget's edge and may lose the return once
    coded where a narrower one keeps it."""
    device = space.target is not None and target(space.target).mcu
    group_of = {name: g for g, names in groups(space.techniques).items() for name in names}
    out = []
    for name in stack_order(space):
        if name == anchor or (name in group_of and group_of[name] == group_of.get(anchor)):
            continue  # one technique per group: e.g. share and quantize do not stack
        entries = space.techniques[name]
        gentle = {key: e.gentle(end) for key, end in TECHNIQUES[name].gentle.items()
                  if (e := entries.get(key)) is not None and e.gentle(end) is not None}
        if device:
            gentle.update({key: v for key, v in TECHNIQUES[name].on_device.items()
                           if key in entries and v in entries[key].ends()})
        out.append((name, {**anchor_params, **switches(space.techniques, [anchor, name]),
                           **setting_params(name, entries, gentle)}))
    out = out[:space.stack]
    if device and also_at:
        moved = setting_params(anchor, {k: space.techniques[anchor][k] for k in also_at}, also_at)
        out += [(name, {**params, **moved}) for name, params in out if TECHNIQUES[name].on_device]
    return [params for _, params in out]
