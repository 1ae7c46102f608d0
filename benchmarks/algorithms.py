"""One table across algorithms and environments: each shipped teacher, and one strong compressed
config per env, measured in one run.

    python -m benchmarks.algorithms [--episodes 20] [--specs cartpole_ppo cartpole_dqn ...]

For every trial spec whose teacher is committed under teachers/ it runs `compress_trial`
(teacher -> techniques -> RLlib fine-tune -> export -> measure) with its CONFIGS entry, and reports the
teacher's return and training time (from its cache entry) beside the compressed artifact's
return, latency and bytes ratios (measured side by side with the teacher inside the trial).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, machine, write_section

#: one strong config per env (from its search front where one was run; see docs/BENCHMARKS.md)
CONFIGS = {
    "cartpole_ppo": {"distill": {"hidden": [32, 32]}, "quantize": {"bits": 8, "symmetric": True}},
    "cartpole_dqn": {"distill": {"hidden": [32, 32]}, "quantize": {"bits": 8, "symmetric": True}},
    "lunarlander_dqn": {"distill": {"hidden": [16, 16]}},
    "pendulum_sac": {"structured": {"amount": 0.75, "criterion": "importance"}, "quantize": {"bits": 8}},
    "invertedpendulum_sac": {"structured": {"amount": 0.72, "criterion": "importance"}},
    "hopper_ppo": {"distill": {"hidden": [64, 64]}, "quantize": {"bits": 8, "symmetric": True}},
}
SPECS = list(CONFIGS)


def main() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--specs", nargs="+", default=SPECS)
    ap.add_argument("--cache-dir", default=os.environ.get("AUTOCOMPRESS_CACHE", str(Path.home() / ".cache" /
                                                                                  "autocompress" / "teachers")))
    args = ap.parse_args()

    import autocompress as ac

    lines = ["## Algorithms and environments: teacher and one compressed config each", "",
             f"`python -m benchmarks.algorithms --episodes {args.episodes}` — one run on {machine()}. One strong "
             "config per env (column `config`), fine-tuned as the trial spec says. Return: mean ± std over the seeded evaluation episodes of the exported artifact; "
             "ratios = compressed / teacher, measured side by side in the same trial (return ratio normalised "
             "between a random policy and the teacher where the teacher's return is negative).", "",
             "| spec | env | algorithm | teacher return | teacher train time | config | compressed return | return ratio "
             "| latency ratio | bytes ratio | runtime | trial time |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in args.specs:
        spec = ac.load_trial_spec(ROOT / "trials" / f"{name}.yaml").updated({"eval": {"episodes": args.episodes}})
        try:
            info = ac.teach(spec, cache_dir=args.cache_dir, train=False).info
        except ac.TeacherError:
            print(f"{name}: no committed or cached teacher, skipped", flush=True)
            continue
        start = time.time()
        with tempfile.TemporaryDirectory() as d:
            r = ac.compress(spec, CONFIGS[name], output_dir=d, cache_dir=args.cache_dir).to_dict()
        lines.append(
            f"| {name} | {spec.env} | {spec.algorithm} | {r['teacher_return_mean']:.1f} ± {r['teacher_return_std']:.1f} | "
            f"{info['train_seconds']:.0f} s ({info['iterations']} it.) | `{json.dumps(CONFIGS[name])}` | "
            f"{r['return_mean']:.1f} ± {r['return_std']:.1f} | "
            f"{r['return_ratio']:.3f} | {r['latency_ratio']:.3f} | {r['bytes_ratio']:.4f} | {r['runtime']} | "
            f"{time.time() - start:.0f} s |")
        print(lines[-1], flush=True)
    body = "\n".join(lines)
    write_section("algorithms", body)


if __name__ == "__main__":
    main()
