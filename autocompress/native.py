"""The C runtime: the same .acz artifact, run by a small compiled kernel through one ctypes call.

Why: at batch 1 these MLPs are bound by per-call overhead. numpy pays ~1 µs per op (three
ops per layer, plus the action head), so a [32, 32] student can never be much faster than a
[256, 256] teacher there. A device would run compiled code; this kernel does the whole act()
(normalisation, every layer, activation, argmax or squash + bounds) in one C call, so smaller,
sparser nets really run faster (for small nets the ~2.5 µs Python/ctypes call still dominates:
docs/BENCHMARKS.md, "Where a C-runtime act() goes"):

  dense layer   y = x @ W, W stored input-major (in x out): the inner loop over outputs is
                contiguous and vectorises without reordering any sum;
  sparse layer  only the kept weights (compressed by input), where density < SPARSE_BELOW.

Weights are decoded from the artifact once at load (like NumpyPolicy); quantized and shared
weights run as their decoded fp32 values, so actions equal NumpyPolicy's up to float rounding.
The kernel is compiled on first use with the system C compiler (`cc`, or $CC) into
$AUTOCOMPRESS_NATIVE_CACHE (default ~/.cache/autocompress/native); `available()` says whether
that works here, and measurement falls back to the numpy runtime where it does not.
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

from autocompress.runtime import NumpyPolicy, read_artifact

#: a layer whose share of nonzero weights is below this runs sparse (measured here: the scatter
#: loop beats the dense vectorised one only below ~7% density; at 3% it takes 0.65x the time)
SPARSE_BELOW = 0.05

_SOURCE = r"""
#include <math.h>
#include <string.h>
#define BLOCK 32
typedef struct {
    int in, out, act, sparse;          /* act: 0 none, 1 tanh, 2 relu, 3 silu, 4 elu, 5 leaky_relu */
    const float *w;                    /* dense: in x out, input-major */
    const int *ptr, *idx;              /* sparse: ptr[in + 1] into idx/val (output index, value) */
    const float *val;
    const float *b;                    /* NULL: no bias */
} Layer;
typedef struct {
    int n_layers, obs_dim, kind, act_dim, squash;   /* kind 0 discrete, 1 continuous; squash 0 clip, 1 tanh, 2 clip+map */
    const Layer *layers;
    const float *mean, *std, *low, *high;            /* mean/std NULL: no observation normalisation */
    float clip;                                     /* > 0: normalised observations clipped to [-clip, clip] */
    float *buf0, *buf1;                             /* scratch, max width each */
} Net;

int acz_act(const Net *net, const float *obs, float *action) {
    const float *x = obs;
    float *bufs[2] = {net->buf0, net->buf1};
    if (net->mean) {
        for (int i = 0; i < net->obs_dim; i++) {
            float v = (obs[i] - net->mean[i]) / net->std[i];
            if (net->clip > 0.0f) v = v > net->clip ? net->clip : (v < -net->clip ? -net->clip : v);
            bufs[1][i] = v;
        }
        x = bufs[1];
    }
    for (int l = 0; l < net->n_layers; l++) {
        const Layer *L = &net->layers[l];
        float *y = bufs[l & 1];
        if (L->b) memcpy(y, L->b, sizeof(float) * L->out); else memset(y, 0, sizeof(float) * L->out);
        if (L->sparse) {
            for (int k = 0; k < L->in; k++) {
                const float xk = x[k];
                for (int p = L->ptr[k]; p < L->ptr[k + 1]; p++) y[L->idx[p]] += L->val[p] * xk;
            }
        } else {
            /* blocks of BLOCK outputs held in registers across the whole input loop */
            int j0 = 0;
            for (; j0 + BLOCK <= L->out; j0 += BLOCK) {
                float acc[BLOCK];
                for (int j = 0; j < BLOCK; j++) acc[j] = y[j0 + j];
                for (int k = 0; k < L->in; k++) {
                    const float xk = x[k];
                    const float *w = L->w + (long)k * L->out + j0;
                    for (int j = 0; j < BLOCK; j++) acc[j] += w[j] * xk;
                }
                for (int j = 0; j < BLOCK; j++) y[j0 + j] = acc[j];
            }
            for (int k = 0; k < L->in; k++) {          /* the last out % BLOCK outputs */
                const float xk = x[k];
                const float *w = L->w + (long)k * L->out;
                for (int j = j0; j < L->out; j++) y[j] += w[j] * xk;
            }
        }
        if (L->act == 1) for (int j = 0; j < L->out; j++) y[j] = tanhf(y[j]);
        else if (L->act == 2) for (int j = 0; j < L->out; j++) y[j] = y[j] > 0.f ? y[j] : 0.f;
        else if (L->act == 3) for (int j = 0; j < L->out; j++) y[j] = y[j] / (1.f + expf(-y[j]));
        else if (L->act == 4) for (int j = 0; j < L->out; j++) y[j] = y[j] > 0.f ? y[j] : expm1f(y[j]);
        else if (L->act == 5) for (int j = 0; j < L->out; j++) y[j] = y[j] > 0.f ? y[j] : 0.01f * y[j];
        x = y;
    }
    const Layer *last = &net->layers[net->n_layers - 1];
    if (net->kind == 0) {                   /* argmax, first maximum wins (as numpy) */
        int best = 0;
        for (int j = 1; j < last->out; j++) if (x[j] > x[best]) best = j;
        return best;
    }
    for (int j = 0; j < net->act_dim; j++) {
        float m = x[j], lo = net->low[j], hi = net->high[j];
        if (net->squash == 0) { action[j] = m < lo ? lo : (m > hi ? hi : m); continue; }
        float a = net->squash == 1 ? tanhf(m) : (m < -1.f ? -1.f : (m > 1.f ? 1.f : m));
        action[j] = lo + (a + 1.f) * 0.5f * (hi - lo);
    }
    return -1;
}
"""


class _Layer(ctypes.Structure):
    _fields_ = [("in_", ctypes.c_int), ("out", ctypes.c_int), ("act", ctypes.c_int), ("sparse", ctypes.c_int),
                ("w", ctypes.c_void_p), ("ptr", ctypes.c_void_p), ("idx", ctypes.c_void_p), ("val", ctypes.c_void_p),
                ("b", ctypes.c_void_p)]


class _Net(ctypes.Structure):
    _fields_ = [("n_layers", ctypes.c_int), ("obs_dim", ctypes.c_int), ("kind", ctypes.c_int),
                ("act_dim", ctypes.c_int), ("squash", ctypes.c_int), ("layers", ctypes.c_void_p),
                ("mean", ctypes.c_void_p), ("std", ctypes.c_void_p), ("low", ctypes.c_void_p),
                ("high", ctypes.c_void_p), ("clip", ctypes.c_float), ("buf0", ctypes.c_void_p),
                ("buf1", ctypes.c_void_p)]


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@lru_cache(maxsize=1)
def _library() -> ctypes.CDLL:
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (cc, gcc, clang or $CC): the C runtime is unavailable")
    # -ffast-math lets the tanh loop use glibc's vector tanhf; it is given to the compile step only:
    # linking with it would add crtfastmath, which turns on flush-to-zero for the whole process.
    flags = ["-O3", "-march=native", "-ffast-math", "-fPIC"]
    key = hashlib.sha256((_SOURCE + cc + " ".join(flags) + "split-link").encode()).hexdigest()[:16]
    cache = Path(os.environ.get("AUTOCOMPRESS_NATIVE_CACHE", Path.home() / ".cache" / "autocompress" / "native"))
    lib = cache / f"acz-{key}.so"
    if not lib.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as d:
            src, obj, tmp = Path(d) / "acz.c", Path(d) / "acz.o", Path(d) / "acz.so"
            src.write_text(_SOURCE)
            for cmd in ([cc, *flags, "-c", str(src), "-o", str(obj)], [cc, "-shared", str(obj), "-o", str(tmp), "-lm"]):
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    raise RuntimeError(f"compiling the C runtime failed: {r.stderr.strip()[-500:]}")
            os.replace(tmp, lib)  # atomic: parallel trials may compile at once
    so = ctypes.CDLL(str(lib))
    so.acz_act.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    so.acz_act.restype = ctypes.c_int
    return so


def available() -> bool:
    try:
        _library()
        return True
    except (RuntimeError, OSError):
        return False


_ACTS = {"none": 0, "tanh": 1, "relu": 2, "silu": 3, "elu": 4, "leaky_relu": 5}
_SQUASH = {"none": 0, "tanh": 1, "clip": 2}


class NativePolicy:
    """`act(obs)` of an .acz artifact through the compiled kernel (same contract as NumpyPolicy)."""

    def __init__(self, header: dict, blob: memoryview):
        ref = NumpyPolicy(header, blob)  # decodes the artifact exactly as the numpy runtime does
        self.head = ref.head
        keep: list = []  # every array the C structs point into lives as long as this object

        def ptr(a: np.ndarray | None, dtype) -> int | None:
            """A 64-byte aligned copy (whole cache lines, aligned vector loads) kept alive in `keep`."""
            if a is None:
                return None
            a = np.asarray(a, dtype=dtype).ravel()
            raw = np.empty(a.nbytes + 64, np.uint8)
            start = -raw.ctypes.data % 64
            out = raw[start:start + a.nbytes].view(dtype)
            out[:] = a
            keep.append(out)
            return out.ctypes.data

        layers = (_Layer * len(ref.layers))()
        for spec, (w, b, _), layer in zip(header["layers"], ref.layers, layers):
            n_in, n_out = w.shape  # NumpyPolicy stores W input-major already
            layer.in_, layer.out, layer.act = n_in, n_out, _ACTS[spec["act"]]
            layer.b = ptr(b, np.float32)
            nz = w != 0
            if nz.mean() < SPARSE_BELOW:
                layer.sparse = 1
                layer.ptr = ptr(np.concatenate([[0], np.cumsum(nz.sum(axis=1))]), np.int32)
                rows, cols = np.nonzero(nz)  # row-major order: grouped by input k
                layer.idx, layer.val = ptr(cols, np.int32), ptr(w[rows, cols], np.float32)
            else:
                layer.w = ptr(w, np.float32)
        width = max([w.shape[1] for w, _, _ in ref.layers] + [int(header["obs_dim"])])
        head, norm = self.head, ref.obs_norm or {}
        net = _Net(n_layers=len(layers), obs_dim=int(header["obs_dim"]), kind=0 if head["kind"] == "discrete" else 1,
                   act_dim=int(head.get("act_dim", 0)), squash=_SQUASH[head.get("squash", "none")],
                   layers=ctypes.addressof(layers), mean=ptr(norm.get("mean"), np.float32),
                   std=ptr(norm.get("std"), np.float32), clip=float(norm.get("clip") or 0.0),
                   low=ptr(head.get("low"), np.float32), high=ptr(head.get("high"), np.float32),
                   buf0=ptr(np.zeros(width), np.float32), buf1=ptr(np.zeros(width), np.float32))
        self._keep, self._layers, self._net = keep, layers, net
        self._action = np.zeros(max(1, net.act_dim), np.float32)
        self._fn = _library().acz_act
        self._net_ptr, self._action_ptr = ctypes.addressof(net), self._action.ctypes.data

    @classmethod
    def from_bytes(cls, data: bytes) -> "NativePolicy":
        return cls(*read_artifact(data))

    @classmethod
    def load(cls, path: str | Path) -> "NativePolicy":
        return cls.from_bytes(Path(path).read_bytes())

    def act(self, obs: np.ndarray):
        x = obs if (type(obs) is np.ndarray and obs.dtype == np.float32 and obs.flags.c_contiguous) \
            else np.ascontiguousarray(obs, dtype=np.float32)
        a = self._fn(self._net_ptr, x.ctypes.data, self._action_ptr)
        return a if a >= 0 else self._action.copy()
