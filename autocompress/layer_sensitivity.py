"""Layer sensitivity: how much the policy drops when ONE layer is compressed with ONE setting.

For each layer of the teacher's deployed net and each setting of each per-layer technique
(`quantize.bits`, `prune.sparsity`, `share.bits`, `structured.amount` of hidden layers), only that
layer is compressed, through the normal one-verb path with a per-layer map
(`{quantize: {bits: {1: 4}}}`: layer 1 at 4 bits, the others left as they are), with no
fine-tuning, and compared with the teacher:

  agreement  on teacher-visited states (the pipeline's `sample_obs`, spec.sample_steps of them):
             discrete, the fraction of states whose argmax matches the teacher's; continuous,
             1 - mean |Δaction| / (high - low) over states and action dimensions.
  kl         KL(teacher || compressed) of the action distributions, mean over the same states:
             PPO logits: softmax; DQN Q-values: Boltzmann policies at temperature τ = the teacher's
             mean per-state std of Q over actions (scale-free: CartPole's Q-values are ~100, a
             plain softmax of them is one-hot); continuous: diagonal Gaussians (mean, log_std).
  return     over `episodes` seeded episodes (reset with SENSITIVITY_SEED + i: apart from the
             evaluation, held-out, fine-tune and distillation seeds), as a ratio to the teacher's
             return on the same episodes (normalised against a random policy where the teacher's
             return is not positive, as `measure.return_ratio` does).
  drop       max(action_drop, return_drop) with action_drop = 1 - agreement and return_drop =
             max(0, 1 - return ratio) (action_drop alone when episodes = 0).

Measured on the torch nets, not on exported artifacts: the torch forward is what the artifact
computes (tests/test_export checks that their actions match), it runs all visited states as one
batch, and no artifact has to be encoded per (layer, setting).

`guided_configs(table, space)` turns a table into search configs (per layer, the most aggressive
setting whose drop stays within `sensitivity.max_drop`); `search_stage` is the optional first
stage of a search that computes the table once (cached in the run dir).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from autocompress.algos import ALGOS
from autocompress.errors import ConfigError
# the sensitivity episodes reset with SENSITIVITY_SEED + i (i < 100): a range of their own in
# autocompress.seeds, which keeps a spec's evaluation and held-out seeds off it
from autocompress.seeds import SENSITIVITY_SEED

if TYPE_CHECKING:
    from autocompress.config import TrialSpec
    from autocompress.nets import PolicyNet
    from autocompress.space import SearchSpace

#: the setting each per-layer technique sweeps, and the direction in which it compresses harder
PER_LAYER_KEY = {"quantize": "bits", "prune": "sparsity", "share": "bits", "structured": "amount"}
HARDER = {"bits": -1, "sparsity": 1, "amount": 1}
#: settings swept when neither the caller nor a search space gives any (least to most aggressive)
DEFAULT_SETTINGS: dict[str, list] = {
    "quantize": [8, 7, 6, 5, 4, 3, 2],
    "prune": [0.5, 0.7, 0.9, 0.95],
    "share": [6, 5, 4, 3, 2],
    "structured": [0.25, 0.5, 0.75, 0.9],
}
#: what `metric` (CLI --metric, search space sensitivity.metric) names in a table row
METRICS = {"max": "drop", "action": "action_drop", "return": "return_drop"}
FILE = "sensitivity.json"
PLOT = "sensitivity.png"

Progress = Callable[[int, int, str], None]


# -- what to sweep ----------------------------------------------------------------------------

def check_techniques(techniques: Sequence[str] | None) -> list[str]:
    """The per-layer techniques asked for (all by default); ConfigError naming an unknown one."""
    if techniques is None:
        return list(PER_LAYER_KEY)
    out = []
    for t in techniques:
        if t not in PER_LAYER_KEY:
            from autocompress.techniques import TECHNIQUES

            why = "has no per-layer setting" if t in TECHNIQUES else "is not a technique"
            raise ConfigError(f"{t!r} {why}; choose from {', '.join(PER_LAYER_KEY)}", option="techniques")
        if t not in out:
            out.append(t)
    if not out:
        raise ConfigError(f"name at least one of {', '.join(PER_LAYER_KEY)}", option="techniques")
    return out


def check_settings(settings: dict[str, Sequence], base: dict[str, dict] | None = None) -> dict[str, list]:
    """Each technique's settings, least to most aggressive; every value validated as that technique's
    (scalar) setting now, before any work: ConfigError naming the technique and the value."""
    from autocompress.config import CompressConfig, parse

    out = {}
    for t, values in settings.items():
        check_techniques([t])
        values = list(values)
        if not values:
            raise ConfigError(f"{t}: give at least one setting", option="settings")
        for v in values:
            try:
                parse(CompressConfig, {t: {**(base or {}).get(t, {}), PER_LAYER_KEY[t]: v}}, "settings")
            except ConfigError as e:
                raise ConfigError(f"{t} {PER_LAYER_KEY[t]} = {v!r}: {e.args[0].removeprefix('settings: ')}",
                                  option="settings") from None
        out[t] = sorted(set(values), key=lambda v: HARDER[PER_LAYER_KEY[t]] * v)
    return out


def parse_settings(items: Sequence[str]) -> dict[str, list]:
    """CLI `--settings quantize=2,4,8` items -> {"quantize": [2, 4, 8]} (values checked later by
    `check_settings`); ConfigError naming the malformed item."""
    out: dict[str, list] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        try:
            parsed = [float(v) if any(c in v for c in ".eE") else int(v) for v in values.split(",")] if sep else None
        except ValueError:
            parsed = None
        if not parsed:
            raise ConfigError(f"{item!r}: write TECHNIQUE=V1,V2,..., e.g. quantize=2,4,8 or prune=0.5,0.9",
                              option="settings")
        check_techniques([name])
        out[name] = out.get(name, []) + parsed
    return out


def layer_indices(net: PolicyNet, technique: str) -> list[int]:
    """The layers a technique can compress one at a time (structured: hidden layers only)."""
    n = len(net.layers)
    return list(range(n - 1 if technique == "structured" else n))


def one_layer_config(technique: str, layer: int, setting: Any, base: dict | None = None) -> dict:
    """The techniques config (CompressConfig dict form) that compresses only `layer` with `setting`."""
    return {technique: {**(base or {}), PER_LAYER_KEY[technique]: {layer: setting}}}


# -- the measurements -------------------------------------------------------------------------

def _outputs(net: PolicyNet, obs: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return net(obs).numpy().astype(np.float64)


def _softmax_logp(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


class Reference:
    """The teacher's outputs on the visited states, and how a candidate's outputs compare with them."""

    def __init__(self, teacher: PolicyNet, obs: np.ndarray, head: dict, q_values: bool):
        self.obs = torch.as_tensor(np.asarray(obs, np.float32))
        self.head, self.q_values = head, q_values
        self.out = _outputs(teacher, self.obs)
        if head["kind"] == "discrete":
            # DQN: Boltzmann over Q at the teacher's typical action spread, so the KL is scale-free
            self.tau = max(float(self.out.std(axis=1).mean()), 1e-8) if q_values else 1.0
            self.logp = _softmax_logp(self.out / self.tau)
            self.action = self.out.argmax(axis=1)
        else:
            self.action = self._actions(self.out)

    def _actions(self, out: np.ndarray) -> np.ndarray:
        from autocompress.runtime import output_to_action

        return np.asarray(output_to_action(out, self.head), np.float64).reshape(len(out), -1)

    def compare(self, net: PolicyNet) -> dict[str, float | None]:
        out = _outputs(net, self.obs)
        if not np.isfinite(out).all():
            return {"agreement": 0.0, "kl": float("inf"), "action_delta": None}
        if self.head["kind"] == "discrete":
            logp = _softmax_logp(out / self.tau)
            kl = float((np.exp(self.logp) * (self.logp - logp)).sum(axis=1).mean())
            return {"agreement": float((out.argmax(axis=1) == self.action).mean()), "kl": max(kl, 0.0),
                    "action_delta": None}
        span = np.asarray(self.head["high"], np.float64) - np.asarray(self.head["low"], np.float64)
        delta = float((np.abs(self._actions(out) - self.action) / np.where(span > 0, span, 1.0)).mean())
        d = self.head["act_dim"]
        kl = None
        if out.shape[1] == 2 * d:  # mean and log_std: KL of diagonal Gaussians (tanh squashing keeps it)
            m0, s0, m1, s1 = self.out[:, :d], self.out[:, d:], out[:, :d], out[:, d:]
            kl = float((s1 - s0 + (np.exp(2 * s0) + (m0 - m1) ** 2) / (2 * np.exp(2 * s1)) - 0.5).sum(1).mean())
        return {"agreement": 1.0 - min(delta, 1.0), "kl": kl, "action_delta": delta}


def _ratio(ret: float, teacher_ret: float, random_ret: Callable[[], float]) -> float:
    if teacher_ret > 0:
        return ret / teacher_ret
    rand = random_ret()
    return (ret - rand) / (teacher_ret - rand) if teacher_ret != rand else float("nan")


def measure(teacher: PolicyNet, head: dict, obs: np.ndarray, make_env: Callable | None, *, q_values: bool = False,
            settings: dict[str, list], base: dict[str, dict] | None = None, episodes: int = 5,
            seed: int = SENSITIVITY_SEED, ctx_seed: int = 0, log: Callable[[str], None] = lambda m: None,
            progress: Progress = lambda done, total, what: None) -> dict:
    """The sensitivity table of `teacher` (a dict, as written to sensitivity.json). `settings`:
    technique -> values (see `check_settings`); `base`: technique -> its other settings (e.g.
    quantize per_channel); `obs`: the teacher-visited states in the net's input space
    (normalised); `make_env` None or episodes 0: no returns."""
    from autocompress import measure as measuring
    from autocompress.artifact import runtime_act
    from autocompress.pipeline import compress_net
    from autocompress.config import parse, CompressConfig
    from autocompress.techniques import Context

    base = base or {}
    t0 = time.perf_counter()
    ref = Reference(teacher, obs, head, q_values)
    episodes = episodes if make_env is not None else 0
    # acted through the artifact's numpy runtime: the net's actions without a batch-1 torch forward per step
    returns = (lambda net: measuring.evaluate(runtime_act(net, head), make_env, episodes, seed)) \
        if episodes else None
    t_ret = returns(teacher) if returns else None
    rand: list[float] = []

    def random_ret() -> float:
        if not rand:
            space = make_env().action_space
            space.seed(seed)
            rand.append(float(measuring.evaluate(lambda o: space.sample(), make_env, episodes, seed).mean()))
        return rand[0]

    ctx = Context(teacher=teacher, sample_obs=np.asarray(obs, np.float32), head=head["kind"], q_values=q_values,
                  seed=ctx_seed)
    jobs = [(t, i, v) for t, values in settings.items() for i in layer_indices(teacher, t) for v in values]
    rows = []
    for n, (t, i, v) in enumerate(jobs):
        progress(n, len(jobs), f"{t} {PER_LAYER_KEY[t]}={v} layer {i}")
        s0 = time.perf_counter()
        cfg = parse(CompressConfig, one_layer_config(t, i, v, base.get(t)), f"sensitivity {t} layer {i}")
        net = compress_net(teacher, cfg, ctx, None)
        row: dict[str, Any] = {"technique": t, "key": PER_LAYER_KEY[t], "layer": i, "setting": v,
                               **ref.compare(net)}
        row["action_drop"] = 1.0 - row["agreement"]
        if returns:
            r = returns(net)
            ratio = _ratio(float(r.mean()), float(t_ret.mean()), random_ret)
            row.update(return_mean=float(r.mean()), return_std=float(r.std()), return_ratio=ratio,
                       return_drop=max(0.0, 1.0 - ratio) if np.isfinite(ratio) else 1.0)
            row["drop"] = max(row["action_drop"], row["return_drop"])
        else:
            row.update(return_mean=None, return_std=None, return_ratio=None, return_drop=None,
                       drop=row["action_drop"])
        row["seconds"] = time.perf_counter() - s0
        rows.append(row)
        log(f"sensitivity {t} {PER_LAYER_KEY[t]}={v} layer {i}: agreement {row['agreement']:.3f}"
            + (f", return ×{row['return_ratio']:.3f}" if returns else "") + f", drop {row['drop']:.3f}")
    progress(len(jobs), len(jobs), "done")
    return {
        "version": 1, "head": head["kind"], "q_values": q_values,
        "kl": "softmax of Q / tau (tau: teacher's mean per-state Q std)" if q_values and head["kind"] == "discrete"
        else ("softmax of logits" if head["kind"] == "discrete" else "diagonal Gaussian (mean, log_std)"),
        "tau": getattr(ref, "tau", None), "states": int(len(obs)), "episodes": episodes,
        "seed": seed if episodes else None,
        "teacher": {"return_mean": float(t_ret.mean()) if returns else None,
                    "return_std": float(t_ret.std()) if returns else None},
        "layers": [layer_entry(i, layer) for i, layer in enumerate(teacher.layers)],
        "techniques": {t: {"key": PER_LAYER_KEY[t], "settings": list(v), "base": dict(base.get(t, {}))}
                       for t, v in settings.items()},
        "rows": rows, "seconds": time.perf_counter() - t0,
    }


def layer_entry(i: int, layer) -> dict:
    """A table's description of a layer: in -> out features; a conv layer: in -> out channels and its
    kernel / stride ("3x3/1")."""
    if layer.conv is None:
        return {"index": i, "in": layer.in_features, "out": layer.out_features, "act": layer.act}
    (kh, kw), (sh, sw) = layer.conv["kernel"], layer.conv["stride"]
    return {"index": i, "in": layer.conv["in_shape"][0], "out": layer.out_features, "act": layer.act,
            "conv": f"{kh}x{kw}/{sh}" if sh == sw else f"{kh}x{kw}/{sh}x{sw}"}


# -- a trial spec's teacher, end to end -----------------------------------------------------

def table_key(spec: TrialSpec, settings: dict, base: dict, episodes: int) -> str:
    """What determines a table: a cached one with another key is measured again."""
    blob = json.dumps({"teacher": spec.teacher_key(), "sample_steps": spec.sample_steps, "seed": spec.seed,
                       "settings": settings, "base": base, "episodes": episodes, "first": SENSITIVITY_SEED},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run(spec: TrialSpec, cache_root: Path, *, settings: dict[str, list], base: dict[str, dict] | None = None,
        episodes: int = 5, out_dir: Path | None = None, log: Callable[[str], None] = lambda m: None,
        progress: Progress = lambda done, total, what: None) -> dict:
    """Load (or train) the spec's teacher, collect its visited states as the pipeline does, measure
    the table; with `out_dir`, write sensitivity.json and the heatmap sensitivity.png there."""
    from autocompress import measure as measuring
    from autocompress import teacher as teachers
    from autocompress.artifact import runtime_act
    from autocompress.runtime import obs_normalizer

    base = base or {}
    teacher = teachers.train_teacher(spec, Path(cache_root), log=log)
    head = teacher.info["head"]
    make_env = spec.env_creator()
    # the states every data-driven technique sees in a trial (pipeline.build_compressed: sample_obs)
    normalize = obs_normalizer(head.get("obs_norm"))
    obs = normalize(measuring.collect_obs(runtime_act(teacher.actor, head), make_env, spec.sample_steps, spec.seed))
    table = measure(teacher.actor, head, obs, make_env, q_values=ALGOS[spec.algorithm].q_values, settings=settings,
                    base=base, episodes=episodes, ctx_seed=spec.seed, log=log, progress=progress)
    table.update(spec=spec.name, env=spec.env, algorithm=spec.algorithm, teacher_path=str(teacher.path),
                 key=table_key(spec, settings, base, episodes))
    if out_dir is not None:
        write(table, Path(out_dir))
    return table


def write(table: dict, out_dir: Path) -> list[Path]:
    """sensitivity.json and the heatmap sensitivity.png in `out_dir`; their paths."""
    from autocompress.plots import sensitivity_png

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / FILE).write_text(json.dumps(table, indent=1, default=_json_default))
    return [out_dir / FILE, sensitivity_png(table, out_dir / PLOT)]


def _json_default(v):
    if isinstance(v, (np.integer, np.floating)):
        return v.item()
    raise TypeError(type(v).__name__)


def read(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# -- a search's first stage ------------------------------------------------------------------

def _middle(p: Any) -> Any:
    """A search-space entry's middle value (the baselines' rule) as a config value; fixed values as given."""
    if isinstance(p, dict) and "choices" in p:
        return p["choices"][len(p["choices"]) // 2]
    if isinstance(p, dict) and {"low", "high"} <= set(p):
        if isinstance(p["low"], int) and isinstance(p["high"], int):
            return (p["low"] + p["high"]) // 2
        return (p["low"] + p["high"]) / 2
    return p


def _entry(p: Any) -> tuple[str, Any]:
    """A space's entry for a per-layer setting: ('per_layer', its range or choices: one param per
    layer), ('sampled', range or choices: one param for all layers), ('fixed', [values]) or ('any', None)."""
    if p is None:
        return "any", None
    if isinstance(p, dict) and "per_layer" in p:
        return "per_layer", {k: v for k, v in p["per_layer"].items() if k != "layers"}
    if isinstance(p, dict) and ("choices" in p or {"low", "high"} <= set(p)):
        return "sampled", p
    values = list(p.values()) if isinstance(p, dict) else list(p) if isinstance(p, list) else [p]
    return "fixed", values


def _within(p: Any, v: Any) -> bool:
    """Whether setting v lies in the space's entry p for it."""
    kind, q = _entry(p)
    if kind == "any":
        return True
    if kind == "fixed":
        return v in q
    if "choices" in q:
        return v in q["choices"]
    return q["low"] - 1e-12 <= v <= q["high"] + 1e-12


def space_base(space: SearchSpace) -> dict[str, dict]:
    """Per technique of the space, its settings other than the per-layer one: fixed values as given,
    ranges and choices at their middle (as the baselines). Pruning sweeps by magnitude."""
    out = {}
    for t, params in space.techniques.items():
        if t in PER_LAYER_KEY:
            out[t] = {k: _middle(p) for k, p in params.items() if k != PER_LAYER_KEY[t]}
            if t == "prune":
                out[t].update(method="magnitude")
    return out


def space_settings(space: SearchSpace) -> dict[str, list]:
    """The settings a search's sensitivity stage sweeps: per per-layer technique of the space, every
    int of an int range (bits), the default grid inside a float range plus its ends, the choices,
    or the fixed values; the default grid where the space leaves the setting to the technique."""
    out = {}
    for t, params in space.techniques.items():
        if t not in PER_LAYER_KEY:
            continue
        kind, q = _entry(params.get(PER_LAYER_KEY[t]))
        if kind == "any":
            values = DEFAULT_SETTINGS[t]
        elif kind == "fixed":
            values = q
        elif "choices" in q:
            values = q["choices"]
        elif isinstance(q["low"], int) and isinstance(q["high"], int):
            values = list(range(q["low"], q["high"] + 1))
        else:
            values = [v for v in DEFAULT_SETTINGS[t] if q["low"] <= v <= q["high"]] + [float(q["low"]),
                                                                                        float(q["high"])]
        out[t] = sorted(set(values), key=lambda v: HARDER[PER_LAYER_KEY[t]] * v)
    return out


def safe_settings(table: dict, max_drop: float, metric: str = "max",
                  allowed: dict[str, Any] | None = None) -> dict[str, dict[int, Any]]:
    """technique -> {layer: the most aggressive setting whose drop stays within max_drop}. Settings are
    walked from least to most aggressive and the walk stops at the first one over max_drop (a noisy
    2-bit pass after a 3-bit failure is not trusted); a layer where even the mildest fails is left
    out. `allowed`: technique -> the search-space entry the setting must lie in."""
    field = METRICS[metric]
    out: dict[str, dict[int, Any]] = {}
    for t, info in table["techniques"].items():
        harder = HARDER[info["key"]]
        by_layer: dict[int, list[dict]] = {}
        for r in table["rows"]:
            if r["technique"] == t and (allowed is None or _within(allowed.get(t), r["setting"])):
                by_layer.setdefault(r["layer"], []).append(r)
        chosen = {}
        for layer, rows in sorted(by_layer.items()):
            for r in sorted(rows, key=lambda r: harder * r["setting"]):
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
    from autocompress.techniques import TECHNIQUES

    stage = space.sensitivity
    entries = {t: p.get(PER_LAYER_KEY[t]) for t, p in space.techniques.items() if t in PER_LAYER_KEY}
    safe = safe_settings(sensitivity_table, stage.max_drop, stage.metric, entries)
    base = space_base(space)
    per_tech = {}
    for t in entries:
        if t not in safe:
            continue
        value: Any = safe[t]
        if _entry(entries[t])[0] == "per_layer":
            mildest = next(v for v in sensitivity_table["techniques"][t]["settings"] if _within(entries[t], v))
            n = len(sensitivity_table["layers"]) - (1 if t == "structured" else 0)
            value = [safe[t].get(i, mildest) for i in range(n)]
        per_tech[t] = {**base[t], PER_LAYER_KEY[t]: value}
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
    from autocompress.space import groups

    params: dict[str, Any] = {}
    for prefix, techniques, on in (("", space.techniques, cfg), ("critic.", space.critic_techniques, {})):
        grouped = groups(techniques)
        for g, names in grouped.items():
            params[f"{prefix}{g}"] = next((n for n in names if n in on), "none")
        for name, ps in techniques.items():
            if not any(name in names for names in grouped.values()):
                params[f"{prefix}{name}.enabled"] = name in on
            if name not in on:
                continue
            for k, p in ps.items():
                kind, q = _entry(p)
                v = on[name].get(k, _middle(q))
                if kind == "per_layer":
                    values = v if isinstance(v, list) else [v] * int(p["per_layer"]["layers"])
                    params.update({f"{prefix}{name}.{k}.{i}": _param_value(q, x) for i, x in enumerate(values)})
                elif kind == "sampled":
                    params[f"{prefix}{name}.{k}"] = _param_value(q, v)
    return params


def _param_value(p: dict, v: Any) -> Any:
    if isinstance(v, (dict, list)) and v and all(isinstance(x, (int, float)) for x in
                                                 (v.values() if isinstance(v, dict) else v)):
        v = float(np.mean(list(v.values()) if isinstance(v, dict) else v))  # one value stands for all layers
    if "choices" in p:
        c = p["choices"]
        if v in c:
            pick = v
        else:
            nums = [x for x in c if isinstance(x, (int, float)) and not isinstance(x, bool)]
            pick = min(nums, key=lambda x: abs(x - v)) if nums and isinstance(v, (int, float)) else c[0]
        return json.dumps(pick) if isinstance(pick, list) else pick
    v = min(max(v, p["low"]), p["high"])
    return int(round(v)) if isinstance(p["low"], int) and isinstance(p["high"], int) else float(v)


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
                          f"({', '.join(PER_LAYER_KEY)})")
    out_dir = Path(run_dir) / "sensitivity"
    key = table_key(spec, settings, base, stage.episodes)
    cached = read(out_dir / FILE)
    if cached is not None and cached.get("key") == key:
        log(f"sensitivity: cached in {out_dir / FILE}")
        return cached, [out_dir / FILE, out_dir / PLOT]
    n = sum(len(v) for v in settings.values())
    log(f"sensitivity: {n} settings × each layer, {stage.episodes} episodes each, before the trials ...")
    last = [0.0]

    def progress(done: int, total: int, what: str) -> None:
        if time.time() - last[0] > 15 or done == total:
            last[0] = time.time()
            log(f"sensitivity: {done}/{total} measured")

    table = run(spec, Path(cache_root), settings=settings, base=base, episodes=stage.episodes, progress=progress)
    files = write(table, out_dir)
    log(f"sensitivity: {len(table['rows'])} measurements in {table['seconds']:.0f} s -> {out_dir / FILE}")
    return table, files
