"""Each technique alone on CartPole-v1 PPO, measured in one run against the same teacher.

    python -m benchmarks.techniques [--episodes 20]

Runs `compress_trial` (teacher from cache -> technique -> RLlib fine-tune -> export ->
measure) for every config in configs/, prints a table and writes it to docs/BENCHMARKS.md.
Latency and bytes ratios are measured side by side with the teacher inside each trial.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, latency_words, machine, write_section

CONFIGS = ["int8_ptq", "qat4", "prune90_iterative", "structured50", "share4", "lowrank90", "distill32", "combo"]


def main() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "autocompress" / "teachers"))
    args = ap.parse_args()

    import autocompress as ac

    spec = ac.load_trial_spec(ROOT / "trials" / "cartpole_ppo.yaml").updated({"eval": {"episodes": args.episodes}})
    rows = []
    start = time.time()
    for name in CONFIGS:
        with tempfile.TemporaryDirectory() as d:
            r = ac.compress(spec, ROOT / "configs" / f"{name}.yaml", output_dir=d, cache_dir=args.cache_dir).to_dict()
        rows.append((name, r))
        print(f"{name}: return {r['return_mean']:.1f} ± {r['return_std']:.1f}, latency ×{r['latency_ratio']:.3f}, "
              f"bytes ×{r['bytes_ratio']:.4f}", flush=True)
    t = rows[0][1]
    lines = [
        "## Each technique alone (CartPole-v1, PPO teacher [256, 256])", "",
        f"`python -m benchmarks.techniques --episodes {args.episodes}` — one run, {time.time() - start:.0f} s, "
        f"on {machine()}.", "",
        f"Return: mean ± std over {args.episodes} seeded deterministic episodes of the exported artifact. Latency: "
        f"{latency_words(rows[0][1]['runtime'])}. "
        "Bytes: artifact file size. Ratios are compressed / teacher.", "",
        "| config | return | latency µs | latency ratio | bytes | bytes ratio | stored params | fine-tune |",
        "|---|---|---|---|---|---|---|---|",
        f"| teacher (fp32) | {t['teacher_return_mean']:.1f} ± {t['teacher_return_std']:.1f} | "
        f"{t['teacher_latency_ms'] * 1000:.2f} | 1 | {t['teacher_bytes']:,} | 1 | {t['teacher_n_params']:,} | — |",
    ]
    for name, r in rows:
        lines.append(f"| {name} | {r['return_mean']:.1f} ± {r['return_std']:.1f} | {r['latency_ms'] * 1000:.2f} | "
                     f"{r['latency_ratio']:.3f} | {r['bytes']:,} | {r['bytes_ratio']:.4f} | {r['n_params']:,} | "
                     f"{len(r['finetune_rounds'])} round(s) |")
    table = "\n".join(lines)
    write_section("techniques", table)


if __name__ == "__main__":
    main()
