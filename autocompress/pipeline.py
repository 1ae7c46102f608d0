"""One trial, top to bottom: teacher -> techniques -> RLlib fine-tune -> export -> measure.

Stage order (whatever order the config lists techniques in; each technique declares its
stage and order in its config class, see techniques/base.py):
  1. structural: distill -> structured pruning -> low-rank   (new, smaller nets)
  2. held: pruning masks, shared-weight codebooks, fake-quant (QAT), set up and held
     through fine-tuning in RLlib; iterative pruning raises the sparsity between
     fine-tune rounds (prune -> fine-tune -> evaluate, repeated)
  3. final: post-training quantization (PTQ)
  4. export the artifact, then evaluate THAT artifact and the teacher's side by side.
`compress_trial` is what `autocompress compress` and every search trial run.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

from autocompress import artifact, measure, rl, targets
from autocompress import teacher as teachers
from autocompress.algos import ALGOS
from autocompress.config import CompressConfig, TrialSpec
from autocompress.errors import ConfigError
from autocompress.nets import PolicyNet
from autocompress.results import TrialResult
from autocompress.runtime import obs_normalizer
from autocompress.seeds import CHECK_OFFSET
from autocompress.techniques import Context, apply
from autocompress.techniques.base import check_recurrent
from autocompress.techniques.per_layer import logical_layers

def check_recurrent_trial(spec: TrialSpec, teacher: PolicyNet | None = None) -> None:
    """ConfigError, before any work, where a trial cannot take a recurrent (LSTM / GRU) teacher (`teacher`, or
    where it is not loaded yet the spec's `teacher.rnn`): RLlib fine-tuning of one is built for the algorithms
    whose module carries the state (algos.Algo.recurrent)."""
    rnn = teacher.rnn if teacher is not None else spec.teacher.rnn
    if rnn is None:
        return
    if spec.finetune.iterations > 0 and not ALGOS[spec.algorithm].recurrent:
        raise ConfigError(f"finetune.iterations {spec.finetune.iterations}: the teacher is a recurrent ({rnn.cell}) "
                          f"policy, which {spec.algorithm} does not fine-tune here (recurrent policies fine-tune "
                          "with " + ", ".join(n for n, a in ALGOS.items() if a.recurrent)
                          + "): set finetune.iterations: 0 to compress it without fine-tuning")


def compress_net(teacher: PolicyNet, cfg, ctx: Context, finetune: Callable | None) -> PolicyNet:
    """Apply `cfg` (a CompressConfig or CriticCompressConfig) to a copy of `teacher`, stage by stage
    as each technique declares (TechniqueConfig.stage / order). `finetune(net, round_index, n_rounds)`
    fine-tunes in place once per round (None: no fine-tuning, e.g. in unit tests); techniques of
    the 'held' stage are (re-)applied before each round they have (iterative pruning)."""
    check_recurrent(teacher, cfg.techniques())  # every technique handles a recurrent teacher, before any work
    cfg.check_layers(len(logical_layers(teacher)), conv_layers=teacher.conv_layers)  # per-layer settings fit, before any work (imported teachers)
    net = teacher.clone()
    by_stage: dict[str, list] = {"structural": [], "held": [], "final": []}
    for c in cfg.techniques():
        by_stage[c.pipeline_stage()].append(c)
    for c in by_stage["structural"]:
        net = apply(net, c, ctx)
    held = [c.round_configs() for c in by_stage["held"]]
    n_rounds = max((len(r) for r in held), default=1)
    for i in range(n_rounds):
        for rounds in held:
            if i < len(rounds):
                net = apply(net, rounds[i], ctx)
        if finetune is not None:
            finetune(net, i, n_rounds)
    for c in by_stage["final"]:
        net = apply(net, c, ctx)
    return net


class Timings(defaultdict):
    """Seconds per named stage of a trial (where the time outside env stepping and SGD goes)."""

    def __init__(self):
        super().__init__(float)

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self[name] += time.perf_counter() - t0


class Compressed(NamedTuple):
    net: PolicyNet                 # the deployed net, compressed and fine-tuned
    teacher: teachers.Teacher
    rounds: list[dict]             # one entry per fine-tune round
    critic: PolicyNet | None       # the compressed critic (techniques config `critic:`), else None
    teacher_critic: PolicyNet | None
    teacher_obs: np.ndarray        # the teacher's visited states, raw (teacher_states): integer-only scales


def teacher_critic(teacher, spec: TrialSpec) -> PolicyNet:
    """PPO's value net of the teacher, as a PolicyNet (the module's `critic.*` weights); an imported
    teacher's critic has the architecture its file gave (`critic_spec`)."""
    state = {k[len("critic."):]: torch.as_tensor(v) for k, v in teacher.state.items() if k.startswith("critic.")}
    t = spec.teacher
    if teacher.info.get("critic_spec"):
        net = PolicyNet.from_spec(teacher.info["critic_spec"])
    elif t.conv_filters or t.rnn:  # the critic rl.algo_config built for the teacher
        net = rl.default_critic(spec, teacher.actor)
    else:
        widths = [state[f"layers.{i}.weight"].shape[0] for i in range(len(state) // 2)]
        net = PolicyNet.mlp(teacher.actor.in_dim, widths[:-1], 1, spec.teacher.activation)
    net.load_state_dict(state)
    return net


def needs_critic_warmup(teacher, spec: TrialSpec) -> bool:
    """An imported policy whose file had no critic (value net / Q nets): PPO and SAC train one first."""
    return (bool(teacher.info.get("source")) and not teacher.info.get("critic_spec")
            and not ALGOS[spec.algorithm].q_values)


def warm_up_critic(session, net: PolicyNet, iterations: int, log: Callable[[str], None]) -> None:
    """Train the critic (value net / Q nets) of a fresh session with the deployed net frozen: after
    every iteration the net is pushed back unchanged, so only what is not the actor has learned."""
    t0 = time.perf_counter()
    for i in range(iterations):
        session.train(1, log=lambda m: None)
        session.push(net)
        log(f"critic warm-up {i + 1}/{iterations} (actor frozen): training return {session.returns[-1]:.1f}")
    log(f"critic warm-up: {iterations} iterations in {time.perf_counter() - t0:.1f} s")


class FineTune:
    """RLlib fine-tuning of one trial's compressed net, round by round (compress_net calls it once per round):
    the session (built on first use: it needs the compressed shapes), the check episodes, the reports, and
    what each round did (`rounds`)."""

    def __init__(self, spec: TrialSpec, teacher: teachers.Teacher, cfg: CompressConfig, timed: Timings,
                 log: Callable[[str], None], report: Callable[[int, float], str | None] | None,
                 critic: PolicyNet | None, teacher_obs: np.ndarray):
        self.spec, self.teacher, self.timed, self.log, self.report = spec, teacher, timed, log, report
        self.head, self.make_env = teacher.info["head"], spec.env_creator()
        self.critic = critic  # the compressed critic: pulled back after each round
        # an imported PPO critic (its own architecture) is fine-tuned as it came; it is not compressed
        self.session_critic = critic if critic is not None else (
            teacher_critic(teacher, spec) if teacher.info.get("critic_spec") else None)
        self.warmup = spec.teacher.critic_warmup if needs_critic_warmup(teacher, spec) else 0
        self.l1 = cfg.prune.l1 if cfg.prune else 0.0
        # on a device an int8 net runs integer-only: QAT then fine-tunes with its activations rounded as there,
        # at scales from the teacher's states
        self.device_integer, self.teacher_obs = targets.target(spec.latency.target).mcu, teacher_obs
        self.session: rl.Session | None = None
        self.done = 0  # fine-tune iterations so far, over all rounds: the step of a report
        self.refs: list[float | None] = []  # the teacher's check return, and a random policy's where that is not positive
        self.rounds: list[dict] = []

    def check(self, net: PolicyNet) -> float:
        """Deterministic return over finetune.check_episodes episodes on seeds apart from the evaluation seeds
        (where the teacher's check starts)."""
        with self.timed("finetune_check"):
            return float(measure.evaluate(artifact.runtime_act(net, self.head), self.make_env,
                                          self.spec.finetune.check_episodes,
                                          self.spec.seed + CHECK_OFFSET).mean())

    def report_check(self, score: float) -> str | None:
        """Report a check return as a ratio to the teacher's on the same episodes (measure.ratio_to's rule);
        returns the reporter's answer: a reason to end the fine-tune here, or None."""
        if self.report is None:
            return None
        if not self.refs:
            t = self.check(self.teacher.actor)  # timed by check itself
            with self.timed("finetune_check"):
                self.refs.extend([t, None if t > 0 else measure.random_return(
                    self.make_env, self.spec.finetune.check_episodes, self.spec.seed + CHECK_OFFSET)])
        return self.report(self.done, measure.ratio_to(score, *self.refs))

    def session_for(self, net: PolicyNet) -> rl.Session:
        """The RLlib session, built on first use, with `net` pushed to it."""
        if self.session is not None:
            with self.timed("rllib_build"):
                self.session.push(net)
            return self.session
        with self.timed("rllib_build"):
            self.session = rl.Session(self.spec, net, self.teacher.state, lr=self.spec.finetune.lr, l1=self.l1,
                                      critic=self.session_critic, obs_stats=self.teacher.info.get("obs_stats"),
                                      normalize_actions=self.head.get("squash") != "none")
        if self.warmup:  # timed apart from the build: `techniques` is what compress_total leaves after both
            with self.timed("critic_warmup"):
                warm_up_critic(self.session, net, self.warmup, self.log)
        return self.session

    def __call__(self, net: PolicyNet, i: int, n: int) -> None:
        """Round i of n: fine-tune `net` in place for its share of the iterations."""
        spec, log = self.spec, self.log
        iters = spec.finetune.iterations // n + (1 if i < spec.finetune.iterations % n else 0)
        if iters == 0:
            return
        # the reporter may end the fine-tune early in the last round only: an earlier round of iterative
        # pruning is followed by a higher sparsity, which the net has not met yet
        last = i == n - 1
        if self.device_integer and net.iq is None:  # scales fixed from here on: RLlib's modules are built with them
            net.iq = artifact.activation_scales(net, self.head, self.teacher_obs)
        label = f"fine-tune round {i + 1}/{n}"
        log(f"{label}: {iters} iterations, sparsity {net.sparsity():.3f}"
            + (", activations rounded as the device's integer-only net" if net.iq else ""))
        if not spec.finetune.keep_best and self.report is None:
            s = self.session_for(net)
            with self.timed("rllib_train"):  # env stepping + SGD
                s.train(iters, log=log)
            s.pull(net)
            self.done += iters
            finished = None
        else:
            finished = self._checked(net, iters, last, label)
        round_info = {"round": i + 1, "sparsity": net.sparsity()}
        if finished and last:
            round_info["ended_at"] = self.done
            log(f"{label}: ended after {self.done} of {spec.finetune.iterations} iterations: {finished}")
        if self.critic is not None and self.session is not None:
            self.session.pull(self.critic, prefix="critic")
        if n > 1:  # iterative pruning: check each round; a single round is measured at the end anyway
            with self.timed("round_eval"):
                ret = measure.evaluate(artifact.runtime_act(net, self.head), self.make_env,
                                       min(5, spec.eval.episodes), spec.eval.seed)
            round_info["return_mean"] = float(ret.mean())
        self.rounds.append(round_info)

    def _checked(self, net: PolicyNet, iters: int, last: bool, label: str) -> str | None:
        """Fine-tune checked after every iteration: to keep the best net (loaded into `net`), or to report.
        Returns the reporter's reason to end here, if any."""
        keep_best, finished = self.spec.finetune.keep_best, None
        start = self.check(net) if keep_best or self.done == 0 else float("-inf")
        if self.done == 0:  # step 0: compressed, not fine-tuned (checked before RLlib is built)
            finished = self.report_check(start)
        best = (start, copy.deepcopy(net.state_dict()))
        s = None if finished and last else self.session_for(net)
        for _ in range(iters if s else 0):
            with self.timed("rllib_train"):
                s.train(1, log=self.log)
            self.done += 1
            s.pull(net)
            learned = s.learned[-1]  # not when it only filled a replay buffer: nothing to report
            if not (learned or keep_best):
                continue
            score = self.check(net)
            if score > best[0]:
                best = (score, copy.deepcopy(net.state_dict()))
            if learned:  # what the trial would deliver if it ended here: with keep_best, the best net so far
                finished = self.report_check(best[0] if keep_best else score)
                if finished and last:
                    break
        if keep_best:
            net.load_state_dict(best[1])
            self.log(f"{label}: kept the net with check return {best[0]:.1f}")
        return finished

    def stop(self) -> None:
        if self.session is not None:
            with self.timed("rllib_stop"):
                self.session.stop()


def teacher_states(teacher, spec: TrialSpec, make_env) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The states every data-driven technique sees (layer sensitivity measures on them too): the
    teacher's visited observations, spec.sample_steps from spec.seed, as the env gives them and as
    the nets see them (normalised), and where its episodes start (measure.episode_starts)."""
    head = teacher.info["head"]
    episodes = measure.collect_episodes(artifact.runtime_act(teacher.actor, head), make_env, spec.sample_steps,
                                        spec.seed)
    raw = np.concatenate(episodes)
    return raw, obs_normalizer(head.get("obs_norm"))(raw), measure.episode_starts(episodes)


def build_compressed(spec: TrialSpec, cfg: CompressConfig, cache_root: str | Path,
                     log: Callable[[str], None] = print, timed: Timings | None = None,
                     report: Callable[[int, float], str | None] | None = None, finetune_teacher: bool = False) -> Compressed:
    """Teacher (cached) -> techniques -> RLlib fine-tune (critic compressed too if `cfg.critic`).

    `report(step, ratio)` (multi-fidelity, see autocompress.pruners): called with the check-episode
    return ratio before fine-tuning (step 0) and after each fine-tune iteration in which the learner
    trained (not after an off-policy algorithm's iterations that only fill its replay buffer: the
    step is the count of iterations run). It may raise TrialStopped, which ends the trial there, or return
    a reason to end the fine-tune there (the net has recovered: GatePruner.finish_at), which the last
    fine-tune round follows."""
    timed = timed if timed is not None else Timings()
    cfg.check_against(spec)
    with timed("teacher_load"):
        teacher = teachers.train_teacher(spec, Path(cache_root), log=log)
    check_recurrent_trial(spec, teacher.actor)  # callers that did not check it before (compress and search do)
    head = teacher.info["head"]
    make_env = spec.env_creator()
    normalize = obs_normalizer(head.get("obs_norm"))  # the techniques see the nets' inputs

    def visited(net: PolicyNet, n: int, seed: int) -> list[np.ndarray]:
        return [normalize(e) for e in measure.collect_episodes(artifact.runtime_act(net, head), make_env, n, seed)]

    with timed("sample_obs"):
        teacher_obs, sample_obs, starts = teacher_states(teacher, spec, make_env)
    ctx = Context(teacher=teacher.actor, sample_obs=sample_obs, sample_starts=starts, head=head["kind"],
                  q_values=ALGOS[spec.algorithm].q_values, seed=spec.seed, log=log, rollout_episodes=visited)
    critic = t_critic = None
    if cfg.critic is not None:  # its own settings; held (masks, codebooks, fake-quant) through fine-tuning
        t_critic = teacher_critic(teacher, spec)
        critic = compress_net(t_critic, cfg.critic, Context(sample_obs=sample_obs, seed=spec.seed, log=log), None)
    finetune = FineTune(spec, teacher, cfg, timed, log, report, critic, teacher_obs)
    try:
        # The teacher as-is (no technique) is measured untouched, not fine-tuned further.
        with timed("compress_total"):
            # finetune_teacher: the teacher fine-tuned as a trial would be (a search's reference row)
            net = compress_net(teacher.actor, cfg, ctx, finetune if cfg.techniques() or critic or finetune_teacher
                               else None)
    finally:
        finetune.stop()
    # what compress_net spent outside fine-tuning: the techniques themselves (distill, k-means, SVD ...)
    timed["techniques"] = timed.pop("compress_total") - sum(timed[k] for k in ("rllib_build", "rllib_train",
                                                                                "round_eval", "finetune_check",
                                                                                "critic_warmup"))
    return Compressed(net, teacher, finetune.rounds, critic, t_critic, teacher_obs)


def compress_trial(spec: TrialSpec, cfg: CompressConfig, out_dir: str | Path, cache_root: str | Path,
                   log: Callable[[str], None] = print,
                   report: Callable[[int, float], str | None] | None = None, finetune_teacher: bool = False,
                   latency_known: dict[str, dict] | None = None) -> TrialResult:
    """Run one full trial; writes out_dir/policy.acz and returns all its measurements. `report`: see
    build_compressed (a TrialStopped it raises ends the trial before export and measurement);
    `latency_known`: the search's timed compute signatures (measure.measure_artifacts)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    timed = Timings()
    net, teacher, rounds, critic, t_critic, teacher_obs = build_compressed(spec, cfg, cache_root, log, timed,
                                                                           report, finetune_teacher)
    compress_s = time.time() - t0
    head = teacher.info["head"]
    make_env = spec.env_creator()
    with timed("export"):
        data = artifact.to_bytes(net, head)
        # an int8 net runs integer-only on a device: scales from the teacher's states, as its techniques' are,
        # unless fine-tuning fixed them (net.iq, written by to_bytes)
        if targets.target(spec.latency.target).mcu and net.iq is None:
            data = artifact.calibrate(data, teacher_obs)
        (out_dir / "policy.acz").write_bytes(data)
    with timed("measure"):
        result = measure.measure_artifacts(spec, data, teacher.artifact(), make_env, cache_root, latency_known)
    result = dataclasses.replace(
        result, n_params=net.num_params(), teacher_n_params=teacher.actor.num_params(), sparsity=net.sparsity(),
        hidden=net.hidden_widths(), layers=len(net.layers), compress_seconds=compress_s,
        trial_seconds=time.time() - t0, finetune_rounds=rounds, teacher_path=str(teacher.path),
        artifact=str(out_dir / "policy.acz"), timings=dict(timed))
    if critic is not None:  # training-only: reported, never part of the objectives
        cb, tb = (len(artifact.to_bytes(c, {"kind": "discrete", "n": 1})) for c in (critic, t_critic))
        result = dataclasses.replace(result, critic_bytes=cb, critic_bytes_ratio=cb / tb,
                                     critic_n_params=critic.num_params())
    if not np.isfinite(result.return_mean):
        raise FloatingPointError("return is not finite")
    return result
