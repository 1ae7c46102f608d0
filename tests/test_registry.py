"""A new technique is one new file: dropping a module into autocompress/techniques/ makes it a key
of techniques configs and search spaces, run by the pipeline at the stage it declares."""

import shutil
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "autocompress"

NEW_TECHNIQUE = '''
import torch
from pydantic import Field

from autocompress.nets import PolicyNet
from autocompress.techniques.base import Context, TechniqueConfig, register


class ScaleConfig(TechniqueConfig):
    """Multiply every weight by `factor` (a stand-in for a real technique)."""
    name = "scale"
    stage = "final"
    order = 70
    factor: float = Field(0.5, gt=0)


@register(ScaleConfig)
def _scale(net: PolicyNet, cfg: ScaleConfig, ctx: Context) -> PolicyNet:
    with torch.no_grad():
        for layer in net.layers:
            layer.weight.mul_(cfg.factor)
    return net
'''

CHECK = '''
import torch
from autocompress.config import CompressConfig, CriticCompressConfig
from autocompress.nets import PolicyNet
from autocompress.pipeline import compress_net
from autocompress.space import SearchSpace
from autocompress.techniques import TECHNIQUES, Context

assert list(TECHNIQUES)[-1] == "scale", list(TECHNIQUES)
assert "scale" in CompressConfig.model_fields and "scale" in CriticCompressConfig.model_fields
cfg = CompressConfig.model_validate({"scale": {"factor": 0.25}, "prune": {"sparsity": 0.5}})
assert [t.name for t in cfg.techniques()] == ["prune", "scale"]
torch.manual_seed(0)
net = PolicyNet.mlp(4, [8], 2)
out = compress_net(net, cfg, Context(), None)
w0, w1 = net.layers[0].weight, out.layers[0].weight
kept = out.layers[0].mask.bool()
assert torch.allclose(w1[kept], 0.25 * w0[kept]) and (out.layers[0].effective_weight()[~kept] == 0).all()
SearchSpace.model_validate({"name": "s", "trial_spec": "t.yaml", "techniques": {"scale": {"factor": {"low": 0.1, "high": 1.0}}}})
print("ok")
'''


def test_a_technique_is_one_new_file(tmp_path):
    pkg = tmp_path / "autocompress"
    shutil.copytree(PKG, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "techniques" / "scale.py").write_text(NEW_TECHNIQUE)
    r = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
