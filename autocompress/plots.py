"""Plots of a search: the Pareto front (interactive HTML + PNG), hypervolume vs trials, and layer
sensitivity heatmaps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.colors import PowerNorm

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _label(r: dict) -> str:
    return f"#{r['trial']} " + (", ".join(r["config"]) if r.get("config") else "teacher")


def heldout_points(rows: Sequence[dict], front_ids: set[int]) -> list[dict]:
    """Front members with held-out values: the return the search saw and the one on fresh episodes.
    The plots draw both, joined, so that a point whose return held up looks different from a lucky one."""
    return [r for r in rows if r["trial"] in front_ids and r.get("heldout_return_ratio") is not None]


def latency_axis(rows: Sequence[dict]) -> tuple[str, bool]:
    """The latency ratio's axis title and whether it is log: on an MCU target it is the exact cycle
    ratio on that core (spanning decades: log), on the host the timed batch-1 latency."""
    target = next((r.get("target") for r in rows if r.get("target") not in (None, "host")), None)
    if target:
        return f"cycles per act / teacher's on {target} (log)", True
    return "batch-1 latency / teacher", False


def pareto_png(rows: Sequence[dict], front_ids: set[int], path: Path) -> Path:
    """Return ratio vs bytes ratio (log) and vs latency ratio; front members highlighted, and their
    held-out return (hollow, joined to the evaluation value) where the search re-evaluated them."""
    held = heldout_points(rows, front_ids)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    lat_label, lat_log = latency_axis(rows)
    for ax, key, label in ((axes[0], "bytes_ratio", "artifact bytes / teacher (log)"),
                           (axes[1], "latency_ratio", lat_label)):
        rest = [r for r in rows if r["trial"] not in front_ids]
        best = sorted([r for r in rows if r["trial"] in front_ids], key=lambda r: r[key])
        ax.scatter([r[key] for r in rest], [r["return_ratio"] for r in rest], c="lightgray", label="dominated")
        ax.scatter([r[key] for r in best], [r["return_ratio"] for r in best], c="tab:red", label="Pareto front")
        if held:
            for r in held:
                ax.plot([r[key]] * 2, [r["return_ratio"], r["heldout_return_ratio"]], c="tab:red", lw=0.8, alpha=0.6)
            ax.scatter([r[key] for r in held], [r["heldout_return_ratio"] for r in held], facecolors="none",
                       edgecolors="tab:blue", label=f"front, held-out ({held[0]['heldout_episodes']} episodes)")
        for r in best:
            ax.annotate(_label(r), (r[key], r["return_ratio"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.axhline(1.0, ls=":", c="k", lw=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("return / teacher")
        if key == "bytes_ratio" or lat_log:
            ax.set_xscale("log")
        ax.legend(fontsize=8)
    fig.suptitle("autocompress: trials vs the teacher (1.0 = teacher)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _hover(r: dict) -> str:
    text = _label(r) + f"<br>{r['bytes']:,} B, {r['latency_ms'] * 1000:.1f} µs, return {r['return_mean']:.1f}"
    if r.get("heldout_return_ratio") is not None:
        text += (f"<br>held-out ({r['heldout_episodes']} episodes): return {r['heldout_return_mean']:.1f}, "
                 f"ratio {r['heldout_return_ratio']:.3f}")
    return text


def pareto_html(rows: Sequence[dict], front_ids: set[int], path: Path) -> Path:
    import plotly.graph_objects as go  # deferred (heavy): plotly, for the HTML plot only

    fig = go.Figure()
    for name, sel, color in (("dominated", False, "lightgray"), ("Pareto front", True, "crimson")):
        rs = [r for r in rows if (r["trial"] in front_ids) == sel]
        fig.add_trace(go.Scatter3d(
            x=[r["bytes_ratio"] for r in rs], y=[r["latency_ratio"] for r in rs], z=[r["return_ratio"] for r in rs],
            mode="markers", name=name, marker={"size": 5, "color": color},
            text=[_hover(r) for r in rs], hoverinfo="text"))
    held = heldout_points(rows, front_ids)
    lat_label, lat_log = latency_axis(rows)
    if held:  # hollow points at the held-out return; toggled from the legend
        fig.add_trace(go.Scatter3d(
            x=[r["bytes_ratio"] for r in held], y=[r["latency_ratio"] for r in held],
            z=[r["heldout_return_ratio"] for r in held], mode="markers",
            name=f"front, held-out ({held[0]['heldout_episodes']} episodes)",
            marker={"size": 5, "color": "white", "line": {"color": "royalblue", "width": 2}},
            text=[_hover(r) for r in held], hoverinfo="text"))
    fig.update_layout(title="Pareto front (ratios vs teacher)", margin={"l": 0, "r": 0, "b": 0, "t": 40}, scene={
        "xaxis": {"title": "bytes ratio (log)", "type": "log",
                  **log_ticks([r["bytes_ratio"] for r in rows])},
        "yaxis": {"title": lat_label, **({"type": "log", **log_ticks([r["latency_ratio"] for r in rows])}
                                         if lat_log else {})},
        "zaxis": {"title": "return ratio"}})
    # plotly.js stays embedded (4.8 MB): MLflow shows the file in a sandboxed iframe from a blob URL, where
    # a relative script cannot load, and a CDN script needs internet the machine viewing it may not have.
    fig.write_html(path, include_plotlyjs=True)
    return path


def log_ticks(values: Sequence[float], most: int = 7) -> dict:
    """Ticks for a log axis of ratios: plotly's own 3-D log ticks put the 2..9 of every decade on top of
    each other once the range spans a decade or more. Instead, the finest of three sets that gives at most
    `most` ticks in the range: 1-2-5 steps, 1-3 steps, decades (then every k-th decade); below 1 they are
    exact fractions, written as such (1/2, 1/5, 1/10 ...; 1/3, 1/10, 1/30 ...), above 1 as numbers.
    An empty dict (plotly's defaults, readable there) when fewer than two such ticks fall in the range."""
    vals = [v for v in values if v and v > 0 and math.isfinite(v)]
    if not vals:
        return {}
    lo, hi = min(vals) / 1.05, max(vals) * 1.05
    up, down = max(0, math.ceil(math.log10(hi))), max(0, -math.floor(math.log10(lo)))
    ticks = []
    for steps in ((1, 2, 5), (1, 3), (1,)):
        grid = {m * 10 ** d for m in steps for d in range(up + 1)} | {1 / (m * 10 ** d) for m in steps
                                                                      for d in range(down + 1)}
        ticks = sorted(t for t in grid if lo <= t <= hi)
        if len(ticks) <= most:
            break
    else:
        ticks = ticks[::-1][::-(-len(ticks) // most)][::-1]  # every k-th decade, keeping the largest (1: the teacher)
    if len(ticks) < 2:
        return {}
    return {"tickmode": "array", "tickvals": ticks, "ticktext": [_fraction(t) for t in ticks]}


def _fraction(v: float) -> str:
    return f"{v:g}" if v >= 1 else f"1/{round(1 / v)}"


def hypervolume_png(history: Sequence[tuple[int, float]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([t for t, _ in history], [h for _, h in history], marker="o", ms=3)
    ax.set_xlabel("finished trials")
    ax.set_ylabel("hypervolume (teacher-normalised)")
    ax.set_title("search progress")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sensitivity_png(table: dict, path: Path, field: str = "drop") -> Path:
    """Layer sensitivity heatmaps, one per technique: layers × settings (least to most aggressive, left to
    right), each cell the policy's `field` (drop) with only that layer compressed; 0 = as the teacher."""
    techniques = list(table["techniques"])
    layers = table["layers"]
    fig, axes = plt.subplots(1, len(techniques), squeeze=False, sharey=True, layout="constrained",
                             figsize=(max(4.5, 2.6 * len(techniques) + 2), 1.6 + 0.5 * len(layers)))
    image = None
    for ax, t in zip(axes[0], techniques):
        info = table["techniques"][t]
        settings = info["settings"]
        grid = np.full((len(layers), len(settings)), np.nan)  # a layer a technique skips stays blank
        for r in table["rows"]:
            if r["technique"] == t and r.get(field) is not None:
                grid[r["layer"], settings.index(r["setting"])] = min(r[field], 1.0)
        # drops that matter are small: a square-root scale gives 0.05 and 0.2 visibly different colours
        image = ax.imshow(grid, cmap="RdYlGn_r", norm=PowerNorm(0.5, vmin=0.0, vmax=1.0), aspect="auto")
        for (y, x), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(x, y, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v > 0.5 else "black")
        ax.set_xticks(range(len(settings)), [f"{s:g}" for s in settings], fontsize=8)
        ax.set_xlabel(f"{t}.{info['key']}  (harder →)", fontsize=9)
        ax.set_title(t, fontsize=10)
    axes[0][0].set_yticks(range(len(layers)), [la["label"] for la in layers], fontsize=8)
    axes[0][0].set_ylabel("layer")
    fig.colorbar(image, ax=list(axes[0]), shrink=0.9, label=field)
    how = "max(1 − agreement, 1 − return ratio)" if table.get("episodes") else "1 − agreement"
    fig.suptitle(f"layer sensitivity of {table.get('spec', 'the teacher')}, one layer compressed, no fine-tune: "
                 f"{field} = {how}", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
