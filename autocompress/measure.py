"""The measurement protocol: return over seeded episodes, batch-1 latency, artifact bytes.

Everything here takes a plain `act(obs)` callable, so the exported artifact (through a
runtime) is what gets measured, and teacher and candidate go through the same code;
`measure_artifacts` applies the whole protocol to a candidate and the teacher side by side.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from threadpoolctl import threadpool_limits

from autocompress.errors import ConfigError, TeacherError
from autocompress.native import NativePolicy, round_ratio, time_side_by_side
from autocompress.policy import policy_runtime
from autocompress.results import TrialResult
from autocompress.runtime import NumpyPolicy
from autocompress.targets import target

if TYPE_CHECKING:
    from autocompress.config import TrialSpec


def episode_reset(act: Callable) -> Callable[[], None]:
    """What starts a new episode for `act`: its `reset()` (a callable object's, or a bound method's object's,
    e.g. Policy.act's runtime), which zeroes a recurrent policy's state; a no-op for a plain function."""
    reset = getattr(act, "reset", None) or getattr(getattr(act, "__self__", None), "reset", None)
    return reset if callable(reset) else (lambda: None)


def evaluate(act: Callable, make_env: Callable, episodes: int, seed: int) -> np.ndarray:
    """Undiscounted return of each episode i, reset with seed + i (and the policy reset, `episode_reset`);
    deterministic actions."""
    env = make_env()
    returns = []
    reset = episode_reset(act)
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            reset()
            total, done = 0.0, False
            while not done:
                obs, r, term, trunc, _ = env.step(act(obs))
                total += float(r)
                done = term or trunc
            returns.append(total)
    finally:
        env.close()
    return np.asarray(returns)


def collect_episodes(act: Callable, make_env: Callable, steps: int, seed: int) -> list[np.ndarray]:
    """Observations visited by `act` over `steps` env steps, one array per episode, the last cut at `steps`
    (episodes reset with seed, seed+1, ...; the policy reset with each, `episode_reset`)."""
    env = make_env()
    episodes, n = [], 0
    reset = episode_reset(act)
    try:
        while n < steps:
            obs, _ = env.reset(seed=seed + len(episodes))
            reset()
            visited, done = [], False
            while not done and n < steps:
                visited.append(np.asarray(obs, dtype=np.float32))
                obs, _, term, trunc, _ = env.step(act(obs))
                done, n = term or trunc, n + 1
            episodes.append(np.stack(visited))
    finally:
        env.close()
    return episodes


def collect_obs(act: Callable, make_env: Callable, steps: int, seed: int) -> np.ndarray:
    """Observations visited by `act` over `steps` env steps, in order (collect_episodes joined)."""
    return np.concatenate(collect_episodes(act, make_env, steps, seed))


def episode_starts(episodes: list[np.ndarray]) -> np.ndarray:
    """True at each episode's first row of the episodes joined."""
    starts = np.zeros(sum(map(len, episodes)), dtype=bool)
    starts[np.cumsum([0, *map(len, episodes[:-1])])] = True
    return starts


def latency(fns: dict[str, Callable], obs: np.ndarray, warmup: int = 200, calls: int = 2000,
            rounds: int = 10) -> dict[str, dict[str, float]]:
    """Batch-1 latency of each fn on `obs`, 1 BLAS thread, measured side by side.

    Calls are timed one by one with perf_counter_ns. The fns take turns in `rounds`
    blocks of calls/rounds each, so drift in machine load hits all of them alike.
    Returns per name: median_ms, p95_ms.

    >>> import autocompress as ac, numpy as np
    >>> t = ac.latency({"sum": np.sum, "sort": np.sort}, np.arange(1000.0), warmup=10, calls=200, rounds=4)
    >>> sorted(t["sum"])
    ['median_ms', 'p95_ms']
    """
    samples: dict[str, list[int]] = {k: [] for k in fns}
    per_round = max(1, calls // rounds)
    with threadpool_limits(1):
        for fn in fns.values():
            for _ in range(warmup):
                fn(obs)
        for _ in range(rounds):
            for name, fn in fns.items():
                s = samples[name]
                for _ in range(per_round):
                    t0 = time.perf_counter_ns()
                    fn(obs)
                    s.append(time.perf_counter_ns() - t0)
    return {k: {"median_ms": float(np.median(v)) / 1e6, "p95_ms": float(np.percentile(v, 95)) / 1e6}
            for k, v in samples.items()}


def artifact_bytes(data: bytes) -> dict[str, int]:
    return {"bytes": len(data), "gzip_bytes": len(gzip.compress(data, compresslevel=9, mtime=0))}


def return_ratio(ret: float, teacher_ret: float, spec: TrialSpec, make_env) -> float:
    """return / teacher return on the evaluation episodes (`ratio_to`'s rule; the random policy is
    evaluated on the same seeded episodes only where it is needed); with eval.reference_return,
    (return - reference) / (teacher's - reference)."""
    ref = spec.eval.reference_return
    if ref is not None:
        return (ret - ref) / (teacher_ret - ref) if teacher_ret != ref else float("nan")
    rand = None if teacher_ret > 0 else random_return(make_env, spec.eval.episodes, spec.eval.seed)
    return ratio_to(ret, teacher_ret, rand)


#: the teacher's mean return must beat a useless policy's by more than this many standard errors of the
#: difference of the two means (sqrt(s_t^2 / n + s_b^2 / n) over the n evaluation episodes)
MARGIN_SE = 1.0


def teacher_margin(spec: TrialSpec, teacher_act: Callable, make_env) -> dict:
    """The teacher's mean return over the evaluation episodes against a useless policy's: a uniform-random
    policy's on the same seeded episodes, or eval.reference_return (no spread) where the spec gives it.
    The margin, the standard error of that difference, and whether the margin clears MARGIN_SE of them."""
    n, seed = spec.eval.episodes, spec.eval.seed
    t = evaluate(teacher_act, make_env, n, seed)
    if spec.eval.reference_return is not None:
        b, baseline = np.array([spec.eval.reference_return]), "eval.reference_return"
    else:
        b, baseline = random_returns(make_env, n, seed), "a uniform-random policy"
    with np.errstate(invalid="ignore", over="ignore"):  # inf returns: judged below, not warned about
        margin = float(t.mean() - b.mean())
        se = float(np.sqrt(t.var() / n + (b.var() / n if len(b) > 1 else 0.0)))
        stats = {"teacher_mean": float(t.mean()), "teacher_std": float(t.std()), "baseline_mean": float(b.mean()),
                 "baseline_std": float(b.std())}
    ok = bool(np.isfinite(t).all() and np.isfinite(b).all() and margin > 0 and margin > MARGIN_SE * se)
    return {**stats, "baseline": baseline, "margin": margin, "se": se, "episodes": n, "seed": seed, "ok": ok}


def check_teacher_margin(spec: TrialSpec, teacher_act: Callable, make_env) -> dict:
    """`teacher_margin`, or TeacherError naming both returns and what to do when the teacher does not
    clearly beat a useless policy: every return ratio (normalised by that margin) would be noise, NaN,
    or of the wrong sign."""
    m = teacher_margin(spec, teacher_act, make_env)
    if m["ok"]:
        return m
    if not (np.isfinite(m["teacher_mean"]) and np.isfinite(m["baseline_mean"])):
        what = "the env gave non-finite returns"
    else:
        how = "worse than" if m["margin"] < 0 else "no better than" if m["margin"] == 0 else "within noise of"
        what = f"the teacher's return is {how} {m['baseline']}'s"
    raise TeacherError(
        f"{what} over the {m['episodes']} evaluation episodes (seeds "
        f"{m['seed']}..): teacher {m['teacher_mean']:.4g} ± {m['teacher_std']:.3g}, baseline "
        f"{m['baseline_mean']:.4g} ± {m['baseline_std']:.3g}; it must lead by more than {MARGIN_SE:g} standard error "
        f"of the difference ({m['se']:.3g}). Train it longer (teacher.max_iterations, teacher.stop_return), check "
        "the imported policy (autocompress validate shows how it acts), evaluate on more episodes "
        "(eval.episodes), or give eval.reference_return if you know the return a useless policy gets here")


def ratio_to(ret: float, teacher_ret: float, random_ret: float | None) -> float:
    """ret / teacher_ret. Where the teacher's return is not positive (e.g. Pendulum, all rewards < 0)
    that quotient would reward doing worse, so the ratio is instead normalised between a
    uniform-random policy's return (0) and the teacher's (1) on the same seeded episodes."""
    if teacher_ret > 0:
        return ret / teacher_ret
    return (ret - random_ret) / (teacher_ret - random_ret) if teacher_ret != random_ret else float("nan")


def random_returns(make_env, episodes: int, seed: int) -> np.ndarray:
    """Returns of a uniform-random policy (action space seeded with `seed`) on the seeded episodes seed,
    seed + 1, ..."""
    space = make_env().action_space
    space.seed(seed)
    return evaluate(lambda obs: space.sample(), make_env, episodes, seed)


def random_return(make_env, episodes: int, seed: int) -> float:
    """Mean return of a uniform-random policy on the seeded episodes seed, seed + 1, ..."""
    return float(random_returns(make_env, episodes, seed).mean())


#: observations recorded (the teacher's, on the evaluation seeds) that in-kernel timing acts on
LATENCY_OBS = 256
#: the in-kernel figures a trial records, and a later trial of the same compute signature takes over
LATENCY_FIELDS = ("latency_ms", "latency_p95_ms", "teacher_latency_ms", "latency_ratio")
#: a signature's timing: candidate and teacher loaded afresh this many times (where the copies land in
#: memory moves their ratio by a few %), each pair timed with the trial protocol; the median pair counts
SIGNATURE_LOADS = 3
#: the teacher timed against a second copy of itself this many times: one search's noise floor
NOISE_FLOOR_REPEATS = 10


def measure_artifacts(spec: TrialSpec, data: bytes, teacher_data: bytes, make_env,
                      cache_dir: str | Path | None = None, known: dict[str, dict] | None = None) -> TrialResult:
    """Evaluate the candidate and the teacher artifacts the same way, in the same run.

    Latency (runtime 'c'): both act() timed inside the compiled kernel over the teacher's recorded
    states, in alternating short rounds; the ratio is the median of the per-round ratios
    (`in_kernel_latency`). A candidate whose compute signature is in `known` (signature -> the
    LATENCY_FIELDS and the "trial" that measured them: a search's earlier trials) takes those figures
    instead of being timed again, so same-compute nets tie exactly. The Python call is timed too, as a
    secondary figure. Runtime 'numpy' has no compiled loop: its latency is the Python call. On an MCU
    target (spec.latency.target): `measure_on_device`."""
    if target(spec.latency.target).mcu:
        return measure_on_device(spec, data, teacher_data, make_env, cache_dir)
    runtime_name, runtime = policy_runtime(spec.latency.runtime)
    cand, ref = runtime.from_bytes(data), runtime.from_bytes(teacher_data)
    shared = returns_and_bytes(spec, cand.act, ref.act, data, teacher_data, make_env)
    obs = collect_obs(ref.act, make_env, LATENCY_OBS, spec.eval.seed)
    lp = spec.latency
    call = latency({"cand": cand.act, "teacher": ref.act}, obs[0], lp.warmup, lp.calls, lp.rounds)
    signature = source = None
    if runtime_name == "c":
        signature = cand.signature
        prior = (known or {}).get(signature)
        if prior is not None:
            fig, source = {k: prior[k] for k in LATENCY_FIELDS}, prior["trial"]
        else:
            fig = in_kernel_latency(cand, ref, data, teacher_data, obs, lp)
    else:
        fig = {"latency_ms": call["cand"]["median_ms"], "latency_p95_ms": call["cand"]["p95_ms"],
               "teacher_latency_ms": call["teacher"]["median_ms"],
               "latency_ratio": call["cand"]["median_ms"] / call["teacher"]["median_ms"]}
    return TrialResult(
        **shared, **fig, latency_call_ms=call["cand"]["median_ms"],
        teacher_latency_call_ms=call["teacher"]["median_ms"], runtime=runtime_name, kernels=list(cand.kernels),
        cpu=cpu_model(), latency_signature=signature, latency_from=source)


def in_kernel_latency(cand, ref, data: bytes, teacher_data: bytes, obs: np.ndarray, lp,
                      loads: int = SIGNATURE_LOADS) -> dict[str, float]:
    """LATENCY_FIELDS of the C-runtime candidate `cand` against the teacher `ref` (their artifacts `data`,
    `teacher_data`): the pair timed side by side (`native.time_side_by_side`, the latency protocol `lp`)
    `loads` times, each time both loaded afresh with the same kernels; the run with the median ratio."""
    runs = []
    for i in range(loads):
        c, t = (cand, ref) if i == 0 else (NativePolicy.from_bytes(data, cand.kernels),
                                           NativePolicy.from_bytes(teacher_data, ref.kernels))
        lat = time_side_by_side({"cand": c, "teacher": t}, obs, lp.warmup, lp.kernel_calls, lp.kernel_rounds)
        runs.append({"latency_ms": lat["cand"]["median_ms"], "latency_p95_ms": lat["cand"]["p95_ms"],
                     "teacher_latency_ms": lat["teacher"]["median_ms"],
                     "latency_ratio": round_ratio(lat, "cand", "teacher")})
    return sorted(runs, key=lambda r: r["latency_ratio"])[len(runs) // 2]


def latency_noise_floor(spec: TrialSpec, teacher_data: bytes, make_env,
                        repeats: int = NOISE_FLOOR_REPEATS) -> dict:
    """The teacher timed against itself: two copies loaded apart with the same kernels, timed as a trial
    times a candidate (one load each, the trial protocol), `repeats` times. Their ratios spread as far
    as two nets of the same compute but different signatures could by chance: the floor under which
    latency differences on the front mean nothing. Runtime c only (None elsewhere)."""
    if policy_runtime(spec.latency.runtime)[0] != "c":
        return None
    first = NativePolicy.from_bytes(teacher_data)
    obs = collect_obs(first.act, make_env, LATENCY_OBS, spec.eval.seed)
    load = lambda: NativePolicy.from_bytes(teacher_data, first.kernels)  # noqa: E731
    ratios = [in_kernel_latency(load(), load(), teacher_data, teacher_data, obs, spec.latency, loads=1)["latency_ratio"]
              for _ in range(repeats)]
    return {"ratios": ratios, "min": min(ratios), "max": max(ratios), "median": float(np.median(ratios)),
            "repeats": repeats, "cpu": cpu_model()}


def returns_and_bytes(spec: TrialSpec, act: Callable, teacher_act: Callable, data: bytes, teacher_data: bytes,
                      make_env) -> dict:
    """The TrialResult fields every target measures alike: candidate and teacher returns on the same
    seeded evaluation episodes, their ratio, and both artifacts' bytes."""
    r = evaluate(act, make_env, spec.eval.episodes, spec.eval.seed)
    rt = evaluate(teacher_act, make_env, spec.eval.episodes, spec.eval.seed)
    size, tsize = artifact_bytes(data), artifact_bytes(teacher_data)
    return {"return_mean": float(r.mean()), "return_std": float(r.std()), "returns": r.tolist(),
            "teacher_return_mean": float(rt.mean()), "teacher_return_std": float(rt.std()),
            "return_ratio": return_ratio(float(r.mean()), float(rt.mean()), spec, make_env),
            "bytes": size["bytes"], "gzip_bytes": size["gzip_bytes"], "teacher_bytes": tsize["bytes"],
            "teacher_gzip_bytes": tsize["gzip_bytes"], "bytes_ratio": size["bytes"] / tsize["bytes"]}


#: teacher-visited observations an MCU target's builds run on: cycles are exact per observation and vary
#: under 1% between them (soft-float and libm paths); a [256, 256] fp32 teacher on a Cortex-M0+ emulates
#: at ~2 s an act, once per teacher and target (cached)
DEVICE_OBS = 16


def measure_on_device(spec: TrialSpec, data: bytes, teacher_data: bytes, make_env,
                      cache_dir: str | Path | None = None) -> TrialResult:
    """The candidate and the teacher as the MCU target runs them (autocompress.mcu.device): each C
    export cross-built with the kernels the target's cycle counts choose (within the spec's flash budget,
    if it has one; the teacher's: the fewest cycles) and emulated on the teacher's
    DEVICE_OBS recorded states (flash, RAM, cycles per act); return evaluated in the numpy runtime with
    the same kernels (the integer-only net's mirror is exact). latency_ms is the mean cycles at the
    target's clock, latency_ratio the cycle ratio to the teacher's on the same core. The teacher's
    figures are cached under `cache_dir` (same artifact, target and states: the same counts)."""
    from autocompress.mcu import device  # defers the emulator (unicorn, capstone)

    tgt = target(spec.latency.target)
    teacher = NumpyPolicy.from_bytes(teacher_data)
    obs = collect_obs(teacher.act, make_env, DEVICE_OBS, spec.eval.seed)
    kernels = device.choose_kernels(data, tgt, obs, spec.latency.max_flash)
    cand = NumpyPolicy.from_bytes(data, kernels)
    shared = returns_and_bytes(spec, cand.act, teacher.act, data, teacher_data, make_env)
    fig = device.measure(data, kernels, tgt, obs)
    tfig = _teacher_on_device(teacher_data, tgt, obs, cache_dir)
    episode_reset(cand.act)()  # a recurrent policy: the stream from the zero state, as the device ran it
    want = np.array([cand.act(o) for o in obs])
    same = (fig.actions == want) if want.ndim == 1 else np.isclose(fig.actions, want, atol=1e-5).all(axis=1)
    clock = spec.latency.clock_mhz * 1e6 if spec.latency.clock_mhz else tgt.clock_hz
    cycles = float(fig.cycles.mean())
    return TrialResult(
        **shared, latency_ms=cycles / clock * 1e3, latency_p95_ms=float(np.percentile(fig.cycles, 95)) / clock * 1e3,
        teacher_latency_ms=tfig["cycles"] / clock * 1e3, latency_ratio=cycles / tfig["cycles"], runtime="numpy",
        kernels=kernels, cpu=tgt.description, target=tgt.name, flash=fig.flash, ram=fig.ram, cycles=cycles,
        cycles_max=int(fig.cycles.max()), instructions=float(fig.instructions.mean()),
        teacher_flash=tfig["flash"], teacher_ram=tfig["ram"], teacher_cycles=tfig["cycles"],
        device_agreement=float(same.mean()))


def _teacher_on_device(teacher_data: bytes, tgt, obs: np.ndarray, cache_dir: str | Path | None) -> dict:
    """The teacher's flash, RAM and mean cycles on `tgt` over `obs` (cached by artifact, target, states)."""
    from autocompress.mcu import device  # defers the emulator (unicorn, capstone)

    def run() -> dict:
        fig = device.measure(teacher_data, device.choose_kernels(teacher_data, tgt, obs), tgt, obs)
        return {"flash": fig.flash, "ram": fig.ram, "cycles": float(fig.cycles.mean())}

    if cache_dir is None:
        return run()
    key = hashlib.sha256(teacher_data + tgt.name.encode() + np.ascontiguousarray(obs, np.float32).tobytes())
    path = Path(cache_dir) / "device" / f"teacher-{key.hexdigest()[:16]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:  # parallel trials: one emulates, the others wait and read
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            path.write_text(json.dumps(run()))
        return json.loads(path.read_text())


def cpu_model() -> str:
    """The CPU's model name (recorded per trial: latencies are comparable on one model)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- held-out re-evaluation ------------------------------------------------------------------

def heldout_spec(spec: TrialSpec, episodes: int | None = None, seed: int | None = None) -> TrialSpec:
    """`spec` whose evaluation is its held-out episodes (eval.heldout_seed, eval.heldout_episodes, or
    `episodes` / `seed`), so `return_ratio`'s random baseline (a teacher return <= 0) runs on them too.
    ConfigError (via the spec's seed check) when those seeds overlap what trains, selects or evaluates."""
    held = spec.updated({"eval": {k: v for k, v in (("heldout_episodes", episodes), ("heldout_seed", seed))
                                  if v is not None}})
    if held.eval.heldout_episodes < 1:
        raise ConfigError("eval.heldout_episodes is 0 in the trial spec: give the number of held-out episodes",
                          option="reevaluate")
    return _evaluating_on(held, held.eval.heldout_seed, held.eval.heldout_episodes)


def fresh_spec(spec: TrialSpec) -> TrialSpec:
    """`spec` whose evaluation is its fresh episodes (eval.fresh_seed, eval.fresh_episodes): where `pick`
    reports the trial it chose, on episodes it was not chosen on."""
    return _evaluating_on(spec, spec.eval.fresh_seed, spec.eval.fresh_episodes)


def _evaluating_on(spec: TrialSpec, seed: int, episodes: int) -> TrialSpec:
    """`spec` with its evaluation moved onto `seed` .. + `episodes` - 1, one of its measuring ranges: the
    others are switched off, as `spec` was checked with them apart (evaluation would now overlap them)."""
    return spec.updated({"eval": {"episodes": episodes, "seed": seed, "heldout_episodes": 0, "fresh_episodes": 0}})


def artifact_returns(data: bytes, spec: TrialSpec, runtime: str, kernels: list[str] | None = None) -> np.ndarray:
    """Returns of the artifact `data` over the evaluation episodes of `spec` (a `heldout_spec` for
    held-out ones), acting in `runtime` ('c' | 'numpy') with the per-layer `kernels` it was measured with."""
    _, cls = policy_runtime(runtime)
    policy = cls.from_bytes(data, kernels or None)
    return evaluate(policy.act, spec.env_creator(), spec.eval.episodes, spec.eval.seed)


def heldout_summary(returns: np.ndarray, teacher_returns: np.ndarray, spec: TrialSpec) -> dict[str, float]:
    """return_mean / return_std and the ratio to the teacher's return on the same held-out episodes."""
    mean, teacher = float(np.mean(returns)), float(np.mean(teacher_returns))
    return {"return_mean": mean, "return_std": float(np.std(returns)),
            "return_ratio": return_ratio(mean, teacher, spec, spec.env_creator())}
