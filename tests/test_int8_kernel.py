"""The int8 kernel's integer sums are exact on every build of it: AVX-512 VNNI (vpdpbusd on
w + 128, the 128 * sum x taken off), AVX2 (int16 pairs, vpmaddwd), SSE2 (the same in 128 bits) and
the portable loop, at the extremes (every weight and input +-127) and at every tail length around the
vector widths."""

import ctypes
import sys

import numpy as np
import pytest

from autocompress import native
from autocompress.layers import int8_forward
from autocompress.native import KIND_CODES, _Layer
from test_native import require_compiler

#: the builds: this CPU's best (-march=native), AVX2 without VNNI, SSE2 alone, and the portable C forced
BUILDS = {"native": (), "avx2": ("-mno-avx512vnni",), "sse2": ("-mno-avx2",), "portable": ("-DACZ_PORTABLE",)}
SHAPES = [(rows, n) for rows in (1, 3, 4, 5, 9) for n in (1, 15, 16, 17, 31, 32, 33, 64, 100, 256)]


def int8_layer_sums(lib: ctypes.CDLL, q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """acz_layer on an INT8 layer with unit row scales and no bias, its input integers with max |x| = 127:
    the input rounds to itself (scale 1), so each output is the layer's integer sum as a float."""
    rows, n = q.shape
    q, x = np.ascontiguousarray(q, np.int8), np.ascontiguousarray(x, np.float32)
    assert np.abs(x).max() == 127
    scale, y, qbuf = np.ones(rows, np.float32), np.full(rows, np.nan, np.float32), np.zeros(n, np.int8)
    layer = _Layer(in_=n, out=rows, act=0, kind=KIND_CODES["int8"], q=q.ctypes.data, qscale=scale.ctypes.data)
    lib.acz_layer(ctypes.byref(layer), x.ctypes.data, y.ctypes.data, qbuf.ctypes.data, None)
    return y


@pytest.fixture(scope="module", params=list(BUILDS))
def lib(request):
    require_compiler()
    so = native._library(BUILDS[request.param])
    so.acz_layer.argtypes = [ctypes.c_void_p] * 5
    return so


def _cases(rows: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.integers(-127, 128, n)
    x[rng.integers(n)] = 127 * rng.choice([-1, 1])
    yield "random", rng.integers(-127, 128, (rows, n)), x
    ones = np.ones((rows, n), np.int64)
    yield "+127 x +127", 127 * ones, np.full(n, 127)
    yield "-127 x +127", -127 * ones, np.full(n, 127)
    yield "-127 x -127", -127 * ones, np.full(n, -127)
    alt = np.where(np.arange(n) % 2, 127, -127)
    yield "alternating", np.tile(alt, (rows, 1)), -alt


@pytest.mark.parametrize("rows,n", SHAPES)
def test_int8_sums_are_exact(lib, rows, n):
    for name, q, x in _cases(rows, n, seed=rows * 1000 + n):
        got = int8_layer_sums(lib, q, x)
        want = q.astype(np.int64) @ x.astype(np.int64)
        assert np.array_equal(got.astype(np.int64), want), (name, got[:4], want[:4])


@pytest.mark.parametrize("rows,n", [(256, 256), (7, 33), (2, 256)])
def test_a_layer_equals_the_numpy_int8_arithmetic_bit_for_bit(lib, rows, n):
    """Inputs rounded to int8, exact sums, one fp32 scale per row, the bias: layers.int8_forward + b to the
    bit (the kernels are built with -ffast-math; the row scale is kept from re-association)."""
    rng = np.random.default_rng(rows + n)
    q = rng.integers(-127, 128, (rows, n)).astype(np.int8)
    scale, b = rng.uniform(1e-3, 1e-1, rows).astype(np.float32), rng.normal(size=rows).astype(np.float32)
    qbuf = np.zeros(n, np.int8)
    layer = _Layer(in_=n, out=rows, act=0, kind=KIND_CODES["int8"], q=q.ctypes.data, qscale=scale.ctypes.data,
                   b=b.ctypes.data)
    for x in rng.normal(size=(50, n)).astype(np.float32):
        y = np.zeros(rows, np.float32)
        lib.acz_layer(ctypes.byref(layer), x.ctypes.data, y.ctypes.data, qbuf.ctypes.data, None)
        assert np.array_equal(y, int8_forward(x, q, scale)[0] + b)


def test_each_build_runs_its_own_path(lib):
    """The sums above came from the path each build was meant to force (acz_i8_path: 3 VNNI, 2 AVX2,
    1 SSE2, 0 plain C), as far as this CPU has the instructions."""
    lib.acz_i8_path.restype = ctypes.c_int
    flags = set(open("/proc/cpuinfo").read().split()) if sys.platform == "linux" else set()
    best = 3 if {"avx512_vnni", "avx512vl", "avx512bw"} <= flags else 2 if "avx2" in flags else \
        1 if "sse2" in flags else 0
    want = {"native": best, "avx2": min(best, 2), "sse2": min(best, 1), "portable": 0}
    build = next(name for name, flags in BUILDS.items() if native._library(flags) is lib)
    assert lib.acz_i8_path() == want[build]
