"""Each technique alone on CartPole-v1 PPO, measured in one run against the same teacher.

    python -m benchmarks.techniques [--episodes 20] [--data docs/data/techniques.json]

Runs `compress` (teacher from cache -> technique -> RLlib fine-tune -> export -> measure) for every
config in configs/. Latency and bytes ratios are measured side by side with the teacher inside each trial.
Results: docs/data/techniques.json (benchmarks.report renders them).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, TRIAL_CODE, benchmark_parser, command_of, data_sections, latency_words, md_table, save_results

CONFIGS = ["int8_ptq", "qat4", "prune90_iterative", "structured50", "share4", "lowrank90", "distill32", "combo"]
#: per config, what its trial measured (the teacher's figures are the same in every trial)
KEYS = ("return_mean", "return_std", "latency_ms", "latency_ratio", "bytes", "bytes_ratio", "n_params", "runtime")
TEACHER_KEYS = ("teacher_return_mean", "teacher_return_std", "teacher_latency_ms", "teacher_bytes",
                "teacher_n_params")
MEASURED_BY = (*TRIAL_CODE, "trials/cartpole_ppo.yaml", *(f"configs/{n}.yaml" for n in CONFIGS),
               *(f"benchmarks/techniques.py::{n}" for n in ("CONFIGS", "KEYS", "TEACHER_KEYS", "measure")))


def measure(args) -> dict:
    import autocompress as ac

    spec = ac.load_trial_spec(ROOT / "trials" / "cartpole_ppo.yaml").updated({"eval": {"episodes": args.episodes}})
    out: dict = {"episodes": args.episodes, "configs": {}}
    start = time.time()
    for name in CONFIGS:
        with tempfile.TemporaryDirectory() as d:
            r = ac.compress(spec, ROOT / "configs" / f"{name}.yaml", output_dir=d, cache_dir=args.cache_dir).to_dict()
        out["configs"][name] = {**{k: r[k] for k in KEYS}, "finetune_rounds": len(r["finetune_rounds"])}
        out.setdefault("teacher", {k.removeprefix("teacher_"): r[k] for k in TEACHER_KEYS})
        print(f"{name}: return {r['return_mean']:.1f} ± {r['return_std']:.1f}, latency ×{r['latency_ratio']:.3f}, "
              f"bytes ×{r['bytes_ratio']:.4f}", flush=True)
    out["wall_s"] = time.time() - start
    return out


def render(data: dict) -> str:
    t, rows = data["teacher"], data["configs"]
    first = next(iter(rows.values()))
    return "\n".join([
        f"One run, {data['wall_s']:.0f} s.", "",
        f"Return: mean ± std over {data['episodes']} seeded deterministic episodes of the exported artifact. "
        f"Latency: {latency_words(first['runtime'])}. Bytes: artifact file size. Ratios are compressed / teacher.", "",
        *md_table(["config", "return", "latency µs", "latency ratio", "bytes", "bytes ratio", "stored params",
                   "fine-tune"],
                  [["teacher (fp32)", f"{t['return_mean']:.1f} ± {t['return_std']:.1f}",
                    f"{t['latency_ms'] * 1000:.2f}", 1, f"{t['bytes']:,}", 1, f"{t['n_params']:,}", "—"]] +
                  [[name, f"{r['return_mean']:.1f} ± {r['return_std']:.1f}", f"{r['latency_ms'] * 1000:.2f}",
                    f"{r['latency_ratio']:.3f}", f"{r['bytes']:,}", f"{r['bytes_ratio']:.4f}", f"{r['n_params']:,}",
                    f"{r['finetune_rounds']} round(s)"] for name, r in rows.items()])])


def sections() -> list:
    return data_sections("techniques", "Each technique alone (CartPole-v1, PPO teacher [256, 256])", MEASURED_BY,
                         render)


def main() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ap = benchmark_parser(__doc__, "techniques")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "autocompress" / "teachers"))
    args = ap.parse_args()
    save_results(args.data, "techniques", measure(args), command_of("techniques", args, ("episodes",)),
                 MEASURED_BY, render)


if __name__ == "__main__":
    main()
