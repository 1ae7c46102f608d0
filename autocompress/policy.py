"""`Policy`: a deployable artifact (.acz) loaded into one of the runtimes (runtime.py: numpy,
native.py: the C kernels), and which runtime acts. Public as `autocompress.Policy`; the MLflow model
(tracking.PolicyModel) acts through it too."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from autocompress import native
from autocompress.artifact import to_bytes
from autocompress.errors import ConfigError
from autocompress.runtime import NumpyPolicy


def policy_runtime(name: str) -> tuple[str, type]:
    """The runtime class that evaluates and times the artifact (teacher and candidate alike)."""
    if name == "c" or (name == "auto" and native.available()):
        return "c", native.NativePolicy  # 'c' without a compiler fails here, with the reason
    return "numpy", NumpyPolicy


class Policy:
    """A deployable artifact (.acz), loaded into a runtime: `act(obs)` for one observation.

    runtime 'auto' is the compiled C kernel where a C compiler exists, else numpy; 'c' or 'numpy'
    choose one (what `latency.runtime` in a trial spec chooses for measuring). `kernels` (one per
    layer: dense, csr, int8, packed) repeats a recorded choice, e.g. a trial's `kernels`; the C
    runtime otherwise picks each layer's fastest by measuring at load. A recurrent (LSTM / GRU) artifact runs in
    either: `act(obs)` carries its state, `reset()` starts an episode.

    >>> import autocompress as ac
    >>> policy = ac.Policy.load(f"{RUN_DIR}/trials/0/policy.acz")
    >>> policy.act(np.zeros(4, np.float32)) in (0, 1)
    True
    """

    def __init__(self, impl: Any, runtime: str, data: bytes):
        self._impl, self.runtime = impl, runtime
        self.kernels: list[str] = list(impl.kernels)
        self.head = impl.head
        self.act = impl.act  # the runtime's own bound method: no extra Python call in what latency times
        #: the artifact's bytes (its length is the size objective)
        self.data = data

    @classmethod
    def load(cls, path: str | Path, runtime: Literal["auto", "c", "numpy"] = "auto",
             kernels: list[str] | None = None) -> "Policy":
        return cls.from_bytes(Path(path).read_bytes(), runtime, kernels)

    @classmethod
    def from_bytes(cls, data: bytes, runtime: Literal["auto", "c", "numpy"] = "auto",
                   kernels: list[str] | None = None) -> "Policy":
        try:
            name, impl = policy_runtime(runtime)
            return cls(impl.from_bytes(data, kernels), name, data)
        except ValueError as e:  # a bad kernel list, or not an artifact
            raise ConfigError(str(e), option="kernels" if str(e).startswith("kernels") else None) from None

    @classmethod
    def from_net(cls, net, head: dict, runtime: Literal["auto", "c", "numpy"] = "auto") -> "Policy":
        """Export a PolicyNet (packed as its compression allows) and load it. `head` says how outputs
        become actions, e.g. {"kind": "discrete", "n": 2} (argmax)."""
        return cls.from_bytes(to_bytes(net, head), runtime)

    def act(self, obs: np.ndarray, state: np.ndarray | None = None):  # documents the runtime's (see __init__)
        """Deterministic action (argmax, or the squashed mean on the env's bounds). A recurrent policy carries
        its state from call to call (`reset()` at each episode's start); `act(obs, state)` is its stateless
        form, returning (action, next state), with `initial_state()` at an episode's start."""
        return self._impl.act(obs) if state is None else self._impl.act(obs, state)

    def reset(self) -> None:
        """Start a new episode: a recurrent policy's state back to zeros (a feed-forward policy has none)."""
        self._impl.reset()

    def initial_state(self) -> np.ndarray:
        """The state at an episode's start, for the stateless `act(obs, state)`: zeros (empty: feed-forward)."""
        return self._impl.initial_state()

    @property
    def recurrent(self) -> bool:
        return getattr(self._impl, "rnn", None) is not None
