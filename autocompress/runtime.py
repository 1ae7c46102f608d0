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

import numpy as np

from autocompress.codec import decode_weight

MAGIC = b"ACZ1"
_ACT = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0), "none": None}


def read_artifact(data: bytes) -> tuple[dict, memoryview]:
    if data[:4] != MAGIC:
        raise ValueError("not an autocompress artifact (bad magic bytes)")
    (hlen,) = struct.unpack("<I", data[4:8])
    header = json.loads(data[8:8 + hlen].decode())
    return header, memoryview(data)[8 + hlen:]


class NumpyPolicy:
    """Batch-1 (or batched) inference from an artifact: `forward(obs)` and `act(obs)`."""

    def __init__(self, header: dict, blob: memoryview):
        self.header = header
        self.head = header["head"]
        self.layers = []
        for layer in header["layers"]:
            w = np.ascontiguousarray(decode_weight(layer["w"], blob).T)
            b = None
            if layer["b"] is not None:
                b = np.frombuffer(bytes(blob[layer["b"][0]: sum(layer["b"])]), dtype="<f4").copy()
            self.layers.append((w, b, _ACT[layer["act"]]))
        norm = header.get("obs_norm")
        self.obs_mean = None if norm is None else np.asarray(norm["mean"], np.float32)
        self.obs_std = None if norm is None else np.asarray(norm["std"], np.float32)
        self.obs_clip = None if norm is None else norm.get("clip")

    @classmethod
    def load(cls, path: str | Path) -> "NumpyPolicy":
        return cls(*read_artifact(Path(path).read_bytes()))

    @classmethod
    def from_bytes(cls, data: bytes) -> "NumpyPolicy":
        return cls(*read_artifact(data))

    def forward(self, obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float32)
        if self.obs_mean is not None:
            x = normalize_obs(x, {"mean": self.obs_mean, "std": self.obs_std, "clip": self.obs_clip})
        for w, b, act in self.layers:
            x = x @ w
            if b is not None:
                x += b
            if act is not None:
                x = act(x)
        return x

    def act(self, obs: np.ndarray):
        """Deterministic action for one observation."""
        return output_to_action(self.forward(obs), self.head)


def normalize_obs(obs: np.ndarray, norm: dict) -> np.ndarray:
    """(obs - mean) / std, clipped to [-clip, clip] when clip is set: RLlib's MeanStdFilter
    transform with its statistics frozen (std there already includes the filter's epsilon)."""
    x = (np.asarray(obs, np.float32) - np.asarray(norm["mean"], np.float32)) / np.asarray(norm["std"], np.float32)
    return x if not norm.get("clip") else np.clip(x, -norm["clip"], norm["clip"])


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
