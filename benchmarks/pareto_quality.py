"""Pareto quality on CartPole-v1 PPO: run a search, re-evaluate the front (and every
single-technique trial) on 100 seeded episodes, check the target, plot the front against
each technique alone.

    python -m benchmarks.pareto_quality [--trials 30] [--episodes 100]

Target: a front point with ≥ 95% of the teacher's return (100 episodes, re-evaluated) at
≥ 10x smaller artifact AND ≥ 2x lower batch-1 latency than the fp32 teacher.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


from benchmarks.common import save_figure, ROOT, machine, run_search, write_section


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--episodes", type=int, default=100)
    args = ap.parse_args()
    from autocompress import envs, measure
    from autocompress.config import load_trial_spec
    from autocompress.runtime import NumpyPolicy
    from autocompress.search import current_front, load_run, rows

    spec = load_trial_spec(ROOT / "trials" / "cartpole_ppo.yaml")
    make_env = envs.env_creator(spec.env)
    with tempfile.TemporaryDirectory() as d:
        wall = run_search({"budget": {"trials": args.trials, "parallel": 2}}, {}, Path(d))
        study, state = load_run(Path(d) / "run")
        all_rows = rows(study)
        front = {r["trial"] for r in current_front(study, state["objectives"])}
        singles = [r for r in all_rows if len(r["config"]) == 1]
        teacher_row = next(r for r in all_rows if not r["config"])
        check = {r["trial"]: r for r in all_rows if r["trial"] in front or r in singles or r is teacher_row}
        t_ret = measure.evaluate(NumpyPolicy.load(teacher_row["artifact"]).act, make_env, args.episodes, 50_000).mean()
        for r in check.values():
            ret = measure.evaluate(NumpyPolicy.load(r["artifact"]).act, make_env, args.episodes, 50_000)
            r["return100"], r["ratio100"] = float(ret.mean()), float(ret.mean() / t_ret)
    hits = [r for t, r in check.items() if t in front and r["ratio100"] >= 0.95 and r["bytes_ratio"] <= 0.1
            and r["latency_ratio"] <= 0.5]
    size_only = [r for t, r in check.items() if t in front and r["ratio100"] >= 0.95 and r["bytes_ratio"] <= 0.1]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, label in ((axes[0], "bytes_ratio", "artifact bytes / teacher (log)"),
                           (axes[1], "latency_ratio", "latency / teacher")):
        f = sorted((r for t, r in check.items() if t in front), key=lambda r: r[key])
        ax.plot([r[key] for r in f], [r["ratio100"] for r in f], "o-", c="tab:red", label="searched front")
        for r in singles:
            name = next(iter(r["config"]))
            ax.scatter(r[key], r["ratio100"], marker="x", label=f"{name} alone")
            ax.annotate(name, (r[key], r["ratio100"]), fontsize=7, xytext=(3, -9), textcoords="offset points")
        ax.axhline(0.95, ls=":", c="k", lw=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel(f"return / teacher ({args.episodes} episodes)")
        if key == "bytes_ratio":
            ax.set_xscale("log")
            ax.axvline(0.1, ls=":", c="gray", lw=0.8)
        else:
            ax.axvline(0.5, ls=":", c="gray", lw=0.8)
    axes[0].legend(fontsize=7)
    save_figure(fig, "pareto_quality.png")

    lines = ["## Pareto quality (CartPole-v1 PPO)", "",
             f"`python -m benchmarks.pareto_quality --trials {args.trials} --episodes {args.episodes}` on {machine()}: "
             f"a {args.trials}-trial search ({wall:.0f} s), then every front member and every single-technique trial "
             f"re-evaluated on {args.episodes} new seeded episodes (teacher: {t_ret:.1f}). Latency and bytes ratios "
             "as measured in the search.", "",
             "| trial | techniques | return (100 ep.) ratio | bytes ratio | latency ratio | on front |", "|---|---|---|---|---|---|"]
    for t, r in sorted(check.items()):
        lines.append(f"| {t} | {', '.join(r['config']) or 'teacher'} | {r['ratio100']:.3f} | {r['bytes_ratio']:.4f} | "
                     f"{r['latency_ratio']:.3f} | {'yes' if t in front else ''} |")
    best = min(size_only, key=lambda r: r["latency_ratio"], default=None)
    lines += ["", f"Target (≥ 0.95 return, ≥ 10x smaller, ≥ 2x faster): **{'met' if hits else 'missed'}**."]
    if best and not hits:
        lines.append(f"Closest: trial {best['trial']} ({', '.join(best['config'])}): return ratio {best['ratio100']:.3f}, "
                     f"{1 / best['bytes_ratio']:.0f}x smaller, {1 / best['latency_ratio']:.2f}x faster. The size "
                     "half is met; the latency half is bounded by per-call overhead (see the latency floor section).")
    lines += ["", "![front vs single techniques](img/pareto_quality.png)"]
    body = "\n".join(lines)
    print(body)
    write_section("pareto_quality", body)


if __name__ == "__main__":
    main()
