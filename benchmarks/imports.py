"""Compressing policies trained outside autocompress: an SB3 PPO, an SB3 DQN and an RLlib PPO, each
trained here by its own library alone, imported with `teacher: {from: ...}`, then searched.

    python -m benchmarks.imports [--trials 16] [--episodes 100] [--only sb3_ppo sb3_dqn rllib_ppo]

For each: the teacher's return in the source framework vs in autocompress's runtime on the same
seeded episodes (`autocompress.inspect_import`), a search of --trials trials, and the best front
point, chosen on set A (return >= 0.95 x teacher on --episodes held-out episodes, seeds common.A_SEED.., then
fewest bytes) and reported on set B (--episodes fresh episodes, seeds common.SET_B_SEED.., never used to
choose), with its bytes and latency ratios. Results: docs/data/imports.json (benchmarks.report renders them).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks import report
from benchmarks.common import A_SEED, DATA, SEARCH_CODE, SET_B_SEED, data_sections, latency_words, record_meta, search_imported
from benchmarks.report import Section, Target

ENV = "CartPole-v1"
STORE = DATA / "imports.json"
#: techniques searched for every imported policy (distill widths: all smaller than each teacher)
TECHNIQUES = {
    "quantize": {"bits": {"low": 2, "high": 8}, "symmetric": {"choices": [True, False]}},
    "prune": {"sparsity": {"low": 0.3, "high": 0.95}},
    "structured": {"amount": {"low": 0.25, "high": 0.9}, "criterion": {"choices": ["l1", "importance"]}},
    "distill": {"hidden": {"choices": [[8], [16, 16], [32, 32]]}, "rounds": 2, "epochs": 20},
}


def train_sb3_ppo(path: Path) -> float:
    import stable_baselines3 as sb3

    t0 = time.time()
    model = sb3.PPO("MlpPolicy", ENV, seed=0, n_steps=1024, batch_size=64, n_epochs=10, learning_rate=3e-4,
                    policy_kwargs=dict(net_arch=dict(pi=[64, 64], vf=[64, 64])))
    model.learn(60_000)
    model.save(path)
    return time.time() - t0


def train_sb3_dqn(path: Path) -> float:
    """rl-baselines3-zoo's CartPole-v1 DQN settings; DQN's last iterate swings, so SB3's own EvalCallback
    keeps the best model (10 episodes every 5,000 steps, on its own seeds) and that is what is imported."""
    import stable_baselines3 as sb3
    from stable_baselines3.common.callbacks import EvalCallback
    from stable_baselines3.common.env_util import make_vec_env

    t0 = time.time()
    model = sb3.DQN("MlpPolicy", ENV, seed=0, learning_rate=2.3e-3, batch_size=64, buffer_size=100_000,
                    learning_starts=1000, gamma=0.99, target_update_interval=10, train_freq=256,
                    gradient_steps=128, exploration_fraction=0.16, exploration_final_eps=0.04,
                    policy_kwargs=dict(net_arch=[256, 256]))
    best = path.parent / "best"
    model.learn(60_000, callback=EvalCallback(make_vec_env(ENV, n_envs=1, seed=123), n_eval_episodes=10,
                                              eval_freq=5000, best_model_save_path=str(best), verbose=0))
    (best / "best_model.zip").rename(path)
    return time.time() - t0


def train_rllib_ppo(path: Path) -> float:
    from ray.rllib.algorithms.ppo import PPOConfig

    from autocompress.rl import ensure_ray

    ensure_ray()
    t0 = time.time()
    algo = (PPOConfig().environment(ENV).env_runners(num_env_runners=0).learners(num_learners=0)
            .training(train_batch_size_per_learner=4000, minibatch_size=128, num_epochs=6, lr=3e-4)
            .rl_module(model_config={"fcnet_hiddens": [128, 128], "fcnet_activation": "tanh"})
            .debugging(seed=0)).build_algo()
    try:
        for _ in range(25):
            r = algo.train()
            if r["env_runners"].get("episode_return_mean", 0) >= 480:
                break
        algo.save_to_path(str(path.resolve()))
    finally:
        algo.stop()
    return time.time() - t0


SOURCES = {"sb3_ppo": ("PPO", "model.zip", train_sb3_ppo), "sb3_dqn": ("DQN", "model.zip", train_sb3_dqn),
           "rllib_ppo": ("PPO", "checkpoint", train_rllib_ppo)}
#: what produced the section: the package (searches), and the measuring code (its rendering aside)
MEASURED_BY = (*SEARCH_CODE, *(f"benchmarks/common.py::{n}" for n in ("A_SEED", "SET_B_SEED", "choose_on_a_report_on_b",
                                                                         "search_imported")),
               *(f"benchmarks/imports.py::{n}" for n in ("ENV", "TECHNIQUES", "train_sb3_ppo", "train_sb3_dqn",
                                                         "train_rllib_ppo", "SOURCES", "measure", "main")))


def measure(name: str, trials: int, episodes: int, tmp: Path) -> dict:
    """Train `name` in its own library, check its import (`autocompress.inspect_import`), search it."""
    import autocompress as ac

    algorithm, filename, train = SOURCES[name]
    d = tmp / name
    d.mkdir()
    train_s = train(d / filename)
    spec = {"name": name, "env": ENV, "algorithm": algorithm, "seed": 0, "teacher": {"from": filename},
            "finetune": {"iterations": 2, "lr": 1e-4, "keep_best": algorithm == "DQN"},
            "eval": {"episodes": 20, "seed": 10_000}, "sample_steps": 2000}
    if algorithm == "PPO":
        spec["training"] = {"train_batch_size_per_learner": 2000, "minibatch_size": 128, "num_epochs": 4}
    else:
        spec["training"] = {"num_steps_sampled_before_learning_starts": 500}
        spec["reporting"] = {"min_sample_timesteps_per_iteration": 1000}
    (d / "trial.yaml").write_text(yaml.safe_dump(spec))
    check = ac.inspect_import(d / "trial.yaml", episodes=20)
    return {"train_s": train_s, "import": {k: check[k] for k in ("layers", "source_return", "source_return_std",
                                                                 "return", "return_std", "action_agreement")},
            **search_imported(d, spec, TECHNIQUES, trials, episodes)}


def render(data: dict) -> str:
    n = data["episodes"]
    lines = [f"Each policy is trained on {ENV} by its own library alone (settings in the script), imported with "
             "`teacher: {from: ...}`, checked with `autocompress.inspect_import` (20 seeded episodes, seeds "
             "10,000+, the same for both teacher columns), then searched (quantize, prune, structured, distill; "
             f"{data['trials']} trials, min_return_ratio 0.9; 2 fine-tune iterations per trial). The best front point "
             f"is chosen on set A: the fewest bytes whose return over {n} held-out episodes (seeds {A_SEED:,}+, never "
             f"seen by the search) is ≥ 0.95 x the teacher's on the same episodes; it is reported on set B, {n} "
             f"fresh episodes (seeds {SET_B_SEED:,}+) it was not chosen on. Latency ratio as the search measured it: "
             + "; ".join(sorted({latency_words(data[k].get("runtime", "numpy")) for k in SOURCES if k in data})) + ".",
             "",
             "| policy | trained in | teacher return, source | teacher return, autocompress | same action | "
             "search | best front point | return ratio, set B (set A) | bytes ratio | latency ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in SOURCES:
        if name not in data:
            continue
        v, rep, b = data[name], data[name]["import"], data[name]["best"]
        lines.append(
            f"| {name} ({', '.join(rep['layers'])}) | {v['train_s']:.0f} s | {rep['source_return']:.1f} ± "
            f"{rep['source_return_std']:.1f} | {rep['return']:.1f} ± {rep['return_std']:.1f} | "
            f"{rep['action_agreement']:.1%} | {v['complete']} complete, {v['stopped']} stopped, {v['wall_s']:.0f} s | "
            + (f"trial {b['trial']}: `{json.dumps(b['config'])}` | {b['ratio_b']:.3f} ({b['ratio_a']:.3f}) | "
               f"{b['bytes_ratio']:.4f} | {b['latency_ratio']:.3f} |" if b else "none at ≥ 0.95 on A | | | |"))
    lines += ["", "Read with care: CartPole saturates (a teacher scores ~500, and a distilled 8-unit student can too), "
              "so these rows show that imported policies flow through import, search, fine-tuning, export and "
              "re-evaluation on episodes the search never saw, not how hard they compress on a harder task."]
    return "\n".join(lines)


def targets(data: dict) -> list[Target]:
    """No issue sets a target here: what the searches found, as measured."""
    return [Target(f"Imports: a {data['trials']}-trial search on {name} (trained outside autocompress)",
                   f"best point {b['ratio_b']:.3f} of the teacher's return on set B at {1 / b['bytes_ratio']:.0f}x "
                   "fewer bytes" if (b := data[name]["best"]) else "no front point at ≥ 0.95 on set A", None)
            for name in SOURCES if name in data]


def sections() -> list[Section]:
    return data_sections("imports", "Imported policies: trained elsewhere, compressed here", MEASURED_BY, render, targets)


def main() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--only", nargs="+", default=list(SOURCES))
    args = ap.parse_args()
    data = json.loads(STORE.read_text()) if STORE.exists() else {}
    data.update(trials=args.trials, episodes=args.episodes)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            data[name] = measure(name, args.trials, args.episodes, Path(tmp))
            print(name, json.dumps(data[name])[:400], flush=True)
            parts = [p for p in SOURCES if p in data]  # what the data holds, whichever runs made it
            record_meta(data, "imports", f"python -m benchmarks.imports --trials {args.trials} --episodes "
                        f"{args.episodes} --only {' '.join(parts)}", MEASURED_BY)
            STORE.write_text(json.dumps(data, indent=1))
    report.main([])


if __name__ == "__main__":
    main()
