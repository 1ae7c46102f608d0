"""Pareto quality: run a search, re-evaluate the front (and every single-technique trial) on
100 seeded episodes, check the target, plot the front against each technique alone.

    python -m benchmarks.pareto_quality [--space cartpole_ppo] [--trials 30] [--episodes 100]
    python -m benchmarks.pareto_quality --space lunarlander_dqn --min-ratio 0.9 --min-shrink 8

Targets: CartPole, a front point with ≥ 95% of the teacher's return (100 episodes,
re-evaluated) at ≥ 10x smaller artifact AND ≥ 2x lower batch-1 latency than the fp32
teacher; harder envs, ≥ 90% at ≥ 8x smaller (the 2x latency is reported beside it).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


from benchmarks.common import ROOT, latency_words, machine, run_search, save_figure, write_section


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--space", default="cartpole_ppo", help="a shipped search space (search_spaces/<name>.yaml)")
    ap.add_argument("--min-ratio", type=float, default=0.95, help="return ratio target")
    ap.add_argument("--min-shrink", type=float, default=10, help="bytes: at least this many times smaller")
    ap.add_argument("--parallel", type=int, default=2)
    args = ap.parse_args()
    import yaml

    import autocompress as ac

    space_file = ROOT / "search_spaces" / f"{args.space}.yaml"
    spec = ac.load_trial_spec((space_file.parent / yaml.safe_load(space_file.read_text())["trial_spec"]).resolve())
    with tempfile.TemporaryDirectory() as d:
        wall, run = run_search({"budget": {"trials": args.trials, "parallel": args.parallel}}, {}, Path(d),
                               base=args.space)
        all_rows = run.rows()
        front = {r.trial for r in run.front()}
        singles = [r for r in all_rows if len(r["config"]) == 1]
        teacher_row = next(r for r in all_rows if not r["config"])
        check = {r["trial"]: r for r in all_rows if r["trial"] in front or r in singles or r is teacher_row}
        again = run.reevaluate(sorted(check), episodes=args.episodes, seed=50_000, runtime=spec.latency.runtime)
        t_ret = again["teacher"]["return_mean"]
        for n, r in check.items():
            r["return100"], r["ratio100"] = again[n]["return_mean"], again[n]["return_ratio"]
    size_only = [r for t, r in check.items() if t in front and r["ratio100"] >= args.min_ratio
                 and r["bytes_ratio"] <= 1 / args.min_shrink]
    hits = [r for r in size_only if r["latency_ratio"] <= 0.5]

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
        ax.axhline(args.min_ratio, ls=":", c="k", lw=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel(f"return / teacher ({args.episodes} episodes)")
        if key == "bytes_ratio":
            ax.set_xscale("log")
            ax.axvline(1 / args.min_shrink, ls=":", c="gray", lw=0.8)
        else:
            ax.axvline(0.5, ls=":", c="gray", lw=0.8)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{spec.env} {spec.algorithm}: searched front vs each technique alone")
    img = "pareto_quality.png" if args.space == "cartpole_ppo" else f"pareto_quality_{args.space}.png"
    save_figure(fig, img)

    cmd = (f"python -m benchmarks.pareto_quality --space {args.space} --trials {args.trials} --episodes "
           f"{args.episodes} --min-ratio {args.min_ratio} --min-shrink {args.min_shrink:g}")
    lines = [f"## Pareto quality ({spec.env} {spec.algorithm})", "",
             f"`{cmd}` on {machine()}: "
             f"a {args.trials}-trial search ({wall:.0f} s), then every front member and every single-technique trial "
             f"re-evaluated on {args.episodes} new seeded episodes (teacher: {t_ret:.1f}). Latency and bytes ratios "
             f"as measured in the search (latency: {latency_words(teacher_row.get('runtime', 'numpy'))}). Where the teacher's "
             "return is not positive the ratio is normalised between a random policy (0) and the teacher (1).", "",
             "| trial | techniques | return (100 ep.) ratio | bytes ratio | latency ratio | on front |", "|---|---|---|---|---|---|"]
    for t, r in sorted(check.items()):
        lines.append(f"| {t} | {', '.join(r['config']) or 'teacher'} | {r['ratio100']:.3f} | {r['bytes_ratio']:.4f} | "
                     f"{r['latency_ratio']:.3f} | {'yes' if t in front else ''} |")
    shrink = f"≥ {args.min_shrink:g}x smaller"
    lines += ["", f"Target (≥ {args.min_ratio:g} return, {shrink}): **{'met' if size_only else 'missed'}**; with ≥ 2x "
              f"lower latency as well: **{'met' if hits else 'missed'}**."]
    best = min(hits or size_only, key=lambda r: r["latency_ratio"], default=None)
    if best:
        lines.append(f"Best such point: trial {best['trial']} ({', '.join(best['config']) or 'teacher'}): return ratio "
                     f"{best['ratio100']:.3f} over {args.episodes} episodes, {1 / best['bytes_ratio']:.0f}x smaller, "
                     f"{1 / best['latency_ratio']:.2f}x faster.")
    lines += ["", f"![front vs single techniques]({'img/' + img})"]
    body = "\n".join(lines)
    write_section("pareto_quality" if args.space == "cartpole_ppo" else f"pareto_quality_{args.space}", body)


if __name__ == "__main__":
    main()
