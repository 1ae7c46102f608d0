"""Convolution geometry and its numpy arithmetic (numpy only: nets, runtimes and exporters share it).

A conv layer is a compressible layer like any other: its weight is the out x (C·kh·kw) matrix of
its filters (torch's Conv2d weight, reshaped), so quantization per output channel (= per row),
pruning, sharing and low-rank work on it unchanged. What makes it a convolution is its geometry:

  {"in_shape": [C, H, W], "kernel": [kh, kw], "stride": [sh, sw], "pad": [top, bottom, left, right]}

Between layers activations are flat vectors in channel-first order (C, H, W): a conv layer reads
C·H·W values and writes out·H'·W', and the Linear layer after the last conv reads them as they are
(torch's / SB3's flatten order). A net's observation may be channels-last (H, W, C, as RLlib and
MinAtar give it): `input` {"shape": obs shape, "layout": "hwc" | "chw"} says so, and every runtime
transposes it once, before the first layer.
"""

from __future__ import annotations

import math

import numpy as np

LAYOUTS = ("hwc", "chw")


def out_hw(g: dict) -> tuple[int, int]:
    (_, h, w), (kh, kw), (sh, sw), (t, b, left, r) = g["in_shape"], g["kernel"], g["stride"], g["pad"]
    return (h + t + b - kh) // sh + 1, (w + left + r - kw) // sw + 1


def c_fields(g: dict) -> dict[str, int]:
    """kernels.c's AczConv of a geometry: input C, H, W, kernel, stride, top / left padding, output H', W'."""
    (c, h, w), (kh, kw), (sh, sw), (pt, _, pl, _) = g["in_shape"], g["kernel"], g["stride"], g["pad"]
    oh, ow = out_hw(g)
    return {"c": c, "h": h, "w": w, "kh": kh, "kw": kw, "sh": sh, "sw": sw, "pt": pt, "pl": pl, "oh": oh, "ow": ow}


def in_size(g: dict) -> int:
    return int(np.prod(g["in_shape"]))


def same_pad(h: int, w: int, kernel: tuple[int, int], stride: tuple[int, int]) -> list[int]:
    """[top, bottom, left, right] of RLlib's (TensorFlow's) 'same' padding: output ceil(in / stride),
    the odd pixel of padding at the bottom / right."""
    out = []
    for n, k, s in ((h, kernel[0], stride[0]), (w, kernel[1], stride[1])):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        out += [total // 2, total - total // 2]
    return out


def check_image(obs_shape: tuple[int, ...], layout: str) -> tuple[int, int, int]:
    """(C, H, W) of observations of `obs_shape` read in `layout`; ValueError when they are not images of rank 3
    or the layout reads them the wrong way round (more channels than the smaller side, where the other layout
    would not: e.g. (4, 84, 84) read as channels-last)."""
    if len(obs_shape) != 3:
        raise ValueError(f"a conv encoder needs image observations of rank 3 ({layout.upper()}); the env's have "
                         f"shape {tuple(obs_shape)}")
    hwc, chw = (obs_shape[2], obs_shape[0], obs_shape[1]), tuple(obs_shape)
    (c, h, w), (oc, oh, ow) = (hwc, chw) if layout == "hwc" else (chw, hwc)
    if c > min(h, w) and oc <= min(oh, ow):
        other = "chw" if layout == "hwc" else "hwc"
        raise ValueError(f"observations of shape {tuple(obs_shape)} read as {layout.upper()} are {h}x{w} pixels of {c} "
                         f"channels: they look {'channels-first' if other == 'chw' else 'channels-last'} "
                         f"(obs_layout: {other})")
    return int(c), int(h), int(w)


def geometry_chain(obs_shape: tuple[int, ...], layout: str, filters: list[list]) -> list[dict]:
    """The geometry of each conv layer of RLlib-style `conv_filters` ([channels, kernel, stride] or
    [channels, kernel, stride, 'same' | 'valid' | [top, bottom, left, right]], kernel and stride an int or
    [h, w]) on observations of
    `obs_shape`. ValueError naming the layer when the observation is not an image of that layout or a
    layer shrinks it below 1x1."""
    c, h, w = check_image(obs_shape, layout)
    chain = []
    for i, f in enumerate(filters):
        ch, k, s, pad = (*f, "same")[:4] if len(f) == 3 else f
        k = [k, k] if isinstance(k, int) else list(k)
        s = [s, s] if isinstance(s, int) else list(s)
        g = {"in_shape": [int(c), int(h), int(w)], "kernel": k, "stride": s,
             "pad": same_pad(h, w, k, s) if pad == "same" else [0, 0, 0, 0] if pad == "valid" else list(pad)}
        oh, ow = out_hw(g)
        if oh < 1 or ow < 1:
            raise ValueError(f"conv_filters[{i}] {list(f)}: a {k[0]}x{k[1]} kernel with stride {s} on a {h}x{w} "
                             f"input leaves {oh}x{ow}: the image shrinks below 1x1")
        chain.append(g)
        c, h, w = ch, oh, ow
    return chain


def batch_dims(x_shape: tuple, obs_shape) -> tuple:
    """The leading (batch) dims of observations of shape `x_shape`, each flat (..., C·H·W) or an image
    (..., *obs_shape): flat where the last axis holds C·H·W values and there are fewer axes than a batch
    of images has. (A batch (B, 1, 1, W) is B images; one such image reads as a (1, 1) batch of rows.)
    The numpy runtime and PolicyNet both read observations by this rule."""
    n = int(np.prod(obs_shape))
    flat = tuple(x_shape[-1:]) == (n,) and len(x_shape) < len(obs_shape) + 1
    return tuple(x_shape[:-1] if flat else x_shape[: len(x_shape) - len(obs_shape)])


def to_chw(x: np.ndarray, input_: dict | None) -> np.ndarray:
    """Observations (..., *obs shape or flat) -> flat channel-first vectors (..., C·H·W)."""
    if input_ is None:
        return x
    shape = tuple(input_["shape"])
    n = int(np.prod(shape))
    lead = batch_dims(x.shape, shape)
    x = x.reshape(*lead, *shape)
    if input_["layout"] == "hwc":
        x = np.moveaxis(x, -1, -3)
    return np.ascontiguousarray(x).reshape(*lead, n)


def im2col(x: np.ndarray, g: dict) -> np.ndarray:
    """Flat CHW inputs (B, C·H·W) -> patches (B, H'·W', C·kh·kw), each row in the weight's column order."""
    (c, h, w), (kh, kw), (sh, sw), (t, b, left, r) = g["in_shape"], g["kernel"], g["stride"], g["pad"]
    x = np.pad(x.reshape(-1, c, h, w), ((0, 0), (0, 0), (t, b), (left, r)))
    oh, ow = out_hw(g)
    win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :oh, :ow]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(x.shape[0], oh * ow, c * kh * kw)


def conv_forward(x: np.ndarray, w_in_out: np.ndarray, g: dict) -> np.ndarray:
    """Flat CHW (B, C·H·W) -> flat CHW (B, out·H'·W'), weights input-major (C·kh·kw x out), no bias."""
    y = im2col(x, g) @ w_in_out                      # (B, H'W', out)
    return np.ascontiguousarray(y.transpose(0, 2, 1)).reshape(x.shape[0], -1)
