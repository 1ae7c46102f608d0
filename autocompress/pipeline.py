"""One trial, top to bottom: teacher -> techniques -> RLlib fine-tune -> export -> measure.

Stage order (whatever order the config lists techniques in):
  1. structural: distill -> structured pruning -> low-rank   (new, smaller nets)
  2. weight stages set up: pruning masks, shared-weight codebooks, fake-quant (QAT)
  3. fine-tune in RLlib with all of that held; iterative pruning raises the sparsity
     between fine-tune rounds (prune -> fine-tune -> evaluate, repeated)
  4. finalize: post-training quantization (PTQ)
  5. export the artifact, then evaluate THAT artifact and the teacher's side by side.
`compress_trial` is what `autocompress compress` and every search trial run.
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

from autocompress import envs, export, measure
from autocompress.config import CompressConfig, TrialSpec
from autocompress.nets import PolicyNet, torch_act
from autocompress.runtime import NumpyPolicy, obs_normalizer
from autocompress.techniques import Context, apply
from autocompress.techniques.prune import sparsity as net_sparsity

STRUCTURAL = ("distill", "structured", "lowrank")


def compress_net(teacher: PolicyNet, cfg: CompressConfig, ctx: Context, finetune: Callable | None) -> PolicyNet:
    """Apply `cfg` to a copy of `teacher`. `finetune(net, round_index, n_rounds)` fine-tunes
    in place once per pruning round (None: no fine-tuning, e.g. in unit tests)."""
    net = teacher.clone()
    for name in STRUCTURAL:
        if getattr(cfg, name) is not None:
            net = apply(net, getattr(cfg, name), ctx)
    prune_steps = cfg.prune.schedule_sparsities() if cfg.prune else [None]
    if cfg.prune:
        net = apply(net, cfg.prune.model_copy(update={"sparsity": prune_steps[0]}), ctx)
    if cfg.share:
        net = apply(net, cfg.share, ctx)
    if cfg.quantize and cfg.quantize.mode == "qat":
        net = apply(net, cfg.quantize, ctx)
    for i, s in enumerate(prune_steps):
        if i > 0:
            net = apply(net, cfg.prune.model_copy(update={"sparsity": s}), ctx)
        if finetune is not None:
            finetune(net, i, len(prune_steps))
    if cfg.quantize and cfg.quantize.mode == "ptq":
        net = apply(net, cfg.quantize, ctx)
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
    teacher: Any                   # rl.Teacher
    rounds: list[dict]             # one entry per fine-tune round
    critic: PolicyNet | None       # the compressed critic (techniques config `critic:`), else None
    teacher_critic: PolicyNet | None


def teacher_critic(teacher, spec: TrialSpec) -> PolicyNet:
    """PPO's value net of the teacher, as a PolicyNet (the module's `critic.*` weights)."""
    state = {k[len("critic."):]: torch.as_tensor(v) for k, v in teacher.state.items() if k.startswith("critic.")}
    widths = [state[f"layers.{i}.weight"].shape[0] for i in range(len(state) // 2)]
    net = PolicyNet.mlp(teacher.actor.in_dim, widths[:-1], 1, spec.teacher.activation)
    net.load_state_dict(state)
    return net


def build_compressed(spec: TrialSpec, cfg: CompressConfig, cache_root: str | Path,
                     log: Callable[[str], None] = print, timed: Timings | None = None) -> Compressed:
    """Teacher (cached) -> techniques -> RLlib fine-tune (critic compressed too if `cfg.critic`)."""
    from autocompress import rl  # the RLlib adapter, imported only when a trial really runs

    timed = timed if timed is not None else Timings()
    cfg.check_against(spec)
    with timed("teacher_load"):
        teacher = rl.train_teacher(spec, Path(cache_root), log=log)
    head = teacher.info["head"]
    make_env = envs.env_creator(spec.env, spec.env_config)
    normalize = obs_normalizer(head.get("obs_norm"))  # the techniques see the nets' inputs

    def visited(net: PolicyNet, n: int, seed: int) -> np.ndarray:
        return normalize(measure.collect_obs(torch_act(net, head), make_env, n, seed))

    with timed("sample_obs"):
        sample_obs = visited(teacher.actor, spec.sample_steps, spec.seed)
    ctx = Context(teacher=teacher.actor, sample_obs=sample_obs, head=head["kind"], q_values=spec.algorithm == "DQN",
                  seed=spec.seed, log=log, rollout_obs=visited)

    session: list = []  # the RLlib session, built on first use (it needs the compressed shapes)
    rounds: list[dict] = []
    l1 = cfg.prune.l1 if cfg.prune else 0.0
    critic = t_critic = None
    if cfg.critic is not None:  # its own settings; held (masks, codebooks, fake-quant) through fine-tuning
        t_critic = teacher_critic(teacher, spec)
        critic_cfg = CompressConfig(**dict(cfg.critic))
        critic = compress_net(t_critic, critic_cfg, Context(sample_obs=sample_obs, seed=spec.seed, log=log), None)

    def check(net: PolicyNet) -> float:
        """Deterministic 5-episode return on seeds apart from the evaluation seeds (as the teacher's check)."""
        with timed("finetune_check"):
            return float(measure.evaluate(torch_act(net, head), make_env, 5, spec.seed + 77_777).mean())

    def finetune(net: PolicyNet, i: int, n: int) -> None:
        iters = spec.finetune.iterations // n + (1 if i < spec.finetune.iterations % n else 0)
        if iters == 0:
            return
        with timed("rllib_build"):
            if not session:
                session.append(rl.Session(spec, net, teacher.state, lr=spec.finetune.lr, l1=l1, critic=critic,
                                          obs_stats=teacher.info.get("obs_stats")))
            else:
                session[0].push(net)
        log(f"fine-tune round {i + 1}/{n}: {iters} iterations, sparsity {net_sparsity(net):.3f}")
        if not spec.finetune.keep_best:
            with timed("rllib_train"):  # env stepping + SGD
                session[0].train(iters, log=log)
            session[0].pull(net)
        else:
            best = (check(net), copy.deepcopy(net.state_dict()))
            for _ in range(iters):
                with timed("rllib_train"):
                    session[0].train(1, log=log)
                score = check(session[0].pull(net))
                if score > best[0]:
                    best = (score, copy.deepcopy(net.state_dict()))
            net.load_state_dict(best[1])
            log(f"fine-tune round {i + 1}/{n}: kept the net with check return {best[0]:.1f}")
        if critic is not None:
            session[0].pull(critic, prefix="critic")
        round_info = {"round": i + 1, "sparsity": net_sparsity(net)}
        if n > 1:  # iterative pruning: check each round; a single round is measured at the end anyway
            with timed("round_eval"):
                ret = measure.evaluate(torch_act(net, head), make_env, min(5, spec.eval.episodes), spec.eval.seed)
            round_info["return_mean"] = float(ret.mean())
        rounds.append(round_info)

    try:
        # The teacher as-is (no technique) is measured untouched, not fine-tuned further.
        with timed("compress_total"):
            net = compress_net(teacher.actor, cfg, ctx, finetune if cfg.techniques() or critic else None)
    finally:
        if session:
            with timed("rllib_stop"):
                session[0].stop()
    # what compress_net spent outside fine-tuning: the techniques themselves (distill, k-means, SVD ...)
    timed["techniques"] = timed.pop("compress_total") - sum(timed[k] for k in ("rllib_build", "rllib_train",
                                                                                "round_eval", "finetune_check"))
    return Compressed(net, teacher, rounds, critic, t_critic)


def compress_trial(spec: TrialSpec, cfg: CompressConfig, out_dir: str | Path, cache_root: str | Path,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run one full trial; writes out_dir/policy.acz and returns all its measurements."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    timed = Timings()
    net, teacher, rounds, critic, t_critic = build_compressed(spec, cfg, cache_root, log, timed)
    compress_s = time.time() - t0
    head = teacher.info["head"]
    with timed("export"):
        data = export.to_bytes(net, head)
        (out_dir / "policy.acz").write_bytes(data)
    with timed("measure"):
        result = measure_artifacts(spec, data, export.to_bytes(teacher.actor, head),
                                   envs.env_creator(spec.env, spec.env_config))
    result.update({
        "params": net.num_params(), "teacher_params": teacher.actor.num_params(),
        "sparsity": net_sparsity(net), "hidden": net.hidden_widths(), "layers": len(net.layers),
        "compress_seconds": compress_s, "trial_seconds": time.time() - t0,
        "finetune_rounds": rounds, "teacher_path": str(teacher.path), "artifact": str(out_dir / "policy.acz"),
        "timings": dict(timed),
    })
    if critic is not None:  # training-only: reported, never part of the objectives
        cb, tb = (len(export.to_bytes(c, {"kind": "discrete", "n": 1})) for c in (critic, t_critic))
        result.update(critic_bytes=cb, critic_bytes_ratio=cb / tb, critic_params=critic.num_params())
    if not np.isfinite(result["return_mean"]):
        raise FloatingPointError("return is not finite")
    return result


def return_ratio(ret: float, teacher_ret: float, spec: TrialSpec, make_env) -> float:
    """return / teacher return. Where the teacher's return is not positive (e.g. Pendulum, all
    rewards < 0) that quotient would reward doing worse, so the ratio is instead normalised
    between a uniform-random policy (0) and the teacher (1) on the same seeded episodes."""
    if teacher_ret > 0:
        return ret / teacher_ret
    space = make_env().action_space
    space.seed(spec.eval.seed)
    rand = float(measure.evaluate(lambda obs: space.sample(), make_env, spec.eval.episodes, spec.eval.seed).mean())
    return (ret - rand) / (teacher_ret - rand) if teacher_ret != rand else float("nan")


def measure_artifacts(spec: TrialSpec, data: bytes, teacher_data: bytes, make_env) -> dict[str, Any]:
    """Evaluate the candidate and the teacher artifacts the same way, in the same run."""
    runtime_name, runtime = policy_runtime(spec.latency.runtime)
    cand, ref = runtime.from_bytes(data), runtime.from_bytes(teacher_data)
    r = measure.evaluate(cand.act, make_env, spec.eval.episodes, spec.eval.seed)
    rt = measure.evaluate(ref.act, make_env, spec.eval.episodes, spec.eval.seed)
    env = make_env()
    obs = np.asarray(env.reset(seed=spec.eval.seed)[0], dtype=np.float32)
    env.close()
    lat = measure.latency({"cand": cand.act, "teacher": ref.act}, obs, spec.latency.warmup,
                          spec.latency.calls, spec.latency.rounds)
    size, tsize = measure.artifact_bytes(data), measure.artifact_bytes(teacher_data)
    return {
        "return_mean": float(r.mean()), "return_std": float(r.std()), "returns": r.tolist(),
        "teacher_return_mean": float(rt.mean()), "teacher_return_std": float(rt.std()),
        "return_ratio": return_ratio(float(r.mean()), float(rt.mean()), spec, make_env),
        "latency_ms": lat["cand"]["median_ms"], "latency_p95_ms": lat["cand"]["p95_ms"],
        "teacher_latency_ms": lat["teacher"]["median_ms"],
        "latency_ratio": lat["cand"]["median_ms"] / lat["teacher"]["median_ms"],
        "bytes": size["bytes"], "gzip_bytes": size["gzip_bytes"],
        "teacher_bytes": tsize["bytes"], "teacher_gzip_bytes": tsize["gzip_bytes"],
        "bytes_ratio": size["bytes"] / tsize["bytes"], "runtime": runtime_name,
    }


def policy_runtime(name: str) -> tuple[str, type]:
    """The runtime class that evaluates and times the artifact (teacher and candidate alike)."""
    from autocompress import native

    if name == "c" or (name == "auto" and native.available()):
        return "c", native.NativePolicy  # 'c' without a compiler fails here, with the reason
    return "numpy", NumpyPolicy
