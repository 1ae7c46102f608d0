"""Byte-level encoding of compressed weights (numpy only, shared by exporter and runtime).

A weight matrix is stored as one of
  f32      -- float32 values;
  quant    -- k-bit codes packed k bits each, + fp32 scale and uint8 zero point per
              row (per-channel) or one of each (per-tensor);
  codebook -- b-bit indices packed, + the fp32 codebook;
optionally sparse: a 1-bit-per-weight bitmap, then only the kept weights' payload.
Sparse is chosen where it is smaller than dense at the same bit width (always for a
pruned codebook layer: its codebook need not contain 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """Pack unsigned integers < 2**bits (bits ≤ 8), `bits` bits each, little-endian bit order."""
    c = np.ascontiguousarray(codes, dtype=np.uint8).ravel()
    if c.size and int(c.max()) >= 2 ** bits:
        raise ValueError(f"code {int(c.max())} does not fit in {bits} bits")
    planes = np.unpackbits(c[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(planes.ravel(), bitorder="little").tobytes()


def unpack_bits(buf: bytes, bits: int, n: int) -> np.ndarray:
    planes = np.unpackbits(np.frombuffer(buf, dtype=np.uint8), bitorder="little")[: n * bits].reshape(n, bits)
    full = np.zeros((n, 8), dtype=np.uint8)
    full[:, :bits] = planes
    return np.packbits(full, axis=1, bitorder="little").ravel()


class BlobWriter:
    """Appends byte parts and remembers where each one went."""

    def __init__(self):
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> list[int]:
        loc = [self.size, len(data)]
        self.parts.append(data)
        self.size += len(data)
        return loc

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


@dataclass
class WeightPayload:
    """What a weight is made of, before byte encoding. `codes`/`values` cover every entry."""

    shape: tuple[int, int]
    mask: np.ndarray | None = None          # bool, kept entries
    values: np.ndarray | None = None        # f32
    codes: np.ndarray | None = None         # uint8 (quant codes shifted to >= 0, or codebook indices)
    bits: int = 32
    scale: np.ndarray | None = None         # quant: per row or (1,)
    zero: np.ndarray | None = None          # quant, asymmetric: zero point per row or (1,)
    qmin: int = 0                           # quant: code 0 means integer qmin
    codebook: np.ndarray | None = None


def _nbytes(n: int, bits: int) -> int:
    return math.ceil(n * bits / 8)


def encode_weight(p: WeightPayload, blob: BlobWriter) -> dict:
    n = p.shape[0] * p.shape[1]
    nnz = int(p.mask.sum()) if p.mask is not None else n
    # A codebook has no guaranteed zero entry, so pruned shared weights need the bitmap.
    sparse = p.mask is not None and (p.codebook is not None
                                     or _nbytes(n, 1) + _nbytes(nnz, p.bits) < _nbytes(n, p.bits))
    keep = p.mask.ravel() if sparse else slice(None)
    meta: dict = {"shape": list(p.shape), "bits": p.bits, "sparse": sparse}
    if sparse:
        meta["bitmap"] = blob.add(np.packbits(p.mask.ravel().astype(np.uint8), bitorder="little").tobytes())
        meta["nnz"] = nnz
    if p.codes is None:
        meta["enc"] = "f32"
        meta["values"] = blob.add(np.ascontiguousarray(p.values.ravel()[keep], dtype="<f4").tobytes())
        return meta
    meta["codes"] = blob.add(pack_bits(p.codes.ravel()[keep], p.bits))
    if p.codebook is not None:
        meta["enc"] = "codebook"
        meta["codebook"] = blob.add(np.asarray(p.codebook, dtype="<f4").tobytes())
    else:
        meta["enc"] = "quant"
        meta["qmin"] = p.qmin
        meta["scale"] = blob.add(np.asarray(p.scale, dtype="<f4").ravel().tobytes())
        if p.zero is not None:
            meta["zero"] = blob.add(np.asarray(p.zero, dtype=np.uint8).ravel().tobytes())
    return meta


def part(buf: memoryview, loc: list[int]) -> bytes:
    """The bytes of one stored part of a layer: loc is [offset, length] into the artifact's blob."""
    return bytes(buf[loc[0]: loc[0] + loc[1]])


def kept_positions(meta: dict, buf: memoryview) -> np.ndarray:
    """Flat (row-major) positions of the stored weights: the bitmap's set bits, or every position."""
    n = meta["shape"][0] * meta["shape"][1]
    if not meta["sparse"]:
        return np.arange(n)
    return np.flatnonzero(np.unpackbits(np.frombuffer(part(buf, meta["bitmap"]), np.uint8), bitorder="little")[:n])


def quant_ints(meta: dict, buf: memoryview, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Of a quant weight: the integer weights q - zero at `pos` (int32) and the scale of each row."""
    rows, cols = meta["shape"]
    codes = unpack_bits(part(buf, meta["codes"]), meta["bits"], len(pos)).astype(np.int32)
    scale = np.frombuffer(part(buf, meta["scale"]), dtype="<f4")
    zero = np.frombuffer(part(buf, meta["zero"]), dtype=np.uint8).astype(np.int32) if "zero" in meta \
        else np.zeros(scale.size, np.int32)
    row = pos // cols if scale.size > 1 else np.zeros_like(pos)
    return codes + meta["qmin"] - zero[row], np.broadcast_to(scale, (rows,)).astype(np.float32)


def decode_weight(meta: dict, buf: memoryview) -> np.ndarray:
    rows, cols = meta["shape"]
    pos = kept_positions(meta, buf)
    out = np.zeros(rows * cols, dtype=np.float32)
    if meta["enc"] == "f32":
        out[pos] = np.frombuffer(part(buf, meta["values"]), dtype="<f4")
    elif meta["enc"] == "codebook":
        codes = unpack_bits(part(buf, meta["codes"]), meta["bits"], len(pos))
        out[pos] = np.frombuffer(part(buf, meta["codebook"]), dtype="<f4")[codes]
    else:
        ints, scale = quant_ints(meta, buf, pos)
        # float32 throughout, in this order: the C kernel's PACKED decode computes the same values
        out[pos] = ints.astype(np.float32) * scale[pos // cols]
    return out.reshape(rows, cols)
