"""Search efficiency: normalised hypervolume vs finished trials for TPE (the default),
NSGA-II and random sampling at equal budget, several seeds each (CartPole-v1 PPO).

    python -m benchmarks.search_efficiency [--trials 16] [--seeds 3] [--data PATH]

Baselines are not enqueued here, so every sampler starts from nothing. Trials use a
cheaper fine-tune / evaluation than the shipped spec (same teacher) to fit the budget.
Results: docs/data/search_efficiency.json (benchmarks.report renders them; the plot: docs/img/search_efficiency.png).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import (DATA, SEARCH_CODE, benchmark_parser, command_of, data_sections, md_table, run_search,
                               save_figure, save_results)
from benchmarks.report import Target

CHEAP = {"finetune": {"iterations": 1}, "eval": {"episodes": 10}, "latency": {"calls": 1000, "rounds": 5}}
SAMPLERS = ("tpe", "nsga2", "random")
MEASURED_BY = (*SEARCH_CODE, "search_spaces/cartpole_ppo.yaml", "trials/cartpole_ppo.yaml",
               "benchmarks/common.py::run_search",
               *(f"benchmarks/search_efficiency.py::{n}" for n in ("CHEAP", "SAMPLERS", "hv_curve", "measure")))


def hv_curve(run, n: int) -> np.ndarray:
    """Hypervolume after each of the first n trials (by trial number)."""
    return np.array([run.hypervolume(before=k) for k in range(1, n + 1)])


def measure(args) -> dict:
    """Per sampler, per seed: the hypervolume after each of the first --trials trials."""
    curves: dict[str, list[list[float]]] = {s: [] for s in SAMPLERS}
    with tempfile.TemporaryDirectory() as d:
        for seed in range(args.seeds):
            for sampler in SAMPLERS:
                wall, run = run_search({"baselines": False, "sampler": sampler, "seed": seed,
                                        "budget": {"trials": args.trials, "parallel": 2}}, CHEAP,
                                       Path(d) / f"{sampler}-{seed}")
                curves[sampler].append(hv_curve(run, args.trials).tolist())
                print(f"{sampler} seed {seed}: final HV {curves[sampler][-1][-1]:.4f} ({wall:.0f} s)", flush=True)
    return {"trials": args.trials, "seeds": args.seeds, "curves": curves}


def reach(data: dict) -> tuple[float, int | None]:
    """(random's final mean hypervolume, the first trial count at which TPE's mean reaches it; None: never)."""
    mean = {s: np.mean(c, axis=0) for s, c in data["curves"].items()}
    target = float(mean["random"][-1])
    return target, next((k + 1 for k, v in enumerate(mean["tpe"]) if v >= target), None)


def plot(data: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = np.arange(1, data["trials"] + 1)
    for s in SAMPLERS:
        c = np.array(data["curves"][s])
        ax.plot(x, c.mean(0), label=f"{s} (mean of {len(c)})")
        ax.fill_between(x, c.min(0), c.max(0), alpha=0.15)
    ax.axhline(reach(data)[0], ls=":", c="k", lw=0.8, label="random's final mean")
    ax.set_xlabel("finished trials")
    ax.set_ylabel("hypervolume (teacher-normalised)")
    ax.legend(fontsize=8)
    save_figure(fig, "search_efficiency.png")


def render(data: dict) -> str:
    n = data["trials"]
    at = (*(a for a in (4, 8, 12) if a < n), n)
    mean = {s: np.mean(c, axis=0) for s, c in data["curves"].items()}
    target, k = reach(data)
    verdict = (f"TPE reaches random's final mean hypervolume ({target:.4f}) after **{k} of {n}** trials "
               f"({k / n:.0%}; target ≤ 50%: {'met' if k / n <= 0.5 else 'missed'})." if k else
               f"TPE's mean never reaches random's final mean ({target:.4f}) in {n} trials (target missed).")
    return "\n".join([
        f"{data['seeds']} seeds per sampler; objectives return / latency / bytes, constraint return ratio ≥ 0.9, "
        "parallel 2, no enqueued baselines.", "",
        *md_table(["sampler", *(f"HV after {a}" for a in at)],
                  [[s, *(f"{mean[s][a - 1]:.4f}" for a in at)] for s in SAMPLERS]),
        "", verdict, "", "![hypervolume vs trials](img/search_efficiency.png)"])


def targets(data: dict) -> list[Target]:
    target, k = reach(data)
    n = data["trials"]
    return [Target(f"Search efficiency: TPE reaches random's final HV in ≤ 50% of trials ({data['seeds']} seeds)",
                   f"{k} of {n} trials ({k / n:.0%})" if k else f"never in {n} trials (random's final {target:.4f})",
                   k is not None and k / n <= 0.5)]


def sections() -> list:
    return data_sections("search_efficiency", "Search efficiency (CartPole-v1 PPO)", MEASURED_BY, render, targets)


def main() -> None:
    ap = benchmark_parser(__doc__, "search_efficiency")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    data = measure(args)
    if args.data.resolve() == (DATA / args.data.name).resolve():  # the plot the report shows: only for its data
        plot(data)
    save_results(args.data, "search_efficiency", data, command_of("search_efficiency", args, ("trials", "seeds")),
                 MEASURED_BY, render)


if __name__ == "__main__":
    main()
