"""Real RLlib at a tiny budget: teacher train -> compress -> RLlib fine-tune -> export -> measure."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from autocompress import rl
from autocompress import teacher as teachers
from autocompress.config import CompressConfig, load_trial_spec
from autocompress.nets import PolicyNet
from autocompress.pipeline import compress_trial
from autocompress.runtime import NumpyPolicy
from conftest import tiny_cartpole

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY = tiny_cartpole("tiny_cartpole", finetune_iterations=2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    (d / "trial.yaml").write_text(yaml.safe_dump(TINY))
    return d


def test_compress_trial_end_to_end(tiny):
    spec = load_trial_spec(tiny / "trial.yaml")
    cfg = CompressConfig.model_validate({
        "structured": {"amount": 0.5, "criterion": "importance"},
        "prune": {"sparsity": 0.75, "schedule": "iterative", "steps": 2, "l1": 1e-3},
        "quantize": {"bits": 4, "mode": "qat"},
    })
    r = compress_trial(spec, cfg, tiny / "out", tiny / "cache", log=lambda m: None).to_dict()
    # the teacher was trained by RLlib and cached
    info = json.loads((Path(r["teacher_path"]) / "teacher.json").read_text())
    assert info["iterations"] == 2
    # iterative pruning: two RLlib fine-tune rounds, sparsity rising, exact at the end
    assert [x["round"] for x in r["finetune_rounds"]] == [1, 2]
    assert r["finetune_rounds"][0]["sparsity"] < r["finetune_rounds"][1]["sparsity"]
    assert r["sparsity"] == pytest.approx(0.75, abs=2e-3)
    assert r["hidden"] == [32, 32]
    # the artifact is what was measured, and it is much smaller than the teacher's
    art = Path(r["artifact"])
    assert r["bytes"] == art.stat().st_size and r["bytes_ratio"] < 0.1
    policy = NumpyPolicy.load(art)
    assert [w.shape for w, *_ in policy.layers] == [(4, 32), (32, 32), (32, 2)]
    nz = sum(int((w != 0).sum()) for w, *_ in policy.layers)
    assert nz <= 0.26 * sum(w.size for w, *_ in policy.layers)
    for k in ("return_mean", "return_std", "return_ratio", "latency_ms", "latency_ratio", "n_params"):
        assert np.isfinite(r[k])
    assert len(r["returns"]) == 3


def test_finetune_keeps_masks_codebooks_and_moves_weights(tiny):
    spec = load_trial_spec(tiny / "trial.yaml")
    teacher = teachers.train_teacher(spec, tiny / "cache", log=lambda m: None)  # cached by the test above
    from autocompress.techniques import Context, PruneConfig, ShareConfig, apply

    net = apply(apply(teacher.actor.clone(), PruneConfig(sparsity=0.6)), ShareConfig(bits=3), Context())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    s = rl.Session(spec, net, teacher.state, lr=1e-3)
    try:
        s.train(1, log=lambda m: None)
        tuned = s.pull(PolicyNet.from_spec(net.spec()))  # the deployed net only
    finally:
        s.stop()
    for i, layer in enumerate(tuned.layers):
        assert torch.equal(layer.mask, before[f"layers.{i}.mask"])
        assert torch.equal(layer.indices, before[f"layers.{i}.indices"])
        w = layer.effective_weight()
        assert (w[layer.mask == 0] == 0).all() and len(torch.unique(w)) <= 9
    assert any(not torch.equal(tuned.layers[i].codebook, before[f"layers.{i}.codebook"]) for i in range(3))


def test_cli_teach_and_compress_json(tiny):
    cfg = tiny / "cfg.yaml"
    cfg.write_text("quantize: {bits: 8, mode: ptq}\n")
    cmd = [sys.executable, "-m", "autocompress.cli"]
    t = subprocess.run([*cmd, "teach", tiny / "trial.yaml", "--cache-dir", tiny / "cache"], capture_output=True,
                       text=True, timeout=600)
    assert t.returncode == 0, t.stderr
    assert "return over 3 seeded episodes" in t.stdout and "training teacher" not in t.stderr  # from cache
    r = subprocess.run([*cmd, "compress", tiny / "trial.yaml", "--config", cfg, "--json", "--cache-dir",
                        tiny / "cache", "-o", tiny / "cli_out"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for k in ("return_mean", "return_std", "return_ratio", "latency_ms", "latency_ratio", "bytes",
              "bytes_ratio", "n_params"):
        assert k in out
    assert out["config"] == {"quantize": {"bits": 8, "mode": "ptq", "per_channel": True, "symmetric": False}}
    # int8 codes (1 B/weight) + per-row scale/zero point (5 B/row) + fp32 biases + header, vs fp32:
    # for this 64x64 net (4480 weights, 130 rows) that is ~0.33; 0.25 would be the weights alone.
    assert 0.25 < out["bytes_ratio"] < 0.35
    assert (tiny / "cli_out" / "policy.acz").stat().st_size == out["bytes"]
