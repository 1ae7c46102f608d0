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
    def setup(self):
        self.actor = PolicyNet.from_spec(self.model_config["actor"])
        if self.model_config.get("critic"):  # a compressed critic (techniques config `critic:`)
            self.critic = PolicyNet.from_spec(self.model_config["critic"])
        else:
            self.critic = PolicyNet.mlp(int(np.prod(self.observation_space.shape)),
                                        self.model_config["critic_hidden"], 1, self.model_config["activation"])

    def _forward(self, batch, **kwargs):
        return {Columns.ACTION_DIST_INPUTS: self.actor(batch[Columns.OBS])}

    def compute_values(self, batch, embeddings=None):
        return self.critic(batch[Columns.OBS]).squeeze(-1)


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
