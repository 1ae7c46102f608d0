"""Policy distillation into a smaller student: an MLP, or for a conv teacher a smaller CNN.

The student (hidden widths given; for a conv teacher its conv channels too, `channels`: the student
keeps the first len(channels) conv layers' kernel, stride and padding, with those channels; without
`channels` it keeps the teacher's conv encoder shape, freshly initialised) is trained to match the teacher's outputs on states
visited by the teacher and then by the student itself (DAgger-style rounds, so the
student also learns where its own mistakes lead). The loss per head:
- policy logits (PPO, discrete): KL between temperature-softened action distributions;
- Q-values (DQN): KL at a low temperature (Rusu et al. 2016, "Policy Distillation": it
  matches the argmax, which is what acts, far better than MSE where action gaps are small)
  plus a small MSE term that keeps the Q scale TD fine-tuning starts from. Measured on the
  LunarLander DQN teacher (211 return), a [64, 64] student before any fine-tuning: 80 with
  MSE alone, 226 with this loss; a [16, 16] student: 247;
- continuous heads (action mean / log-std): MSE.
RL fine-tuning follows in the pipeline.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field, field_validator

from autocompress.nets import PolicyNet
from autocompress.techniques.base import Context, TechniqueConfig, register
from autocompress.techniques.per_layer import layer_count


class DistillConfig(TechniqueConfig):
    name = "distill"
    stage = "structural"
    order = 10
    for_critic = False
    gentle = {"hidden": "high", "channels": "high"}
    stack_rank = 0
    hidden: list[int] = Field(..., min_length=1, description="student hidden widths, e.g. [32, 32]")
    channels: list[int] | None = Field(None, min_length=1, description="conv teacher: the student's conv channels, "
                                       "e.g. [8]: the first len(channels) of the teacher's conv layers' geometry "
                                       "[default: the teacher's channels]")
    temperature: float = Field(1.0, gt=0.0, le=10.0, description="softmax temperature for policy logits")
    q_temperature: float = Field(0.01, gt=0.0, le=10.0, description="softmax temperature for Q-values (DQN)")
    q_mse_weight: float = Field(0.01, ge=0.0, description="weight of the Q-value MSE term (DQN)")
    rounds: int = Field(3, ge=1, le=20, description="collect-states -> train rounds")
    steps_per_round: int = Field(2000, ge=10, description="env steps collected by the student per round")
    epochs: int = Field(30, ge=1, description="passes over the state set per round")
    lr: float = Field(3e-3, gt=0.0, lt=1.0)
    batch_size: int = Field(256, ge=8)

    @field_validator("hidden", "channels")
    @classmethod
    def _positive(cls, v):
        if v is not None and any(w < 1 for w in v):
            raise ValueError("widths must be >= 1")
        return v

    def check_against(self, spec) -> None:
        if spec.teacher.from_:  # an imported teacher's widths are in its file: checked when applied
            return
        filters = getattr(spec.teacher, "conv_filters", None) or []
        check_smaller(list(self.hidden), list(spec.teacher.hidden), self.channels, [int(f[0]) for f in filters])

    def n_layers(self, teacher_conv_layers: int) -> int:
        """Layers of the student of a teacher with `teacher_conv_layers` conv layers (per-layer settings
        index them): its conv layers, hidden layers and output layer."""
        return layer_count(teacher_conv_layers if self.channels is None else len(self.channels), self.hidden)


def check_smaller(student: list[int], teacher: list[int], channels: list[int] | None = None,
                  teacher_channels: list[int] | tuple = ()) -> None:
    """Smaller = no deeper, no layer wider (conv channels and hidden widths), and not the same widths.
    `channels` None: the student keeps the teacher's conv channels. ValueError naming the key."""
    if channels is not None and not teacher_channels:
        raise ValueError(f"distill.channels {channels}: the teacher has no conv layers (give distill.hidden only)")
    channels = list(teacher_channels) if channels is None else list(channels)
    if len(channels) > len(teacher_channels) or any(a > b for a, b in zip(channels, teacher_channels)):
        raise ValueError(f"distill.channels {channels} is not smaller than the teacher's conv channels "
                         f"{list(teacher_channels)} (no more layers, none wider)")
    if len(student) > len(teacher) or any(a > b for a, b in zip(student, teacher)) or \
            (student == teacher and channels == list(teacher_channels)):
        raise ValueError(f"distill.hidden {student} is not smaller than the teacher's hidden {teacher}"
                         + (f" (with conv channels {channels})" if channels else ""))


def student_net(teacher: PolicyNet, cfg: DistillConfig) -> PolicyNet:
    """A fresh student for `teacher`: an MLP, or conv layers with the teacher's first geometries (explicit
    padding) and `cfg.channels`, then the MLP head. ValueError when it would not be smaller."""
    convs = teacher.conv_layers
    teacher_filters = teacher.conv_filters()
    check_smaller(list(cfg.hidden), teacher.hidden_widths()[convs:], cfg.channels,
                  [f[0] for f in teacher_filters])
    head_act = teacher.layers[convs].act if convs < len(teacher.layers) - 1 else teacher.layers[0].act
    if not convs:
        return PolicyNet.mlp(teacher.in_dim, list(cfg.hidden), teacher.out_dim, act=head_act)
    channels = cfg.channels if cfg.channels is not None else [f[0] for f in teacher_filters]
    filters = [[c, *f[1:]] for c, f in zip(channels, teacher_filters)]
    student = PolicyNet.cnn(teacher.input["shape"], teacher.input["layout"], filters, list(cfg.hidden),
                            teacher.out_dim, act=head_act, conv_act=teacher.layers[0].act)
    if student.num_params() >= teacher.num_params():  # fewer conv layers: a larger map into the head
        raise ValueError(f"distill.channels {channels} + hidden {list(cfg.hidden)}: the student has "
                         f"{student.num_params()} parameters, not fewer than the teacher's {teacher.num_params()} "
                         "(a shallower encoder leaves a larger image for the first hidden layer)")
    return student


def softened_kl(student_out: torch.Tensor, teacher_out: torch.Tensor, t: float) -> torch.Tensor:
    p = torch.log_softmax(teacher_out / t, -1)
    q = torch.log_softmax(student_out / t, -1)
    return torch.nn.functional.kl_div(q, p, log_target=True, reduction="batchmean")


def distill_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, head: str, cfg: DistillConfig,
                 q_values: bool = False) -> torch.Tensor:
    mse = torch.nn.functional.mse_loss(student_out, teacher_out)
    if head != "discrete":
        return mse
    if q_values:
        return softened_kl(student_out, teacher_out, cfg.q_temperature) + cfg.q_mse_weight * mse
    return softened_kl(student_out, teacher_out, cfg.temperature) * cfg.temperature ** 2


def train_student(student: PolicyNet, teacher: PolicyNet, states: np.ndarray, cfg: DistillConfig,
                  head: str, gen: torch.Generator, q_values: bool = False) -> float:
    x = torch.as_tensor(states, dtype=torch.float32)
    with torch.no_grad():
        y = teacher(x)
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    loss = torch.tensor(float("nan"))
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            loss = distill_loss(student(x[idx]), y[idx], head, cfg, q_values)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return loss.item()


@register(DistillConfig)
def _distill(net: PolicyNet, cfg: DistillConfig, ctx: Context) -> PolicyNet:
    if ctx.sample_obs is None:
        raise ValueError("distill needs teacher-visited observations (Context.sample_obs)")
    torch.manual_seed(ctx.seed)
    gen = torch.Generator().manual_seed(ctx.seed)
    student = student_net(net, cfg)
    states = np.asarray(ctx.sample_obs, dtype=np.float32)
    for r in range(cfg.rounds):
        loss = train_student(student, net, states, cfg, ctx.head, gen, ctx.q_values)
        ctx.log(f"distill: round {r + 1}/{cfg.rounds}, {len(states)} states, loss {loss:.4f}")
        if ctx.rollout_obs is not None and r + 1 < cfg.rounds:
            visited = ctx.rollout_obs(student, cfg.steps_per_round, ctx.seed + 7919 * (r + 1))
            states = np.concatenate([states, visited])
    return student
