"""Overhead and scaling of a search on CartPole-v1 PPO.

    python -m benchmarks.scaling [--data PATH]

Runs the same 7 trials (the enqueued baselines: teacher as-is, each technique alone) with
--parallel 1 and --parallel 2 and reports: throughput ratio, where a trial's time goes
(share spent outside env stepping + SGD, i.e. outside RLlib's train()), and the fixed
start-up cost of a search (Ray start, teacher task).
Results: docs/data/scaling.json (benchmarks.report renders them).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from benchmarks.common import SEARCH_CODE, benchmark_parser, command_of, data_sections, md_table, run_search, save_results
from benchmarks.report import Target

TRIALS = 7  # the enqueued baselines: the teacher as-is and each technique alone
WALL = "driver wall (launch -> result)"
MEASURED_BY = (*SEARCH_CODE, "search_spaces/cartpole_ppo.yaml", "trials/cartpole_ppo.yaml",
               "benchmarks/common.py::run_search",
               *(f"benchmarks/scaling.py::{n}" for n in ("TRIALS", "WALL", "trial_phase", "measure")))


def trial_phase(run):
    from optuna.trial import TrialState

    from autocompress._search.record import TrialRecord

    study, state = run.study, run.state
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    start = min(TrialRecord.of(t).launched_at for t in done)
    end = max(t.datetime_complete.timestamp() for t in done)
    return done, end - start, state


def measure(args) -> dict:
    """The trial phase's wall seconds at parallel 1 and 2, the search's start-up, and per stage the seconds of
    each fine-tuning trial at parallel 1."""
    from mlflow.tracking import MlflowClient

    from autocompress._search.record import TrialRecord

    walls, trials = {}, {}
    with tempfile.TemporaryDirectory() as d:
        for k in (1, 2):
            _, run = run_search({"budget": {"trials": TRIALS, "parallel": k}}, {}, Path(d) / f"p{k}")
            done, phase, state = trial_phase(run)
            walls[str(k)], trials[k] = phase, done
            if k == 1:
                parent = MlflowClient(state["tracking_uri"]).get_run(state["parent_run_id"]).data.metrics
            print(f"parallel {k}: {len(done)} trials in {phase:.1f} s", flush=True)
    stages: dict[str, list[float]] = {}
    for t in trials[1]:
        r = TrialRecord.of(t).result
        if not r.timings.get("rllib_train"):
            continue  # the teacher-as-is trial does not fine-tune
        stages.setdefault(WALL, []).append(r.driver_seconds)
        stages.setdefault("inside the trial task", []).append(r.trial_seconds)
        for k, v in r.timings.items():
            stages.setdefault(k, []).append(v)
    return {"trials": TRIALS, "phase_s": walls, "ray_init_s": parent.get("ray_init_seconds"),
            "teacher_task_s": parent.get("teacher_task_seconds"), "stages": stages}


def speedup(data: dict) -> float:
    return data["phase_s"]["1"] / data["phase_s"]["2"]


def bound(data: dict) -> float:
    """The most 2 workers can gain on these trials: the parallel-1 phase over its longest fine-tuning trial (a
    trial runs on one worker; the untimed ones, teacher as-is and those that finish at the check, are short)."""
    return data["phase_s"]["1"] / max(data["stages"][WALL])


def outside(data: dict) -> float:
    """The share of the fine-tuning trials' driver wall outside RLlib's train()."""
    return 1 - sum(data["stages"]["rllib_train"]) / sum(data["stages"][WALL])


def render(data: dict) -> str:
    stages, wall = data["stages"], sum(data["stages"][WALL])
    sec = lambda v: "nan" if v is None else f"{v:.1f}"  # noqa: E731
    return "\n".join([
        f"* Throughput, parallel 2 vs 1 on the same {data['trials']} trials: {data['phase_s']['1']:.0f} s vs "
        f"{data['phase_s']['2']:.0f} s of trial phase → **{speedup(data):.2f}x** (target ≥ 1.7x: "
        f"{'met' if speedup(data) >= 1.7 else 'missed'}). {len(data['stages'][WALL])} of the {data['trials'] - 1} "
        f"technique trials fine-tuned (the others matched the teacher on the check and finished: `finish_at`); the "
        f"longest took {max(data['stages'][WALL]):.0f} s of the {data['phase_s']['1']:.0f} s phase, so 2 workers "
        f"can gain at most {bound(data):.2f}x on these trials.",
        f"* Share of fine-tuning trials' wall time outside env stepping + SGD (RLlib `train()`): "
        f"**{outside(data):.1%}** (target ≤ 10%: {'met' if outside(data) <= 0.10 else 'missed'}).",
        f"* Fixed start-up of a search: Ray start {sec(data['ray_init_s'])} s, teacher task (worker start + cached "
        f"teacher load) {sec(data['teacher_task_s'])} s.", "",
        f"Where a fine-tuning trial's time goes (parallel 1, mean over the {len(stages[WALL])} technique trials):", "",
        *md_table(["stage", "mean s", "share of driver wall"],
                  [[k, f"{statistics.mean(v):.2f}", f"{sum(v) / wall:.0%}"]
                   for k, v in sorted(stages.items(), key=lambda kv: -statistics.mean(kv[1]))])])


def targets(data: dict) -> list[Target]:
    return [Target("Overhead outside env stepping + SGD ≤ 10%", f"{outside(data):.1%}", outside(data) <= 0.10),
            Target("Throughput, parallel 2 vs 1 on 2 cores ≥ 1.7x", f"{speedup(data):.2f}x (at most {bound(data):.2f}x "
                   "on these trials, bounded by the longest one)", speedup(data) >= 1.7)]


def sections() -> list:
    return data_sections("scaling", f"Overhead and scaling (CartPole-v1 PPO, {TRIALS} baseline trials)", MEASURED_BY,
                         render, targets)


def main() -> None:
    ap = benchmark_parser(__doc__, "scaling")
    args = ap.parse_args()
    save_results(args.data, "scaling", measure(args), command_of("scaling", args, ()),
                 MEASURED_BY, render)


if __name__ == "__main__":
    main()
