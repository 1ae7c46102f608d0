"""Pareto quality: run a search, re-evaluate the front (and every single-technique trial) on held-out
episodes (set A), choose the best point that meets the target on A, and report that point on fresh episodes
it was not chosen on (set B); plot the front against each technique alone.

    python -m benchmarks.pareto_quality [--space cartpole_ppo] [--trials 30] [--episodes 100]
    python -m benchmarks.pareto_quality --space lunarlander_dqn --min-ratio 0.9 --min-shrink 8

Targets: CartPole, a front point with ≥ 95% of the teacher's return at ≥ 10x smaller artifact AND ≥ 2x
lower batch-1 latency than the fp32 teacher; harder envs, ≥ 90% at ≥ 8x smaller (the 2x latency is
reported beside it). Judged on set B. Results: docs/data/pareto_quality_<space>.json (benchmarks.report
renders them).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from functools import partial
from pathlib import Path

from benchmarks import report
from benchmarks.common import A_SEED, DATA, ROOT, SEARCH_CODE, SET_B_SEED, latency_words, record_meta, run_search, save_figure
from benchmarks.report import Section, Target

CODE = ("benchmarks/pareto_quality.py", "benchmarks/common.py::A_SEED", *SEARCH_CODE)  # a search


def data_file(space: str) -> Path:
    return DATA / f"pareto_quality_{space}.json"


def measure(args) -> dict:
    """The search, set A for the front and each technique alone, the chosen point on set B."""
    import yaml

    import autocompress as ac

    space_file = ROOT / "search_spaces" / f"{args.space}.yaml"
    spec = ac.load_trial_spec((space_file.parent / yaml.safe_load(space_file.read_text())["trial_spec"]).resolve())
    with tempfile.TemporaryDirectory() as d:
        wall, run = run_search({"budget": {"trials": args.trials, "parallel": args.parallel}}, {}, Path(d),
                               base=args.space)
        all_rows = run.rows()
        front = {r.trial for r in run.front()}
        teacher_row = next(r for r in all_rows if not r["config"])
        check = {r["trial"]: r for r in all_rows if r["trial"] in front or len(r["config"]) <= 1}
        on_a = run.reevaluate(sorted(check), episodes=args.episodes, seed=A_SEED, runtime=spec.latency.runtime)
        rows = {str(t): {"techniques": list(r["config"]), "ratio_a": on_a[t]["return_ratio"],
                         "bytes_ratio": r["bytes_ratio"], "latency_ratio": r["latency_ratio"], "front": t in front}
                for t, r in sorted(check.items())}
        chosen = choose(rows, args.min_ratio, args.min_shrink)
        on_b = None
        if chosen is not None:
            b = run.reevaluate([int(chosen)], episodes=args.episodes, seed=SET_B_SEED,
                               runtime=spec.latency.runtime)
            on_b = {"return_mean": b[int(chosen)]["return_mean"], "return_ratio": b[int(chosen)]["return_ratio"],
                    "teacher_return_mean": b["teacher"]["return_mean"]}
    return {"env": spec.env, "algorithm": spec.algorithm, "trials": args.trials, "wall_s": wall,
            "episodes": args.episodes, "seed_a": A_SEED, "seed_b": SET_B_SEED,
            "min_ratio": args.min_ratio, "min_shrink": args.min_shrink,
            "runtime": teacher_row.get("runtime", "numpy"), "teacher_a": on_a["teacher"]["return_mean"],
            "rows": rows, "chosen": chosen, "chosen_b": on_b}


def choose(rows: dict, min_ratio: float, min_shrink: float) -> str | None:
    """The front point meeting the return and size targets on set A with the lowest latency, preferring one
    also ≥ 2x faster; None where none meets them."""
    ok = [t for t, r in rows.items() if r["front"] and r["ratio_a"] >= min_ratio and r["bytes_ratio"] <= 1 / min_shrink]
    fast = [t for t in ok if rows[t]["latency_ratio"] <= 0.5]
    return min(fast or ok, key=lambda t: rows[t]["latency_ratio"], default=None)


def plot(data: dict, space: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = data["rows"].values()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, label in ((axes[0], "bytes_ratio", "artifact bytes / teacher (log)"),
                           (axes[1], "latency_ratio", "latency / teacher")):
        f = sorted((r for r in rows if r["front"]), key=lambda r: r[key])
        ax.plot([r[key] for r in f], [r["ratio_a"] for r in f], "o-", c="tab:red", label="searched front")
        for r in rows:
            if len(r["techniques"]) == 1:
                ax.scatter(r[key], r["ratio_a"], marker="x", label=f"{r['techniques'][0]} alone")
                ax.annotate(r["techniques"][0], (r[key], r["ratio_a"]), fontsize=7, xytext=(3, -9),
                            textcoords="offset points")
        ax.axhline(data["min_ratio"], ls=":", c="k", lw=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel(f"return / teacher ({data['episodes']} episodes, set A)")
        if key == "bytes_ratio":
            ax.set_xscale("log")
            ax.axvline(1 / data["min_shrink"], ls=":", c="gray", lw=0.8)
        else:
            ax.axvline(0.5, ls=":", c="gray", lw=0.8)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{data['env']} {data['algorithm']}: searched front vs each technique alone")
    save_figure(fig, f"pareto_quality_{space}.png")


def render(space: str, data: dict) -> str:
    n, a, b = data["episodes"], data["seed_a"], data["seed_b"]
    lines = [f"A {data['trials']}-trial search ({data['wall_s']:.0f} s), then every front member and every "
             f"single-technique trial re-evaluated on {n} held-out episodes (set A, seeds {a}..{a + n - 1}; teacher "
             f"{data['teacher_a']:.1f}); the point is chosen on set A and reported on {n} fresh episodes it was not "
             f"chosen on (set B, seeds {b}..{b + n - 1}). Latency and bytes ratios as measured in the search (latency: "
             f"{latency_words(data['runtime'])}). Where the teacher's return is not positive the ratio is normalised "
             "between a random policy (0) and the teacher (1).", "",
             "| trial | techniques | return ratio, set A | bytes ratio | latency ratio | on front |",
             "|---|---|---|---|---|---|"]
    for t, r in data["rows"].items():
        lines.append(f"| {t} | {', '.join(r['techniques']) or 'teacher'} | {r['ratio_a']:.3f} | "
                     f"{r['bytes_ratio']:.4f} | {r['latency_ratio']:.3f} | {'yes' if r['front'] else ''} |")
    lines += ["", *(f"- {t.what}: {t.figure} (**{'met' if t.met else 'missed'}**)" for t in targets(space, data))]
    lines += ["", f"![front vs single techniques](img/pareto_quality_{space}.png)"]
    return "\n".join(lines)


def targets(space: str, data: dict) -> list[Target]:
    """The Pareto-quality target, judged on set B for the point chosen on set A."""
    what = (f"Pareto quality, {data['env']} {data['algorithm']}: ≥ {data['min_ratio']:g} return at ≥ "
            f"{data['min_shrink']:g}x smaller (and ≥ 2x faster)")
    t = data["chosen"]
    if t is None:
        return [Target(what, "no front point meets it on set A", False)]
    r, b = data["rows"][t], data["chosen_b"]
    figure = (f"trial {t} ({', '.join(r['techniques'])}): return ratio {b['return_ratio']:.3f} on set B "
              f"({r['ratio_a']:.3f} on A, where it was chosen), {1 / r['bytes_ratio']:.0f}x smaller, "
              f"{1 / r['latency_ratio']:.2f}x faster")
    return [Target(what, figure, b["return_ratio"] >= data["min_ratio"] and r["bytes_ratio"] <= 1 / data["min_shrink"]
                   and r["latency_ratio"] <= 0.5)]


def sections() -> list[Section]:
    out = []
    for path in sorted(DATA.glob("pareto_quality_*.json")):
        space = path.stem.removeprefix("pareto_quality_")
        data = json.loads(path.read_text())
        out.append(Section(f"pareto_quality_{space}", f"Pareto quality ({data['env']} {data['algorithm']})",
                           path.stem, CODE + (f"search_spaces/{space}.yaml",), partial(render, space),
                           partial(targets, space)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--space", default="cartpole_ppo", help="a shipped search space (search_spaces/<name>.yaml)")
    ap.add_argument("--min-ratio", type=float, default=0.95, help="return ratio target")
    ap.add_argument("--min-shrink", type=float, default=10, help="bytes: at least this many times smaller")
    ap.add_argument("--parallel", type=int, default=2)
    args = ap.parse_args()
    data = measure(args)
    plot(data, args.space)
    record_meta(data, f"pareto_quality_{args.space}", f"python -m benchmarks.pareto_quality --space {args.space} "
                f"--trials {args.trials} --episodes {args.episodes} --min-ratio {args.min_ratio} --min-shrink "
                f"{args.min_shrink:g}", CODE + (f"search_spaces/{args.space}.yaml",))
    data_file(args.space).write_text(json.dumps(data, indent=1))
    report.main([])


if __name__ == "__main__":
    main()
