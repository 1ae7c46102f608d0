"""One artifact layer in the forms the kernels take (numpy only): decoded fp32, CSR, int8, packed.

The runtimes (numpy, C) and the exporters (C source, ONNX) read layers through here, so they all
start from the same decoded numbers. Which kernels a layer may run (see kernels.c):

  dense   always (the decoded fp32 weights);
  csr     fp32 values of the kept weights, where at most half are kept;
  q8      the codes one byte each, decoded in registers (quant and codebook layers; not a pruned
          8-bit codebook, whose pruned entries need a 257th table value 0);
  packed  the artifact's k-bit codes / codebook indices as stored (quant and codebook layers);
  int8    integer arithmetic, where the layer is k-bit quantized and every q - zero fits in
          [-127, 127] (symmetric k <= 8, asymmetric k <= 7): its inputs are rounded to int8.

A conv layer (`conv` geometry, see autocompress/conv.py) runs direct convolution ('dense', fp32),
im2col + matrix-vector per output pixel ('im2col', fp32), or 'int8' (its whole input rounded to int8
with one scale, as a Linear layer's). The same weight forms; the C kernel times them to choose.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from autocompress.codec import decode_weight, kept_positions, part, quant_ints, unpack_bits
from autocompress.conv import im2col, out_hw

KERNELS = ("dense", "csr", "int8", "q8", "packed", "im2col")
#: the integer-only net (autocompress/intq.py): one kernel for every layer, not chosen per layer; its weights
#: stored a byte each, or (IQ4, where every code fits) 4 bits each, the same arithmetic
IQ, IQ4 = "iq", "iq4"
IQ_BITS = {IQ: 8, IQ4: 4}
ACTIVATIONS = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0.0), "silu": lambda x: x / (1.0 + np.exp(-x)),
               "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
               "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x), "none": None}  # leaky slope: torch's default
CONV_KERNELS = ("dense", "im2col", "int8")
#: a layer keeping more than this share of its weights gains nothing from CSR
CSR_MAX_DENSITY = 0.5


@dataclass
class Layer:
    meta: dict               # the artifact header's entry: act, w (encoding), b
    blob: memoryview

    @property
    def act(self) -> str:
        return self.meta["act"]

    @property
    def conv(self) -> dict | None:
        return self.meta.get("conv")

    @property
    def out_hw(self) -> tuple[int, int]:
        return (1, 1) if self.conv is None else out_hw(self.conv)

    @property
    def shape(self) -> tuple[int, int]:
        """(out, in), as torch and the artifact store it."""
        return tuple(self.meta["w"]["shape"])

    @cached_property
    def w(self) -> np.ndarray:
        """Decoded fp32 weights, input-major (in x out) and contiguous."""
        return np.ascontiguousarray(decode_weight(self.meta["w"], self.blob).T)

    @cached_property
    def b(self) -> np.ndarray | None:
        loc = self.meta["b"]
        return None if loc is None else np.frombuffer(part(self.blob, loc), dtype="<f4").copy()

    def kernels(self) -> list[str]:
        """The kernels this layer may run, in KERNELS order."""
        enc, out = self.meta["w"]["enc"], ["dense"]
        if self.conv is not None:
            return [k for k in CONV_KERNELS if k != "int8" or self.int8() is not None]
        if (self.w != 0).mean() <= CSR_MAX_DENSITY:
            out.append("csr")
        if self.int8() is not None:
            out.append("int8")
        if self.q8() is not None:
            out.append("q8")
        if enc != "f32":
            out.append("packed")
        return out

    def stored_bytes(self, kernel: str) -> int:
        """Bytes of the weights in the form `kernel` reads (what a C export puts in flash; bias aside)."""
        n_out, n_in = self.shape
        if kernel == "im2col" or (kernel == "dense" and self.conv is not None):  # conv: the filter matrix
            return 4 * n_out * n_in
        if kernel == "dense":
            return 4 * self.dense()[1] * n_in
        if kernel == "csr":
            return 6 * int((self.w != 0).sum()) + 4 * (n_in + 1)
        if kernel == "int8":
            return n_out * n_in + 4 * n_out
        pk = self.packed()
        side = sum(a.nbytes for a in (pk["scale"], pk["zero"], pk["table"]) if a is not None)
        if kernel == "q8":
            return n_out * n_in + side + 4
        return pk["codes"].nbytes + (pk["bitmap"].nbytes if pk["bitmap"] is not None else 0) + side

    @cached_property
    def _dense(self) -> tuple[np.ndarray, int, np.ndarray | None]:
        """(W in x wpad, wpad, the last wpad % 8 columns output-major or None): the dense kernel's form.
        More than 8 outputs are padded with zero columns to whole blocks of 32 (4 vector chains, or 64
        beyond 32): a layer of 89 outputs otherwise ends in blocks of 8, each one latency-bound chain."""
        n_in, n_out = self.w.shape
        wpad = n_out if n_out <= 8 else -(-n_out // 32) * 32
        w = np.zeros((n_in, wpad), np.float32)
        w[:, :n_out] = self.w
        tail = w[:, wpad - wpad % 8:].T
        return w, wpad, (np.ascontiguousarray(tail) if tail.size else None)

    def dense(self) -> tuple[np.ndarray, int, np.ndarray | None]:
        return self._dense

    def csr(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ptr[in + 1], output index, value) of the nonzero weights, grouped by input."""
        nz = self.w != 0
        rows, cols = np.nonzero(nz)  # row-major over (in, out): grouped by input
        ptr = np.concatenate([[0], np.cumsum(nz.sum(axis=1))]).astype(np.int32)
        return ptr, cols.astype(np.uint16), self.w[rows, cols].astype(np.float32)

    @cached_property
    def _int8(self) -> tuple[np.ndarray, np.ndarray] | None:
        meta = self.meta["w"]
        if meta["enc"] != "quant":
            return None
        pos = kept_positions(meta, self.blob)
        ints, scale = quant_ints(meta, self.blob, pos)
        if ints.size and (ints.min() < -127 or ints.max() > 127):
            return None
        q = np.zeros(self.shape[0] * self.shape[1], np.int8)
        q[pos] = ints
        return q.reshape(self.shape), scale

    def int8(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(int8 weights out x in, fp32 scale per output row), or None where the layer cannot run int8."""
        return self._int8

    @cached_property
    def _q8(self) -> tuple[np.ndarray, np.ndarray] | None:
        meta = self.meta["w"]
        if meta["enc"] == "f32" or (meta["enc"] == "codebook" and meta["sparse"] and meta["bits"] >= 8):
            return None
        pk = self.packed()
        n_out, n_in = self.shape
        pos = kept_positions(meta, self.blob)
        codes = unpack_bits(part(self.blob, meta["codes"]), meta["bits"], len(pos))
        table = pk["table"]
        if meta["enc"] == "codebook":
            table = np.append(table, np.float32(0))  # pruned weights point at a 0 after the codebook
            fill = np.full(n_out * n_in, len(table) - 1, np.uint8)
        else:  # pruned weights get the code that decodes to exactly 0: q - zero = 0
            zero = pk["zero"] if pk["zero"] is not None else np.zeros(1, np.uint8)
            fill = (np.broadcast_to(zero, (n_out,)).astype(np.int32) - meta["qmin"]).repeat(n_in).astype(np.uint8)
        fill[pos] = codes
        return np.ascontiguousarray(fill.reshape(n_out, n_in).T), table

    def q8(self) -> tuple[np.ndarray, np.ndarray | None] | None:
        """(codes in x out, one byte each; the codebook with a trailing 0, or None for quant layers), or
        None where the layer cannot run q8. Scales and zero points are packed()'s."""
        return self._q8

    def packed(self) -> dict:
        """The stored encoding as arrays: codes, bitmap, scale, zero, table, bits, qmin, enc, per_row."""
        meta = self.meta["w"]
        arr = {k: np.frombuffer(part(self.blob, meta[k]), dtype=dt) if k in meta else None
               for k, dt in (("codes", np.uint8), ("bitmap", np.uint8), ("zero", np.uint8), ("scale", "<f4"),
                             ("codebook", "<f4"))}
        return {"codes": arr["codes"], "bitmap": arr["bitmap"] if meta["sparse"] else None, "zero": arr["zero"],
                "scale": arr["scale"], "table": arr["codebook"], "bits": meta["bits"], "qmin": meta.get("qmin", 0),
                "enc": meta["enc"], "per_row": arr["scale"] is not None and arr["scale"].size > 1}


def layers_of(header: dict, blob: memoryview, recurrent: bool = False) -> list[Layer]:
    """The artifact's feed-forward layers. Every runtime and export reads them through here: one that does not
    run a recurrent net's cell (header `rnn`) gets a ValueError saying so, rather than acting without it;
    `recurrent=True` (a reader that runs it too, see `recurrent_of`) gets the layers around the cell."""
    if header.get("rnn") and not recurrent:
        raise ValueError(f"a recurrent ({header['rnn']['cell']}) artifact: only the numpy and C runtimes, the C and "
                         "fp32 ONNX exports and the MCU targets (fp32) run its cell so far; the integer-only net and "
                         "the other exports do not")
    return [Layer(m, blob) for m in header["layers"]]


@dataclass
class RecurrentLayer:
    """The artifact's recurrent cell (header `rnn`): it runs after the first `at` layers, on `ih` and `hh`."""

    cell: str
    at: int
    hidden: int
    ih: Layer
    hh: Layer

    def kernels(self, allowed: tuple[str, ...] = ("dense", "csr", "q8")) -> list[str]:
        """The kernels of ih and hh in the C runtime and export: their smallest fp32 form among `allowed`
        (compact_kernels; never int8, which would round the cell's inputs), a fixed rule, so nothing is recorded."""
        return compact_kernels([self.ih, self.hh], None, allowed)


def recurrent_of(header: dict, blob: memoryview) -> RecurrentLayer | None:
    r = header.get("rnn")
    return None if not r else RecurrentLayer(r["cell"], int(r["at"]), int(r["hidden"]), Layer(r["ih"], blob),
                                             Layer(r["hh"], blob))


def int8_representable(layers: list[Layer]) -> bool:
    """Whether every layer, Linear or conv, is int8-representable (`Layer.int8`): what the int8 exports
    (tflite-int8, pte-int8) need."""
    return all(layer.int8() is not None for layer in layers)


def int8_only(layers: list[Layer], bits: int = 8) -> bool:
    """Whether the integer-only net can run these layers: every one int8-representable, Linear or a hidden conv
    layer, and (bits 4) every code within [-8, 7]."""
    def fits(q: np.ndarray) -> bool:
        return bits == 8 or q.size == 0 or (int(q.min()) >= -8 and int(q.max()) <= 7)

    return bool(layers) and layers[-1].conv is None and int8_representable(layers) and all(
        fits(layer.int8()[0]) for layer in layers)


def runs_iq(kernels: list[str] | None) -> bool:
    """Whether a kernel list (one per layer) asks for the integer-only net ('iq' or 'iq4' for every layer)."""
    if not kernels or not set(kernels) & set(IQ_BITS):
        return False
    if len(set(kernels)) > 1:
        raise ValueError("kernels: 'iq' / 'iq4' (integer-only) runs the whole net: give one of them for every layer")
    return True


def check_kernels(layers: list[Layer], kernels: list[str] | None,
                  rnn: RecurrentLayer | None = None) -> list[str] | None:
    """A kernel list given by the caller (e.g. a trial's recorded choice): one per layer, each allowed (`rnn`:
    the net's recurrent cell, which the integer-only net does not run)."""
    if kernels is None:
        return None
    kernels = list(kernels)
    if len(kernels) != len(layers):
        raise ValueError(f"kernels: {len(kernels)} given for {len(layers)} layers")
    if rnn is not None and runs_iq(kernels):
        raise ValueError("kernels: the integer-only net ('iq') does not run a recurrent artifact")
    if runs_iq(kernels):
        if not int8_only(layers, IQ_BITS[kernels[0]]):
            raise ValueError(f"kernels: {kernels[0]!r} (integer-only) needs every layer's weights representable in "
                             f"{IQ_BITS[kernels[0]]} bits (and the last layer Linear)")
        return kernels
    for i, (k, layer) in enumerate(zip(kernels, layers)):
        if k not in layer.kernels():
            raise ValueError(f"kernels[{i}] = {k!r}: layer {i} can run {', '.join(layer.kernels())}")
    return kernels


def compact_kernels(layers: list[Layer], measured: list[str] | None = None,
                    allowed: tuple[str, ...] = ("dense", "csr", "q8")) -> list[str]:
    """Per layer, the smallest stored form among `allowed` (default: the fast ones; add 'packed', which
    decodes bit by bit, for the smallest flash). Layers `measured` as int8 stay int8: int8 rounds
    inputs, so any other kernel would act unlike the policy that was evaluated."""
    return ["int8" if measured and measured[i] == "int8" else
            min((k for k in layer.kernels() if k in allowed), key=layer.stored_bytes)
            for i, layer in enumerate(layers)]


def _int8_inputs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """kernels.c's INT8 input rounding, shared by its dense and conv kernels, for rows of x: (each row
    rounded to int8 with one scale max|x| / 127, as int32; each row's max|x|; that max, or 1 where it is 0)."""
    x = np.atleast_2d(np.asarray(x, np.float32))
    m = np.abs(x).max(axis=1, keepdims=True)
    safe = np.where(m > 0, m, np.float32(1))
    return np.clip(np.rint(x * (np.float32(127) / safe)), -127, 127).astype(np.int32), m, safe


def int8_forward(x: np.ndarray, q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """kernels.c's INT8 arithmetic in numpy, for rows of x: inputs rounded to int8 with one scale
    max|x| / 127 per row, int32 accumulation, fp32 scale per output (the bias is added by the caller)."""
    xq, m, safe = _int8_inputs(x)
    acc = xq @ q.astype(np.int32).T
    return np.where(m > 0, acc.astype(np.float32) * ((safe / np.float32(127)) * scale), np.float32(0))


def int8_conv_forward(x: np.ndarray, q: np.ndarray, scale: np.ndarray, g: dict) -> np.ndarray:
    """kernels.c's INT8 convolution in numpy, for rows of flat CHW inputs x: each row's input rounded to
    int8 with one scale max|x| / 127, int32 accumulation per output pixel, fp32 scale per output channel;
    flat CHW out (the bias is added by the caller)."""
    xq, m, safe = _int8_inputs(x)
    acc = im2col(xq, g) @ q.astype(np.int32).T                       # (B, H'W', out)
    y = acc.astype(np.float32) * ((safe[:, :, None] / np.float32(127)) * scale)
    return np.ascontiguousarray(np.where(m[:, :, None] > 0, y, np.float32(0)).transpose(0, 2, 1)).reshape(len(xq), -1)
