"""A search on a CNN policy (MinAtar Breakout, PPO): the front vs the teacher and vs int8 PTQ alone, all judged
on held-out episodes (seeds the search never saw), and where a conv trial's time goes.

    python -m benchmarks.conv_search [--trials 12] [--episodes 100]

int8 PTQ is run as one trial of the same spec (its fine-tune included) and measured side by side with the
teacher on the held-out seeds, exactly where the front is re-evaluated. The time split is the mean over the
search's trials of the stages `pipeline.Timings` records. Results: docs/data/conv_search_minatar_breakout_ppo.json
(benchmarks.report renders them).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import report
from benchmarks.common import DATA, SEARCH_CODE, heldout_setup, latency_words, record_meta, run_search
from benchmarks.report import Section, Target

BASE = "minatar_breakout_ppo"
MIN_RATIO = 0.95
SECTION = f"conv_search_{BASE}"
#: what produced the section: the package (a search exercises all of it), the space, and this script's measuring code
MEASURED_BY = (*SEARCH_CODE, f"search_spaces/{BASE}.yaml", "benchmarks/common.py::run_search",
               "benchmarks/common.py::heldout_setup", "benchmarks/conv_search.py::BASE", "benchmarks/conv_search.py::main")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--episodes", type=int, default=100, help="held-out episodes")
    args = ap.parse_args()
    import autocompress as ac

    _, held, store, out = heldout_setup(BASE, args.episodes, SECTION)
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
    record_meta(out, SECTION, f"python -m benchmarks.conv_search --trials {args.trials} --episodes {args.episodes}",
                MEASURED_BY)
    store.write_text(json.dumps(out, indent=1))
    report.main([])


def best_points(data: dict):
    """The fastest and the smallest front member at held-out return ratio >= MIN_RATIO (None where none is)."""
    ok = [f for f in data["search"]["front"] if (f["heldout"] or -1) >= MIN_RATIO]
    return (min(ok, key=lambda f: (f["latency"], f["bytes"]), default=None),
            min(ok, key=lambda f: (f["bytes"], f["latency"]), default=None))


def render(data: dict) -> str:
    s, ptq = data["search"], data["int8 PTQ"]
    fastest, smallest = best_points(data)
    lines = [f"| front {f['trial']} | `{json.dumps(f['config'])}` | {f['heldout']:.3f} | {f['bytes']:.4f} | "
             f"{f['latency']:.3f} |" for f in sorted(s["front"], key=lambda f: f["bytes"]) if f["heldout"] is not None]
    lines.append(f"| int8 PTQ alone | `{{\"quantize\": {{\"bits\": 8}}}}` | {ptq['return_ratio']:.3f} | "
                 f"{ptq['bytes_ratio']:.4f} | {ptq['latency_ratio']:.3f} |")
    held = s.get("heldout") or {}
    stages = {k: v for k, v in s["stages"].items() if k != "compress_total"}  # compress_total spans the others
    split = ", ".join(f"{k} {v:.1f} s ({v / s['trial_seconds']:.0%})"
                      for k, v in sorted(stages.items(), key=lambda kv: -kv[1]) if v >= 0.05)

    def words(f):
        return "none" if f is None else (f"trial {f['trial']}: held-out return ratio {f['heldout']:.3f}, bytes ratio "
                                         f"{f['bytes']:.4f}, latency ratio {f['latency']:.3f}")

    return "\n".join([
        f"The shipped space `search_spaces/{BASE}.yaml` ({s['trials']} trials, parallel 2, {s['wall_s']:.0f} s) on the "
        f"committed CNN teacher of `trials/{BASE}.yaml` ({ptq['teacher_bytes']} bytes, "
        f"{ptq['teacher_latency_us']:.1f} µs in-kernel); the front re-evaluated on {held.get('episodes', '?')} held-out "
        f"episodes (seeds {held.get('seed', '?')}.., teacher {held.get('teacher', {}).get('return_mean', float('nan')):.2f}); "
        "int8 PTQ run as one trial of the same spec and measured side by side with the teacher on the same held-out "
        f"seeds. Latency: {latency_words(held.get('runtime', 'c'))}.", "",
        "| point | config | held-out return ratio | bytes ratio | latency ratio |", "|---|---|---|---|---|", *lines, "",
        f"Best points at held-out return ratio >= {MIN_RATIO}: fastest {words(fastest)}; smallest {words(smallest)}. "
        f"int8 PTQ alone: return ratio {ptq['return_ratio']:.3f}, bytes ratio {ptq['bytes_ratio']:.4f}, latency ratio "
        f"{ptq['latency_ratio']:.3f} (kernels {ptq['kernels']}).", "",
        f"Where a conv trial's time goes (mean of its {s['measured_trials']} measured trials, {s['trial_seconds']:.1f} s "
        f"each, 2 at once on the 2 cores): {split}. rllib_train is RLlib's env stepping + SGD of the spec's fine-tune "
        "iterations; techniques is mostly distillation's student training."])


def targets(data: dict) -> list[Target]:
    ptq, (_, smallest) = data["int8 PTQ"], best_points(data)
    best = ("none at ≥ 0.95 held-out" if smallest is None else
            f"{'+'.join(smallest['config'])} (trial {smallest['trial']}): held-out return ratio {smallest['heldout']:.3f} "
            f"at {smallest['bytes']:.3f} bytes, {smallest['latency']:.2f}x latency")
    return [Target("Conv policies (issue 16, no target): MinAtar Breakout PPO CNN, the front's best point vs the teacher "
                   f"and int8 PTQ alone, {(data['search'].get('heldout') or {}).get('episodes', '?')} held-out episodes",
                   f"{best}; int8 PTQ alone {ptq['return_ratio']:.3f} at {ptq['bytes_ratio']:.3f} bytes, "
                   f"{ptq['latency_ratio']:.2f}x latency", None)]


def sections() -> list[Section]:
    if not (DATA / f"{SECTION}.json").exists():
        return []
    return [Section(SECTION, "Conv policies: a MinAtar Breakout search", SECTION, MEASURED_BY, render, targets)]


if __name__ == "__main__":
    main()
