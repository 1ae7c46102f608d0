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
Results: docs/data/recipes_<base>.json (benchmarks.report renders them).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks import report
from benchmarks.common import SEARCH_CODE, heldout_setup, latency_words, record_meta, run_search
from benchmarks.report import Section, Target

BASES = ("lunarlander_dqn",)  # the bases whose data the report renders

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
        held_out = run.heldout() or {}
        out["search"] = {"trials": args.trials, "wall_s": wall, "episodes": args.episodes,
                         "heldout_seed": spec.eval.heldout_seed,
                         "runtime": spec.latency.runtime if spec.latency.runtime != "auto" else "c",
                         "teacher_return": held_out.get("teacher", {}).get("return_mean"),
                         "front": [{"trial": f.trial, "config": f.config, "heldout": f.heldout_return_ratio,
                                    "bytes": f.bytes_ratio, "latency": f.latency_ratio} for f in run.front()]}
    record_meta(out, f"recipes_{args.base}", f"python -m benchmarks.recipes --base {args.base} --trials "
                f"{args.trials} --episodes {args.episodes}", measured_by(args.base))
    store.write_text(json.dumps(out, indent=1))
    report.main([])


def measured_by(base: str) -> tuple[str, ...]:
    """What produced a section: the package (a search and the recipes' trials exercise all of it), the space, and
    this script's measuring code (its rendering aside)."""
    return (*SEARCH_CODE, f"search_spaces/{base}.yaml", "benchmarks/common.py::run_search",
            "benchmarks/common.py::heldout_setup",
            *(f"benchmarks/recipes.py::{n}" for n in ("RECIPES", "measured_side_by_side", "main")))


def recipes_of(data: dict) -> dict:
    return {k: v for k, v in data.items() if k not in ("search", "_meta")}


def covering(front: list[dict], rec: dict) -> dict | None:
    ok = [f for f in front if (f["heldout"] if f["heldout"] is not None else -1) >= MIN_RATIO
          and f["bytes"] <= rec["bytes_ratio"] and f["latency"] <= rec["latency_ratio"] * LATENCY_SLACK]
    return min(ok, key=lambda f: f["bytes"], default=None)


def render(data: dict) -> str:
    s, recipes = data.get("search"), recipes_of(data)
    front = s["front"] if s else []
    lines = [f"| front {f['trial']} | `{json.dumps(f['config'])}` | {f['heldout']:.3f} | {f['bytes']:.4f} | "
             f"{f['latency']:.3f} | |" for f in sorted(front, key=lambda f: f["bytes"]) if f["heldout"] is not None]
    verdicts = []
    for name, rec in recipes.items():
        f = covering(front, rec) if s else None
        verdicts.append(bool(f))
        verdict = ("" if not s else f"covered by trial {f['trial']}" if f else "**not covered**")
        lines.append(f"| {name} | recipe | {rec['return_ratio']:.3f} | {rec['bytes_ratio']:.4f} | "
                     f"{rec['latency_ratio']:.3f} | {verdict} |")
    teacher = next((r["teacher_return_mean"] for r in recipes.values() if "teacher_return_mean" in r), None)
    search = (f"a {s['trials']}-trial search ({s['wall_s']:.0f} s); the front re-evaluated on {s['episodes']} held-out "
              f"episodes (seeds {s['heldout_seed']}.., teacher {s['teacher_return']:.1f})" if s else
              "a search whose front this data file does not hold (the runs that made it kept the front only in the "
              "section's text, not in the data: the front's rows and the recipes' verdicts are left out until the "
              "benchmark is re-run)")
    return "\n".join([
        f"The shipped space and spec, {search}; each recipe run as one trial of the same spec and measured side by "
        "side with the teacher on the spec's held-out seeds" + (f" (teacher {teacher:.1f} there)" if teacher else "")
        + ". Latency: " + (latency_words(s["runtime"]) if s else "the spec's (the data does not record the runtime)")
        + f". A recipe is covered when a front member has held-out return ratio >= {MIN_RATIO}, bytes <= the "
        f"recipe's and latency <= {LATENCY_SLACK} x the recipe's.", "",
        "| point | config | held-out return ratio | bytes ratio | latency ratio | verdict |",
        "|---|---|---|---|---|---|", *lines, "",
        "Target (the front covers every recipe and the from-scratch net): " + (
            f"**{'met' if all(verdicts) else 'missed'}** ({sum(verdicts)} of {len(verdicts)})." if s else
            "not judged here (no front in the data).")])


def targets(data: dict) -> list[Target]:
    s, recipes = data.get("search"), recipes_of(data)
    what = ("Front dominates or matches, at ≥ 0.95 held-out return, int8 PTQ, 90% pruning + fine-tune, distill "
            "[64, 64] and [64, 64] from scratch")
    figures = ", ".join(f"{k} {r['return_ratio']:.3f} at {r['bytes_ratio']:.3f} / {r['latency_ratio']:.3f}"
                        for k, r in recipes.items())
    if not s:
        return [Target(what, f"recipes (held-out return ratio at bytes / latency ratio): {figures}; the front is not "
                             "in the data, so coverage is not judged", None)]
    covered = [k for k, r in recipes.items() if covering(s["front"], r)]
    return [Target(what, f"{len(covered)} of {len(recipes)} covered; recipes: {figures}",
                   len(covered) == len(recipes))]


def sections() -> list[Section]:
    from benchmarks.common import DATA

    return [Section(f"recipes_{b}", f"The front vs hand-made recipes ({b})", f"recipes_{b}", measured_by(b), render,
                    targets) for b in BASES if (DATA / f"recipes_{b}.json").exists()]


if __name__ == "__main__":
    main()
