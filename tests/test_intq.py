"""The integer-only int8 path (autocompress/intq.py): its numpy mirror equals the C kernel exactly (in
process and as a C export), its fixed-point and rounding rules, its calibration, and who may run it."""

import subprocess

import numpy as np
import pytest
import torch

from autocompress import intq, native
from autocompress.artifact import activation_scales, calibrate, to_bytes
from autocompress.artifact import runtime_act as artifact_act
from autocompress.exports.c import write_c
from autocompress.nets import PolicyNet
from autocompress.runtime import NumpyPolicy, obs_normalizer, read_artifact
from test_export import build as compress
from test_exports import CONTINUOUS, run_c
from test_native import require_compiler

DISCRETE = {"kind": "discrete", "n": 3}


@pytest.fixture(scope="module")
def observations() -> np.ndarray:
    return (np.random.default_rng(11).standard_normal((1000, 4)) * 2).astype(np.float32)


#: 4-bit symmetric codes (within [-7, 7]): what the integer-only net can store 4 bits a weight ('iq4')
FOUR_BIT = {"quantize": {"bits": 4, "symmetric": True}}


def calibrated(act: str, head: dict, obs: np.ndarray, cfg=None) -> bytes:
    torch.manual_seed(5)
    net = PolicyNet.mlp(4, [64, 64], 3 if head["kind"] == "discrete" else 4, act)
    data = to_bytes(compress(net, obs, cfg or {"quantize": {"bits": 8, "symmetric": True}}), head)
    return calibrate(data, obs[:500])


@pytest.mark.parametrize("act", ["tanh", "relu", "silu", "elu"])
@pytest.mark.parametrize("head", [DISCRETE, CONTINUOUS], ids=["discrete", "continuous"])
@pytest.mark.parametrize("kernel", ["iq", "iq4"])
def test_c_kernel_equals_the_numpy_mirror(observations, act, head, kernel):
    require_compiler()
    data = calibrated(act, head, observations, FOUR_BIT if kernel == "iq4" else None)
    kernels = [kernel] * 3
    mirror, c = NumpyPolicy.from_bytes(data, kernels), native.NativePolicy.from_bytes(data, kernels)
    obs = observations[500:]
    if head["kind"] == "discrete":
        assert [c.act(o) for o in obs] == [mirror.act(o) for o in obs]
    else:  # the outputs are exact; the continuous head's tanhf is glibc's vs numpy's
        np.testing.assert_allclose([c.act(o) for o in obs], [mirror.act(o) for o in obs], atol=1e-6)


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_high_word_from_16_bit_products_equals_the_mirror(observations, act):
    """Thumb-1's requantization (kernels.c, ACZ_MULHI_16 forces it here): the product's high word from two
    16 x 16 products. Large observations push accumulators to both signs' extremes."""
    require_compiler()
    data = calibrated(act, DISCRETE, observations)
    mirror, c = NumpyPolicy.from_bytes(data, ["iq"] * 3), native.NativePolicy.from_bytes(data, ["iq"] * 3)
    c._fn = native._library(("-DACZ_MULHI_16",)).acz_act
    obs = np.concatenate([observations[500:], observations[500:] * 50])
    assert [c.act(o) for o in obs] == [mirror.act(o) for o in obs]


def test_c_input_rounding_equals_the_mirror_at_every_exponent():
    """acz_iq_input vs input_ints from subnormals to inf and NaN: every shift branch (0, a product, saturated)."""
    require_compiler()
    data = calibrated("relu", CONTINUOUS, (np.random.default_rng(2).standard_normal((600, 4)) * 2).astype(np.float32))
    mags = np.float32(1.9999999) * np.float32(2.0) ** np.arange(-149, 127, dtype=np.float32)
    vals = np.concatenate([mags, -mags, [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45]]).astype(np.float32)
    obs = np.stack([np.roll(vals, k) for k in range(4)], axis=1)
    mirror, c = NumpyPolicy.from_bytes(data, ["iq"] * 3), native.NativePolicy.from_bytes(data, ["iq"] * 3)
    # outputs exact; the continuous head's tanhf is glibc's vs numpy's
    np.testing.assert_allclose([c.act(o) for o in obs], [mirror.act(o) for o in obs], atol=1e-6)


def test_c_export_equals_the_numpy_mirror(observations, tmp_path):
    require_compiler()
    data = calibrated("tanh", DISCRETE, observations)
    write_c(data, tmp_path, ["iq"] * 3)
    mirror = NumpyPolicy.from_bytes(data, ["iq"] * 3)
    obs = observations[500:]
    assert (run_c(tmp_path, obs) == [mirror.act(o) for o in obs]).all()
    src = (tmp_path / "policy.c").read_text()
    assert "ACZ_IQ_ONLY" in src
    # only the hidden activation forms this net runs are compiled: tanh's odd table, no relu / none / full table
    switches = src.split("#define ACZ_ONLY", 1)[1].split("/*", 1)[0]  # the export's own, before kernels.c
    assert {ln.split()[1] for ln in switches.splitlines() if ln.startswith("#define ACZ_IQ_")} == \
        {"ACZ_IQ_ONLY", "ACZ_IQ_W8", "ACZ_IQ_LUT_ODD"}


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_integer_only_acts_like_the_fp32_net_on_most_states(observations, act):
    """Calibrated on 500 states, judged on 500 others: activations rounded to int8 flip few actions."""
    data = calibrated(act, DISCRETE, observations)
    fp, iq = NumpyPolicy.from_bytes(data), NumpyPolicy.from_bytes(data, ["iq"] * 3)
    obs = observations[500:]
    agree = np.mean([fp.act(o) == iq.act(o) for o in obs])
    assert agree >= 0.95, agree
    # a continuous head's outputs track the fp32 ones (within a few int8 steps of their range)
    data = calibrated(act, {**CONTINUOUS, "squash": "none"}, observations)
    out_fp, out_iq = NumpyPolicy.from_bytes(data).forward(obs), NumpyPolicy.from_bytes(data, ["iq"] * 3).forward(obs)
    assert np.abs(out_fp - out_iq).max() < 0.05 * np.abs(out_fp).max()


def test_fixed_point_multipliers_and_rounding():
    m = np.array([0.5, 0.375, 1e-3, 0.999999, 3e-12])
    mult, shift = intq.fixed_point(m)
    assert ((mult[:4] >= 2 ** 30) & (mult[:4] < 2 ** 31)).all()
    np.testing.assert_allclose(mult[:4] / 2.0 ** shift[:4], m[:4], rtol=2.0 ** -intq.MULT_BITS)
    assert not (mult & 0xFFFF).any()  # kernels.c forms the high word from mult >> 16 alone (Thumb-1)
    assert mult[4] == 0  # below 2**-62: every product rounds to 0
    acc = np.arange(-3000, 3000)
    want = np.clip(np.floor(acc * 0.375 + 0.5), -127, 127)  # exact in fixed point: halves rounded up
    assert (intq.requantize(acc, np.full(acc.shape, mult[1]), np.full(acc.shape, shift[1])) == want).all()
    assert intq.fixed_point(np.array([1.5]))[1][0] == 30  # above 1 too, up to 2**30
    with pytest.raises(ValueError, match="2\\*\\*30"):
        intq.fixed_point(np.array([2.0 ** 31]))


def test_input_rounding_is_half_away_from_zero_and_clamped():
    v = np.array([0.5, -0.5, 1.49, -1.5, 2.5, 126.6, -300.0, 1e30, np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-40],
                 np.float32)
    got = intq.input_ints(v, *intq.input_fixed(np.ones(v.shape), np.zeros(v.shape)))  # a = 1, c = 0
    assert got.tolist() == [1, -1, 1, -2, 3, 127, -127, 127, 127, -127, 127, 0, 0, 0]


def test_fixed_point_input_is_the_rounded_affine_map():
    """16-bit significands of obs and a: relative error <= 2**-15, so a value lands on the other side of a
    rounding boundary only within ~|x| 2**-14 of it (here |x| <~ 120: under 1% of values, never by more than 1)."""
    rng = np.random.default_rng(3)
    obs = (rng.standard_normal((2000, 3)) * [1.0, 50.0, 0.01]).astype(np.float32)
    a, c = np.array([30.0, 0.5, 4000.0]), np.array([-3.0, 10.0, 0.25])
    got = intq.input_ints(obs, *intq.input_fixed(a, c))
    want = np.clip(np.round(obs.astype(np.float64) * a + c), -127, 127)
    assert np.abs(got - want).max() <= 1 and (got == want).mean() > 0.99
    with pytest.raises(ValueError, match="mean"):
        intq.input_fixed(a, np.array([0.0, 2.0 ** 14, 0.0]))


@pytest.mark.parametrize("bits", [8, 4])
def test_interleaved_layout_is_read_as_kernels_c_reads_it(bits):
    rng = np.random.default_rng(0)
    lim = 1 << (bits - 1)
    q = rng.integers(-lim, lim, (6, 10)).astype(np.int8)  # one group of 4 rows, 2 rows left over
    per_word, order, offset = intq.WEIGHT_FORMS[bits]
    n = intq.padded_inputs(10, bits)
    x = np.concatenate([rng.integers(-127, 128, 10), np.zeros(n - 10, int)])
    w = intq.interleave(q, bits).astype(np.int64)
    assert w.size == 6 * n * bits // 8
    # kernels.c's portable acz_iq_dense8 / 4: a group's words row by row (a word: per_word inputs in `order`,
    # made unsigned by `offset`; 4-bit: two a byte, the lower nibble first), then each row left over alone
    got, at = [], 0
    for rows in (4, 1, 1):
        acc = np.zeros(rows, np.int64)
        for k in range(0, n, per_word):
            for r in range(rows):
                word = w[at + 4 * r:at + 4 * r + 4]
                codes = word if bits == 8 else np.stack([word & 15, word >> 4], 1).ravel()
                acc[r] += ((codes - offset) * x[k:k + per_word][order]).sum()
            at += 4 * rows
        got += acc.tolist()
    assert at == w.size and got == (q.astype(np.int64) @ x[:10]).tolist()
    # SMLAD's lanes: an 8-bit word's even bytes are (w0, w1), its odd bytes (w2, w3); a 4-bit word shifted by
    # 4 s and masked to nibbles 0 and 4 is (w_2s, w_2s+1)
    word = int.from_bytes(intq.padded(q, bits)[0, :4].tobytes(), "little")
    if bits == 8:
        lanes = [((word >> sh) & 0xFF, (word >> (sh + 16)) & 0xFF) for sh in (0, 8)]
    else:
        lanes = [((word >> 4 * s) & 15, (word >> (4 * s + 16)) & 15) for s in range(4)]
    assert [c - offset for pair in lanes for c in pair] == q[0, :len(lanes) * 2].tolist()


def test_only_int8_nets_are_calibrated_or_run_integer_only(observations):
    torch.manual_seed(5)
    fp32 = to_bytes(PolicyNet.mlp(4, [16], 3, "tanh"), DISCRETE)
    assert calibrate(fp32, observations) == fp32  # nothing to calibrate: unchanged
    with pytest.raises(ValueError, match="representable in 8 bits"):
        NumpyPolicy.from_bytes(fp32, ["iq"] * 2)
    asym8 = to_bytes(compress(PolicyNet.mlp(4, [16], 3, "tanh"), observations, {"quantize": {"bits": 8}}), DISCRETE)
    assert calibrate(asym8, observations) == asym8  # codes minus zero point exceed int8
    data = calibrated("tanh", DISCRETE, observations)
    with pytest.raises(ValueError, match="every layer"):
        NumpyPolicy.from_bytes(data, ["iq", "dense", "iq"])
    with pytest.raises(ValueError, match="every layer"):
        NumpyPolicy.from_bytes(data, ["iq", "iq4", "iq"])
    with pytest.raises(ValueError, match="representable in 4 bits"):  # 8-bit codes: no 4-bit storage
        NumpyPolicy.from_bytes(data, ["iq4"] * 3)
    NumpyPolicy.from_bytes(calibrated("tanh", DISCRETE, observations, FOUR_BIT), ["iq4"] * 3)


def test_calibration_scales_cover_the_visited_range(observations):
    data = calibrated("tanh", DISCRETE, observations)
    header = read_artifact(data)[0]
    assert header["iq"]["x"] == pytest.approx(np.abs(observations[:500]).max() / 127, rel=1e-6)
    assert len(header["iq"]["p"]) == 2 and all(0 < p <= intq.TANH_RANGE / 127 + 1e-9 for p in header["iq"]["p"])


def test_host_build_of_the_export_is_strict_c99(observations, tmp_path):
    require_compiler()
    write_c(calibrated("relu", CONTINUOUS, observations), tmp_path, ["iq"] * 3)
    r = subprocess.run(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c", "policy.c"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("act", ["tanh", "relu", "silu"])
@pytest.mark.parametrize("head", [DISCRETE, CONTINUOUS], ids=["discrete", "continuous"])
def test_qat_forward_rounds_activations_as_the_integer_only_net(observations, act, head):
    """PolicyNet.iq (set by a device trial's fine-tune): the torch forward RLlib trains computes what the
    device's integer-only net computes, where the fp32 forward does not; its gradient still reaches every
    weight (straight through the rounding), and the scales travel with the net's spec and into its artifact."""
    torch.manual_seed(5)
    net = compress(PolicyNet.mlp(4, [64, 64], 3 if head["kind"] == "discrete" else 4, act), observations,
                   {"quantize": {"bits": 8, "symmetric": True, "mode": "qat"}})
    iq = activation_scales(net, head, observations[:500])
    assert iq == read_artifact(calibrate(to_bytes(net, head), observations[:500]))[0]["iq"]
    obs = observations[500:]
    x = torch.as_tensor(obs_normalizer(head.get("obs_norm"))(obs))
    with torch.no_grad():
        fp32 = net(x).numpy()
        net.iq = iq
        sim = net(x).numpy()
    data = to_bytes(net, head)
    assert read_artifact(data)[0]["iq"] == iq
    device = NumpyPolicy.from_bytes(data, ["iq"] * 3).forward(obs)
    if head["kind"] == "discrete":  # device outputs are integers at one scale: compare the actions
        assert (sim.argmax(1) == device.argmax(1)).mean() >= 0.998
    else:  # the same but for the bias's rounding and a rare rounding tie decided the other way in fp32
        err_sim, err_fp32 = np.abs(sim - device).mean(), np.abs(fp32 - device).mean()
        assert err_sim < err_fp32 / 20, (err_sim, err_fp32)
    act, on_device = artifact_act(net, head), NumpyPolicy.from_bytes(data, ["iq"] * 3).act  # a fine-tune's checks
    assert all(np.array_equal(act(o), on_device(o)) for o in obs[:50])
    copy = PolicyNet.from_spec(net.spec())
    copy.load_state_dict(net.state_dict())
    assert copy.iq == iq and torch.equal(copy(x), net(x))
    net(x).pow(2).sum().backward()
    assert all(layer.weight.grad.abs().sum() > 0 for layer in net.layers)


# -- conv layers (the CNN policies' encoders) ------------------------------------------------------

#: a MinAtar-like conv net (test_conv_native's): 'valid', then 'same' at stride 2 (padding bottom / right only)
CONV_SHAPES = {"hwc": (10, 10, 4), "chw": (4, 9, 7)}


def conv_calibrated(layout: str, act: str = "relu", head: dict = DISCRETE, bits: int = 8, n: int = 1000,
                    seed: int = 0) -> tuple[bytes, np.ndarray]:
    """A conv net (PolicyNet.cnn, `act` on every hidden layer) with `bits`-bit symmetric per-channel codes,
    calibrated on the first half of n MinAtar-like images (binary channels, one in five cells set); the images.
    A continuous head: a normalisation differing per observation value (folded into the input's quantisation in
    the observation's order, before a channels-last image is transposed)."""
    from test_conv_native import FILTERS, images

    if head["kind"] == "continuous":
        size = int(np.prod(CONV_SHAPES[layout]))
        head = {**head, "obs_norm": {"mean": np.linspace(0.0, 0.4, size).tolist(),
                                     "std": np.linspace(0.3, 2.0, size).tolist(), "clip": 5.0}}
    torch.manual_seed(1)
    net = PolicyNet.cnn(CONV_SHAPES[layout], layout, FILTERS, [32], head.get("n", 4), act, conv_act=act)
    for layer in net.layers:
        layer.set_quant({"bits": bits, "per_channel": True, "symmetric": True})
    obs = images(CONV_SHAPES[layout], n, seed=seed)
    return calibrate(to_bytes(net, head), obs[:n // 2]), obs


@pytest.mark.parametrize("layout", CONV_SHAPES)
@pytest.mark.parametrize("act, head, kernel", [("relu", DISCRETE, "iq"), ("tanh", DISCRETE, "iq4"),
                                               ("silu", CONTINUOUS, "iq")], ids=["relu-iq", "tanh-iq4", "silu-cont"])
def test_conv_c_kernel_equals_the_numpy_mirror(layout, act, head, kernel):
    """acz_iq_conv in process vs intq.forward's conv step on 1,000 images, channels-last (transposed after
    quantising) and channels-first; every hidden activation form and both weight forms."""
    require_compiler()
    data, obs = conv_calibrated(layout, act, head, 4 if kernel == "iq4" else 8)
    kernels = [kernel] * 4
    mirror, c = NumpyPolicy.from_bytes(data, kernels), native.NativePolicy.from_bytes(data, kernels)
    if head["kind"] == "discrete":
        want = [mirror.act(o) for o in obs]
        assert [c.act(o) for o in obs] == want and len(set(want)) > 1
    else:  # the outputs are exact; the continuous head's tanhf is glibc's vs numpy's
        np.testing.assert_allclose([c.act(o) for o in obs[:300]], [mirror.act(o) for o in obs[:300]], atol=1e-6)
    # one image, a batch of images and a batch of flat rows read alike (conv.batch_dims)
    np.testing.assert_array_equal(mirror.forward(obs[:5]), [mirror.forward(o) for o in obs[:5]])
    np.testing.assert_array_equal(mirror.forward(obs[:5].reshape(5, -1)), mirror.forward(obs[:5]))


def test_conv_integer_only_acts_like_the_fp32_net_and_its_c_export_like_the_mirror(tmp_path):
    require_compiler()
    data, obs = conv_calibrated("hwc")
    fp, iq = NumpyPolicy.from_bytes(data), NumpyPolicy.from_bytes(data, ["iq"] * 4)
    want = np.array([iq.act(o) for o in obs[500:]])
    assert np.mean([fp.act(o) for o in obs[500:]] == want) >= 0.95
    write_c(data, tmp_path, ["iq"] * 4)
    assert (run_c(tmp_path, obs[500:]) == want).all()
    src = tmp_path / "policy.c"
    assert "#define ACZ_IQ_CONV 1" in src.read_text()
    r = subprocess.run(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c", src.name], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("layout", CONV_SHAPES)
def test_conv_qat_forward_rounds_activations_as_the_integer_only_net(layout):
    """PolicyNet.iq on a conv net: the torch forward (conv2d on int8-rounded inputs, zero padding = the int8
    zero) acts as the device's integer-only conv net (intq.forward)."""
    data, obs = conv_calibrated(layout)
    from test_conv_native import FILTERS

    torch.manual_seed(1)
    net = PolicyNet.cnn(CONV_SHAPES[layout], layout, FILTERS, [32], 3)
    for layer in net.layers:
        layer.set_quant({"bits": 8, "per_channel": True, "symmetric": True})
    net.iq = activation_scales(net, DISCRETE, obs[:500])
    assert net.iq == read_artifact(data)[0]["iq"]
    with torch.no_grad():
        sim = net(torch.as_tensor(obs[500:])).numpy()
    device = NumpyPolicy.from_bytes(to_bytes(net, DISCRETE), ["iq"] * 4).forward(obs[500:])
    assert (sim.argmax(1) == device.argmax(1)).mean() >= 0.99
