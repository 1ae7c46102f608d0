"""Recurrent policies (issue 28) on CartPole with its velocities hidden (autocompress.envs:StatelessCartPole):
an SB3-contrib RecurrentPPO (MlpLstmPolicy) and an RLlib PPO with use_lstm, each trained by its own library
alone, imported with `teacher: {from: ...}`, then searched; beside them the shipped LSTM teacher
(trials/stateless_cartpole_ppo.yaml) against a feed-forward teacher of the same budget.

    python -m benchmarks.recurrent [--trials 16] [--episodes 100] [--only sb3_lstm rllib_lstm teachers]

Per search: the best front point chosen on held-out set A (return >= 0.95 x the teacher's on --episodes
episodes, seeds 50,000+, then fewest bytes), reported on fresh set B (seeds common.SET_B_SEED..), its
bytes and latency ratios, and where a fine-tuned trial's time goes (the trials' timed stages, summed).
Results: docs/data/recurrent.json (benchmarks.report renders them).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks import report
from benchmarks.common import A_SEED, DATA, ROOT, SEARCH_CODE, SET_B_SEED, data_sections, record_meta
from benchmarks.common import search_imported as common_search
from benchmarks.report import Section, Target

ENV = "autocompress.envs:StatelessCartPole"
STORE = DATA / "recurrent.json"
#: the techniques that compress a recurrent net (techniques/*.py `recurrent = True`); both teachers have a
#: 64-unit LSTM and one 64-wide hidden layer (sb3's after the cell, RLlib's before it)
TECHNIQUES = {"distill": {"hidden": {"choices": [[16], [32]]}, "units": {"choices": [16, 32]}},
              "structured": {"amount": {"low": 0.25, "high": 0.75}},
              "quantize": {"bits": {"low": 2, "high": 8}, "symmetric": {"choices": [True, False]},
                           "mode": {"choices": ["ptq", "qat"]}},
              "prune": {"sparsity": {"low": 0.3, "high": 0.9}},
              "share": {"bits": {"low": 2, "high": 6}}}
CODE = ("benchmarks/recurrent.py", *SEARCH_CODE)  # searches
#: what produced the section: the package, and this script's measuring code (its rendering aside)
MEASURED_BY = (*SEARCH_CODE, "trials/stateless_cartpole_ppo.yaml", "benchmarks/common.py::SET_B_SEED",
               "benchmarks/common.py::A_SEED", "benchmarks/common.py::choose_on_a_report_on_b",
               "benchmarks/common.py::search_imported",
               *(f"benchmarks/recurrent.py::{n}" for n in ("ENV", "TECHNIQUES", "train_sb3_lstm",
                                                           "train_rllib_lstm", "SOURCES", "search_imported",
                                                           "teachers", "main")))


def train_sb3_lstm(path: Path) -> float:
    """rl-baselines3-zoo's RecurrentPPO settings for CartPoleNoVel-v1 (its velocities hidden, as here)."""
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.env_util import make_vec_env
    from torch import nn

    from autocompress.envs import StatelessCartPole

    t0 = time.time()
    model = RecurrentPPO("MlpLstmPolicy", make_vec_env(StatelessCartPole, n_envs=8, seed=0), seed=0, n_steps=32,
                         batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0, learning_rate=1e-3,
                         policy_kwargs=dict(ortho_init=False, activation_fn=nn.ReLU, lstm_hidden_size=64,
                                            enable_critic_lstm=True, net_arch=dict(pi=[64], vf=[64])))
    model.learn(100_000)
    model.save(path)
    return time.time() - t0


def train_rllib_lstm(path: Path) -> float:
    from ray.rllib.algorithms.ppo import PPOConfig

    from autocompress.envs import StatelessCartPole
    from autocompress.rl import ensure_ray

    ensure_ray()
    t0 = time.time()
    algo = (PPOConfig().environment(StatelessCartPole).env_runners(num_env_runners=0).learners(num_learners=0)
            .training(train_batch_size_per_learner=2000, minibatch_size=128, num_epochs=6, lr=1e-3, vf_loss_coeff=0.01)
            .rl_module(model_config={"use_lstm": True, "lstm_cell_size": 64, "max_seq_len": 20,
                                     "fcnet_hiddens": [64], "fcnet_activation": "tanh"})
            .debugging(seed=0)).build_algo()
    try:
        for _ in range(60):
            if algo.train()["env_runners"].get("episode_return_mean", 0) >= 450:
                break
        algo.save_to_path(str(path.resolve()))
    finally:
        algo.stop()
    return time.time() - t0


SOURCES = {"sb3_lstm": ("model.zip", train_sb3_lstm), "rllib_lstm": ("checkpoint", train_rllib_lstm)}


def search_imported(name: str, trials: int, episodes: int, tmp: Path) -> dict:
    filename, train = SOURCES[name]
    d = tmp / name
    d.mkdir()
    train_s = train(d / filename)
    spec = {"name": name, "env": ENV, "algorithm": "PPO", "seed": 0, "teacher": {"from": filename},
            "training": {"train_batch_size_per_learner": 2000, "minibatch_size": 128, "num_epochs": 4},
            "finetune": {"iterations": 2, "lr": 1e-4}, "eval": {"episodes": 20, "seed": 10_000}}
    return {"train_s": train_s, **common_search(d, spec, TECHNIQUES, trials, episodes)}


def teachers(episodes: int, tmp: Path) -> dict:
    """The shipped LSTM teacher and a feed-forward teacher of the same budget (the spec less `rnn`, trained to its
    max_iterations), each on the spec's evaluation episodes."""
    import yaml

    import autocompress as ac

    shipped = ROOT / "trials" / "stateless_cartpole_ppo.yaml"
    raw = yaml.safe_load(shipped.read_text())
    del raw["teacher"]["rnn"]
    raw["teacher"]["hidden"] = [64, 64]  # the cell's 64 units as a second hidden layer
    (tmp / "flat.yaml").write_text(yaml.safe_dump(raw))
    out = {}
    for name, path in (("lstm (committed)", shipped), ("feed-forward [64, 64]", tmp / "flat.yaml")):
        s = ac.load_trial_spec(path)
        t0 = time.time()
        teacher = ac.teach(s, cache_dir=tmp / "teachers")
        returns = ac.evaluate(ac.Policy.from_bytes(teacher.artifact(), "numpy"), s)
        out[name] = {"return_mean": float(returns.mean()), "return_std": float(returns.std()),
                     "episodes": len(returns), "seconds": time.time() - t0}
    return out


def render(data: dict) -> str:
    lines = []
    if "teachers" in data:
        lines += ["Teachers on `trials/stateless_cartpole_ppo.yaml` (CartPole-v1, cart position and pole angle only), "
                  "returns over its 20 evaluation episodes (seeds 10,000..):", "",
                  "| teacher | return | seconds (training, or loading the committed one) |", "|---|---|---|"]
        lines += [f"| {k} | {v['return_mean']:.1f} ± {v['return_std']:.1f} | {v['seconds']:.0f} |"
                  for k, v in data["teachers"].items()]
    searches = {k: v for k, v in data.items() if k in SOURCES}
    if searches:
        n = data.get("episodes", 100)
        lines += ["", f"Each policy trained by its own library alone (settings in the script), imported with "
                  f"`teacher: {{from: ...}}` and searched ({data.get('trials', 16)} trials; "
                  f"{', '.join(data['techniques'])}: "
                  "the techniques that compress a recurrent net; 2 PPO fine-tune iterations per trial, the state "
                  f"carried). Best point: chosen on set A ({n} held-out episodes, seeds {A_SEED:,}..: return ≥ 0.95 x "
                  f"the teacher's, then fewest bytes), reported on set B ({n} fresh episodes, seeds {SET_B_SEED:,}..).", "",
                  "| source | trained in | teacher return | search | best point | return ratio, B (A) | bytes ratio | "
                  "latency ratio |", "|---|---|---|---|---|---|---|---|"]
        for k, v in searches.items():
            b = v["best"]
            lines.append(f"| {k} | {v['train_s']:.0f} s | {v['teacher_return']:.1f} | {v['complete']} complete, "
                         f"{v['stopped']} stopped, {v['wall_s']:.0f} s | " + (
                             f"trial {b['trial']}: `{json.dumps(b['config'])}` | {b['ratio_b']:.3f} ({b['ratio_a']:.3f})"
                             f" | {b['bytes_ratio']:.4f} | {b['latency_ratio']:.3f} |" if b else
                             "none at ≥ 0.95 on A | | | |"))
        lines += ["", "Where a compressed trial's time goes (its timed stages summed over the search's trials):", ""]
        for k, v in searches.items():
            total, stages = v["trial_seconds"] or 1.0, v["stages"]
            top = sorted(stages.items(), key=lambda kv: -kv[1])[:6]
            lines.append(f"- {k}: {v['trial_seconds']:.0f} trial-seconds; " + ", ".join(
                f"{s} {sec:.0f} s ({sec / total:.0%})" for s, sec in top))
    return "\n".join(lines)


def targets(data: dict) -> list[Target]:
    out = []
    if "teachers" in data:
        t = data["teachers"]
        out.append(Target("Recurrent: the shipped LSTM teacher solves the stateless spec, a feed-forward one of the "
                          "same budget does not", ", ".join(f"{k} {v['return_mean']:.1f}" for k, v in t.items()),
                          None))
    for k in SOURCES:
        if k in data and data[k]["best"]:
            b = data[k]["best"]
            out.append(Target(f"Recurrent: a 16-trial search on {k}", f"best point {b['ratio_b']:.3f} of the "
                              f"teacher's return on set B at {1 / b['bytes_ratio']:.1f}x fewer bytes, latency ratio "
                              f"{b['latency_ratio']:.2f}", None))
    return out


def sections() -> list[Section]:
    return data_sections("recurrent", "Recurrent policies: imported LSTMs searched, and the LSTM teacher", MEASURED_BY,
                         render, targets)


def main() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--only", nargs="+", default=[*SOURCES, "teachers"])
    args = ap.parse_args()
    data = json.loads(STORE.read_text()) if STORE.exists() else {}
    data.update(trials=args.trials, episodes=args.episodes, techniques=list(TECHNIQUES))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            data[name] = teachers(args.episodes, Path(tmp)) if name == "teachers" else \
                search_imported(name, args.trials, args.episodes, Path(tmp))
            print(name, json.dumps(data[name])[:400], flush=True)
            parts = [p for p in (*SOURCES, "teachers") if p in data]  # what the data holds, whichever runs made it
            record_meta(data, "recurrent", "python -m benchmarks.recurrent --trials "
                        f"{args.trials} --episodes {args.episodes} --only {' '.join(parts)}",
                        CODE + ("trials/stateless_cartpole_ppo.yaml",))
            STORE.write_text(json.dumps(data, indent=1))
    report.main([])


if __name__ == "__main__":
    main()
