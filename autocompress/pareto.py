"""Pareto tools, pure Python + numpy (no framework imports): non-dominated sorting,
hypervolume, and picking one trial under constraints.

All functions take points as minimisation vectors; `to_min` converts trial rows
(return ↑, latency ↓, bytes ↓, macs ↓) into that form.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

#: objective -> (row key, sign that turns it into minimisation)
OBJECTIVES = {"return": ("return_mean", -1.0), "latency": ("latency_ms", 1.0), "bytes": ("bytes", 1.0)}
#: the same objectives normalised against the teacher (used for hypervolume)
RATIOS = {"return": ("return_ratio", -1.0), "latency": ("latency_ratio", 1.0), "bytes": ("bytes_ratio", 1.0)}


def to_min(rows: Sequence[dict], objectives: Sequence[str], table: dict = OBJECTIVES) -> np.ndarray:
    return np.array([[table[o][1] * float(r[table[o][0]]) for o in objectives] for r in rows], dtype=float).reshape(
        len(rows), len(objectives))


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """a dominates b (minimisation): no worse in every objective, better in one."""
    return bool(np.all(a <= b) and np.any(a < b))


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the first front. Duplicates do not dominate each other: all stay."""
    p = np.asarray(points, dtype=float)
    n = len(p)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        le = np.all(p <= p[i], axis=1)
        lt = np.any(p < p[i], axis=1)
        if np.any(le & lt):
            keep[i] = False
    return keep


def nondominated_sort(points: np.ndarray) -> np.ndarray:
    """Front index of each point (0 = Pareto front)."""
    p = np.asarray(points, dtype=float)
    rank = np.full(len(p), -1)
    left = np.arange(len(p))
    r = 0
    while len(left):
        front = non_dominated(p[left])
        rank[left[front]] = r
        left = left[~front]
        r += 1
    return rank


def hypervolume(points: np.ndarray, ref: Sequence[float]) -> float:
    """Volume dominated by `points` and bounded by `ref` (minimisation); exact, by slicing.

    Points not strictly better than `ref` in every objective add nothing.
    """
    ref = np.asarray(ref, dtype=float)
    p = np.asarray(points, dtype=float).reshape(-1, len(ref))
    p = p[np.all(p < ref, axis=1)]
    if len(p) == 0:
        return 0.0
    p = p[non_dominated(p)]
    return _hv(np.unique(p, axis=0), ref)


def _hv(p: np.ndarray, ref: np.ndarray) -> float:
    if p.shape[1] == 1:
        return float(ref[0] - p[:, 0].min())
    p = p[np.argsort(p[:, -1], kind="stable")]
    vol = 0.0
    for i in range(len(p)):
        upper = p[i + 1, -1] if i + 1 < len(p) else ref[-1]
        depth = upper - p[i, -1]
        if depth > 0:
            sub = p[: i + 1, :-1]
            vol += depth * _hv(sub[non_dominated(sub)], ref[:-1])
    return vol


def normalised_hypervolume(rows: Sequence[dict], objectives: Sequence[str]) -> float:
    """Hypervolume in teacher-relative units: reference = (0 return, teacher latency, teacher bytes).

    1.0 would be the teacher's return at ~zero latency and size; the teacher itself adds ~0.
    """
    if not rows:
        return 0.0
    ref = [0.0 if o == "return" else 1.0 for o in objectives]
    return hypervolume(to_min(rows, objectives, RATIOS), ref)


def front(rows: Sequence[dict], objectives: Sequence[str]) -> list[dict]:
    if not rows:
        return []
    mask = non_dominated(to_min(rows, objectives))
    return [r for r, m in zip(rows, mask) if m]


class NothingQualifies(ValueError):
    pass


def pick(rows: Iterable[dict], *, min_return_ratio: float = 0.0, minimize: str = "latency",
         max_bytes: float | None = None, max_latency_ms: float | None = None, max_flash: float | None = None,
         max_ram: float | None = None, ratio: str = "return_ratio", mean: str = "return_mean") -> dict:
    """The trial with the lowest `minimize` (latency | bytes) among those meeting every constraint;
    ties broken by the other objective, then by higher return. `ratio` / `mean`: the row keys of the
    return ratio and return it goes by (e.g. heldout_return_ratio / heldout_return_mean)."""
    if minimize not in ("latency", "bytes"):
        raise ValueError(f"minimize must be 'latency' or 'bytes', not {minimize!r}")
    rows = list(rows)
    checks = [(ratio, lambda r: r[ratio] >= min_return_ratio, f"{ratio} >= {min_return_ratio}")]
    for key, limit in (("bytes", max_bytes), ("latency_ms", max_latency_ms), ("flash", max_flash), ("ram", max_ram)):
        if limit is not None:  # flash / RAM: measured on an MCU target only (None elsewhere: never within)
            checks.append((key, lambda r, k=key, v=limit: r.get(k) is not None and r[k] <= v, f"{key} <= {limit:g}"))
    ok = [r for r in rows if all(c(r) for _, c, _ in checks)]
    if not ok:
        lines = [f"no trial meets all constraints ({len(rows)} completed trials)"]
        for _, c, text in checks:
            lines.append(f"  {text}: met by {sum(c(r) for r in rows)}")
        raise NothingQualifies("\n".join(lines))
    key, other = ("latency_ms", "bytes") if minimize == "latency" else ("bytes", "latency_ms")
    return min(ok, key=lambda r: (r[key], r[other], -r[mean]))
