"""The teacher: trained once per trial spec with RLlib and cached by a hash of what determines it,
or taken from the teachers committed with the repo. Loading verifies a checksum; training is
resumable (checkpoints every CHECKPOINT_EVERY_S); target networks are rebuilt on load.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from autocompress import artifact, measure, sources
from autocompress.algos import ALGOS
from autocompress.config import TrialSpec
from autocompress.errors import TeacherError
from autocompress.nets import PolicyNet
from autocompress.seeds import CHECK_EPISODES, CHECK_OFFSET
from autocompress.rl import Session, action_head, actor_out_dim, env_spaces, obs_norm


def default_cache() -> Path:
    """Where `teach` and `compress` cache teachers: $AUTOCOMPRESS_CACHE or ~/.cache/autocompress/teachers
    (a search caches in its run dir unless given a cache dir)."""
    return Path(os.environ.get("AUTOCOMPRESS_CACHE", Path.home() / ".cache" / "autocompress" / "teachers"))


#: teachers committed with the repo (same layout as a cache dir), used when the cache has none
SHIPPED_TEACHERS = Path(__file__).resolve().parents[1] / "teachers"


@dataclass
class Teacher:
    actor: PolicyNet
    state: dict[str, np.ndarray]   # full RLModule state (critic / Q nets too), for fine-tuning
    info: dict
    path: Path

    def artifact(self) -> bytes:
        """The teacher's own deployable artifact (.acz): what every candidate is measured against."""
        return artifact.to_bytes(self.actor, self.info["head"])


def teacher_dir(spec: TrialSpec, cache_root: Path) -> Path:
    key = hashlib.sha256(json.dumps(spec.teacher_key(), sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_root) / f"{spec.name}-{key}"


def available_teacher(spec: TrialSpec, cache_root: Path) -> Teacher | None:
    """The cached or committed teacher of `spec`, read where it lies (nothing copied, trained or imported);
    None where there is none yet."""
    path = teacher_dir(spec, Path(cache_root))
    for d in (path, SHIPPED_TEACHERS / path.name):
        if (d / "teacher.json").exists():
            return load_teacher(d)
    return None


def load_teacher(path: Path) -> Teacher:
    """Load a cached teacher; weights via torch.load(weights_only=True), checksum verified."""
    try:
        info = json.loads((path / "teacher.json").read_text())
        blob = (path / "teacher.pt").read_bytes()
    except (OSError, ValueError) as e:
        raise TeacherError(f"teacher cache {path} is unreadable ({e}); delete it to retrain") from None
    if hashlib.sha256(blob).hexdigest() != info.get("sha256"):
        raise TeacherError(f"teacher cache {path} is corrupted (checksum mismatch); delete it to retrain")
    state = _with_targets(torch.load(path / "teacher.pt", weights_only=True))
    actor = PolicyNet.from_spec(info["actor_spec"])
    prefix = info["actor_prefix"] + "."
    actor.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return Teacher(actor, {k: v.numpy() for k, v in state.items()}, info, path)


#: seconds between resumable checkpoints of a teacher being trained
CHECKPOINT_EVERY_S = 60.0


def new_actor(spec: TrialSpec, obs_space, out_dim: int, hidden: list[int] | None = None) -> PolicyNet:
    """A freshly initialised net of the teacher's architecture (`hidden` overrides its widths, e.g. a critic's)."""
    t = spec.teacher
    hidden = list(hidden or t.hidden)
    if t.conv_filters:
        return PolicyNet.cnn(tuple(obs_space.shape), t.obs_layout, t.conv_filters, hidden, out_dim, t.activation)
    if t.rnn:
        return PolicyNet.recurrent_mlp(int(np.prod(obs_space.shape)), hidden, out_dim, t.activation, t.rnn.cell,
                                       t.rnn.hidden, t.rnn.layers_before(hidden))
    return PolicyNet.mlp(int(np.prod(obs_space.shape)), hidden, out_dim, t.activation)


def train_teacher(spec: TrialSpec, cache_root: Path, log: Callable[[str], None] = print,
                  retrain: bool = False, train: bool = True) -> Teacher:
    """The teacher of `spec`, from the cache (or the teachers committed with the repo) or trained
    now with RLlib and cached; `train=False` raises TeacherError instead of training.

    Training is resumable: every CHECKPOINT_EVERY_S the RLlib algorithm (module, optimizer,
    counters) and the best state so far go to `<cache dir>.partial/`; an interrupted run
    picks up from there. `retrain` discards both the cached teacher and any partial run.
    """
    path = teacher_dir(spec, Path(cache_root).resolve())  # absolute: RLlib checkpoints need it
    partial = path.with_name(path.name + ".partial")
    shipped = SHIPPED_TEACHERS / path.name
    if retrain:
        shutil.rmtree(partial, ignore_errors=True)
    if not retrain and not (path / "teacher.json").exists() and (shipped / "teacher.json").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(shipped, path, dirs_exist_ok=True)  # a teacher committed with the repo
    if (path / "teacher.json").exists() and not retrain:
        return load_teacher(path)
    if spec.teacher.from_:
        return import_teacher(spec, path, log)
    if not train:
        raise TeacherError(f"no cached or committed teacher for {spec.name} (looked for {path.name} in {cache_root} "
                           f"and {SHIPPED_TEACHERS})")
    obs_space, act_space = env_spaces(spec)
    head = action_head(spec, act_space)
    t = spec.teacher
    actor = new_actor(spec, obs_space, actor_out_dim(head))
    log(f"training teacher for {spec.env}: {spec.algorithm}, "
        + (f"conv {t.conv_filters} + " if t.conv_filters else "")
        + f"hidden {t.hidden}" + (f" + {t.rnn.cell} {t.rnn.hidden}" if t.rnn else "") + f", up to {t.max_iterations} iterations")
    make_env = spec.env_creator()
    session = Session(spec, actor)
    run = _TeacherRun.resume(partial, session, log)
    start, last_save = time.time() - run.seconds, time.time()
    first, last_start = len(run.returns), time.time()  # iterations of this run set the ETA's rate
    try:
        # Keep the best iteration by a deterministic check (5 episodes on seeds apart from the
        # evaluation seeds): off-policy learners in particular can collapse after peaking.
        for i in range(len(run.returns), t.max_iterations):
            session.train(1, log=lambda m: None)
            run.returns.append(session.returns[-1])
            stats = session.obs_stats()
            acting = head if stats is None else {**head, "obs_norm": obs_norm(stats)}
            ret = float(measure.evaluate(artifact.runtime_act(session.pull(actor), acting), make_env, CHECK_EPISODES,
                                         spec.seed + CHECK_OFFSET).mean())
            elapsed = time.time() - start
            eta = (time.time() - last_start) / (i + 1 - first) * (t.max_iterations - i - 1)
            log(f"  iter {i + 1}/{t.max_iterations}: training return {run.returns[-1]:.1f}, "
                f"deterministic check {ret:.1f}, elapsed {elapsed:.0f} s, ETA {eta:.0f} s"
                + (" (or sooner: stop_return)" if t.stop_return is not None else ""))
            if ret > run.best_return or not run.best_state:
                run.best_return, run.best_state, run.best_iteration = ret, session.module_state(), i + 1
                run.best_obs_stats = stats  # the statistics that iteration acted with
            if t.stop_return is not None and ret >= t.stop_return:
                break
            if time.time() - last_save >= CHECKPOINT_EVERY_S:
                run.seconds = time.time() - start
                run.save(partial, session)
                last_save = time.time()
    finally:
        session.stop()
    if run.best_obs_stats is not None:  # part of how the deployed net acts: carried by every artifact
        head = {**head, "obs_norm": obs_norm(run.best_obs_stats)}
    info = {"trial_spec": spec.teacher_key(), "head": head, "obs_stats": run.best_obs_stats,
            "iterations": len(run.returns),
            "best_iteration": run.best_iteration, "check_return": run.best_return,
            "train_seconds": time.time() - start,
            "final_training_return": run.returns[-1] if run.returns else math.nan,
            "actor_spec": actor.spec(), "actor_prefix": ALGOS[spec.algorithm].actor}
    _save_teacher(path, run.best_state, info)
    shutil.rmtree(partial, ignore_errors=True)
    return load_teacher(path)


def import_teacher(spec: TrialSpec, path: Path, log: Callable[[str], None] = print) -> Teacher:
    """The user's own policy (`teacher.from`), converted and cached like a trained teacher, so that
    everything downstream (Ray tasks, fine-tuning, export) takes it the same way."""
    # a recurrent policy is cached as any other: the entry points (autocompress._api) gate what may use it
    imported = sources.load(spec, recurrent=True)
    log(f"imported {imported.format} {imported.source_algorithm} policy from {spec.teacher.from_}: "
        f"{', '.join(imported.describe())}")
    algo = ALGOS[spec.algorithm]
    state = {f"{algo.actor}.{k}": v.numpy() for k, v in imported.actor.state_dict().items()}
    if imported.critic is not None:
        state.update({f"critic.{k}": v.numpy() for k, v in imported.critic.state_dict().items()})
    info = {"trial_spec": spec.teacher_key(), "head": imported.head, "obs_stats": imported.obs_stats,
            "iterations": 0, "best_iteration": 0, "check_return": math.nan, "train_seconds": 0.0,
            "final_training_return": math.nan, "actor_spec": imported.actor.spec(), "actor_prefix": algo.actor,
            "critic_spec": imported.critic.spec() if imported.critic is not None else None,
            "source": {"format": imported.format, "algorithm": imported.source_algorithm,
                       "path": str(spec.teacher.from_), "notes": imported.notes}}
    _save_teacher(path, state, info)
    return load_teacher(path)


@dataclass
class _TeacherRun:
    """Progress of a teacher being trained: what a checkpoint keeps beside RLlib's own state."""

    returns: list[float]
    best_return: float = -math.inf
    best_state: dict | None = None
    best_iteration: int = 0
    seconds: float = 0.0
    best_obs_stats: dict | None = None

    @classmethod
    def resume(cls, partial: Path, session: Session, log: Callable[[str], None]) -> "_TeacherRun":
        if not (partial / "progress.json").exists():
            return cls(returns=[])
        try:
            p = json.loads((partial / "progress.json").read_text())
            best = torch.load(partial / "best.pt", weights_only=True)
            session.algo.restore_from_path(str(partial / "algo"))
        except Exception as e:  # a checkpoint cut off mid-write: start over rather than crash
            log(f"  partial teacher run in {partial} is unreadable ({type(e).__name__}); starting over")
            shutil.rmtree(partial, ignore_errors=True)
            return cls(returns=[])
        log(f"  resuming from iteration {len(p['returns'])} (checkpoint in {partial})")
        return cls(p["returns"], p["best_return"], {k: v.numpy() for k, v in best.items()},
                   p["best_iteration"], p["seconds"], p.get("best_obs_stats"))

    def save(self, partial: Path, session: Session) -> None:
        """Write a complete checkpoint next to the old one, then swap: a kill mid-write loses nothing."""
        tmp = partial.with_name(partial.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        session.algo.save_to_path(str(tmp / "algo"))
        torch.save({k: torch.as_tensor(np.asarray(v)) for k, v in (self.best_state or {}).items()}, tmp / "best.pt")
        (tmp / "progress.json").write_text(json.dumps({
            "returns": self.returns, "best_return": self.best_return, "best_iteration": self.best_iteration,
            "seconds": self.seconds, "best_obs_stats": self.best_obs_stats}))
        shutil.rmtree(partial, ignore_errors=True)
        os.replace(tmp, partial)


_TARGET_PREFIXES = ("_target_", "target_")


def _target_source(key: str) -> str | None:
    """'target_qf.w' -> 'qf.w', '_target_af.w' -> 'af.w': the online net a target copies."""
    for p in _TARGET_PREFIXES:
        if key.startswith(p):
            return key[len(p):]
    return None


def _with_targets(state: dict) -> dict:
    """Target networks are not saved (that halves a SAC teacher); on load each is rebuilt as a
    copy of its online net, so a fine-tune starts with targets equal to the nets they track."""
    out = dict(state)
    for k in state.get("__target_keys__", []):
        out[k] = state[_target_source(k)].clone()
    out.pop("__target_keys__", None)
    return out


def _save_teacher(path: Path, state: dict[str, np.ndarray], info: dict) -> None:
    """Write to a temp dir and rename, so a concurrent reader never sees half a teacher."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".tmp-teacher-"))
    targets = [k for k in state if _target_source(k) in state]
    tensors = {k: torch.as_tensor(np.asarray(v)) for k, v in state.items() if k not in targets}
    torch.save({**tensors, "__target_keys__": targets}, tmp / "teacher.pt")
    info = {**info, "sha256": hashlib.sha256((tmp / "teacher.pt").read_bytes()).hexdigest()}
    (tmp / "teacher.json").write_text(json.dumps(info, indent=1))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
