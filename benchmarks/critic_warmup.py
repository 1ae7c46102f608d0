"""An imported policy without a critic: how long the critic warm-up takes, and whether fine-tuning
after it keeps the return. Same actor both ways: an SB3 PPO trained here, imported once as its zip
(value net included) and once as a bare PyTorch state dict + YAML (no critic: warmed up first).

    python -m benchmarks.critic_warmup [--episodes 100] [--warmup 3] [--iterations 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import machine, write_section

CONFIG = {"prune": {"sparsity": 0.8}}


def main() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=3)
    args = ap.parse_args()
    import stable_baselines3 as sb3
    import torch

    import autocompress as ac

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t0 = time.time()
        model = sb3.PPO("MlpPolicy", "CartPole-v1", seed=0, n_steps=1024, batch_size=64)
        model.learn(40_000)
        train_s = time.time() - t0
        model.save(d / "ppo.zip")
        sd = model.policy.state_dict()
        torch.save({"l0.weight": sd["mlp_extractor.policy_net.0.weight"], "l0.bias": sd["mlp_extractor.policy_net.0.bias"],
                    "l1.weight": sd["mlp_extractor.policy_net.2.weight"], "l1.bias": sd["mlp_extractor.policy_net.2.bias"],
                    "out.weight": sd["action_net.weight"], "out.bias": sd["action_net.bias"]}, d / "actor.pt")
        (d / "actor.yaml").write_text(yaml.safe_dump({"algorithm": "PPO", "layers": ["l0", "l1", "out"],
                                                       "activation": "tanh", "head": "discrete"}))
        for label, source in (("SB3 zip: value net imported", "ppo.zip"), ("state dict: critic warmed up", "actor.pt")):
            spec = {"name": Path(source).stem, "env": "CartPole-v1", "algorithm": "PPO", "seed": 0,
                    "teacher": {"from": str(d / source), "critic_warmup": args.warmup},
                    "training": {"train_batch_size_per_learner": 2000, "minibatch_size": 128, "num_epochs": 4},
                    "finetune": {"iterations": args.iterations}, "eval": {"episodes": args.episodes, "seed": 50_000}}
            (d / f"{label[:3]}.yaml").write_text(yaml.safe_dump(spec))
            logs: list[str] = []
            r = ac.compress(d / f"{label[:3]}.yaml", CONFIG, output_dir=d / label[:3], cache_dir=d / "cache",
                            log=logs.append)
            rows.append((label, r))
            print(label, r.return_mean, r.timings, flush=True)
        # the pruned net before any fine-tuning, for reference (no RL): return on the same episodes
        spec0 = ac.load_trial_spec(d / "SB3.yaml").updated({"finetune": {"iterations": 0}})
        r0 = ac.compress(spec0, CONFIG, output_dir=d / "nofinetune", cache_dir=d / "cache")
    lines = ["## Imported policy without a critic: warm-up, then fine-tuning", "",
             f"`python -m benchmarks.critic_warmup --episodes {args.episodes} --warmup {args.warmup} --iterations "
             f"{args.iterations}` on {machine()}. One SB3 PPO actor ([64, 64] tanh, CartPole-v1, trained "
             f"{train_s:.0f} s), imported twice: as its zip (SB3's value net becomes the critic) and as a bare "
             f"state dict + YAML (no critic: {args.warmup} RLlib iterations train one with the actor frozen). Both "
             f"are pruned to 80% and fine-tuned {args.iterations} iterations; return over {args.episodes} "
             "episodes (seeds 50,000+) of the exported artifact.", "",
             "| import | critic warm-up s | fine-tune (RLlib train) s | return after fine-tuning | teacher |",
             "|---|---|---|---|---|"]
    for label, r in rows:
        lines.append(f"| {label} | {r.timings.get('critic_warmup', 0.0):.1f} | {r.timings.get('rllib_train', 0.0):.1f} | "
                     f"{r.return_mean:.1f} ± {r.return_std:.1f} | {r.teacher_return_mean:.1f} |")
    lines.append(f"| (80% pruned, no fine-tuning) | — | — | {r0.return_mean:.1f} ± {r0.return_std:.1f} | "
                 f"{r0.teacher_return_mean:.1f} |")
    body = "\n".join(lines)
    write_section("critic_warmup", body)


if __name__ == "__main__":
    main()
