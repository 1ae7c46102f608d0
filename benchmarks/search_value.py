"""Does the search earn its trials? Hypervolume against trial-seconds (the CPU time trials spent,
stopped ones included) for three arms, several sampler seeds each, on a spec whose return does
not saturate (LunarLander-v3 DQN by default; --base invertedpendulum_sac for a continuous one):

  default        TPE + early stopping + stacks (the shipped search: `stack: 2`, two stacks on the
                 first technique that kept the return alone, ahead of the remaining baselines;
                 the gate stops hopeless trials, `finish_at: 1.0` ends the fine-tune of a net that
                 already matches the teacher on the check episodes)
  no early stop  the default without early stopping (pruner: none)
  random         uniform random sampling, no early stopping, no stacks

    python -m benchmarks.search_value [--base lunarlander_dqn] [--trials 12] [--seeds 5]

With --compare finish the arm is the default without finish_at (`stops only`: the gate stops, every
other trial fine-tunes to the end), added to the search comparison's data and report. With
--compare "early stop" only the default and no early stop run (no random arm): for a spec whose trials
cost minutes (--base pendulum_sac), where the default-vs-random target is measured on another spec.

With --target cortex-m4f (any MCU target) the searches run with `target:` set, so latency is the exact
cycle count of the code built for that core; `--compare "vs random"` then runs only the default and random
arms, and the report sets their figures beside the host's (the same base without --target), with what each
arm's fronts hold: whether exact latency changes what the search finds.

With --compare sensitivity (on a per-layer space, e.g. --base lunarlander_dqn_per_layer) the arms are
the default search and the same search with the layer-sensitivity stage first; that arm's curve starts
at the stage's own seconds, so the question is whether the stage pays for itself in hypervolume.

Targets (issue 15): the default reaches random's final hypervolume in <= 40% of random's
trial-seconds (medians over seeds, interquartile ranges apart); early stopping cuts the
trial-seconds to reach a given hypervolume by >= 2x. Every run's curve is saved as it finishes
(docs/data/search_value_<base>.json), so an interrupted benchmark continues where it stopped;
benchmarks.report renders the data. Every hypervolume is given beside the teacher-vs-itself latency
spread of its runs (the teacher as-is baseline, timed against itself once per run), and a difference
between arms smaller than what that spread moves a run's hypervolume is said to be inside the noise.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import yaml
from optuna.trial import TrialState

from benchmarks import report
from benchmarks.common import DATA, ROOT, SEARCH_CODE, head_commit, record_meta, run_search, save_figure
from benchmarks.report import Section, Target

ARMS = {"default": {"sampler": "tpe", "pruner": {"kind": "gate"}},
        "no early stop": {"sampler": "tpe", "pruner": {"kind": "none"}},
        "random": {"sampler": "random", "pruner": {"kind": "none"}, "stack": 0},
        "sensitivity": {"sampler": "tpe", "pruner": {"kind": "gate"}, "sensitivity": {"enabled": True}},
        "stops only": {"sampler": "tpe", "pruner": {"kind": "gate", "finish_at": None}}}
#: which arms each comparison runs, and the data file (docs/data/<name>_<base>.json) it keeps them in
COMPARISONS = {"search": (["default", "no early stop", "random"], "search_value"),
               "sensitivity": (["default", "sensitivity"], "sensitivity_value"),
               # the default without finish_at, beside the search comparison's arms in the same data file
               "finish": (["stops only"], "search_value"),
               # early stopping alone, where a trial costs minutes (Pendulum SAC: ~360 s a fine-tuned trial) and the
               # default-vs-random target is measured on another spec of the same kind
               "early stop": (["default", "no early stop"], "search_value"),
               # on a device target (--target): the default against random only, beside the host's figures
               "vs random": (["default", "random"], "search_value")}
#: a cheaper evaluation than the shipped spec; no held-out pass (the curves are what is compared)
CHEAP = {"eval": {"episodes": 10, "heldout_episodes": 0}, "finetune": {"iterations": 4}}
#: per base where the default is not cheaper than the shipped spec: the SAC specs fine-tune 3 iterations of
#: 1000 env steps, the first only filling the replay buffer (not reported), so 3 is the fewest that leave the
#: gate one fine-tuned iteration to judge before the last (Pendulum: ~360 s a trial; InvertedPendulum: ~70 s, measured in this benchmark)
CHEAP_FOR = {base: {"eval": {"episodes": 10, "heldout_episodes": 0}} for base in ("pendulum_sac", "invertedpendulum_sac")}


#: the cut is also given to a level this much below the lower final: the last 0.1% of a hypervolume is
#: within timing noise (Pendulum SAC, seed 0: the same distill + 6-bit share stack, timed in two runs, left
#: hypervolumes 0.9394 and 0.9420), and a late trial's noise there moves the exact level by a whole trial
HV_SLACK = 0.001


def cheap(base: str) -> dict:
    return CHEAP_FOR.get(base, CHEAP)


def trial_seconds(t) -> float:
    from autocompress._search.record import TrialRecord

    rec = TrialRecord.of(t)
    if t.state == TrialState.COMPLETE:
        return float(rec.result.trial_seconds if rec.result else 0.0)
    return float((rec.partial or {}).get("trial_seconds", 0.0))


def curve(run, start: float = 0.0) -> list[tuple[float, float]]:
    """(trial-seconds so far, hypervolume) after each finished trial, in order of completion; `start`:
    seconds spent before the first trial (the sensitivity stage)."""
    from autocompress import pareto
    from autocompress._search.results import rows
    from autocompress._search.study import finished

    by_number = {r["trial"]: r for r in rows(run.study) if r["feasible"]}
    done = sorted(finished(run.study), key=lambda t: (t.datetime_complete, t.number))
    out, spent, seen = [], start, []
    for t in done:
        spent += trial_seconds(t)
        if t.number in by_number:
            seen.append(by_number[t.number])
        out.append((spent, pareto.normalised_hypervolume(seen, run.objectives)))
    return out


def trial_log(run) -> list[dict]:
    """What each finished trial ran and measured, in order of completion: which configs moved the curve."""
    from autocompress._search.record import TrialRecord
    from autocompress._search.study import finished

    out = []
    for t in sorted(finished(run.study), key=lambda t: (t.datetime_complete, t.number)):
        rec = TrialRecord.of(t)
        r = rec.result
        out.append({"trial": t.number, "state": t.state.name, "config": rec.config,
                    "seconds": trial_seconds(t), "baseline": rec.baseline,
                    "guided": rec.guided is not None, "stopped": rec.stopped,
                    "reports": rec.intermediate,  # the gate's evidence: (step, check ratio)
                    "timings": r.timings if r else (rec.partial or {}).get("timings"),
                    **({k: getattr(r, k) for k in ("return_ratio", "latency_ratio", "bytes_ratio")} if r else {})})
    return out


def hv_at(c: list[tuple[float, float]], seconds: float) -> float:
    return max([hv for s, hv in c if s <= seconds] or [0.0])


def seconds_to(c: list[tuple[float, float]], hv: float) -> float:
    return next((s for s, h in c if h >= hv), float("inf"))


def stop_oracle_seconds(trials: list[dict], level: float, objectives: list[str], min_ratio: float) -> float:
    """The fewest trial-seconds a run's own trials reach `level` with if every trial that adds nothing were
    stopped at no cost and the others ran in full: the cheapest subset of its feasible trials whose front has
    that hypervolume (exhaustive: a benchmark run has a dozen trials). Over a run without early stopping, the
    bound on what stopping trials alone (finish_at aside, which shortens the useful ones) can cut."""
    import itertools

    from autocompress import pareto

    useful = [t for t in trials if t["state"] == "COMPLETE" and t.get("return_ratio", 0.0) >= min_ratio]
    best = float("inf")
    for k in range(1, len(useful) + 1):
        for subset in itertools.combinations(useful, k):
            cost = sum(t["seconds"] for t in subset)
            if cost < best and pareto.normalised_hypervolume(list(subset), objectives) >= level:
                best = cost
    return best


def q(xs) -> str:
    xs = np.asarray(xs, float)
    if not np.isfinite(xs).all():
        n = int(np.isfinite(xs).sum())
        return f"reached in {n}/{len(xs)}" + (f" (median of those {np.median(xs[np.isfinite(xs)]):.0f})" if n else "")
    return f"{np.median(xs):.0f} [{np.percentile(xs, 25):.0f}, {np.percentile(xs, 75):.0f}]"


def stage_seconds(run_dir: Path) -> float:
    """The sensitivity stage's own seconds (0 where the search ran none)."""
    from autocompress import layer_sensitivity as sens

    table = sens.read(run_dir / "sensitivity" / sens.FILE)  # where the search stage caches its table
    return float(table["seconds"]) if table else 0.0


def section_name(name: str, base: str, target: str = "host") -> str:
    """The report section (and its data file, docs/data/<section>.json) of a comparison on `base`."""
    return f"{name}_{base}" if target == "host" else f"{name}_{base}_{target}"


def data_file(name: str, base: str, target: str = "host") -> Path:
    """docs/data/<name>_<base>[_<target>].json: a device target's runs apart from the host's."""
    return DATA / f"{section_name(name, base, target)}.json"


def measured_by(base: str, target: str = "host") -> tuple[str, ...]:
    """What produced a section on `base`: the package (a search exercises all of it), the space searched, and this
    script's measuring code (its rendering aside: editing how a section reads does not make its figures stale)."""
    return (*SEARCH_CODE, f"search_spaces/{base}.yaml", "benchmarks/common.py::run_search",
            *(f"benchmarks/search_value.py::{n}" for n in ("ARMS", "COMPARISONS", "CHEAP", "CHEAP_FOR", "cheap",
                                                          "trial_seconds", "curve", "trial_log", "stage_seconds",
                                                          "run_arms")))


def run_arms(args, arms: list[str], saved: dict, store: Path) -> None:
    """Each seed's runs of `arms` not in `saved` yet, arms interleaved per seed (load drift hits them alike), each
    saved to `store` as it finishes with the section's _meta."""
    from autocompress._search.record import StudyAttrs

    name = COMPARISONS[args.compare][1]
    command = (f"python -m benchmarks.search_value --base {args.base} --trials {args.trials} --seeds {args.seeds}"
               + (f" --compare \"{args.compare}\"" if args.compare != "search" else "")
               + (f" --target {args.target}" if args.target != "host" else ""))
    with tempfile.TemporaryDirectory() as d:
        for seed in range(args.seeds):
            for arm in arms:
                key = f"{arm}/{seed}"
                if key in saved["runs"]:
                    continue
                opts = ARMS[arm]
                wall, run = run_search({"baselines": True, "seed": seed, "sampler": opts["sampler"],
                                        "pruner": opts["pruner"], "budget": {"trials": args.trials, "parallel": 2},
                                        **({"target": args.target} if args.target != "host" else {}),
                                        **{k: opts[k] for k in ("sensitivity", "stack") if k in opts}},
                                       cheap(args.base), Path(d) / key.replace(" ", "_"), base=args.base)
                stopped = sum(t.state == TrialState.PRUNED for t in run.study.trials)
                stage = stage_seconds(run.run_dir)
                saved["runs"][key] = {"commit": head_commit(), "curve": curve(run, stage), "wall": wall,
                                      "stopped": stopped,
                                      "stage_seconds": stage,
                                      "guided": StudyAttrs(run.study).sensitivity_guided or 0,
                                      "trials": trial_log(run)}
                record_meta(saved, section_name(name, args.base, args.target), command,
                            measured_by(args.base, args.target))
                store.write_text(json.dumps(saved, indent=1))
                c = saved["runs"][key]["curve"]
                print(f"{key}: HV {c[-1][1]:.4f} after {c[-1][0]:.0f} trial-s ({stopped} stopped, {wall:.0f} s wall)",
                      flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="lunarlander_dqn", help="search_spaces/<base>.yaml")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--compare", choices=list(COMPARISONS), default="search")
    ap.add_argument("--target", default="host", help="where latency is measured (an MCU target: exact cycles)")
    args = ap.parse_args()
    arms, name = COMPARISONS[args.compare]
    store = data_file(name, args.base, args.target)
    store.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(store.read_text()) if store.exists() else {}
    settings = {"trials": args.trials, "cheap": cheap(args.base), "baselines": True,
                **({"target": args.target} if args.target != "host" else {})}
    if saved.get("settings") != settings:
        saved = {"settings": settings, "runs": {}}
    run_arms(args, arms, saved, store)
    if args.target == "host":  # the curves' figure (a device section has none)
        sens = args.compare == "sensitivity"
        _, curves, final, total = by_arm(saved, arms if sens else COMPARISONS["search"][0]
                                             + COMPARISONS["finish"][0])
        line = ((float(np.median(final["default"])), "default's final median") if sens else
                (float(np.median(final["random"])), "random's final median") if "random" in final else None)
        plot(curves, total, line, f"{name}_{args.base}.png")
    report.main([])


def space_of(base: str) -> dict:
    return yaml.safe_load((ROOT / "search_spaces" / f"{base}.yaml").read_text())


def by_arm(saved: dict, arms: list[str]):
    """(seeds, curves, finals, totals) per arm, over the seeds that have runs."""
    runs = saved["runs"]
    seeds = sorted({int(k.split("/")[1]) for k in runs})
    curves = {arm: [runs[f"{arm}/{s}"]["curve"] for s in seeds if f"{arm}/{s}" in runs] for arm in arms}
    curves = {arm: cs for arm, cs in curves.items() if cs}  # an arm not run yet is left out
    final = {arm: [c[-1][1] for c in cs] for arm, cs in curves.items()}
    total = {arm: [c[-1][0] for c in cs] for arm, cs in curves.items()}
    return seeds, curves, final, total


def runs_of(saved: dict, arms) -> list[dict]:
    return [r for k, r in saved["runs"].items() if k.rsplit("/", 1)[0] in arms]


def plot(curves: dict, total: dict, line: tuple[float, str] | None, name: str) -> str:
    """Median hypervolume (IQR shaded) against trial-seconds per arm; saved under docs/img/."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    grid = np.linspace(0, max(max(t) for t in total.values()), 200)
    for arm, cs in curves.items():
        m = np.array([[hv_at(c, g) for g in grid] for c in cs])
        ax.plot(grid, np.median(m, 0), label=f"{arm} (median of {len(cs)})")
        ax.fill_between(grid, np.percentile(m, 25, 0), np.percentile(m, 75, 0), alpha=0.15)
    if line:
        ax.axhline(line[0], ls=":", c="k", lw=0.8, label=line[1])
    ax.set_xlabel("trial-seconds spent (sum over finished and stopped trials)")
    ax.set_ylabel("hypervolume (teacher-normalised, feasible)")
    ax.legend(fontsize=8)
    return save_figure(fig, name)


def hv_q(xs) -> str:
    return f"{np.median(xs):.4f} [{np.percentile(xs, 25):.4f}, {np.percentile(xs, 75):.4f}]"


def setup_words(settings: dict, seeds: list[int]) -> str:
    return (f"Sampler seeds {seeds[0]}..{seeds[-1]}, {settings['trials']} finished trials per run (stopped "
            f"ones count), parallel 2, the shipped baselines run first (teacher as-is, each technique alone; they are "
            f"on by default because on LunarLander most random combinations of 3+ techniques lose the policy, and "
            f"without them no arm finds a feasible point in a few trials); trial spec as shipped except "
            f"{json.dumps(settings['cheap'])}. "
            "Trial-seconds: the sum of the trials' own run time (a stopped trial's until it stopped). "
            "Hypervolume over feasible trials (return ratio >= the space's constraint), teacher-normalised. "
            "Median [interquartile range] over seeds." + (f" Only {len(seeds)} seeds (the issue asks for >= 5): "
                                                          "weak evidence." if len(seeds) < 5 else ""))


# -- noise and run order: what a difference between arms can be trusted to say -------------------------------------

def teacher_self(run: dict) -> float | None:
    """The teacher as-is baseline's latency ratio in a run: the teacher timed against itself (1 but for noise);
    None where the run kept no trial log."""
    return next((t["latency_ratio"] for t in run.get("trials", []) if t["baseline"] and not t["config"]
                 and "latency_ratio" in t), None)


def final_hv(run: dict, space: dict, scale: float = 1.0) -> float:
    """A run's final hypervolume from its trial log, every latency ratio multiplied by `scale`."""
    from autocompress import pareto

    ok = [{**t, "latency_ratio": t["latency_ratio"] * scale} for t in run["trials"]
          if t["state"] == "COMPLETE" and t.get("return_ratio", -np.inf) >= space["constraints"]["min_return_ratio"]]
    return pareto.normalised_hypervolume(ok, space["objectives"])


def noise(runs: list[dict], space: dict) -> dict | None:
    """The teacher-vs-itself latency spread over `runs` (lo, hi: its lowest and highest reading, n of `of` runs
    having one) and how far it moves a run's final hypervolume (`width`: median over the runs of the difference
    between its hypervolume with its latency ratios divided by lo and by hi); None where no run kept a trial log."""
    own = [x for x in (teacher_self(r) for r in runs) if x is not None]
    if not own:
        return None
    lo, hi = min(own), max(own)
    widths = [final_hv(r, space, 1 / hi) - final_hv(r, space, 1 / lo) for r in runs if r.get("trials")]
    return {"lo": lo, "hi": hi, "n": len(own), "of": len(runs), "width": float(np.median(widths)),
            "widths": (min(widths), max(widths))}


def noise_words(nz: dict | None, final: dict, ref: str = "default") -> str:
    """The noise of a table's hypervolumes, and whether each arm's final median differs from `ref`'s by more."""
    if nz is None:
        return ("Noise: these runs kept no trial log, so the teacher-vs-itself latency spread is not in the data: "
                "the hypervolumes here carry no noise figure.")
    if nz["lo"] == nz["hi"] == 1.0:
        return (f"Noise: none in latency: the teacher's count against its own is 1.000 in all {nz['n']} runs "
                "(exact cycles, not a timing).")
    missing = f" (of {nz['of']}; the others kept no trial log)" if nz["n"] < nz["of"] else ""
    diffs = [(arm, float(np.median(final[arm]) - np.median(final[ref]))) for arm in final if arm != ref]
    return (f"Noise: the teacher as-is, timed against itself once per run (1 but for timing noise), read "
            f"{nz['lo']:.3f}-{nz['hi']:.3f} over {nz['n']} runs{missing}; dividing a run's latency ratios by either end "
            f"of that spread moves its final hypervolume by {nz['width']:.4f} (median over runs; "
            f"{nz['widths'][0]:.4f}-{nz['widths'][1]:.4f}). A difference between arms smaller than that is inside the "
            "noise" + ("" if ref not in final or not diffs else
                       f": final medians against the {ref}'s: " + ", ".join(
                           f"{arm} {d:+.4f} ({'inside' if abs(d) <= nz['width'] else 'outside'} the noise)"
                           for arm, d in diffs)) + ".")


def order_words(runs: dict, arms: list[str]) -> str:
    """How the arms' runs were ordered, from the data file (runs are saved as they finish): which arms ran
    interleaved per seed (load drift hits them alike) and which ran apart."""
    rounds: list[tuple[list[str], list[str]]] = []  # (arms, seed) of consecutive runs on one seed
    for key in runs:
        arm, seed = key.rsplit("/", 1)
        if arm not in arms:
            continue
        if rounds and rounds[-1][1] == seed and arm not in rounds[-1][0]:
            rounds[-1][0].append(arm)
        else:
            rounds.append(([arm], seed))
    groups: list[tuple[tuple[str, ...], list[str]]] = []
    for a, seed in rounds:
        if groups and groups[-1][0] == tuple(a):
            groups[-1][1].append(seed)
        else:
            groups.append((tuple(a), [seed]))

    def names(a):
        return a[0] if len(a) == 1 else ", ".join(a[:-1]) + " and " + a[-1]
    def seeds(ss):
        n = sorted(int(x) for x in ss)
        return f"{n[0]}-{n[-1]}" if len(n) > 2 and n == list(range(n[0], n[-1] + 1)) else ", ".join(map(str, n))
    parts = [(f"{names(a)} interleaved per seed" if len(a) > 1 else a[0]) + f" (seeds {seeds(s)})" for a, s in groups]
    apart = sorted({a[0] for a, _ in groups if len(a) == 1})
    return ("Run order (the data file's; runs are saved as they finish): " + ", then ".join(parts) + "."
            + (f" Not all interleaved per seed, as the code intends (load drift then hits the arms alike): "
               f"{names(apart)} ran in separate rounds." if apart and len(arms) > 1 else ""))


# -- the sections ----------------------------------------------------------------------------------------------------

def render_sensitivity(base: str, data: dict) -> str:
    arms = COMPARISONS["sensitivity"][0]
    seeds, curves, final, total = by_arm(data, arms)
    runs = data["runs"]
    stage = [runs[f"sensitivity/{s}"]["stage_seconds"] for s in seeds if f"sensitivity/{s}" in runs]
    level = float(np.median(final["default"]))
    to_level = {arm: [seconds_to(c, level) for c in curves[arm]] for arm in arms}
    at = float(np.median(total["default"]))
    rows = [f"| {arm} | {hv_q(final[arm])} | {q(total[arm])} | {q(to_level[arm])} | "
            f"{hv_q([hv_at(c, at) for c in curves[arm]])} |" for arm in arms]
    return "\n".join([
        setup_words(data["settings"], seeds) + " The sensitivity arm runs the layer-sensitivity "
        "stage first (`sensitivity: {enabled: true}`: every per-layer setting on each layer alone, 5 episodes, "
        "max_drop 0.05) and enqueues its guided configs after the baselines; its curve starts at the stage's "
        f"seconds ({q(stage)}).", "",
        "| arm | final hypervolume | trial-seconds (stage included) | trial-seconds to the default's final median "
        f"| hypervolume at {at:.0f} trial-seconds |", "|---|---|---|---|---|", *rows, "",
        noise_words(noise(runs_of(data, arms), space_of(base)), final), "",
        order_words(runs, arms), "",
        f"![hypervolume vs trial-seconds](img/sensitivity_value_{base}.png)"])


def sensitivity_targets(base: str, data: dict) -> list[Target]:
    arms = COMPARISONS["sensitivity"][0]
    seeds, _, final, _ = by_arm(data, arms)
    nz = noise(runs_of(data, arms), space_of(base))
    stage = [data["runs"][f"sensitivity/{s}"]["stage_seconds"] for s in seeds if f"sensitivity/{s}" in data["runs"]]
    apart = (np.percentile(final["sensitivity"], 25) > np.percentile(final["default"], 75)
             or np.percentile(final["default"], 25) > np.percentile(final["sensitivity"], 75))
    d = float(np.median(final["sensitivity"]) - np.median(final["default"]))
    return [Target(f"Does the layer-sensitivity stage buy hypervolume per trial-second? ({base}, "
                   f"{data['settings']['trials']} trials)",
                   f"{len(seeds)} seeds: final hypervolume median {np.median(final['sensitivity']):.4f} with the stage "
                   f"({np.median(stage):.0f} s) vs {np.median(final['default']):.4f} without, IQRs "
                   f"{'apart' if apart else 'overlap'}" + ("" if nz is None else
                   f"; teacher vs itself {nz['lo']:.2f}-{nz['hi']:.2f}, which moves a run's hypervolume by "
                   f"{nz['width']:.4f}: the difference is {'inside' if abs(d) <= nz['width'] else 'outside'} the "
                   "noise"), None)]


def vs_random(arm: str, curves: dict, total: dict, target: float) -> tuple[list[float], float, bool]:
    """When `arm` reaches random's final median hypervolume `target`: (trial-seconds per seed, the median's share
    of random's median total, whether the interquartile ranges are apart)."""
    to_target = [seconds_to(c, target) for c in curves[arm]]
    share = float(np.median(to_target) / np.median(total["random"]))
    return to_target, share, bool(np.percentile(to_target, 75) < np.percentile(total["random"], 25))


def versus_random(arm: str, curves: dict, total: dict, target: float) -> str:
    """When `arm` reaches random's final median hypervolume `target`, against issue 15's target."""
    to_target, share, apart = vs_random(arm, curves, total, target)
    return (f"the {arm} arm reaches random's final median hypervolume {target:.4f} after trial-seconds "
            f"{q(to_target)}: **{share:.0%}** of random's median {np.median(total['random']):.0f} (target "
            f"<= 40%: **{'met' if share <= 0.4 and apart else 'missed'}**; interquartile ranges "
            f"{'apart' if apart else 'overlap'})")


def front_techniques(trials: list[dict], min_ratio: float) -> list[str]:
    """The technique sets on a run's final front (feasible, non-dominated in return up, latency and bytes
    down), from its trial log."""
    from autocompress import pareto

    ok = [t for t in trials if t["state"] == "COMPLETE" and t.get("return_ratio", 0.0) >= min_ratio]
    if not ok:
        return []
    mask = pareto.non_dominated(pareto.to_min(ok, ["return", "latency", "bytes"], pareto.RATIOS))
    return sorted("+".join(sorted(t["config"] or {})) or "teacher" for t, m in zip(ok, mask) if m)


def final_setter(run: dict) -> str:
    """The techniques of the trial whose arrival gave a run its final hypervolume ("(baseline)" where it is
    one of the baselines every arm runs first: an arm reaching that level then says nothing of its sampler)."""
    final = run["curve"][-1][1]
    t = run["trials"][next(i for i, (_, hv) in enumerate(run["curve"]) if hv >= final)]
    return ("+".join(sorted(t["config"] or {})) or "teacher") + (" (baseline)" if t["baseline"] else "")


def render_device(base: str, target: str, data: dict) -> str:
    """Default vs random with latency in exact cycles on `target`, beside the same base's host runs."""
    arms = COMPARISONS["vs random"][0]
    space = space_of(base)
    host_file = data_file("search_value", base)
    host = json.loads(host_file.read_text()) if host_file.exists() else {"runs": {}}
    rows, lines = [], []
    seeds = by_arm(data, arms)[0]  # the device runs' seeds, for the setup
    for where, runs in ((target, data), ("host", host)):
        present, curves, final, total = by_arm(runs, arms)
        if set(curves) != set(arms):
            continue
        words = versus_random("default", curves, total, float(np.median(final["random"])))
        rows += [f"| {where} | {arm} | {len(curves[arm])} | {hv_q(final[arm])} | {q(total[arm])} |" for arm in arms]
        lines.append(f"- {where}: {words}.")
        for arm in arms:
            done = [runs["runs"][f"{arm}/{k}"] for k in present if f"{arm}/{k}" in runs["runs"]]
            sets = collections.Counter(s for r in done for s in front_techniques(r["trials"],
                                                                                  space["constraints"]["min_return_ratio"]))
            setters = collections.Counter(final_setter(r) for r in done)
            lines.append(f"  - {arm}'s fronts over {len(done)} seeds hold: "
                         + ", ".join(f"{s} x{n}" for s, n in sets.most_common()) + "; the trial that set each run's "
                         "final hypervolume: " + ", ".join(f"{s} x{n}" for s, n in setters.most_common()) + ".")
        lines.append(f"  - {noise_words(noise(runs_of(runs, arms), space), final)}")
        lines.append(f"  - {order_words(runs['runs'], arms)}")
    return "\n".join([
        setup_words(data["settings"], seeds)
        + f" Latency: cycles per act of the code built for {target} (exact: the same build and observations "
        "give the same count), not a timing. The host rows are this benchmark's host runs of the same arms "
        f"(`docs/data/{host_file.name}`, run earlier on the code of their day).", "",
        "| latency on | arm | seeds | final hypervolume | trial-seconds |", "|---|---|---|---|---|", *rows, "",
        *lines])


def search_figures(base: str, data: dict) -> dict:
    """What a search comparison's section and targets state: per arm the curves, finals and totals, random's final
    median, and per compared arm the early-stopping cuts (exact level and within HV_SLACK of it)."""
    runs = data["runs"]
    seeds, curves, final, total = by_arm(data, COMPARISONS["search"][0] + COMPARISONS["finish"][0])
    space = space_of(base)

    def pairs(arm: str):
        """Per seed that has both: (`arm`'s run, the no-early-stop run, the lower of their final hypervolumes)."""
        for s in seeds:
            a, n = runs.get(f"{arm}/{s}"), runs.get(f"no early stop/{s}")
            if a and n:
                yield a, n, min(a["curve"][-1][1], n["curve"][-1][1])

    def cuts(arm: str, slack: float = 0.0) -> list[float]:
        """Seed by seed: trial-seconds to reach the level both `arm` and no early stop reach in that seed
        (the lower of their two finals, less `slack` of it), without early stopping over with `arm`'s."""
        return [seconds_to(n["curve"], level * (1 - slack)) / seconds_to(a["curve"], level * (1 - slack))
                for a, n, level in pairs(arm)]

    # seed by seed, the most that stopping alone could cut on the no-early-stop run, to the level `cuts` uses for
    # the default (see stop_oracle_seconds)
    oracle = [seconds_to(n["curve"], level) / stop_oracle_seconds(n["trials"], level, space["objectives"],
                                                                  space["constraints"]["min_return_ratio"])
              for _, n, level in pairs("default")]
    return {"seeds": seeds, "curves": curves, "final": final, "total": total, "oracle": oracle,
            "target": float(np.median(final["random"])) if "random" in final else None,
            "cuts": {arm: (cuts(arm), cuts(arm, HV_SLACK)) for arm in ("default", "stops only") if arm in curves},
            "noise": noise(runs_of(data, curves), space)}


def render_search(base: str, data: dict) -> str:
    f = search_figures(base, data)
    runs, seeds, curves, final, total, target = (data["runs"], f["seeds"], f["curves"], f["final"], f["total"],
                                                 f["target"])

    def cut_words(arm: str) -> str:
        cs, near = f["cuts"][arm]
        cut = float(np.median(cs))
        return (f"{', '.join(f'{c:.2f}x' for c in cs)}, median **{cut:.2f}x** (target >= 2x: "
                f"**{'met' if cut >= 2 else 'missed'}**); to within {HV_SLACK:.1%} of that level: "
                f"{', '.join(f'{c:.2f}x' for c in near)}, median {np.median(near):.2f}x")
    rows = [f"| {arm} | {hv_q(final[arm])} | {q(total[arm])} | "
            f"{np.median([runs[f'{arm}/{s}']['stopped'] for s in seeds if f'{arm}/{s}' in runs]):.0f} |"
            for arm in curves]
    oracle = f["oracle"]
    return "\n".join([
        setup_words(data["settings"], seeds), "",
        "| arm | final hypervolume | trial-seconds | trials stopped early |", "|---|---|---|---|", *rows, "",
        noise_words(f["noise"], final), "",
        order_words(runs, list(curves)), "",
        *([f"- Default vs random: {versus_random('default', curves, total, target)}."] if target is not None
          else []),
        f"- Early stopping (stops and finish_at): per seed, the trial-seconds without it over those with it to reach "
        f"the hypervolume both arms of that seed reach (the lower of their finals): {cut_words('default')}. The "
        f"whole search of {data['settings']['trials']} trials: {q(total['no early stop'])} trial-seconds without, "
        f"{q(total['default'])} with.",
        f"- The most stopping alone could cut (an oracle that stops every trial of the no-early-stop run that adds "
        f"nothing to the hypervolume, at no cost, and runs the others in full): "
        f"{', '.join(f'{c:.2f}x' for c in oracle)}, median **{np.median(oracle):.2f}x**. Beyond it only "
        f"finish_at cuts, by ending the fine-tune of a useful trial that already matches the teacher.",
        *([f"- Stops only (`finish_at: null`, --compare finish; {len(curves['stops only'])} seeds): the same measure, "
           f"{cut_words('stops only')}; the whole search {q(total['stops only'])} trial-seconds."]
          if "stops only" in curves else []), "",
        f"![hypervolume vs trial-seconds](img/search_value_{base}.png)"])


def search_targets(base: str, data: dict) -> list[Target]:
    f = search_figures(base, data)
    nz = f["noise"]
    noise_note = "" if nz is None else f"; teacher vs itself {nz['lo']:.2f}-{nz['hi']:.2f} over these runs"
    out = []
    if f["target"] is not None:
        to_target, share, apart = vs_random("default", f["curves"], f["total"], f["target"])
        out.append(Target(f"Default search reaches random's final hypervolume in ≤ 40% of random's trial-seconds, "
                          f"IQRs apart ({base})",
                          f"{share:.0%}: random's final median {f['target']:.4f} reached after {q(to_target)} of "
                          f"random's {q(f['total']['random'])} trial-seconds ({len(to_target)} seeds; IQRs "
                          f"{'apart' if apart else 'overlap'}){noise_note}", share <= 0.4 and apart))
    cs, near = f["cuts"]["default"]
    cut = float(np.median(cs))
    out.append(Target(f"Early stopping cuts the trial-seconds to reach a given hypervolume by ≥ 2x ({base})",
                      f"{len(cs)} seeds: per seed {', '.join(f'{c:.2f}x' for c in cs)}, median {cut:.2f}x; to within "
                      f"{HV_SLACK:.1%} of that level median {np.median(near):.2f}x; whole search "
                      f"{np.median(f['total']['default']):.0f} vs {np.median(f['total']['no early stop']):.0f} "
                      f"trial-seconds{noise_note}", cut >= 2))
    return out


#: the sections in the order of the report: (the comparison whose data file it renders, base, target, title)
SECTIONS = (("search", "lunarlander_dqn", "host", "Search value: hypervolume per trial-second (lunarlander_dqn)"),
            ("search", "invertedpendulum_sac", "host",
             "Search value: hypervolume per trial-second (invertedpendulum_sac)"),
            ("sensitivity", "lunarlander_dqn_per_layer", "host",
             "Does the sensitivity stage pay? (lunarlander_dqn_per_layer)"),
            ("search", "pendulum_sac", "host", "Search value: hypervolume per trial-second (pendulum_sac)"),
            ("search", "lunarlander_dqn", "cortex-m4f",
             "Search value with exact latency (lunarlander_dqn, cortex-m4f)"))


def sections() -> list[Section]:
    out = []
    for compare, base, target, title in SECTIONS:
        name = section_name(COMPARISONS[compare][1], base, target)
        if not data_file(COMPARISONS[compare][1], base, target).exists():
            continue
        if compare == "sensitivity":
            render, targets = partial(render_sensitivity, base), partial(sensitivity_targets, base)
        elif target != "host":
            render, targets = partial(render_device, base, target), lambda data: []
        else:
            render, targets = partial(render_search, base), partial(search_targets, base)
        out.append(Section(name, title, name, measured_by(base, target), render, targets))
    return out


if __name__ == "__main__":
    main()
