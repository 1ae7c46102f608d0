"""A search on a CNN policy (MinAtar Breakout, PPO): the front vs the teacher and vs int8 PTQ alone, all judged
on held-out episodes (seeds the search never saw), and where a conv trial's time goes.

    python -m benchmarks.conv_search [--trials 12] [--episodes 100]

int8 PTQ is run as one trial of the same spec (its fine-tune included) and measured side by side with the
teacher on the held-out seeds, exactly where the front is re-evaluated. The time split is the mean over the
search's trials of the stages `pipeline.Timings` records.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import heldout_setup, latency_words, machine, run_search, write_section

BASE = "minatar_breakout_ppo"
MIN_RATIO = 0.95


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--episodes", type=int, default=100, help="held-out episodes")
    args = ap.parse_args()
    import autocompress as ac

    spec, held, store, out = heldout_setup(BASE, args.episodes, f"conv_search_{BASE}")
    with tempfile.TemporaryDirectory() as d:
        if "int8 PTQ" not in out:
            r = ac.compress(held, {"quantize": {"bits": 8}}, output_dir=Path(d) / "int8")
            out["int8 PTQ"] = {"return_ratio": r.return_ratio, "latency_ratio": r.latency_ratio,
                               "bytes_ratio": r.bytes_ratio, "bytes": r.bytes, "teacher_bytes": r.teacher_bytes,
                               "latency_us": 1e3 * r.latency_ms, "teacher_latency_us": 1e3 * r.teacher_latency_ms,
                               "kernels": r.kernels}
            store.write_text(json.dumps(out, indent=1))
        print("int8 PTQ", json.dumps(out["int8 PTQ"]), flush=True)
        wall, run = run_search({"budget": {"trials": args.trials, "parallel": 2}},
                               {"eval": {"heldout_episodes": args.episodes}}, Path(d) / "search", base=BASE)
        from optuna.trial import TrialState

        from autocompress._search.record import TrialRecord

        results = (TrialRecord.of(t).result for t in run.study.get_trials(states=(TrialState.COMPLETE,)))
        rows = [r for r in results if r and r.timings]  # free repeats carry no timings
        front = [{"trial": f.trial, "config": f.config, "heldout": f.heldout_return_ratio, "bytes": f.bytes_ratio,
                  "latency": f.latency_ratio} for f in run.front()]
        stages: dict[str, list[float]] = {}
        for r in rows:
            for k, v in r.timings.items():
                stages.setdefault(k, []).append(v)
        out["search"] = {"wall_s": wall, "trials": args.trials, "front": front, "heldout": run.heldout(),
                         "stages": {k: float(np.mean(v)) for k, v in stages.items()}, "measured_trials": len(rows),
                         "trial_seconds": float(np.mean([r.trial_seconds for r in rows]))}
        store.write_text(json.dumps(out, indent=1))
    report(args, spec, out)


def report(args, spec, out: dict) -> None:
    s, ptq = out["search"], out["int8 PTQ"]
    ok = [f for f in s["front"] if (f["heldout"] or -1) >= MIN_RATIO]
    fastest = min(ok, key=lambda f: (f["latency"], f["bytes"]), default=None)
    smallest = min(ok, key=lambda f: (f["bytes"], f["latency"]), default=None)
    lines = [f"| front {f['trial']} | `{json.dumps(f['config'])}` | {f['heldout']:.3f} | {f['bytes']:.4f} | "
             f"{f['latency']:.3f} |" for f in sorted(s["front"], key=lambda f: f["bytes"]) if f["heldout"] is not None]
    lines.append(f"| int8 PTQ alone | `{{\"quantize\": {{\"bits\": 8}}}}` | {ptq['return_ratio']:.3f} | "
                 f"{ptq['bytes_ratio']:.4f} | {ptq['latency_ratio']:.3f} |")
    teacher = (s.get("heldout") or {}).get("teacher", {})
    stages = {k: v for k, v in s["stages"].items() if k != "compress_total"}  # compress_total spans the others
    split = ", ".join(f"{k} {v:.1f} s ({v / s['trial_seconds']:.0%})"
                      for k, v in sorted(stages.items(), key=lambda kv: -kv[1]) if v >= 0.05)

    def words(f):
        return "none" if f is None else (f"trial {f['trial']}: held-out return ratio {f['heldout']:.3f}, bytes ratio "
                                         f"{f['bytes']:.4f}, latency ratio {f['latency']:.3f}")

    body = "\n".join([
        "## Conv policies: a MinAtar Breakout search", "",
        f"`python -m benchmarks.conv_search --trials {args.trials} --episodes {args.episodes}` on {machine()}: the "
        f"shipped space `search_spaces/{BASE}.yaml` ({args.trials} trials, parallel 2, {s['wall_s']:.0f} s) on the "
        f"committed CNN teacher (2 conv layers 16/32 3x3, [128], {ptq['teacher_bytes']} bytes, "
        f"{ptq['teacher_latency_us']:.1f} µs in-kernel); the front re-evaluated on {args.episodes} held-out episodes "
        f"(seeds {spec.eval.heldout_seed}.., teacher {teacher.get('return_mean', float('nan')):.2f}); int8 PTQ run as "
        f"one trial of the same spec and measured side by side with the teacher on the same held-out seeds. "
        f"Latency: {latency_words('c')}.", "",
        "| point | config | held-out return ratio | bytes ratio | latency ratio |", "|---|---|---|---|---|", *lines, "",
        f"Best points at held-out return ratio >= {MIN_RATIO}: fastest {words(fastest)}; smallest {words(smallest)}. "
        f"int8 PTQ alone: return ratio {ptq['return_ratio']:.3f}, bytes ratio {ptq['bytes_ratio']:.4f}, latency ratio "
        f"{ptq['latency_ratio']:.3f} (kernels {ptq['kernels']}).", "",
        f"Where a conv trial's time goes (mean of its {s['measured_trials']} measured trials, {s['trial_seconds']:.1f} s "
        f"each, 2 at once on the 2 cores): {split}. rllib_train is RLlib's env stepping + SGD of the "
        f"{spec.finetune.iterations} fine-tune iterations; techniques is mostly distillation's student training."])
    write_section(f"conv_search_{BASE}", body)


if __name__ == "__main__":
    main()
