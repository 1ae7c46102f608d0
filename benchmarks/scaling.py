"""Overhead and scaling of a search on CartPole-v1 PPO.

    python -m benchmarks.scaling

Runs the same 7 trials (the enqueued baselines: teacher as-is, each technique alone) with
--parallel 1 and --parallel 2 and reports: throughput ratio, where a trial's time goes
(share spent outside env stepping + SGD, i.e. outside RLlib's train()), and the fixed
start-up cost of a search (Ray start, teacher task).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from benchmarks.common import machine, run_search, write_section


def trial_phase(run):
    from optuna.trial import TrialState

    from autocompress._search.record import TrialRecord

    study, state = run.study, run.state
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    start = min(TrialRecord.of(t).launched_at for t in done)
    end = max(t.datetime_complete.timestamp() for t in done)
    return done, end - start, state


def main() -> None:
    from mlflow.tracking import MlflowClient

    walls, trials = {}, {}
    with tempfile.TemporaryDirectory() as d:
        for k in (1, 2):
            _, run = run_search({"budget": {"trials": 7, "parallel": k}}, {}, Path(d) / f"p{k}")
            done, phase, state = trial_phase(run)
            walls[k], trials[k] = phase, done
            if k == 1:
                parent = MlflowClient(state["tracking_uri"]).get_run(state["parent_run_id"]).data.metrics
            print(f"parallel {k}: {len(done)} trials in {phase:.1f} s", flush=True)
    stages: dict[str, list[float]] = {}
    from autocompress._search.record import TrialRecord

    for t in trials[1]:
        r = TrialRecord.of(t).result
        if not r.timings.get("rllib_train"):
            continue  # the teacher-as-is trial does not fine-tune
        stages.setdefault("driver wall (launch -> result)", []).append(r.driver_seconds)
        stages.setdefault("inside the trial task", []).append(r.trial_seconds)
        for k, v in r.timings.items():
            stages.setdefault(k, []).append(v)
    wall = sum(stages["driver wall (launch -> result)"])
    train = sum(stages["rllib_train"])
    speedup = walls[1] / walls[2]
    lines = ["## Overhead and scaling (CartPole-v1 PPO, 7 baseline trials)", "",
             f"`python -m benchmarks.scaling` on {machine()}.", "",
             f"* Throughput, parallel 2 vs 1 on the same 7 trials: {walls[1]:.0f} s vs {walls[2]:.0f} s of trial "
             f"phase → **{speedup:.2f}x** (target ≥ 1.7x: {'met' if speedup >= 1.7 else 'missed'}).",
             f"* Share of fine-tuning trials' wall time outside env stepping + SGD (RLlib `train()`): "
             f"**{1 - train / wall:.1%}** (target ≤ 10%: {'met' if 1 - train / wall <= 0.10 else 'missed'}).",
             f"* Fixed start-up of a search: Ray start {parent.get('ray_init_seconds', float('nan')):.1f} s, "
             f"teacher task (worker start + cached teacher load) {parent.get('teacher_task_seconds', float('nan')):.1f} s.",
             "", "Where a fine-tuning trial's time goes (parallel 1, mean over the 6 technique trials):", "",
             "| stage | mean s | share of driver wall |", "|---|---|---|"]
    for k, v in sorted(stages.items(), key=lambda kv: -statistics.mean(kv[1])):
        lines.append(f"| {k} | {statistics.mean(v):.2f} | {sum(v) / wall:.0%} |")
    body = "\n".join(lines)
    write_section("scaling", body)


if __name__ == "__main__":
    main()
