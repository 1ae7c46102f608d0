"""Learned step size (quantize.mode: lsq) against plain QAT at 2, 3 and 4 bits, on Pendulum-v1 SAC.

    python -m benchmarks.lsq [--seeds 0 1 2] [--bits 2 3 4] [--episodes 20]
                             [--finetune-iterations N] [--training-intensity R]

Pendulum's return does not saturate (CartPole's does: nearly every config scores 500), so a
difference in the quantized policy shows in the return. Every (mode, bits, seed) is one full
`autocompress.compress` trial of trials/pendulum_sac.yaml: the committed teacher, quantized, fine-tuned
in RLlib with the spec's budget and `seed` (the fine-tune's RLlib seed and its keep-best check
episodes), exported, and the ARTIFACT evaluated on held-out episodes (eval seed 50_000 + i), which
neither the fine-tune nor its keep-best check ever reset with. The teacher is the one committed
teacher (trained at seed 0) for every seed: a spec's seed is part of its teacher's cache key, so it is
copied under each seed's key rather than trained again. Writes its section of docs/BENCHMARKS.md.

The spec's fine-tune (3 iterations of 1000 env steps, one SGD update per env step after the first
1000) took ~10 minutes per trial on the shared 2-core machine; `--finetune-iterations` and
`--training-intensity` (RLlib SAC's replayed samples per env step; 256 = the batch, one update per
step) cut it, the same for both modes, and the section says what was run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, machine, write_section

EVAL_SEED = 50_000
MODES = ("qat", "lsq")


def seeded_spec(seed: int, episodes: int, cache: Path, finetune: dict, training: dict):
    """trials/pendulum_sac.yaml at `seed`, held-out evaluation, its teacher the committed one."""
    import autocompress as ac
    from autocompress import teacher as teachers

    base = ac.load_trial_spec(ROOT / "trials" / "pendulum_sac.yaml")
    spec = base.updated({"seed": seed, "eval": {"episodes": episodes, "seed": EVAL_SEED},
                         "finetune": finetune, "training": training,
                         "latency": {"runtime": "numpy", "warmup": 10, "calls": 100, "rounds": 2}})
    committed = teachers.SHIPPED_TEACHERS / teachers.teacher_dir(base, cache).name
    target = teachers.teacher_dir(spec, cache)
    if not target.exists():
        shutil.copytree(committed, target)
    return spec


def main() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--finetune-iterations", type=int, default=None, help="default: the spec's (3)")
    ap.add_argument("--training-intensity", type=float, default=None, help="default: RLlib's (one update per step)")
    args = ap.parse_args()
    finetune = {} if args.finetune_iterations is None else {"iterations": args.finetune_iterations}
    training = {} if args.training_intensity is None else {"training_intensity": args.training_intensity}

    import autocompress as ac

    results: dict[tuple[str, int], list[dict]] = {}
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        for seed in args.seeds:
            spec = seeded_spec(seed, args.episodes, cache, finetune, training)
            for bits in args.bits:
                for mode in MODES:
                    t0 = time.time()
                    r = ac.compress(spec, {"quantize": {"bits": bits, "mode": mode}},
                                    output_dir=Path(tmp) / f"{mode}{bits}-{seed}", cache_dir=cache).to_dict()
                    results.setdefault((mode, bits), []).append(r)
                    print(f"seed {seed} {mode} {bits} bits: return {r['return_mean']:.1f} "
                          f"(teacher {r['teacher_return_mean']:.1f}), ratio {r['return_ratio']:.3f}, "
                          f"{time.time() - t0:.0f} s", flush=True)
    teacher = statistics.median(r["teacher_return_mean"] for rs in results.values() for r in rs)
    cmd = "python -m benchmarks.lsq" + (f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds != [0, 1, 2] else "") \
        + (f" --bits {' '.join(map(str, args.bits))}" if args.bits != [2, 3, 4] else "") \
        + (f" --episodes {args.episodes}" if args.episodes != 20 else "") \
        + (f" --finetune-iterations {args.finetune_iterations}" if finetune else "") \
        + (f" --training-intensity {args.training_intensity:g}" if training else "")
    iters = spec.finetune.iterations
    intensity = (f"{args.training_intensity:g} replayed samples per env step (one SGD update of 256 per "
                 f"{256 / args.training_intensity:g} steps)" if training else "one SGD update per env step")
    lines = [
        "## Learned step size (LSQ) vs plain QAT (Pendulum-v1 SAC, actor [256, 256])", "",
        f"`{cmd}` — one run, {time.time() - start:.0f} s, on {machine()}.", "",
        f"Each cell: {len(args.seeds)} trials (`seed` {', '.join(map(str, args.seeds))} of trials/pendulum_sac.yaml: "
        f"the RLlib fine-tune's seed; {iters} iterations of 1000 env steps, learning after the first 1000, "
        f"{intensity}; keep-best), each the full `compress` of the "
        "committed teacher with `{quantize: {bits: k, mode: qat|lsq}}` (per channel, asymmetric: the defaults; "
        "lsq also learns its zero points). Return: the exported artifact's mean over "
        f"{args.episodes} held-out deterministic episodes (reset seeds {EVAL_SEED}..{EVAL_SEED + args.episodes - 1}, "
        "never seen in fine-tuning); ratio: (return - random) / (teacher - random), the teacher on the same "
        f"episodes ({teacher:.1f}). Median [min, max] over the seeds.", "",
        "| bits | QAT return | QAT ratio | LSQ return | LSQ ratio | LSQ - QAT ratio (per seed) |",
        "|---|---|---|---|---|---|",
    ]

    def cell(rs, key, fmt):
        vals = [r[key] for r in rs]
        return f"{statistics.median(vals):{fmt}} [{min(vals):{fmt}}, {max(vals):{fmt}}]"

    for bits in args.bits:
        q, lsq = results[("qat", bits)], results[("lsq", bits)]
        diffs = ", ".join(f"{b['return_ratio'] - a['return_ratio']:+.3f}" for a, b in zip(q, lsq))
        lines.append(f"| {bits} | {cell(q, 'return_mean', '.1f')} | {cell(q, 'return_ratio', '.3f')} | "
                     f"{cell(lsq, 'return_mean', '.1f')} | {cell(lsq, 'return_ratio', '.3f')} | {diffs} |")
    write_section("lsq", "\n".join(lines))


if __name__ == "__main__":
    main()
