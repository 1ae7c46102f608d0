"""Search efficiency: normalised hypervolume vs finished trials for TPE (the default),
NSGA-II and random sampling at equal budget, several seeds each (CartPole-v1 PPO).

    python -m benchmarks.search_efficiency [--trials 16] [--seeds 3]

Baselines are not enqueued here, so every sampler starts from nothing. Trials use a
cheaper fine-tune / evaluation than the shipped spec (same teacher) to fit the budget.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import save_figure, machine, run_search, write_section

CHEAP = {"finetune": {"iterations": 1}, "eval": {"episodes": 10}, "latency": {"calls": 1000, "rounds": 5}}
SAMPLERS = ("tpe", "nsga2", "random")


def hv_curve(run, n: int) -> np.ndarray:
    """Hypervolume after each of the first n trials (by trial number)."""
    return np.array([run.hypervolume(before=k) for k in range(1, n + 1)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    curves: dict[str, list[np.ndarray]] = {s: [] for s in SAMPLERS}
    with tempfile.TemporaryDirectory() as d:
        for seed in range(args.seeds):
            for sampler in SAMPLERS:
                wall, run = run_search({"baselines": False, "sampler": sampler, "seed": seed,
                                        "budget": {"trials": args.trials, "parallel": 2}}, CHEAP,
                                       Path(d) / f"{sampler}-{seed}")
                curves[sampler].append(hv_curve(run, args.trials))
                print(f"{sampler} seed {seed}: final HV {curves[sampler][-1][-1]:.4f} ({wall:.0f} s)", flush=True)
    mean = {s: np.mean(c, axis=0) for s, c in curves.items()}
    target = mean["random"][-1]
    reach = next((k + 1 for k, v in enumerate(mean["tpe"]) if v >= target), None)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = np.arange(1, args.trials + 1)
    for s in SAMPLERS:
        c = np.array(curves[s])
        ax.plot(x, c.mean(0), label=f"{s} (mean of {len(c)})")
        ax.fill_between(x, c.min(0), c.max(0), alpha=0.15)
    ax.axhline(target, ls=":", c="k", lw=0.8, label="random's final mean")
    ax.set_xlabel("finished trials")
    ax.set_ylabel("hypervolume (teacher-normalised)")
    ax.legend(fontsize=8)
    save_figure(fig, "search_efficiency.png")
    lines = ["## Search efficiency (CartPole-v1 PPO)", "",
             f"`python -m benchmarks.search_efficiency --trials {args.trials} --seeds {args.seeds}` on {machine()}; "
             "objectives return / latency / bytes, constraint return ratio ≥ 0.9, parallel 2, no enqueued baselines.",
             "", "| sampler | " + " | ".join(f"HV after {k}" for k in (4, 8, 12, args.trials)) + " |",
             "|---|" + "---|" * 4]
    for s in SAMPLERS:
        lines.append(f"| {s} | " + " | ".join(f"{mean[s][k - 1]:.4f}" for k in (4, 8, 12, args.trials)) + " |")
    verdict = (f"TPE reaches random's final mean hypervolume ({target:.4f}) after **{reach} of {args.trials}** trials "
               f"({reach / args.trials:.0%}; target ≤ 50%: {'met' if reach / args.trials <= 0.5 else 'missed'})."
               if reach else f"TPE's mean never reaches random's final mean ({target:.4f}) in {args.trials} trials "
                             "(target missed).")
    lines += ["", verdict, "", "![hypervolume vs trials](img/search_efficiency.png)"]
    body = "\n".join(lines)
    write_section("search_efficiency", body)


if __name__ == "__main__":
    main()
