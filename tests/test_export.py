import numpy as np
import pytest
import torch

from autocompress.codec import pack_bits, unpack_bits
from autocompress.config import CompressConfig
from autocompress.artifact import to_bytes
from autocompress.pipeline import compress_net
from autocompress.runtime import NumpyPolicy
from autocompress.techniques import Context

HEAD = {"kind": "discrete", "n": 2}

CONFIGS = {
    "teacher": {},
    "int8": {"quantize": {"bits": 8}},
    "int4-sym-tensor": {"quantize": {"bits": 4, "symmetric": True, "per_channel": False}},
    "prune90": {"prune": {"sparsity": 0.9}},
    "prune90+q4": {"prune": {"sparsity": 0.9}, "quantize": {"bits": 4}},
    "share3": {"share": {"bits": 3}},
    "prune50+share2": {"prune": {"sparsity": 0.5}, "share": {"bits": 2}},
    "structured": {"structured": {"amount": 0.5, "criterion": "l1"}},
    "lowrank": {"lowrank": {"rank": 4}},
    "all-structural": {"structured": {"amount": 0.25}, "lowrank": {"rank": 8}, "prune": {"sparsity": 0.6},
                       "quantize": {"bits": 5, "mode": "qat"}},
}


def build(net, obs, cfg):
    return compress_net(net, CompressConfig.model_validate(cfg), Context(sample_obs=obs), None)


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_roundtrip(bits):
    codes = np.random.default_rng(bits).integers(0, 2 ** bits, size=1001).astype(np.uint8)
    data = pack_bits(codes, bits)
    assert len(data) == (1001 * bits + 7) // 8
    assert np.array_equal(unpack_bits(data, bits, 1001), codes)


@pytest.mark.parametrize("name", CONFIGS)
def test_artifact_acts_like_the_compressed_torch_net(net, obs, name):
    c = build(net, obs, CONFIGS[name])
    policy = NumpyPolicy.from_bytes(to_bytes(c, HEAD))
    with torch.no_grad():
        expected = c(torch.as_tensor(obs)).numpy()
    np.testing.assert_allclose(policy.forward(obs), expected, atol=1e-5, rtol=1e-5)
    assert [policy.act(o) for o in obs] == list(expected.argmax(1))


def test_bytes_fall_as_bits_fall(net, obs):
    sizes = [len(to_bytes(build(net, obs, {"quantize": {"bits": b}}), HEAD)) for b in (8, 6, 4, 3, 2)]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    assert len(to_bytes(net, HEAD)) > sizes[0]


def test_bytes_fall_as_sparsity_rises(net, obs):
    sizes = [len(to_bytes(build(net, obs, {"prune": {"sparsity": s}}), HEAD)) for s in (0.0, 0.5, 0.8, 0.95)]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    q = [len(to_bytes(build(net, obs, {"prune": {"sparsity": s}, "quantize": {"bits": 4}}), HEAD))
         for s in (0.5, 0.8, 0.95)]
    assert q == sorted(q, reverse=True)


def test_size_tracks_packed_bits(net, obs):
    """fp32 teacher ≈ 4 bytes/weight; 4-bit ≈ 0.5 byte/weight + per-row scales."""
    n_w = sum(layer.weight.numel() for layer in net.layers)
    fp32 = len(to_bytes(net, HEAD))
    q4 = len(to_bytes(build(net, obs, {"quantize": {"bits": 4}}), HEAD))
    assert 4 * n_w < fp32 < 4 * n_w + 4000
    assert n_w / 2 < q4 < n_w / 2 + 4000


def test_bad_file_is_rejected():
    with pytest.raises(ValueError, match="not an autocompress artifact"):
        NumpyPolicy.from_bytes(b"PK\x03\x04garbage")
