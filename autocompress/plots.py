"""Plots of a search: the Pareto front (interactive HTML + PNG) and hypervolume vs trials."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _label(r: dict) -> str:
    return f"#{r['trial']} " + (", ".join(r["config"]) if r.get("config") else "teacher")


def pareto_png(rows: Sequence[dict], front_ids: set[int], path: Path) -> Path:
    """Return ratio vs bytes ratio (log) and vs latency ratio; front members highlighted."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, label in ((axes[0], "bytes_ratio", "artifact bytes / teacher (log)"),
                           (axes[1], "latency_ratio", "batch-1 latency / teacher")):
        rest = [r for r in rows if r["trial"] not in front_ids]
        best = sorted([r for r in rows if r["trial"] in front_ids], key=lambda r: r[key])
        ax.scatter([r[key] for r in rest], [r["return_ratio"] for r in rest], c="lightgray", label="dominated")
        ax.scatter([r[key] for r in best], [r["return_ratio"] for r in best], c="tab:red", label="Pareto front")
        for r in best:
            ax.annotate(_label(r), (r[key], r["return_ratio"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.axhline(1.0, ls=":", c="k", lw=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("return / teacher")
        if key == "bytes_ratio":
            ax.set_xscale("log")
        ax.legend(fontsize=8)
    fig.suptitle("autocompress: trials vs the teacher (1.0 = teacher)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pareto_html(rows: Sequence[dict], front_ids: set[int], path: Path) -> Path:
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, sel, color in (("dominated", False, "lightgray"), ("Pareto front", True, "crimson")):
        rs = [r for r in rows if (r["trial"] in front_ids) == sel]
        fig.add_trace(go.Scatter3d(
            x=[r["bytes_ratio"] for r in rs], y=[r["latency_ratio"] for r in rs], z=[r["return_ratio"] for r in rs],
            mode="markers", name=name, marker={"size": 5, "color": color},
            text=[_label(r) + f"<br>{r['bytes']:,} B, {r['latency_ms'] * 1000:.1f} µs, return {r['return_mean']:.1f}"
                  for r in rs], hoverinfo="text"))
    fig.update_layout(title="Pareto front (ratios vs teacher)", scene={
        "xaxis": {"title": "bytes ratio", "type": "log"}, "yaxis": {"title": "latency ratio"},
        "zaxis": {"title": "return ratio"}})
    fig.write_html(path, include_plotlyjs=True)
    return path


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
