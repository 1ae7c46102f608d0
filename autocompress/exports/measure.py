"""What an exported file costs on this machine: its bytes and batch-1 latency in its format's own runtime,
side by side with the .acz artifact in autocompress's C runtime on the same observations (`report`), and
how often its actions equal that runtime's (`agreement`). The CLI's `export` and benchmarks/exports.py both
use it.

How each format runs is written once, in `actor` (act on one observation):

  acz          autocompress.Policy (runtime 'auto': the C kernels where a compiler exists, else numpy),
               the trial's recorded kernels where given
  onnx         onnxruntime, CPU provider, 1 intra- and 1 inter-op thread
  tflite       LiteRT's interpreter, 1 thread (its default CPU kernels, XNNPACK included)
  pte          ExecuTorch's Python runtime (XNNPACK delegate), its threadpool set to 1 thread
  c            not here: the C export's main.c has no timer; `export` reports its flash and RAM

Latency: autocompress.measure.latency's rule (calls timed one by one with perf_counter_ns, the runtimes
taking turns in rounds, median), each call on the next of the given observations in turn, so every
runtime sees the same observations. Each is a Python call into that runtime: what an app calling it from
Python pays, its binding's overhead included.

A recurrent net (acz, c and onnx only; exports.write refuses the rest) carries its state from call to call in
every runtime: the .acz's Policy in itself, the ONNX graph's through its `state` input and `state_out` output
(`OnnxActor`), both from zeros. So `agreement` compares them over `obs` as one stream, and latency is per step,
the state update included.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Callable

import numpy as np

from autocompress import measure
from autocompress.exports import act_all
from autocompress.policy import Policy

#: per format, the runtime its latency is measured in
RUNTIMES = {"acz": "C runtime", "onnx": "onnxruntime", "onnx-int8": "onnxruntime", "tflite": "LiteRT",
            "tflite-int8": "LiteRT", "pte": "ExecuTorch", "pte-int8": "ExecuTorch"}


def actor(fmt: str, path: str | Path, kernels: list[str] | None = None) -> Callable:
    """act(one observation: a row, or an image in the env's shape) of the file `path` written as `fmt`, in that
    format's runtime, 1 thread (see the module's docstring)."""
    path = Path(path)
    if fmt == "acz":
        return Policy.load(path, "auto", kernels).act
    if fmt in ("onnx", "onnx-int8"):
        import onnxruntime as ort  # deferred (heavy): each format's runtime, imported for that format only

        opt = ort.SessionOptions()
        opt.intra_op_num_threads = opt.inter_op_num_threads = 1
        return OnnxActor(ort.InferenceSession(str(path), opt, providers=["CPUExecutionProvider"]))
    if fmt in ("tflite", "tflite-int8"):
        from autocompress.exports.tflite import litert_actor  # deferred: LiteRT, the [tflite] extra

        return litert_actor(path.read_bytes(), threads=1)
    if fmt in ("pte", "pte-int8"):
        from executorch.extension.pybindings import portable_lib  # deferred: ExecuTorch, the [executorch] extra

        from autocompress.exports.pte import pte_actor

        if portable_lib._threadpool_get_thread_count() != 1:
            portable_lib._unsafe_reset_threadpool(1)
        return pte_actor(path.read_bytes())
    raise ValueError(f"format {fmt!r}: no runtime here to act it in ({', '.join(RUNTIMES)})")


class OnnxActor:
    """act(one observation) of an onnxruntime session of an exported graph; a recurrent graph's (input `state`)
    state carried from call to call, zeroed by `reset()` (which measure.evaluate calls at an episode's start)."""

    def __init__(self, sess):
        self.sess = sess
        inputs = {i.name: i.shape for i in sess.get_inputs()}
        self.shape = (1, *inputs["obs"][1:])
        self.state_size = int(inputs["state"][1]) if "state" in inputs else None
        self.reset()

    def reset(self) -> None:
        self.state = None if self.state_size is None else np.zeros((1, self.state_size), np.float32)

    def __call__(self, obs):
        feed = {"obs": np.asarray(obs, np.float32).reshape(self.shape)}
        if self.state is None:
            return self.sess.run(None, feed)[0]
        action, self.state = self.sess.run(None, {**feed, "state": self.state})
        return action


def _cycling(act: Callable, obs: np.ndarray) -> Callable:
    """act on the next of `obs` at each call (measure.latency passes one fixed argument)."""
    rows = itertools.cycle(list(np.asarray(obs, np.float32)))
    return lambda _: act(next(rows))


def report(fmt: str, path: str | Path, acz: bytes, obs: np.ndarray, kernels: list[str] | None = None,
           calls: int = 2000, obs_words: str = "teacher-visited states") -> dict:
    """Bytes of the file `path` (written as `fmt` from the artifact `acz`) and its batch-1 latency in its runtime,
    beside the .acz's in the C runtime on the same observations `obs`: {fmt, runtime, bytes, latency_ms,
    acz_bytes, acz_runtime, acz_latency_ms, observations (how many; `obs_words` says what they are), calls};
    tflite adds arena_bytes (TFLite Micro's)."""
    path = Path(path)
    ref = Policy.from_bytes(acz, "auto", kernels)
    fns = {"acz": _cycling(ref.act, obs)}
    if fmt != "acz":
        fns[fmt] = _cycling(actor(fmt, path, kernels), obs)
    t = measure.latency(fns, obs[0], warmup=min(200, calls // 10), calls=calls, rounds=10)
    out = {"fmt": fmt, "runtime": RUNTIMES[fmt] if fmt != "acz" else f"{ref.runtime} runtime",
           "bytes": path.stat().st_size, "latency_ms": t[fmt]["median_ms"],
           "acz_bytes": len(acz), "acz_runtime": f"{ref.runtime} runtime", "acz_latency_ms": t["acz"]["median_ms"],
           "observations": len(obs), "obs_words": obs_words, "calls": calls}
    if fmt in ("tflite", "tflite-int8"):
        from autocompress.exports.tflite import tflm_arena_bytes  # deferred: TFLite Micro, the [tflite] extra

        out["arena_bytes"] = tflm_arena_bytes(path.read_bytes())
    return out


def agreement(fmt: str, path: str | Path, acz: bytes, obs: np.ndarray, kernels: list[str] | None = None) -> dict:
    """How the file's actions on `obs` compare with the .acz's in the C runtime: discrete, the share equal
    (`agree`); continuous, the largest absolute difference (`max_abs_diff`)."""
    got = act_all(actor(fmt, path, kernels), obs)
    want = act_all(Policy.from_bytes(acz, "auto", kernels).act, obs)
    if want.ndim == 1:
        return {"agree": float((got == want).mean())}
    return {"max_abs_diff": float(np.abs(got - want).max())}


def words(r: dict) -> str:
    """One line of `report`'s figures, as `export` prints them below the file's bytes."""
    line = f"batch-1 latency {r['latency_ms'] * 1e3:,.1f} µs in {r['runtime']}"
    if r["fmt"] != "acz":
        line += f" vs .acz {r['acz_latency_ms'] * 1e3:,.1f} µs in its {r['acz_runtime']} ({r['acz_bytes']:,} bytes)"
    if "arena_bytes" in r:
        line += f"; TFLite Micro arena {r['arena_bytes']:,} bytes"
    return (line + f" (median of {r['calls']:,} interleaved calls, 1 thread, over {r['observations']} "
            f"{r['obs_words']}, this machine)")
