"""The C runtime: the same .acz artifact, run by compiled kernels (kernels.c) through ctypes.

Why: a device runs compiled code, and at batch 1 these MLPs are bound by per-call overhead in
Python (numpy pays ~1 µs per op). Here the whole act() (normalisation, every layer, activation,
argmax or squash + bounds) is one C call, and latency is timed inside C (`time_side_by_side`):
a loop over recorded observations, candidate and teacher in turn, so the Python call costs
nothing of what the search optimises (`act()` from Python stays a secondary figure).

Each layer runs the kernel that measures fastest for it on this CPU (kernels.c: dense fp32,
CSR, int8 integer arithmetic, packed k-bit decode; conv layers: direct fp32, im2col fp32, int8),
timed at load on inputs propagated from random observations; the choice is `.kernels`, recorded per trial, and can be given instead
(`kernels=[...]`) to act exactly as a recorded trial did. The kernels are compiled on first use
with the system C compiler (`cc`, or $CC) into $AUTOCOMPRESS_NATIVE_CACHE (default
~/.cache/autocompress/native); `available()` says whether that works here.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from autocompress import intq
from autocompress.targets import target
from autocompress.layers import IQ_BITS, KERNELS, Layer, RecurrentLayer, check_kernels, layers_of, recurrent_of, runs_iq
from autocompress.conv import c_fields, to_chw
from autocompress.recurrent import NUMPY_OPS, cell_step, state_size
from autocompress.runtime import ACTIVATIONS, affine, conv_layer, obs_normalizer, read_artifact

SOURCE = (Path(__file__).parent / "kernels.c").read_text()
#: kernels.c up to this line is the portable kernel (the C export's); below it, timing loops
TIMING_MARKER = "/* ---- timing: in-process runtime only ---- */"
#: time per layer and kernel at load: rounds of calls (the median round decides)
CHOICE_CALLS, CHOICE_ROUNDS = 100, 15
#: a kernel this close to the fastest (time ratio) counts as a tie, won by the smaller stored form
COMPACT_WITHIN = 1.10


class _Conv(ctypes.Structure):  # kernels.c's AczConv
    _fields_ = [(n, ctypes.c_int) for n in ("c", "h", "w", "kh", "kw", "sh", "sw", "pt", "pl", "oh", "ow")]


class _Layer(ctypes.Structure):
    _fields_ = [("in_", ctypes.c_int), ("out", ctypes.c_int), ("act", ctypes.c_int), ("kind", ctypes.c_int),
                ("b", ctypes.c_void_p), ("w", ctypes.c_void_p), ("wpad", ctypes.c_int), ("wt", ctypes.c_void_p), ("ptr", ctypes.c_void_p), ("idx", ctypes.c_void_p),
                ("val", ctypes.c_void_p), ("q", ctypes.c_void_p), ("qscale", ctypes.c_void_p),
                ("codes", ctypes.c_void_p), ("bitmap", ctypes.c_void_p), ("zero", ctypes.c_void_p),
                ("scale", ctypes.c_void_p), ("table", ctypes.c_void_p), ("codes8", ctypes.c_void_p),
                ("bits", ctypes.c_int),
                ("qmin", ctypes.c_int), ("enc", ctypes.c_int), ("per_row", ctypes.c_int), ("cv", _Conv)]


class _IQLayer(ctypes.Structure):  # kernels.c's AczIQLayer
    _fields_ = [("inpad", ctypes.c_int), ("out", ctypes.c_int), ("act", ctypes.c_int), ("bits", ctypes.c_int),
                *[(n, ctypes.c_void_p) for n in ("q", "bias", "mult", "shift", "lut")], ("lut_odd", ctypes.c_int),
                ("oscale", ctypes.c_void_p), ("cv", _Conv)]  # cv: ACZ_IQ_CONV, compiled in-process


class _IQNet(ctypes.Structure):  # kernels.c's AczIQNet
    _fields_ = [("n_layers", ctypes.c_int),
                *[(n, ctypes.c_void_p) for n in ("layers", "in_a", "in_s", "in_c", "x0", "x1", "acc")],
                *[(n, ctypes.c_int) for n in ("obs_h", "obs_w", "obs_c")], ("cols", ctypes.c_void_p)]


class _Rnn(ctypes.Structure):  # kernels.c's AczRnn
    _fields_ = [("cell", ctypes.c_int), ("at", ctypes.c_int), ("hidden", ctypes.c_int), ("ih", _Layer), ("hh", _Layer),
                ("state", ctypes.c_void_p), ("gi", ctypes.c_void_p), ("gh", ctypes.c_void_p)]


class _Net(ctypes.Structure):
    _fields_ = [("n_layers", ctypes.c_int), ("obs_dim", ctypes.c_int), ("kind", ctypes.c_int),
                ("act_dim", ctypes.c_int), ("squash", ctypes.c_int), ("layers", ctypes.c_void_p),
                ("mean", ctypes.c_void_p), ("std", ctypes.c_void_p), ("low", ctypes.c_void_p),
                ("high", ctypes.c_void_p), ("clip", ctypes.c_float), ("buf0", ctypes.c_void_p),
                ("buf1", ctypes.c_void_p), ("qbuf", ctypes.c_void_p), ("in_h", ctypes.c_int),
                ("in_w", ctypes.c_int), ("in_c", ctypes.c_int), ("cols", ctypes.c_void_p), ("iq", ctypes.c_void_p),
                ("rnn", ctypes.c_void_p)]


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@lru_cache(maxsize=8)
def _library(extra: tuple[str, ...] = ()) -> ctypes.CDLL:
    """The kernels compiled for this CPU (the host target's flags); `extra` flags build a variant (tests
    force the portable int8 loop with -DACZ_PORTABLE, the AVX2 one with -mno-avx512vnni)."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (cc, gcc, clang or $CC): the C runtime is unavailable")
    # -ffast-math lets the tanh loop use glibc's vector tanhf; it is given to the compile step only:
    # linking with it would add crtfastmath, which turns on flush-to-zero for the whole process.
    flags = [*target("host").cflags, "-fPIC", *extra]
    key = hashlib.sha256((SOURCE + cc + " ".join(flags) + "split-link").encode()).hexdigest()[:16]
    cache = Path(os.environ.get("AUTOCOMPRESS_NATIVE_CACHE", Path.home() / ".cache" / "autocompress" / "native"))
    lib = cache / f"acz-{key}.so"
    if not lib.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as d:
            src, obj, tmp = Path(d) / "acz.c", Path(d) / "acz.o", Path(d) / "acz.so"
            src.write_text(SOURCE)
            for cmd in ([cc, *flags, "-c", str(src), "-o", str(obj)], [cc, "-shared", str(obj), "-o", str(tmp), "-lm"]):
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    raise RuntimeError(f"compiling the C runtime failed: {r.stderr.strip()[-500:]}")
            os.replace(tmp, lib)  # atomic: parallel trials may compile at once
    so = ctypes.CDLL(str(lib))
    so.acz_act.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    so.acz_act.restype = ctypes.c_int
    so.acz_reset.argtypes = [ctypes.c_void_p]
    so.acz_reset.restype = None
    so.acz_time.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                            ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                            ctypes.c_void_p]
    so.acz_time.restype = ctypes.c_long
    so.acz_time_layer.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                  ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    return so


def available() -> bool:
    try:
        _library()
        return True
    except (RuntimeError, OSError):
        return False


#: kernels.c's enum values (activation, continuous squash, kernel), also written by the C export
ACT_CODES = {"none": 0, "tanh": 1, "relu": 2, "silu": 3, "elu": 4, "leaky_relu": 5}
SQUASH_CODES = {"none": 0, "tanh": 1, "clip": 2}
KIND_CODES = {k: i for i, k in enumerate(KERNELS)}  # kernels.c's ACZ_DENSE, CSR, INT8, Q8, PACKED, IM2COL
CELL_CODES = {"lstm": 0, "gru": 1}  # kernels.c's ACZ_LSTM, ACZ_GRU


class _Arrays:
    """64-byte aligned copies (whole cache lines, aligned vector loads) that the C structs point
    into, kept alive as long as the policy."""

    def __init__(self):
        self.keep: list[np.ndarray] = []

    def __call__(self, a, dtype) -> int | None:
        if a is None:
            return None
        a = np.asarray(a, dtype=dtype).ravel()
        raw = np.empty(a.nbytes + 64, np.uint8)
        start = -raw.ctypes.data % 64
        out = raw[start:start + a.nbytes].view(dtype)
        out[:] = a
        self.keep.append(out)
        return out.ctypes.data


def in_size(layer: Layer) -> int:
    """Values the layer reads: C·H·W for a conv layer."""
    return layer.shape[1] if layer.conv is None else int(np.prod(layer.conv["in_shape"]))


def out_size(layer: Layer) -> int:
    """Values the layer writes (out·H'·W' for a conv layer; a Linear layer's dense kernel writes its padded width)."""
    return layer.dense()[1] if layer.conv is None else layer.shape[0] * layer.out_hw[0] * layer.out_hw[1]


def scratch_sizes(layers: list[Layer], kernels: list[str] | None, obs_dim: int) -> dict[str, int]:
    """Scratch each act() needs (floats, except qbuf: bytes): two activation buffers of the widest layer
    output (or observation), int8 inputs (conv: the input, then one pixel's patch), IM2COL's patch matrix
    (for the layers whose kernel is im2col; kernels None: any kernel each layer may run)."""
    kernels = kernels or ["im2col"] * len(layers)
    width = max([out_size(layer) for layer in layers] + [obs_dim])
    qbuf = max([width] + [in_size(layer) + layer.shape[1] for layer in layers if layer.conv is not None])
    cols = max([0] + [layer.out_hw[0] * layer.out_hw[1] * layer.shape[1]
                      for layer, k in zip(layers, kernels) if k == "im2col"])
    return {"width": width, "qbuf": qbuf, "cols": cols}


def input_fields(header: dict) -> dict[str, int]:
    """AczNet's in_h, in_w, in_c: an H x W x C observation is transposed to C x H x W (C x H x W: as is)."""
    inp = header.get("input")
    if inp is None or inp["layout"] != "hwc":
        return {"in_h": 0, "in_w": 0, "in_c": 0}
    h, w, c = inp["shape"]
    return {"in_h": int(h), "in_w": int(w), "in_c": int(c)}


def fill_layer(c: _Layer, layer: Layer, kernel: str, ptr: _Arrays) -> None:
    """Point a C layer struct at `layer`'s arrays in the form `kernel` takes."""
    n_out, n_in = layer.shape
    c.in_, c.out, c.act, c.kind = n_in, n_out, ACT_CODES[layer.act], KIND_CODES[kernel]
    c.b = ptr(layer.b, np.float32)
    if layer.conv is not None:
        c.cv = _Conv(**c_fields(layer.conv))
        if kernel == "int8":
            q, scale = layer.int8()
            c.q, c.qscale = ptr(q, np.int8), ptr(scale, np.float32)
        else:  # direct and im2col: the fp32 filter matrix, output-major
            c.w, c.wpad = ptr(layer.w.T, np.float32), n_out
        return
    if kernel == "dense":
        w, c.wpad, wt = layer.dense()
        c.w, c.wt = ptr(w, np.float32), ptr(wt, np.float32)
    elif kernel == "csr":
        p, idx, val = layer.csr()
        c.ptr, c.idx, c.val = ptr(p, np.int32), ptr(idx, np.uint16), ptr(val, np.float32)
    elif kernel == "int8":
        q, scale = layer.int8()
        c.q, c.qscale = ptr(q, np.int8), ptr(scale, np.float32)
    elif kernel == "q8":
        codes, table = layer.q8()
        pk = layer.packed()
        c.codes8, c.table = ptr(codes, np.uint8), ptr(table, np.float32)
        c.scale, c.zero, c.qmin = ptr(pk["scale"], np.float32), ptr(pk["zero"], np.uint8), pk["qmin"]
        c.enc, c.per_row = int(pk["enc"] == "codebook"), int(pk["per_row"])
    else:
        pk = layer.packed()
        c.codes, c.bitmap, c.zero = ptr(pk["codes"], np.uint8), ptr(pk["bitmap"], np.uint8), ptr(pk["zero"], np.uint8)
        c.scale, c.table = ptr(pk["scale"], np.float32), ptr(pk["table"], np.float32)
        c.bits, c.qmin, c.enc, c.per_row = pk["bits"], pk["qmin"], int(pk["enc"] == "codebook"), int(pk["per_row"])


def _iq_net(plan: intq.IQPlan, ptr: _Arrays, bits: int) -> tuple[_IQNet, ctypes.Array]:
    """kernels.c's AczIQNet of an integer-only plan, weights stored in `bits` (and its layer array, kept
    alive with it)."""
    fields = intq.c_layers(plan, bits)
    c_layers = (_IQLayer * len(fields))()
    for c, f in zip(c_layers, fields):
        for k, v in f.items():
            setattr(c, k, ACT_CODES[v] if k == "act" else v if isinstance(v, int) else None if v is None else
                    _Conv(**v) if k == "cv" else ptr(*v))
    size = intq.scratch(plan, bits)
    inp = {k: v if isinstance(v, int) else ptr(*v) for k, v in intq.c_input(plan).items()}
    net = _IQNet(n_layers=len(fields), layers=ctypes.addressof(c_layers), **inp,
                 x0=ptr(np.zeros(size["x"]), np.int32), x1=ptr(np.zeros(size["x"]), np.int32),  # acz_iqx_t here
                 acc=ptr(np.zeros(size["acc"]), np.int32), cols=ptr(np.zeros(size["cols"]), np.int32) if size["cols"] else None)
    return net, c_layers


def choose_kernels(layers: list[Layer], inputs: list[np.ndarray],
                   build: tuple[str, ...] = ()) -> tuple[list[str], list[dict[str, float]]]:
    """Per layer, the fastest kernel on that layer's recorded inputs (n x in, float32; median ns per
    call), where a kernel within COMPACT_WITHIN of the fastest and with fewer stored bytes wins (a
    tie within timing noise goes to the smaller flash), and every candidate's time. `build`: extra
    compiler flags of a variant library (_library)."""
    so, chosen, times = _library(build), [], []
    for layer, xs in zip(layers, inputs):
        cands = layer.kernels()
        if len(cands) == 1:
            chosen.append(cands[0])
            times.append({})
            continue
        xs = np.ascontiguousarray(xs, np.float32)
        size = scratch_sizes([layer], None, 0)
        y, qbuf = np.zeros(size["width"], np.float32), np.zeros(max(size["qbuf"], in_size(layer)), np.int8)
        cols = np.zeros(max(1, size["cols"]), np.float32)
        ptr, c_layers, out = _Arrays(), (_Layer * len(cands))(), np.zeros((CHOICE_ROUNDS, len(cands)))
        for k, c in zip(cands, c_layers):
            fill_layer(c, layer, k, ptr)
        so.acz_time_layer(c_layers, len(cands), xs.ctypes.data, len(xs), CHOICE_CALLS, CHOICE_ROUNDS,
                          y.ctypes.data, qbuf.ctypes.data, cols.ctypes.data, out.ctypes.data)
        t = {k: float(v) for k, v in zip(cands, np.median(out, axis=0))}
        near = [k for k in t if t[k] <= min(t.values()) * COMPACT_WITHIN]
        chosen.append(min(near, key=layer.stored_bytes))
        times.append(t)
    return chosen, times


def _layer_inputs(header: dict, layers: list[Layer], n: int = 32, seed: int = 0,
                  rnn: RecurrentLayer | None = None) -> list[np.ndarray]:
    """Each layer's inputs when the net acts on n standard-normal observations (fp32 layers), from the
    same decoded Layer objects the kernels are then built from (decoded once); a recurrent cell takes its
    first step (from zeros) in its place."""
    x = obs_normalizer(header.get("obs_norm"))(
        np.random.default_rng(seed).standard_normal((n, int(header["obs_dim"]))))
    x = to_chw(x, header.get("input"))
    out = []
    for i, layer in enumerate(layers):
        if rnn is not None and i == rnn.at:
            zeros = np.zeros((n, state_size(rnn.cell, rnn.hidden)), np.float32)
            x = cell_step(rnn.cell, affine(x, rnn.ih), affine(zeros[:, :rnn.hidden], rnn.hh), zeros, NUMPY_OPS)[0]
        out.append(x)
        x = conv_layer(x, layer.w, layer.b, None, layer.conv) if layer.conv is not None else \
            x @ layer.w + (0 if layer.b is None else layer.b)
        act = ACTIVATIONS[layer.act]
        x = act(x) if act is not None else x
    return out


def compute_signature(header: dict, layers: list[Layer], kernels: list[str], rnn: RecurrentLayer | None = None) -> str:
    """What act()'s time depends on, hashed: per layer its kernel, shape (a conv layer's geometry),
    activation and the bytes the kernel reads (csr: the kept weights; packed: the bit width and kept
    weights), with the encoding for q8 and packed (codebook or quant); the input's size, layout and
    normalisation; the head. Two nets with one signature run the same instructions on the same amount
    of data, so they take the same time up to the machine's noise: a search times one of them."""
    parts = [header["obs_dim"], bool(header.get("obs_norm")), header.get("input"),
             {k: v for k, v in header["head"].items() if k in ("kind", "n", "act_dim", "squash")}]
    for layer, kernel in zip(layers, kernels):
        item = [kernel, layer.shape, layer.act, layer.conv, layer.stored_bytes(kernel) if kernel in KERNELS else 0]
        if kernel in ("q8", "packed"):
            item.append(layer.packed()["enc"])
        parts.append(item)
    if rnn is not None:  # the cell and its matrices' forms (a feed-forward net's signature stays as it was)
        parts.append([rnn.cell, rnn.at, rnn.hidden,
                      *[(k, m.shape, m.stored_bytes(k)) for m, k in zip((rnn.ih, rnn.hh), rnn.kernels())]])
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


class NativePolicy:
    """`act(obs)` of an .acz artifact through the compiled kernels (same contract as NumpyPolicy).

    `kernels`: one per layer (see layers.KERNELS); None chooses each layer's fastest by measuring. A recurrent
    artifact's cell runs in C too (kernels.c's AczRnn; its matrices in `RecurrentLayer.kernels()`'s forms), its
    state in a buffer here that acz_act updates: `act(obs)` carries it, `reset()` zeroes it, `act(obs, state)` is
    the stateless form (NumpyPolicy's contract)."""

    def __init__(self, header: dict, blob: memoryview, kernels: list[str] | None = None):
        layers = layers_of(header, blob, recurrent=True)
        self.rnn = recurrent_of(header, blob)
        self.head = header["head"]
        self.kernels = check_kernels(layers, kernels, self.rnn)
        self.kernel_ns: list[dict[str, float]] = []  # per layer: each candidate's measured ns (when chosen here)
        if self.kernels is None:
            self.kernels, self.kernel_ns = choose_kernels(layers, _layer_inputs(header, layers, rnn=self.rnn))
        ptr = _Arrays()
        c_layers = (_Layer * len(layers))()
        iq = _iq_net(intq.plan(header, layers), ptr, IQ_BITS[self.kernels[0]]) if runs_iq(self.kernels) else None
        for layer, kernel, c in zip(layers, self.kernels, c_layers):
            if iq is None:
                fill_layer(c, layer, kernel, ptr)
            else:  # the integer-only net runs instead; the head reads only each layer's width
                c.in_, c.out = layer.shape[1], layer.shape[0]
        obs_dim = int(header["obs_dim"])
        size = scratch_sizes(layers, self.kernels, obs_dim)
        head, norm = self.head, header.get("obs_norm") or {}
        net = _Net(n_layers=len(layers), obs_dim=obs_dim, kind=0 if head["kind"] == "discrete" else 1,
                   act_dim=int(head.get("act_dim", 0)), squash=SQUASH_CODES[head.get("squash", "none")],
                   layers=ctypes.addressof(c_layers), mean=ptr(norm.get("mean"), np.float32),
                   std=ptr(norm.get("std"), np.float32), clip=float(norm.get("clip") or 0.0),
                   low=ptr(head.get("low"), np.float32), high=ptr(head.get("high"), np.float32),
                   buf0=ptr(np.zeros(size["width"]), np.float32), buf1=ptr(np.zeros(size["width"]), np.float32),
                   qbuf=ptr(np.zeros(size["qbuf"]), np.int8),
                   cols=ptr(np.zeros(size["cols"]), np.float32) if size["cols"] else None, **input_fields(header),
                   iq=ctypes.addressof(iq[0]) if iq is not None else None)
        self._state, self._rnn = self.initial_state(), None  # the carried state: acz_act writes it in place
        if self.rnn is not None:
            r, width = self.rnn, out_size(self.rnn.ih)
            self._rnn = _Rnn(cell=CELL_CODES[r.cell], at=r.at, hidden=r.hidden, state=self._state.ctypes.data,
                             gi=ptr(np.zeros(width), np.float32), gh=ptr(np.zeros(width), np.float32))
            for c, m, k in ((self._rnn.ih, r.ih, r.kernels()[0]), (self._rnn.hh, r.hh, r.kernels()[1])):
                fill_layer(c, m, k, ptr)  # c: a view into self._rnn
            net.rnn = ctypes.addressof(self._rnn)
        self.obs_dim = obs_dim
        self.signature = compute_signature(header, layers, self.kernels, self.rnn)
        self._keep, self._layers, self._net, self._iq = ptr, c_layers, net, iq
        self._action = np.zeros(max(1, net.act_dim), np.float32)
        self._fn, self._reset = _library().acz_act, _library().acz_reset
        self._net_ptr, self._action_ptr = ctypes.addressof(net), self._action.ctypes.data

    @classmethod
    def from_bytes(cls, data: bytes, kernels: list[str] | None = None) -> "NativePolicy":
        return cls(*read_artifact(data), kernels=kernels)

    @classmethod
    def load(cls, path: str | Path, kernels: list[str] | None = None) -> "NativePolicy":
        return cls.from_bytes(Path(path).read_bytes(), kernels)

    def reset(self) -> None:
        """Start a new episode: the cell's state back to zeros (kernels.c's acz_reset; feed-forward: nothing)."""
        self._reset(self._net_ptr)

    def initial_state(self) -> np.ndarray:
        """The state at an episode's start: zeros (a feed-forward net's: empty)."""
        return np.zeros(0 if self.rnn is None else state_size(self.rnn.cell, self.rnn.hidden), np.float32)

    def act(self, obs: np.ndarray, state: np.ndarray | None = None):
        """Deterministic action for one observation; with `state`, the stateless form: (action, next state)."""
        if state is not None:
            return self._act_from(obs, state)
        x = obs if (type(obs) is np.ndarray and obs.dtype == np.float32 and obs.flags.c_contiguous) \
            else np.ascontiguousarray(obs, dtype=np.float32)
        a = self._fn(self._net_ptr, x.ctypes.data, self._action_ptr)
        return a if a >= 0 else self._action.copy()

    def _act_from(self, obs: np.ndarray, state: np.ndarray):
        """act(obs, state): acz_act on `state` in the state buffer, the carried state put back after."""
        carried = self._state.copy()
        self._state[:] = state
        try:
            return self.act(obs), self._state.copy()
        finally:
            self._state[:] = carried


def time_side_by_side(policies: dict[str, NativePolicy], obs: np.ndarray, warmup: int = 200,
                      calls: int = 20, rounds: int = 200, seen: np.ndarray | None = None) -> dict[str, dict]:
    """In-kernel batch-1 latency: the C loop `acz_time` runs each policy's act() over the recorded
    observations `obs` (n observations of obs_dim values, in any shape), the policies taking turns in
    `rounds` rounds of `calls` acts each, round r on observations r * calls onwards (cycled: every
    observation is timed once rounds * calls >= n). Per name: the mean ms per act in each round
    (`rounds_ms`), and their median (`median_ms`) and 95th percentile (`p95_ms`). Ratios are best taken
    round by round (`round_ratio`): adjacent blocks share the machine's state, so drift and load cancel.
    `seen` (int64, one per observation): the timed acts on each observation are added to it."""
    names = list(policies)
    if len({p.obs_dim for p in policies.values()}) != 1:
        raise ValueError("the policies take observations of different sizes")
    obs_dim = next(iter(policies.values())).obs_dim
    obs = np.ascontiguousarray(obs, np.float32).reshape(-1, obs_dim)  # image observations: one row each
    nets = (ctypes.c_void_p * len(names))(*[policies[n]._net_ptr for n in names])
    out = np.zeros((rounds, len(names)))
    action = np.zeros(max(p._action.size for p in policies.values()), np.float32)
    if seen is not None and (seen.dtype != np.int64 or seen.shape != (len(obs),) or not seen.flags.c_contiguous):
        raise ValueError(f"seen: an int64 array of {len(obs)} counts")
    _library().acz_time(ctypes.addressof(nets), len(names), obs.ctypes.data, len(obs), obs.shape[1], warmup,
                        calls, rounds, action.ctypes.data, out.ctypes.data,
                        None if seen is None else seen.ctypes.data)
    out /= 1e6  # ns -> ms
    return {n: {"median_ms": float(np.median(out[:, i])), "p95_ms": float(np.percentile(out[:, i], 95)),
                "rounds_ms": out[:, i]} for i, n in enumerate(names)}


def round_ratio(timed: dict[str, dict], num: str, den: str) -> float:
    """Median over rounds of num's time / den's time in the same round."""
    return float(np.median(timed[num]["rounds_ms"] / timed[den]["rounds_ms"]))
