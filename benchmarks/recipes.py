"""The searched front against what a user would try by hand, all judged on held-out episodes
(seeds the search never saw: eval.heldout_seed ..):

  int8 PTQ              {quantize: {bits: 8}} after the spec's fine-tune
  90% pruning           {prune: {sparsity: 0.9}} + the spec's fine-tune
  distill [64, 64]      {distill: {hidden: [64, 64]}} + the spec's fine-tune
  [64, 64] from scratch the small net trained by RLlib like the teacher, with the env steps the
                        teacher's training and a trial's fine-tune took together

    python -m benchmarks.recipes [--base lunarlander_dqn] [--trials 16] [--episodes 100]

A recipe counts as covered when a front member has held-out return ratio >= 0.95 and is no larger
and no slower (latency within 5%: timing noise between separately measured points) than it.
Recipes and the from-scratch net are measured side by side with the teacher, on the held-out seeds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.common import heldout_setup, latency_words, machine, run_search, write_section

RECIPES = {"int8 PTQ": {"quantize": {"bits": 8}}, "90% pruning + fine-tune": {"prune": {"sparsity": 0.9}},
           "distill [64, 64]": {"distill": {"hidden": [64, 64]}}}
MIN_RATIO, LATENCY_SLACK = 0.95, 1.05


def measured_side_by_side(spec, data: bytes, teacher_data: bytes) -> dict:
    """Return, latency and bytes ratios of an artifact vs the teacher's, as a trial measures them.
    (measure_artifacts is internal: no public verb measures an artifact made outside a trial.)"""
    from autocompress import measure

    r = measure.measure_artifacts(spec, data, teacher_data, spec.env_creator())
    return {"return_ratio": r.return_ratio, "latency_ratio": r.latency_ratio, "bytes_ratio": r.bytes_ratio,
            "return_mean": r.return_mean, "teacher_return_mean": r.teacher_return_mean}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="lunarlander_dqn", help="search_spaces/<base>.yaml")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--episodes", type=int, default=100, help="held-out episodes")
    args = ap.parse_args()
    import autocompress as ac

    # recipes are measured on the held-out seeds, exactly where the front is re-evaluated, and kept as they
    # finish (docs/data/recipes_<base>.json): a re-run reuses them
    spec, held, store, out = heldout_setup(args.base, args.episodes, f"recipes_{args.base}")
    teacher = ac.teach(spec)
    with tempfile.TemporaryDirectory() as d:
        for name, cfg in RECIPES.items():
            if name not in out:
                r = ac.compress(held, cfg, output_dir=Path(d) / name.replace(" ", "_").replace("%", ""))
                out[name] = {"return_ratio": r.return_ratio, "latency_ratio": r.latency_ratio,
                             "bytes_ratio": r.bytes_ratio, "trial_seconds": r.trial_seconds}
                store.write_text(json.dumps(out, indent=1))
            print(name, json.dumps(out[name]), flush=True)
        if "[64, 64] from scratch" not in out:
            # the small net from scratch: the teacher's training settings, widths [64, 64], its env steps
            steps = teacher.info.get("iterations", spec.teacher.max_iterations) + spec.finetune.iterations
            small = spec.updated({"name": f"{spec.name}_scratch64", "teacher": {"hidden": [64, 64],
                                                                                "max_iterations": int(steps)}})
            scratch = ac.teach(small, cache_dir=Path(d) / "cache")
            out["[64, 64] from scratch"] = {**measured_side_by_side(held, scratch.artifact(), teacher.artifact()),
                                            "train_seconds": scratch.info.get("train_seconds")}
            store.write_text(json.dumps(out, indent=1))
        print("scratch", json.dumps(out["[64, 64] from scratch"]), flush=True)
        wall, run = run_search({"budget": {"trials": args.trials, "parallel": 2}},
                               {"eval": {"heldout_episodes": args.episodes}}, Path(d) / "search", base=args.base)
        print(f"search: {wall:.0f} s, front {len(run.front())}", flush=True)
        report(args, spec, run, run.front(), out, wall)  # inside: the run dir is temporary


def covering(front, rec: dict):
    ok = [f for f in front if (f.heldout_return_ratio or -1) >= MIN_RATIO and f.bytes_ratio <= rec["bytes_ratio"]
          and f.latency_ratio <= rec["latency_ratio"] * LATENCY_SLACK]
    return min(ok, key=lambda f: f.bytes_ratio, default=None)


def report(args, spec, run, front, out: dict, wall: float) -> None:
    held = run.heldout() or {}
    lines = [f"| front {f.trial} | `{json.dumps(f.config)}` | {f.heldout_return_ratio:.3f} | {f.bytes_ratio:.4f} | "
             f"{f.latency_ratio:.3f} | |" for f in sorted(front, key=lambda f: f.bytes_ratio)
             if f.heldout_return_ratio is not None]
    verdicts = []
    for name, rec in out.items():
        f = covering(front, rec)
        verdict = f"covered by trial {f.trial}" if f else "**not covered**"
        verdicts.append(bool(f))
        lines.append(f"| {name} | recipe | {rec['return_ratio']:.3f} | {rec['bytes_ratio']:.4f} | "
                     f"{rec['latency_ratio']:.3f} | {verdict} |")
    body = "\n".join([
        f"## The front vs hand-made recipes ({args.base})", "",
        f"`python -m benchmarks.recipes --base {args.base} --trials {args.trials} --episodes {args.episodes}` on "
        f"{machine()}: the shipped space and spec, a {args.trials}-trial search ({wall:.0f} s); the front re-evaluated "
        f"on {args.episodes} held-out episodes (seeds {spec.eval.heldout_seed}.., teacher "
        f"{held.get('teacher', {}).get('return_mean', float('nan')):.1f}); each recipe run as one trial of the same "
        f"spec and measured side by side with the teacher on those same held-out seeds. Latency: "
        f"{latency_words(spec.latency.runtime if spec.latency.runtime != 'auto' else 'c')}. A recipe is covered when a "
        f"front member has held-out return ratio >= {MIN_RATIO}, bytes <= the recipe's and latency <= "
        f"{LATENCY_SLACK} x the recipe's.", "",
        "| point | config | held-out return ratio | bytes ratio | latency ratio | verdict |",
        "|---|---|---|---|---|---|", *lines, "",
        f"Target (the front covers every recipe and the from-scratch net): "
        f"**{'met' if all(verdicts) else 'missed'}** ({sum(verdicts)} of {len(verdicts)})."])
    write_section(f"recipes_{args.base}", body)


if __name__ == "__main__":
    main()
