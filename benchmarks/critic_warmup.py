"""An imported policy without a critic: how long the critic warm-up takes, and whether fine-tuning
after it keeps the return. Same actor both ways: an SB3 PPO trained here, imported once as its zip
(value net included) and once as a bare PyTorch state dict + YAML (no critic: warmed up first).

    python -m benchmarks.critic_warmup [--episodes 100] [--warmup 3] [--iterations 3] [--data PATH]

Results: docs/data/critic_warmup.json (benchmarks.report renders them).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import TRIAL_CODE, benchmark_parser, command_of, data_sections, md_table, save_results

CONFIG = {"prune": {"sparsity": 0.8}}
IMPORTS = (("SB3 zip: value net imported", "ppo.zip"), ("state dict: critic warmed up", "actor.pt"))
MEASURED_BY = (*TRIAL_CODE, *(f"benchmarks/critic_warmup.py::{n}" for n in ("CONFIG", "IMPORTS", "measure")))


def measure(args) -> dict:
    import stable_baselines3 as sb3
    import torch

    import autocompress as ac

    rows = {}
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
        for label, source in IMPORTS:
            spec = {"name": Path(source).stem, "env": "CartPole-v1", "algorithm": "PPO", "seed": 0,
                    "teacher": {"from": str(d / source), "critic_warmup": args.warmup},
                    "training": {"train_batch_size_per_learner": 2000, "minibatch_size": 128, "num_epochs": 4},
                    "finetune": {"iterations": args.iterations}, "eval": {"episodes": args.episodes, "seed": 50_000}}
            (d / f"{label[:3]}.yaml").write_text(yaml.safe_dump(spec))
            logs: list[str] = []
            r = ac.compress(d / f"{label[:3]}.yaml", CONFIG, output_dir=d / label[:3], cache_dir=d / "cache",
                            log=logs.append)
            rows[label] = {"critic_warmup_s": r.timings.get("critic_warmup", 0.0),
                           "rllib_train_s": r.timings.get("rllib_train", 0.0), **returns(r)}
            print(label, r.return_mean, r.timings, flush=True)
        # the pruned net before any fine-tuning, for reference (no RL): return on the same episodes
        spec0 = ac.load_trial_spec(d / "SB3.yaml").updated({"finetune": {"iterations": 0}})
        r0 = ac.compress(spec0, CONFIG, output_dir=d / "nofinetune", cache_dir=d / "cache")
    return {"episodes": args.episodes, "warmup": args.warmup, "iterations": args.iterations, "train_s": train_s,
            "rows": rows, "no_finetune": returns(r0)}


def returns(r) -> dict:
    return {"return_mean": r.return_mean, "return_std": r.return_std, "teacher_return_mean": r.teacher_return_mean}


def render(data: dict) -> str:
    rows = [[label, f"{r['critic_warmup_s']:.1f}", f"{r['rllib_train_s']:.1f}",
             f"{r['return_mean']:.1f} ± {r['return_std']:.1f}", f"{r['teacher_return_mean']:.1f}"]
            for label, r in data["rows"].items()]
    r0 = data["no_finetune"]
    rows.append(["(80% pruned, no fine-tuning)", "—", "—", f"{r0['return_mean']:.1f} ± {r0['return_std']:.1f}",
                 f"{r0['teacher_return_mean']:.1f}"])
    return "\n".join([
        f"One SB3 PPO actor ([64, 64] tanh, CartPole-v1, trained {data['train_s']:.0f} s), imported twice: as its zip "
        f"(SB3's value net becomes the critic) and as a bare state dict + YAML (no critic: {data['warmup']} RLlib "
        f"iterations train one with the actor frozen). Both are pruned to 80% and fine-tuned {data['iterations']} "
        f"iterations; return over {data['episodes']} episodes (seeds 50,000+) of the exported artifact.", "",
        *md_table(["import", "critic warm-up s", "fine-tune (RLlib train) s", "return after fine-tuning", "teacher"],
                  rows)])


def sections() -> list:
    return data_sections("critic_warmup", "Imported policy without a critic: warm-up, then fine-tuning", MEASURED_BY,
                         render)


def main() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ap = benchmark_parser(__doc__, "critic_warmup")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=3)
    args = ap.parse_args()
    save_results(args.data, "critic_warmup", measure(args),
                 command_of("critic_warmup", args, ("episodes", "warmup", "iterations")), MEASURED_BY, render)


if __name__ == "__main__":
    main()
