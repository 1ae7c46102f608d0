"""The measurement protocol: return over seeded episodes, batch-1 latency, artifact bytes.

Everything here takes a plain `act(obs)` callable, so the exported artifact (numpy
runtime) is what gets measured, and teacher and candidate go through the same code.
"""

from __future__ import annotations

import gzip
import time
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits


def evaluate(act: Callable, make_env: Callable, episodes: int, seed: int) -> np.ndarray:
    """Undiscounted return of each episode i, reset with seed + i; deterministic actions."""
    env = make_env()
    returns = []
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            total, done = 0.0, False
            while not done:
                obs, r, term, trunc, _ = env.step(act(obs))
                total += float(r)
                done = term or trunc
            returns.append(total)
    finally:
        env.close()
    return np.asarray(returns)


def collect_obs(act: Callable, make_env: Callable, steps: int, seed: int) -> np.ndarray:
    """Observations visited by `act` over `steps` env steps (episodes reset with seed, seed+1, ...)."""
    env = make_env()
    out, ep = [], 0
    try:
        obs, _ = env.reset(seed=seed)
        while len(out) < steps:
            out.append(np.asarray(obs, dtype=np.float32))
            obs, _, term, trunc, _ = env.step(act(obs))
            if term or trunc:
                ep += 1
                obs, _ = env.reset(seed=seed + ep)
    finally:
        env.close()
    return np.stack(out)


def latency(fns: dict[str, Callable], obs: np.ndarray, warmup: int = 200, calls: int = 2000,
            rounds: int = 10) -> dict[str, dict[str, float]]:
    """Batch-1 latency of each fn on `obs`, 1 BLAS thread, measured side by side.

    Calls are timed one by one with perf_counter_ns. The fns take turns in `rounds`
    blocks of calls/rounds each, so drift in machine load hits all of them alike.
    Returns per name: median_ms, p95_ms.
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
