"""What differs between the RL algorithms (PPO, DQN, SAC), as data: one row each in `ALGOS`.

Every module that behaves differently per algorithm reads a named field here instead of testing
the algorithm's name. Plain data, no torch or Ray: `config` checks a spec against it, and `rl`
(which imports `config`) builds sessions from it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Algo:
    """One algorithm's row: its RLlib defaults, where its deployed net lives, and the rules below."""

    actor: str                    # state-dict prefix (and module attribute) of the deployed net
    copies: tuple[str, ...]       # prefixes that must hold the same net (target networks)
    squash: str                   # continuous actions: 'clip' (PPO) or 'tanh' (SAC) before unsquashing
    defaults: dict                # AlgorithmConfig.training() defaults; the trial spec overrides them
    reporting: dict               # AlgorithmConfig.reporting() defaults
    # The deployed net is the Q-network (DQN): it outputs Q-values, acts greedily on them, and nothing
    # trains beside it (no critic to import, warm up or compress; no log-std to append).
    q_values: bool
    # The critic is a PolicyNet in our own RLModule (PPO's value net): it can be compressed, and a conv
    # actor's critic gets the same encoder. Where False and not q_values, RLlib builds the critic (SAC's
    # twin Q nets are its MLPs): it cannot be compressed, nor given a conv encoder.
    own_critic: bool
    critic_note: str              # why the critic cannot be compressed (where own_critic is False)
    lr_keys: tuple[str, ...]      # the training() keys a fine-tune learning rate replaces
    # Exploration is epsilon-greedy on a schedule (DQN): a fine-tune starts at the schedule's final epsilon.
    epsilon_schedule: bool = False
    # Our module for it carries a recurrent (LSTM / GRU) net's state (PPO): it trains and fine-tunes one.
    recurrent: bool = False

    @property
    def conv_encoder(self) -> bool:
        """Every net that sees observations is ours, so a conv encoder can be built for all of them."""
        return self.q_values or self.own_critic


ALGOS = {
    "PPO": Algo("actor", (), "clip", {"lr": 3e-4, "train_batch_size_per_learner": 4000, "minibatch_size": 128,
                                      "num_epochs": 6, "vf_loss_coeff": 0.01, "gamma": 0.99}, {},
                q_values=False, own_critic=True, critic_note="", lr_keys=("lr",), recurrent=True),
    "DQN": Algo("af", ("_target_af",), "none", {
        "lr": 5e-4, "train_batch_size_per_learner": 32, "dueling": False, "double_q": True, "num_atoms": 1,
        "n_step": 3, "target_network_update_freq": 500, "epsilon": [(0, 1.0), (10000, 0.02)],
        "replay_buffer_config": {"type": "EpisodeReplayBuffer", "capacity": 50000}},
        {"min_sample_timesteps_per_iteration": 1000},
        q_values=True, own_critic=False, critic_note="the Q-network is the deployed net itself", lr_keys=("lr",),
        epsilon_schedule=True),
    "SAC": Algo("pi", (), "tanh", {
        "actor_lr": 3e-4, "critic_lr": 3e-4, "alpha_lr": 3e-4, "train_batch_size_per_learner": 256,
        "num_steps_sampled_before_learning_starts": 1000, "n_step": 1, "tau": 0.005,
        "replay_buffer_config": {"type": "EpisodeReplayBuffer", "capacity": 100000}},
        {"min_sample_timesteps_per_iteration": 1000},
        q_values=False, own_critic=False, critic_note="the twin Q nets are RLlib's own modules",
        lr_keys=("actor_lr", "critic_lr")),
}
