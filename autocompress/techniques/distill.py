"""Policy distillation into a smaller student: an MLP, for a conv teacher a smaller CNN, for a recurrent
teacher a smaller recurrent net.

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

A recurrent (LSTM / GRU) teacher's student is recurrent too: `hidden` its feed-forward widths (as
`teacher.hidden`), its cell of `units` (default: the teacher's) of kind `cell` (default: the teacher's;
a GRU from an LSTM is allowed) after as many of them as the teacher's cell (or all, if fewer). It learns
on whole episodes, teacher's and its own: all of them padded to the longest and stepped together from
a zero state, `seq_len` steps per update with the state carried from the window before and its
gradient cut (truncated BPTT), the padding left out of the loss.
"""

from __future__ import annotations

from typing import Literal

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
    units: int | None = Field(None, ge=1, description="recurrent teacher: the student's cell units "
                              "[default: the teacher's]")
    cell: Literal["lstm", "gru"] | None = Field(None, description="recurrent teacher: the student's cell "
                                                "[default: the teacher's]")
    seq_len: int = Field(32, ge=1, description="recurrent teacher: steps backpropagated through per update "
                         "(the state carried on, its gradient cut)")
    recurrent = True  # a recurrent teacher's student is recurrent (see the module doc)

    @field_validator("hidden", "channels")
    @classmethod
    def _positive(cls, v):
        if v is not None and any(w < 1 for w in v):
            raise ValueError("widths must be >= 1")
        return v

    def check_against(self, spec) -> None:
        if spec.teacher.from_:  # an imported teacher's widths are in its file: checked when applied
            return
        t = spec.teacher
        if t.rnn is not None:
            before = t.rnn.layers_before(list(t.hidden))
            self.check_recurrent_student(with_cell(list(t.hidden), t.rnn.hidden, before), before)
            return
        self.check_recurrent_student(None, 0)
        filters = getattr(spec.teacher, "conv_filters", None) or []
        check_smaller(list(self.hidden), list(spec.teacher.hidden), self.channels, [int(f[0]) for f in filters])

    def check_recurrent_student(self, teacher_widths: list[int] | None, before: int) -> None:
        """`units` / `cell` only for a recurrent teacher (`teacher_widths`: its hidden widths, the cell's units
        after `before` of them; None: not recurrent), whose student must be smaller. ValueError naming the key."""
        if teacher_widths is None:
            given = [k for k in ("units", "cell") if getattr(self, k) is not None]
            if given:
                raise ValueError(f"distill.{given[0]}: the teacher is not recurrent (it has no LSTM / GRU layer)")
            return
        before = min(before, len(self.hidden))
        units = self.units or teacher_widths[before]
        student = with_cell(list(self.hidden), units, before)
        if len(student) > len(teacher_widths) or any(a > b for a, b in zip(student, teacher_widths)) or \
                student == teacher_widths:
            raise ValueError(f"distill.hidden {list(self.hidden)} with a cell of {units} units (distill.units): "
                             f"widths {student} are not smaller than the teacher's {teacher_widths} (its cell's "
                             "units in their place)")

    def n_layers(self, teacher_conv_layers: int, recurrent: bool = False) -> int:
        """Layers of the student of a teacher with `teacher_conv_layers` conv layers (per-layer settings
        index them): its conv layers, hidden layers, its cell (`recurrent` teacher) and output layer."""
        return layer_count(teacher_conv_layers if self.channels is None else len(self.channels),
                           self.hidden) + recurrent


def with_cell(hidden: list[int], units: int, before: int) -> list[int]:
    """Hidden widths with a cell's units after the first `before` of them (PolicyNet.hidden_widths' order)."""
    return [*hidden[:before], units, *hidden[before:]]


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
    """A fresh student for `teacher`: an MLP, conv layers with the teacher's first geometries (explicit
    padding) and `cfg.channels` then the MLP head, or for a recurrent teacher an MLP with a cell in its
    teacher's place. ValueError when it would not be smaller."""
    convs, rnn = teacher.conv_layers, teacher.rnn
    head_act = teacher.layers[convs].act if convs < len(teacher.layers) - 1 else teacher.layers[0].act
    if rnn is not None:
        cfg.check_recurrent_student(teacher.hidden_widths(), rnn.at)
        return PolicyNet.recurrent_mlp(teacher.in_dim, list(cfg.hidden), teacher.out_dim, head_act,
                                       cfg.cell or rnn.cell, cfg.units or rnn.hidden, min(rnn.at, len(cfg.hidden)))
    cfg.check_recurrent_student(None, 0)
    teacher_filters = teacher.conv_filters()
    check_smaller(list(cfg.hidden), teacher.hidden_widths()[convs:], cfg.channels,
                  [f[0] for f in teacher_filters])
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


def train_recurrent_student(student: PolicyNet, teacher: PolicyNet, episodes: list[np.ndarray], cfg: DistillConfig,
                            head: str, q_values: bool = False) -> float:
    """Truncated BPTT over whole episodes, all stepped together (see the module doc)."""
    steps = max(map(len, episodes))
    x = torch.zeros(steps, len(episodes), *episodes[0].shape[1:])
    valid = torch.zeros(steps, len(episodes), dtype=torch.bool)
    for b, e in enumerate(episodes):
        x[:len(e), b] = torch.as_tensor(e)
        valid[:len(e), b] = True
    with torch.no_grad():
        y, _ = teacher.sequence(x)
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    loss = torch.tensor(float("nan"))
    for _ in range(cfg.epochs):
        state = None
        for t in range(0, steps, cfg.seq_len):
            out, state = student.sequence(x[t:t + cfg.seq_len], state)
            keep = valid[t:t + cfg.seq_len]
            loss = distill_loss(out[keep], y[t:t + cfg.seq_len][keep], head, cfg, q_values)
            opt.zero_grad()
            loss.backward()
            opt.step()
            state = state.detach()
    return loss.item()


@register(DistillConfig)
def _distill(net: PolicyNet, cfg: DistillConfig, ctx: Context) -> PolicyNet:
    if ctx.sample_obs is None:
        raise ValueError("distill needs teacher-visited observations (Context.sample_obs)")
    torch.manual_seed(ctx.seed)
    gen = torch.Generator().manual_seed(ctx.seed)
    student = student_net(net, cfg)
    states = np.asarray(ctx.sample_obs, dtype=np.float32)
    starts = ctx.sample_starts if ctx.sample_starts is not None else np.arange(len(states)) == 0
    episodes = np.split(states, np.flatnonzero(starts)[1:])
    for r in range(cfg.rounds):
        if net.rnn is not None:
            loss = train_recurrent_student(student, net, episodes, cfg, ctx.head, ctx.q_values)
        else:
            loss = train_student(student, net, np.concatenate(episodes), cfg, ctx.head, gen, ctx.q_values)
        ctx.log(f"distill: round {r + 1}/{cfg.rounds}, {sum(map(len, episodes))} states, loss {loss:.4f}")
        if ctx.rollout_episodes is not None and r + 1 < cfg.rounds:
            episodes += ctx.rollout_episodes(student, cfg.steps_per_round, ctx.seed + 7919 * (r + 1))
    return student
