"""Integer-only int8 inference: what a core without an FPU runs (kernel 'iq', net-wide).

Why its own path: the per-layer 'int8' kernel (layers.py) rounds each layer's input with a scale found
per call (max|x| / 127) and rescales in fp32, which on a Cortex-M0+ is soft-float at every output.
Here activations stay int8 from the observation to the last layer, with scales fixed ahead of time
from teacher-visited observations (`artifact.calibrate`, stored in the artifact's header as `iq`):

  input     x_q = round(obs * a + c), clamped to [-127, 127]: normalisation and the input scale folded
            into one multiply-add per observation value (a = 1 / (std s_x), c = -mean a), in 32-bit fixed
            point from the fp32 observation's bits, 16-bit significands of obs and a (`input_ints`);
  layer     acc_j = bias_j + sum_k q_jk x_qk in int32 (the layer's int8 weights, one scale s_w per row;
            bias_j = round(b_j / (s_w_j s_x)));
  hidden    p_j = clamp(round(acc_j M_j), -127, 127) with M_j = s_w_j s_x / s_p as a fixed-point multiplier
            (int32 m with MULT_BITS significant bits and a right shift r; where M < 1/4 only the product's
            high word counts), s_p the pre-activation's calibrated scale (tanh's clipped at TANH_RANGE:
            beyond it tanh is flat to within int8's step);
            then relu = max(p, 0) or none = p, every other activation a 255-entry int8 table over
            p = -127 .. 127 (no libm), whose output scale max|f| / 127 is the next layer's s_x;
  conv      a conv layer (hidden) is the same per output pixel over its patch of int8 inputs (im2col, padded
            with 0: the symmetric activations' zero), one multiplier per output channel; activations flat C x H x W
            as the fp32 runtimes hold them (an H x W x C observation quantised in its own order, then transposed);
  output    a discrete head: argmax of round(acc_j M_j), every output brought to one scale, 8x the widest
            row's (HEAD_SCALE; integers); a continuous head: acc_j * (s_w_j s_x) in fp32, then the head as
            every runtime's.

Every step but a continuous head's output scaling is integer, so the numpy mirror (`forward`) equals
the C kernel exactly (that scaling is one IEEE fp32 product in both). The C kernel stores the weights a
byte each (kernel 'iq') or, where every code is within [-8, 7], 4 bits each ('iq4'): WEIGHT_FORMS; the
arithmetic is the same. Eligible nets: Linear and conv layers (the last one Linear), each int8-representable
(`Layer.int8()`: k-bit quantized, k <= 8 symmetric, <= 7 asymmetric).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autocompress.conv import batch_dims, c_fields, im2col, in_size, out_hw, to_chw
from autocompress.layers import ACTIVATIONS, Layer, int8_only

#: tanh(4) = 0.99933: clipping its pre-activation there costs less than int8's step (1/127)
TANH_RANGE = 4.0
#: obs a + c is formed in int32 with INPUT_FRAC fractional bits from 16-bit significands of obs and a: one
#: 16 x 16 -> 32 multiply (Thumb-1 has no 64-bit one; libgcc's 64-bit arithmetic cost ~230 cycles an input);
#: relative error <= 2**-15, far below int8's step. Products of 2**30 and more saturate (INPUT_SAT), far
#: beyond the 127.5 that clamps, and |c| < 2**14 keeps the sum within int32.
INPUT_FRAC = 16
INPUT_SAT = 2 ** 30
#: significant bits of a requantization multiplier (its low 16 bits are zero): a core without a 32 x 32 -> 64
#: multiply then forms the product's high word from two 16 x 16 products (kernels.c's acz_iq_scale); M is
#: still within 2**-15 relative, far below int8's step
MULT_BITS = 15
#: a discrete head's outputs are compared at 8x its widest row's scale: every multiplier is then below 1/4, so
#: each takes kernels.c's high-word path (no 64-bit product on Thumb-1); outputs within 8 accumulator units
#: of each other tie, far below the step of the int8 weights that made them
HEAD_SCALE = 1 / 8
#: a bias beyond this (in accumulator units) saturates any output anyway; keeps acc within int32
BIAS_LIMIT = 2 ** 30


def fixed_point(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each positive multiplier M as (mult, shift): M ~= mult / 2**shift, mult in [2**30, 2**31) with
    MULT_BITS significant bits (shift clamped to [1, 62]: a smaller M rounds every product to 0)."""
    frac, exp = np.frexp(np.asarray(m, np.float64))
    mult = np.rint(frac * 2.0 ** MULT_BITS).astype(np.int64) << (31 - MULT_BITS)
    top = mult == 2 ** 31
    mult[top] //= 2
    exp = exp + top
    shift = 31 - exp
    small = shift > 62
    mult[small], shift[small] = 0, 62
    if (shift < 1).any():
        raise ValueError("requantization multiplier >= 2**30: a layer's output scale is far below its accumulator's")
    return mult.astype(np.int32), shift.astype(np.int32)


def requantize(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray, clamp: bool = True) -> np.ndarray:
    """round(acc * mult / 2**shift), halves rounded up (the C kernel's 64-bit product), clamped to
    [-127, 127] unless `clamp` is False."""
    m, s = mult.astype(np.int64), shift.astype(np.int64)
    p = (acc.astype(np.int64) * m + (np.int64(1) << (s - 1))) >> s
    return np.clip(p, -127, 127) if clamp else p


def input_fixed(a: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x = obs a + c (a > 0) in input_ints' fixed point: a = A 2^(ex - 16) with A of 16 significant bits, the
    shift s = 142 - ex that brings m16 A (m16: obs's top 16 significand bits) to INPUT_FRAC fractional bits
    (an observation with biased exponent E: m16 A >> (s - E)), and c at INPUT_FRAC fractional bits."""
    frac, ex = np.frexp(np.asarray(a, np.float64))
    big = np.rint(frac * 2.0 ** 16).astype(np.int64)
    top = big == 2 ** 16
    big[top], ex = 2 ** 15, ex + top
    if (np.abs(c) >= 2 ** 14).any():
        raise ValueError("an observation's mean is over 2**14 int8 steps from 0: normalise it first")
    return big, (142 - ex).astype(np.int64), np.rint(np.asarray(c, np.float64) * 2.0 ** INPUT_FRAC).astype(np.int64)


def input_ints(obs: np.ndarray, in_a: np.ndarray, in_s: np.ndarray, in_c: np.ndarray) -> np.ndarray:
    """int8 inputs round(obs a + c), clamped to [-127, 127], from the fp32 observations' bits alone
    (kernels.c's acz_iq_input; no floating point, so a core without an FPU links no soft-float; input_fixed
    gives in_a, in_s, in_c): t = m16 in_a >> (in_s - E) for a normal obs (m16 its top 16 significand bits, E
    its biased exponent), 0 for a zero or subnormal one, INPUT_SAT where the shift is -1 or less (|obs| far
    too large; inf and NaN); c added with obs's sign; the sum rounded half away from zero at 2^INPUT_FRAC."""
    u = np.ascontiguousarray(obs, np.float32).view(np.uint32).astype(np.int64)
    biased = (u >> 23) & 0xFF
    p = (((u & 0x7FFFFF) | 0x800000) >> 8) * in_a
    shift = in_s - biased
    t = np.where(biased == 0, 0, np.where(shift <= 1, INPUT_SAT, p >> np.clip(shift, 0, 63)))
    v = np.where((u >> 31) == 1, in_c - t, in_c + t)
    r = np.minimum((np.abs(v) + (1 << (INPUT_FRAC - 1))) >> INPUT_FRAC, 127)
    return np.where(v < 0, -r, r)


@dataclass
class IQLayer:
    q: np.ndarray                       # int8 weights, out x in (row-major, as the artifact's rows)
    bias: np.ndarray                    # int32, in the accumulator's scale
    act: str
    mult: np.ndarray | None = None      # hidden layers (and a discrete head's output layer, unclamped, to
    shift: np.ndarray | None = None     # one scale for the argmax): requantization, int32 and shift per output
    lut: np.ndarray | None = None       # hidden layers whose activation is not relu / none: int8[255]
    oscale: np.ndarray | None = None    # a continuous head's output layer: acc * oscale (fp32) per output
    conv: dict | None = None            # a conv layer's geometry (autocompress/conv.py); q: out x (C·kh·kw)

    @property
    def lut_odd(self) -> bool:
        """An odd activation's table (tanh): the C export stores its half p = 0 .. 127, -lut[-p] below."""
        return self.lut is not None and bool(np.array_equal(self.lut[::-1], -self.lut))


@dataclass
class IQPlan:
    in_a: np.ndarray                    # per observation value, x_q = round(obs a + c) in fixed point:
    in_s: np.ndarray                    # a's 16-bit significand, its shift, c (input_fixed, input_ints)
    in_c: np.ndarray
    layers: list[IQLayer]
    input: dict | None = None           # conv nets: the observation's shape and layout (header `input`)


def plan(header: dict, layers: list[Layer]) -> IQPlan:
    """The integer-only net of a calibrated artifact: everything the kernels read, derived once here."""
    cal = header.get("iq")
    if cal is None or not int8_only(layers):
        raise ValueError("this artifact has no integer-only calibration (artifact.calibrate) or a layer is not int8")
    n_obs = int(header["obs_dim"])
    norm = header.get("obs_norm") or {}
    mean = np.asarray(norm.get("mean", np.zeros(n_obs)), np.float64)
    std = np.asarray(norm.get("std", np.ones(n_obs)), np.float64)
    s_x = float(cal["x"])
    a = 1.0 / (std * s_x)  # x_q = round(obs a + c), in fixed point: see input_ints
    in_a, in_s, in_c = input_fixed(a, -mean * a)
    out = []
    for i, layer in enumerate(layers):
        q, s_w = layer.int8()
        s_acc = np.where(s_w > 0, s_w, 1).astype(np.float64) * s_x  # a zero scale: an all-zero row
        b = np.zeros(len(s_w)) if layer.b is None else layer.b.astype(np.float64)
        bias = np.clip(np.rint(b / s_acc), -BIAS_LIMIT, BIAS_LIMIT).astype(np.int32)
        if i == len(layers) - 1:
            if header["head"]["kind"] == "discrete":  # argmax in integers: every output at one scale
                out.append(IQLayer(q, bias, layer.act, *fixed_point(s_acc / s_acc.max() * HEAD_SCALE)))
            else:
                out.append(IQLayer(q, bias, layer.act, oscale=s_acc.astype(np.float32)))
            break
        s_p = float(cal["p"][i])
        mult, shift = fixed_point(s_acc / s_p)
        lut, s_x = None, s_p
        if layer.act not in ("relu", "none"):
            f, s_x = activation_table(layer.act, s_p)
            lut = np.clip(np.rint(f / s_x), -127, 127).astype(np.int8)
        out.append(IQLayer(q, bias, layer.act, mult, shift, lut, conv=layer.conv))
    return IQPlan(in_a, in_s, in_c, out, header.get("input"))


def activation_table(act: str, s_p: float) -> tuple[np.ndarray, float]:
    """An activation's values over the int8 pre-activations p = -127 .. 127 at scale s_p, and their int8
    scale max|f| / 127 (the next layer's input scale)."""
    f = ACTIVATIONS[act](np.arange(-127, 128, dtype=np.float64) * s_p)
    return f, float(np.abs(f).max()) / 127.0 or 1.0


def forward(p: IQPlan, obs: np.ndarray) -> np.ndarray:
    """The integer-only net's outputs for rows of raw observations, exactly the C kernel's: a continuous
    head's fp32 outputs; a discrete head's integers at one scale (as float64, exact), whose argmax acts."""
    obs = np.asarray(obs, np.float32)
    lead = obs.shape[:-1] if p.input is None else batch_dims(obs.shape, p.input["shape"])
    x = to_chw(input_ints(obs.reshape(-1, p.in_a.size), p.in_a, p.in_s, p.in_c), p.input)
    for i, layer in enumerate(p.layers):
        # a conv layer: every output pixel's patch a row (batch x pixels x C·kh·kw), channels last until activated
        x_rows = x if layer.conv is None else im2col(x, layer.conv)
        acc = x_rows @ layer.q.astype(np.int64).T + layer.bias
        if layer.oscale is not None or i == len(p.layers) - 1:
            y = acc.astype(np.int32).astype(np.float32) * layer.oscale if layer.oscale is not None else \
                requantize(acc, layer.mult, layer.shift, clamp=False).astype(np.float64)
            return y.reshape(lead + y.shape[-1:])
        v = requantize(acc, layer.mult, layer.shift)
        x = layer.lut.astype(np.int64)[v + 127] if layer.lut is not None else (
            np.maximum(v, 0) if layer.act == "relu" else v)
        if layer.conv is not None:  # flat C x H x W, as the fp32 runtimes and kernels.c hold it
            x = x.transpose(0, 2, 1).reshape(len(x), -1)
    raise AssertionError("unreachable: the last layer returns")


#: rows a kernels.c pass computes at once (acz_iq_dense): each input word is read once for all of them
ROWS = 4
#: weight bits the integer-only net may store -> (inputs a stored 32-bit word holds, the order they are
#: stored in, the offset that makes every weight unsigned). 8: bytes w0 w2 w1 w3, whose even bytes are the pair
#: (w0, w1) and odd bytes (w2, w3), each SMLAD's lanes after one mask. 4 (codes within [-8, 7], two a byte,
#: the lower nibble first): nibbles w0 w2 w4 w6 w1 w3 w5 w7, so the word shifted by 4 s and masked to nibbles
#: 0 and 4 holds the pair (w_2s, w_2s+1).
WEIGHT_FORMS = {8: (4, [0, 2, 1, 3], 128), 4: (8, [0, 2, 4, 6, 1, 3, 5, 7], 8)}


def padded_inputs(n_in: int, bits: int = 8) -> int:
    """A layer's inputs rounded up to whole stored words (kernels.c's AczIQLayer.inpad)."""
    per_word = WEIGHT_FORMS[bits][0]
    return -(-n_in // per_word) * per_word


def padded(q: np.ndarray, bits: int = 8) -> np.ndarray:
    """Rows of int8 weights padded with zeros to whole words, each word's inputs in WEIGHT_FORMS' order, made
    unsigned by its offset, as the bytes kernels.c loads (out x bytes per row)."""
    per_word, order, offset = WEIGHT_FORMS[bits]
    n_out, n_in = q.shape
    pad = np.zeros((n_out, padded_inputs(n_in, bits)), np.int16)
    pad[:, :n_in] = q
    u = (pad.reshape(n_out, -1, per_word)[:, :, order] + offset).astype(np.uint8)
    if bits == 4:  # two a byte, the lower nibble first
        u = u[:, :, 0::2] | (u[:, :, 1::2] << 4)
    return np.ascontiguousarray(u.reshape(n_out, -1))


def interleave(q: np.ndarray, bits: int = 8) -> np.ndarray:
    """The padded rows (`padded`) as kernels.c reads them, flat: each whole group of ROWS rows word by word
    (the first row's first word, the second row's, ..., then each row's next word), the rows left over after
    the last whole group one after another."""
    w = padded(q, bits)
    whole = len(w) // ROWS * ROWS
    groups = w[:whole].reshape(-1, ROWS, w.shape[1] // 4, 4).transpose(0, 2, 1, 3)
    return np.concatenate([groups.ravel(), w[whole:].ravel()])


def c_layers(p: IQPlan, bits: int = 8) -> list[dict]:
    """Per layer, kernels.c's AczIQLayer fields: ints as they are, arrays as (array, dtype) (None: NULL);
    weights stored in `bits` (WEIGHT_FORMS). The one place both the in-process runtime and the C export take
    the integer-only net's form from."""
    out = []
    for layer in p.layers:
        lut = None if layer.lut is None else (layer.lut[127:] if layer.lut_odd else layer.lut, np.int8)
        out.append({"inpad": padded_inputs(layer.q.shape[1], bits), "out": layer.q.shape[0], "act": layer.act,
                    "bits": bits, "q": (interleave(layer.q, bits), np.uint8), "bias": (layer.bias, np.int32),
                    "mult": None if layer.mult is None else (layer.mult >> 16, np.int16),  # MULT_BITS: 16 zeros
                    "shift": None if layer.shift is None else (layer.shift - 33, np.int8),  # acz_iq_scale's sh
                    "lut": lut, "lut_odd": int(layer.lut_odd),
                    "oscale": None if layer.oscale is None else (layer.oscale, np.float32),
                    **({} if layer.conv is None else {"cv": c_fields(layer.conv)})})  # AczConv (ACZ_IQ_CONV)
    return out


def activation_forms(p: IQPlan) -> set[str]:
    """The hidden activation forms kernels.c runs for this net, as its ACZ_IQ_<FORM> switches name them:
    an export compiles only these."""
    return {"LUT_ODD" if layer.lut_odd else "LUT" if layer.lut is not None else
            "RELU" if layer.act == "relu" else "NONE" for layer in p.layers[:-1]}


def has_conv(p: IQPlan) -> bool:
    """Whether the net has conv layers: kernels.c's ACZ_IQ_CONV (an MLP's export compiles none of it)."""
    return any(layer.conv is not None for layer in p.layers)


def c_input(p: IQPlan) -> dict:
    """kernels.c's AczIQNet input fields (arrays as (array, dtype)); a conv net's the observation's H x W x C
    (in_c 0: as is)."""
    out = {"in_a": (p.in_a, np.uint16), "in_s": (p.in_s, np.int16), "in_c": (p.in_c, np.int32)}
    if has_conv(p):
        hwc = p.input is not None and p.input["layout"] == "hwc"
        out.update(zip(("obs_h", "obs_w", "obs_c"), [int(v) for v in p.input["shape"]] if hwc else (0, 0, 0)))
    return out


def scratch(p: IQPlan, bits: int = 8) -> dict[str, int]:
    """Scratch the integer-only act() needs, in elements: activations (the widest padded input or conv layer's
    input / output; kernels.c's acz_iqx_t: int16 on a core with SMLAD, else int32), int32 accumulators, and a
    conv net's patch (acz_iqx_t, the widest padded C·kh·kw; 0 without conv layers)."""
    widths, cols = [], [0]
    for layer in p.layers:
        n_out, n_in = layer.q.shape
        if layer.conv is None:
            widths += [padded_inputs(n_in, bits), n_out]
        else:
            widths += [in_size(layer.conv), n_out * int(np.prod(out_hw(layer.conv)))]
            cols.append(padded_inputs(n_in, bits))
    return {"x": max(widths), "acc": max(layer.q.shape[0] for layer in p.layers), "cols": max(cols)}
