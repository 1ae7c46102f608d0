"""The RLlib classes each algorithm's session is built from (see rl.py): our compressible RLModules
and the learners that add L1 on the deployed net. Defined once, at module level, so Ray pickles
them by reference. This module imports Ray: `rl` imports it on first use, never at import time.
"""

from __future__ import annotations

import numpy as np
import torch
from ray.rllib.algorithms.dqn import DQNConfig
from ray.rllib.algorithms.dqn.dqn_catalog import DQNCatalog
from ray.rllib.algorithms.dqn.torch.default_dqn_torch_rl_module import DefaultDQNTorchRLModule
from ray.rllib.algorithms.dqn.torch.dqn_torch_learner import DQNTorchLearner
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.algorithms.sac import SACConfig
from ray.rllib.algorithms.sac.sac_catalog import SACCatalog
from ray.rllib.algorithms.sac.torch.default_sac_torch_rl_module import DefaultSACTorchRLModule
from ray.rllib.algorithms.sac.torch.sac_torch_learner import SACTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.models.base import ENCODER_OUT
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.schedules.scheduler import Scheduler
from torch import nn

from autocompress.algos import ALGOS
from autocompress.nets import PolicyNet


class ObsEncoder(nn.Module):
    """RLlib's default modules expect an encoder; ours passes the observation through."""

    def forward(self, batch):
        return {ENCODER_OUT: batch[Columns.OBS]}


class CompressiblePPOModule(TorchRLModule, ValueFunctionAPI):
    """PPO: obs -> actor (PolicyNet) -> logits; the critic (PolicyNet) -> value.

    A recurrent actor makes the module stateful (RLlib's stateful RLModule API): batches are [B, T, ...] with
    Columns.STATE_IN {net: (B, state_size)} for each recurrent net (the actor, and its critic: rl.default_critic),
    the state at each row's first step; each net runs over T with its own `step` (PolicyNet.sequence), so
    masks, codebooks and quantizers act exactly as in the deployed net. RLlib cuts episodes into rows of
    model_config["max_seq_len"] steps (zero-padded at the end; no episode starts inside a row)."""

    def setup(self):
        self.actor = PolicyNet.from_spec(self.model_config["actor"])
        if self.model_config.get("critic"):  # a compressed or recurrent critic (rl.default_critic), or an import's
            self.critic = PolicyNet.from_spec(self.model_config["critic"])
        else:
            self.critic = PolicyNet.mlp(int(np.prod(self.observation_space.shape)),
                                        self.model_config["critic_hidden"], 1, self.model_config["activation"])

    def _recurrent(self) -> dict[str, PolicyNet]:
        return {name: net for name, net in (("actor", self.actor), ("critic", self.critic)) if net.rnn is not None}

    def get_initial_state(self) -> dict:
        return {name: np.zeros(net.rnn.state_size, np.float32) for name, net in self._recurrent().items()}

    def _forward(self, batch, **kwargs):
        if not self._recurrent():
            return {Columns.ACTION_DIST_INPUTS: self.actor(batch[Columns.OBS])}
        # acting: every recurrent net's state moves on (the critic's too: the next rollout step starts from it)
        out = {name: over_time(net, batch, name) for name, net in self._recurrent().items()}
        return {Columns.ACTION_DIST_INPUTS: out["actor"][0], Columns.STATE_OUT: {k: v[1] for k, v in out.items()}}

    def _forward_train(self, batch, **kwargs):
        if not self._recurrent():
            return self._forward(batch)
        # the learner reads no STATE_OUT: the critic runs once, in compute_values
        return {Columns.ACTION_DIST_INPUTS: over_time(self.actor, batch, "actor")[0]}

    def compute_values(self, batch, embeddings=None):
        if self.critic.rnn is not None:
            return over_time(self.critic, batch, "critic")[0].squeeze(-1)
        return self.critic(batch[Columns.OBS]).squeeze(-1)


def over_time(net: PolicyNet, batch: dict, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A recurrent net over a [B, T, ...] batch from its STATE_IN[name] (B, state_size): (outputs [B, T, out],
    the state after the last step), stepped with the net's own `step`."""
    obs = batch[Columns.OBS]
    outs, state = net.sequence(obs.transpose(0, 1), batch[Columns.STATE_IN][name])
    return outs.transpose(0, 1), state


class CompressibleDQNModule(DefaultDQNTorchRLModule):
    """DQN with a plain (non-dueling) Q-network: obs -> PolicyNet -> Q-values."""

    def setup(self):
        self.uses_dueling, self.num_atoms = False, 1
        self.uses_double_q = self.model_config["double_q"]
        self.epsilon_schedule = Scheduler(fixed_value_or_schedule=self.model_config["epsilon"],
                                          framework=self.framework)
        self.encoder = ObsEncoder()
        self.af = PolicyNet.from_spec(self.model_config["actor"])


class CompressibleSACModule(DefaultSACTorchRLModule):
    """SAC whose actor is obs -> PolicyNet -> (mean, log_std); twin Q nets as RLlib builds them."""

    def setup(self):
        super().setup()
        self.pi_encoder = ObsEncoder()
        self.pi = PolicyNet.from_spec(self.model_config["actor"])


class _L1:
    """Mixed in before an algorithm's torch learner: optional L1 on the deployed net's weights (mean |w|,
    scale-free). `algorithm` names the net's attribute in the module (ALGOS[...].actor)."""

    algorithm: str

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        loss = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
        l1 = config.learner_config_dict.get("l1", 0.0)
        if l1:
            net = getattr(self.module[module_id].unwrapped(), ALGOS[self.algorithm].actor)
            loss = loss + l1 * torch.stack([layer.raw_weight().abs().mean() for layer in net.layers]).mean()
        return loss


class PPOLearner(_L1, PPOTorchLearner):
    algorithm = "PPO"


class DQNLearner(_L1, DQNTorchLearner):
    algorithm = "DQN"


class SACLearner(_L1, SACTorchLearner):
    algorithm = "SAC"


# algorithm -> (config class, module class, learner class, catalog class)
CLASSES = {
    "PPO": (PPOConfig, CompressiblePPOModule, PPOLearner, None),
    "DQN": (DQNConfig, CompressibleDQNModule, DQNLearner, DQNCatalog),
    "SAC": (SACConfig, CompressibleSACModule, SACLearner, SACCatalog),
}
