"""The deployable runtime: loads an .acz artifact and acts, with numpy alone.

This is what a device runs and what latency is measured in. Weights are decoded once at
load into dense float32 (pre-transposed, contiguous); a batch-1 forward is then a few
`x @ W + b` calls. For MLPs of this size the per-call overhead, not arithmetic,
dominates, and numpy's is the lowest of the runtimes we measured (see docs).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Callable

import numpy as np

from autocompress import intq
from autocompress.conv import conv_forward, to_chw
from autocompress.layers import (ACTIVATIONS, Layer, check_kernels, int8_conv_forward, int8_forward, layers_of,
                                 recurrent_of, runs_iq)
from autocompress.recurrent import NUMPY_OPS, cell_step, state_size


MAGIC = b"ACZ1"


def read_artifact(data: bytes) -> tuple[dict, memoryview]:
    if data[:4] != MAGIC:
        raise ValueError("not an autocompress artifact (bad magic bytes)")
    (hlen,) = struct.unpack("<I", data[4:8])
    header = json.loads(data[8:8 + hlen].decode())
    return header, memoryview(data)[8 + hlen:]


class NumpyPolicy:
    """Batch-1 (or batched) inference from an artifact: `forward(obs)` and `act(obs)`.

    Layers run as decoded fp32, except those given the 'int8' kernel in `kernels`: those repeat
    the C kernel's integer arithmetic (so a trial's recorded kernel choice acts the same here).

    A recurrent artifact (header `rnn`: an LSTM / GRU cell, its matrices decoded fp32) carries its state
    between `act(obs)` calls, one stream; `reset()` zeroes it at an episode's start. `act(obs, state)` is the
    stateless form: (action, next state), the state from `initial_state()` at an episode's start."""

    def __init__(self, header: dict, blob: memoryview, kernels: list[str] | None = None):
        self.header = header
        self.head = header["head"]
        layers = layers_of(header, blob, recurrent=True)
        self.rnn = recurrent_of(header, blob)
        self.kernels = check_kernels(layers, kernels, self.rnn) or ["dense"] * len(layers)
        self._iq = intq.plan(header, layers) if runs_iq(self.kernels) else None
        self.layers = [(layer.w, layer.b, ACTIVATIONS[layer.act], layer.int8() if k == "int8" else None, layer.conv)
                       for layer, k in zip(layers, self.kernels)]
        self.input = header.get("input")  # conv nets: the observation's shape and layout
        self.obs_norm = header.get("obs_norm")  # as stored: mean, std, clip (None: raw observations)
        self._normalize = obs_normalizer(self.obs_norm)
        self._state = self.initial_state()

    @classmethod
    def load(cls, path: str | Path, kernels: list[str] | None = None) -> "NumpyPolicy":
        return cls.from_bytes(Path(path).read_bytes(), kernels)

    @classmethod
    def from_bytes(cls, data: bytes, kernels: list[str] | None = None) -> "NumpyPolicy":
        return cls(*read_artifact(data), kernels=kernels)

    def forward(self, obs: np.ndarray) -> np.ndarray:
        if self._iq is not None:  # integer-only: its own input quantisation, normalisation folded in
            return intq.forward(self._iq, obs)
        if self.rnn is not None:  # one stream: the state carried from the last call
            out, self._state = self.step(obs, self._state)
            return out
        return self._chain(self._inputs(obs), self.layers)

    def step(self, obs: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(outputs, next state) for observations (..., obs) and their state (..., state_size); a feed-forward
        net's state is empty and passes through."""
        if self.rnn is None:
            return self.forward(obs), state
        r = self.rnn
        x = self._chain(self._inputs(obs), self.layers[:r.at])
        state = np.asarray(state, np.float32)
        h, state = cell_step(r.cell, affine(x, r.ih), affine(state[..., :r.hidden], r.hh), state, NUMPY_OPS)
        return self._chain(h, self.layers[r.at:]), state

    def _inputs(self, obs: np.ndarray) -> np.ndarray:
        x = self._normalize(obs)
        return x if self.input is None else to_chw(x, self.input)

    @staticmethod
    def _chain(x: np.ndarray, layers: list) -> np.ndarray:
        for w, b, act, int8, conv in layers:
            if conv is not None:
                x = conv_layer(x, w, b, int8, conv)
            else:
                x = x @ w if int8 is None else int8_forward(x, *int8).reshape(x.shape[:-1] + (w.shape[1],))
                if b is not None:
                    x += b
            if act is not None:
                x = act(x)
        return x

    def initial_state(self) -> np.ndarray:
        """The state at an episode's start: zeros (a feed-forward net's: empty)."""
        return np.zeros(0 if self.rnn is None else state_size(self.rnn.cell, self.rnn.hidden), np.float32)

    def reset(self) -> None:
        """Start a new episode: the carried state back to zeros (nothing to do for a feed-forward net)."""
        self._state = self.initial_state()

    def act(self, obs: np.ndarray, state: np.ndarray | None = None):
        """Deterministic action for one observation; with `state`, the stateless form: (action, next state)."""
        if state is None:
            return output_to_action(self.forward(obs), self.head)
        out, state = self.step(obs, state)
        return output_to_action(out, self.head), state


def affine(x: np.ndarray, layer: Layer) -> np.ndarray:
    """x @ W + b of a recurrent cell's matrix (decoded fp32)."""
    return x @ layer.w if layer.b is None else x @ layer.w + layer.b


def conv_layer(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, int8, g: dict) -> np.ndarray:
    """One conv layer on flat CHW inputs (one observation or a batch), bias added per channel."""
    rows = np.atleast_2d(x)
    y = conv_forward(rows, w, g) if int8 is None else int8_conv_forward(rows, *int8, g)
    if b is not None:
        y = (y.reshape(len(rows), len(b), -1) + b[:, None]).reshape(len(rows), -1)
    return y.reshape(x.shape[:-1] + y.shape[-1:])


def obs_normalizer(norm: dict | None) -> Callable[[np.ndarray], np.ndarray]:
    """obs -> float32 (obs - mean) / std, clipped to [-clip, clip] when clip is set: RLlib's
    MeanStdFilter transform with its statistics frozen (std there already includes the filter's
    epsilon). None: the observation as float32. The statistics are converted once, not per call."""
    if norm is None:
        return lambda obs: np.asarray(obs, np.float32)
    mean, std, clip = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32), norm.get("clip")

    def normalize(obs):
        x = np.asarray(obs, np.float32)
        if x.shape[-1:] != mean.shape:  # image observations: the statistics are stored flat
            x = x.reshape(mean.shape if x.size == mean.size else (-1, *mean.shape))
        x = (x - mean) / std
        return np.clip(x, -clip, clip) if clip else x

    return normalize


def output_to_action(out: np.ndarray, head: dict):
    """Net output -> env action. Discrete: argmax (logits or Q-values). Continuous: the mean
    (first act_dim outputs), squashed to [-1, 1] by tanh (SAC) or clipping (PPO, as RLlib's
    normalize_actions does), then mapped affinely onto the env's bounds ('none': raw mean)."""
    if head["kind"] == "discrete":
        return int(np.argmax(out))
    mean = out[..., : head["act_dim"]]
    low, high = np.asarray(head["low"], np.float32), np.asarray(head["high"], np.float32)
    squash = head.get("squash", "none")
    if squash == "none":
        return np.clip(mean, low, high)
    a = np.tanh(mean) if squash == "tanh" else np.clip(mean, -1.0, 1.0)
    return low + (a + 1.0) * 0.5 * (high - low)
