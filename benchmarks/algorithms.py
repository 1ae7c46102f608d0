"""One table across algorithms and environments: each shipped teacher, and one strong compressed
config per env, measured in one run.

    python -m benchmarks.algorithms [--episodes 20] [--specs cartpole_ppo cartpole_dqn ...] [--data PATH]

For every trial spec whose teacher is committed under teachers/ it runs `compress`
(teacher -> techniques -> RLlib fine-tune -> export -> measure) with its CONFIGS entry, and reports the
teacher's return and training time (from its cache entry) beside the compressed artifact's
return, latency and bytes ratios (measured side by side with the teacher inside the trial).
Results: docs/data/algorithms.json (benchmarks.report renders them).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, TRIAL_CODE, benchmark_parser, command_of, data_sections, md_table, save_results

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
KEYS = ("teacher_return_mean", "teacher_return_std", "return_mean", "return_std", "return_ratio", "latency_ratio",
        "bytes_ratio", "runtime")
MEASURED_BY = (*TRIAL_CODE, "trials", "teachers",
               *(f"benchmarks/algorithms.py::{n}" for n in ("CONFIGS", "KEYS", "measure")))


def measure(args) -> dict:
    import autocompress as ac

    rows = {}
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
        rows[name] = {"env": spec.env, "algorithm": spec.algorithm, "config": CONFIGS[name],
                      "teacher_train_s": info["train_seconds"], "teacher_iterations": info["iterations"],
                      **{k: r[k] for k in KEYS}, "trial_s": time.time() - start}
        print(name, json.dumps(rows[name]), flush=True)
    return {"episodes": args.episodes, "rows": rows}


def render(data: dict) -> str:
    return "\n".join([
        "One run. One strong config per env (column `config`), fine-tuned as the trial spec says. Return: mean ± std "
        f"over the seeded evaluation episodes ({data['episodes']}) of the exported artifact; ratios = compressed / "
        "teacher, measured side by side in the same trial (return ratio normalised between a random policy and the "
        "teacher where the teacher's return is negative).", "",
        *md_table(["spec", "env", "algorithm", "teacher return", "teacher train time", "config", "compressed return",
                   "return ratio", "latency ratio", "bytes ratio", "runtime", "trial time"],
                  [[name, r["env"], r["algorithm"], f"{r['teacher_return_mean']:.1f} ± {r['teacher_return_std']:.1f}",
                    f"{r['teacher_train_s']:.0f} s ({r['teacher_iterations']} it.)", f"`{json.dumps(r['config'])}`",
                    f"{r['return_mean']:.1f} ± {r['return_std']:.1f}", f"{r['return_ratio']:.3f}",
                    f"{r['latency_ratio']:.3f}", f"{r['bytes_ratio']:.4f}", r["runtime"], f"{r['trial_s']:.0f} s"]
                   for name, r in data["rows"].items()])])


def sections() -> list:
    return data_sections("algorithms", "Algorithms and environments: teacher and one compressed config each",
                         MEASURED_BY, render)


def main() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ap = benchmark_parser(__doc__, "algorithms")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--specs", nargs="+", default=SPECS)
    ap.add_argument("--cache-dir", default=os.environ.get("AUTOCOMPRESS_CACHE", str(Path.home() / ".cache" /
                                                                                  "autocompress" / "teachers")))
    args = ap.parse_args()
    options = ("episodes", *(("specs",) if args.specs != SPECS else ()))
    save_results(args.data, "algorithms", measure(args), command_of("algorithms", args, options), MEASURED_BY, render)


if __name__ == "__main__":
    main()
