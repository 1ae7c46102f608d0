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

A recurrent (LSTM / GRU) teacher's cell is one layer in its place (techniques/per_layer.py); its outputs
on the visited states come from running each net over them in order, the state reset where an episode
starts, as it acted. Measured on the torch nets, not on exported artifacts: the torch forward is what the artifact
computes (tests/test_export checks that their actions match), it runs all visited states as one
batch, and no artifact has to be encoded per (layer, setting).

What a technique sweeps, in which order and over which layers is its config's declaration: its
per-layer field (techniques/per_layer.py), `gentle`, `sweep` and `sweep_base`. A search's first
stage, which turns a table into guided configs, is autocompress/_search/guided.py.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from autocompress import measure as measuring
from autocompress import teacher as teachers
from autocompress.algos import ALGOS
from autocompress.artifact import runtime_act
from autocompress.config import CompressConfig, parse
from autocompress.errors import ConfigError
from autocompress.nets import Recurrent
from autocompress.pipeline import compress_net, teacher_states
from autocompress.runtime import output_to_action

# the sensitivity episodes reset with SENSITIVITY_SEED + i (i < 100): a range of their own in
# autocompress.seeds, which keeps a spec's evaluation and held-out seeds off it
from autocompress.seeds import SENSITIVITY_SEED
from autocompress.techniques import PER_LAYER, TECHNIQUES, Context
from autocompress.techniques.per_layer import over_count, per_layer_fields

if TYPE_CHECKING:
    from autocompress.config import TrialSpec
    from autocompress.nets import PolicyNet

#: settings swept when the caller gives none (least to most aggressive): each config's `sweep`
DEFAULT_SETTINGS: dict[str, list] = {t: list(TECHNIQUES[t].sweep) for t in PER_LAYER}
#: what `metric` (CLI --metric, search space sensitivity.metric) names in a table row
METRICS = {"max": "drop", "action": "action_drop", "return": "return_drop"}
FILE = "sensitivity.json"
PLOT = "sensitivity.png"

Progress = Callable[[int, int, str], None]


# -- what to sweep ----------------------------------------------------------------------------

def check_techniques(techniques: Sequence[str] | None) -> list[str]:
    """The per-layer techniques asked for (all by default); ConfigError naming an unknown one."""
    if techniques is None:
        return list(PER_LAYER)
    out = []
    for t in techniques:
        if t not in PER_LAYER:
            why = "has no per-layer setting" if t in TECHNIQUES else "is not a technique"
            raise ConfigError(f"{t!r} {why}; choose from {', '.join(PER_LAYER)}", option="techniques")
        if t not in out:
            out.append(t)
    if not out:
        raise ConfigError(f"name at least one of {', '.join(PER_LAYER)}", option="techniques")
    return out


def gentlest_first(technique: str, values) -> list:
    """`values` of the technique's swept setting without repeats, least to most aggressive."""
    return sorted(set(values), key=TECHNIQUES[technique].gentlest_first(PER_LAYER[technique]))


def check_settings(settings: dict[str, Sequence], base: dict[str, dict] | None = None) -> dict[str, list]:
    """Each technique's settings, least to most aggressive; every value validated as that technique's
    (scalar) setting now, before any work: ConfigError naming the technique and the value."""
    out = {}
    for t, values in settings.items():
        check_techniques([t])
        values = list(values)
        if not values:
            raise ConfigError(f"{t}: give at least one setting", option="settings")
        for v in values:
            try:
                parse(CompressConfig, {t: {**(base or {}).get(t, {}), PER_LAYER[t]: v}}, "settings")
            except ConfigError as e:
                raise ConfigError(f"{t} {PER_LAYER[t]} = {v!r}: {e.args[0].removeprefix('settings: ')}",
                                  option="settings") from None
        out[t] = gentlest_first(t, values)
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
    """The layers a technique can compress one at a time (a setting over hidden layers: not the output layer)."""
    over = per_layer_fields(TECHNIQUES[technique])[PER_LAYER[technique]]
    return list(range(over_count(over, len(net.hidden_widths()) + 1)))


def one_layer_config(technique: str, layer: int, setting: Any, base: dict | None = None) -> dict:
    """The techniques config (CompressConfig dict form) that compresses only `layer` with `setting`."""
    return {technique: {**(base or {}), PER_LAYER[technique]: {layer: setting}}}


# -- the measurements -------------------------------------------------------------------------

def _outputs(net: PolicyNet, obs: torch.Tensor, starts: np.ndarray | None) -> np.ndarray:
    """The net's outputs on `obs`; a recurrent net's over them in order, its state zeroed at `starts`."""
    with torch.no_grad():
        out = net(obs) if net.rnn is None else net.sequence(obs, None, None if starts is None else
                                                            torch.as_tensor(starts))[0]
        return out.numpy().astype(np.float64)


def _softmax_logp(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


class Reference:
    """The teacher's outputs on the visited states, and how a candidate's outputs compare with them."""

    def __init__(self, teacher: PolicyNet, obs: np.ndarray, head: dict, q_values: bool,
                 starts: np.ndarray | None = None):
        self.obs = torch.as_tensor(np.asarray(obs, np.float32))
        self.head, self.q_values, self.starts = head, q_values, starts
        self.out = _outputs(teacher, self.obs, starts)
        if head["kind"] == "discrete":
            # DQN: Boltzmann over Q at the teacher's typical action spread, so the KL is scale-free
            self.tau = max(float(self.out.std(axis=1).mean()), 1e-8) if q_values else 1.0
            self.logp = _softmax_logp(self.out / self.tau)
            self.action = self.out.argmax(axis=1)
        else:
            self.action = self._actions(self.out)

    def _actions(self, out: np.ndarray) -> np.ndarray:
        return np.asarray(output_to_action(out, self.head), np.float64).reshape(len(out), -1)

    def compare(self, net: PolicyNet) -> dict[str, float | None]:
        out = _outputs(net, self.obs, self.starts)
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


def measure(teacher: PolicyNet, head: dict, obs: np.ndarray, make_env: Callable | None, *, q_values: bool = False,
            settings: dict[str, list], base: dict[str, dict] | None = None, episodes: int = 5,
            seed: int = SENSITIVITY_SEED, ctx_seed: int = 0, log: Callable[[str], None] = lambda m: None,
            progress: Progress = lambda done, total, what: None, starts: np.ndarray | None = None) -> dict:
    """The sensitivity table of `teacher` (a dict, as written to sensitivity.json). `settings`:
    technique -> values (see `check_settings`); `base`: technique -> its other settings (e.g.
    quantize per_channel); `obs`: the teacher-visited states in the net's input space
    (normalised), `starts`: where their episodes start (None: one episode); `make_env` None or
    episodes 0: no returns."""
    base = base or {}
    t0 = time.perf_counter()
    ref = Reference(teacher, obs, head, q_values, starts)
    episodes = episodes if make_env is not None else 0
    # acted through the artifact's numpy runtime: the net's actions without a batch-1 torch forward per step
    returns = (lambda net: measuring.evaluate(runtime_act(net, head), make_env, episodes, seed)) \
        if episodes else None
    t_ret = returns(teacher) if returns else None
    # a teacher return that is not positive: ratios normalised against a random policy's (measure.ratio_to)
    rand = measuring.random_return(make_env, episodes, seed) if returns and t_ret.mean() <= 0 else None

    ctx = Context(teacher=teacher, sample_obs=np.asarray(obs, np.float32), sample_starts=starts, head=head["kind"],
                  q_values=q_values, seed=ctx_seed)
    jobs = [(t, i, v) for t, values in settings.items() for i in layer_indices(teacher, t) for v in values]
    rows = []
    for n, (t, i, v) in enumerate(jobs):
        progress(n, len(jobs), f"{t} {PER_LAYER[t]}={v} layer {i}")
        s0 = time.perf_counter()
        cfg = parse(CompressConfig, one_layer_config(t, i, v, base.get(t)), f"sensitivity {t} layer {i}")
        net = compress_net(teacher, cfg, ctx, None)
        row: dict[str, Any] = {"technique": t, "key": PER_LAYER[t], "layer": i, "setting": v,
                               **ref.compare(net)}
        row["action_drop"] = 1.0 - row["agreement"]
        if returns:
            r = returns(net)
            ratio = measuring.ratio_to(float(r.mean()), float(t_ret.mean()), rand)
            row.update(return_mean=float(r.mean()), return_std=float(r.std()), return_ratio=ratio,
                       return_drop=max(0.0, 1.0 - ratio) if np.isfinite(ratio) else 1.0)
            row["drop"] = max(row["action_drop"], row["return_drop"])
        else:
            row.update(return_mean=None, return_std=None, return_ratio=None, return_drop=None,
                       drop=row["action_drop"])
        row["seconds"] = time.perf_counter() - s0
        rows.append(row)
        log(f"sensitivity {t} {PER_LAYER[t]}={v} layer {i}: agreement {row['agreement']:.3f}"
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
        "layers": layer_entries(teacher),
        "techniques": {t: {"key": PER_LAYER[t], "settings": list(v), "base": dict(base.get(t, {}))}
                       for t, v in settings.items()},
        "rows": rows, "seconds": time.perf_counter() - t0,
    }


def layer_entries(net: PolicyNet) -> list[dict]:
    """Each layer per-layer settings index (a recurrent cell in its place), as `layer_entry` describes it."""
    layers: list = list(net.layers)
    if net.rnn is not None:
        layers.insert(net.rnn.at, net.rnn)
    return [layer_entry(i, layer) for i, layer in enumerate(layers)]


def layer_entry(i: int, layer) -> dict:
    """A table's description of a layer: in -> out features; a conv layer: in -> out channels and its
    kernel / stride ("3x3/1"); a recurrent layer: in -> units and its cell; `label`, how plots and tables name it
    ("1: 64→64", "0: conv 3x3/1 4→16", "1: lstm 64→64")."""
    if isinstance(layer, Recurrent):
        entry = {"index": i, "in": layer.in_features, "out": layer.hidden, "act": layer.cell, "cell": layer.cell}
        return {**entry, "label": f"{i}: {layer.cell} {entry['in']}→{entry['out']}"}
    if layer.conv is None:
        entry = {"index": i, "in": layer.in_features, "out": layer.out_features, "act": layer.act}
    else:
        (kh, kw), (sh, sw) = layer.conv["kernel"], layer.conv["stride"]
        entry = {"index": i, "in": layer.conv["in_shape"][0], "out": layer.out_features, "act": layer.act,
                 "conv": f"{kh}x{kw}/{sh}" if sh == sw else f"{kh}x{kw}/{sh}x{sw}"}
    conv = f"conv {entry['conv']} " if "conv" in entry else ""
    return {**entry, "label": f"{i}: {conv}{entry['in']}→{entry['out']}"}


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
    base = base or {}
    teacher = teachers.train_teacher(spec, Path(cache_root), log=log)
    head = teacher.info["head"]
    make_env = spec.env_creator()
    _, obs, starts = teacher_states(teacher, spec, make_env)  # the states every data-driven technique sees in a trial
    table = measure(teacher.actor, head, obs, make_env, q_values=ALGOS[spec.algorithm].q_values, settings=settings,
                    base=base, episodes=episodes, ctx_seed=spec.seed, log=log, progress=progress, starts=starts)
    table.update(spec=spec.name, env=spec.env, algorithm=spec.algorithm, teacher_path=str(teacher.path),
                 key=table_key(spec, settings, base, episodes))
    if out_dir is not None:
        write(table, Path(out_dir))
    return table


def write(table: dict, out_dir: Path) -> list[Path]:
    """sensitivity.json and the heatmap sensitivity.png in `out_dir`; their paths."""
    from autocompress.plots import sensitivity_png  # deferred (heavy): matplotlib, for the heatmap only

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
