"""A new technique is one new file: dropping a module into autocompress/techniques/ makes it a key
of techniques configs and search spaces, run by the pipeline at the stage it declares; with a per-layer
setting, search spaces sample it per layer and layer sensitivity sweeps it, as its config declares."""

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
from autocompress.techniques.per_layer import per_layer_type, setting_values


class ScaleConfig(TechniqueConfig):
    """Multiply each layer's weights by `factor` (a stand-in for a real technique)."""
    name = "scale"
    stage = "final"
    order = 70
    gentle = {"factor": "high"}
    sweep = (0.9, 0.5)
    factor: per_layer_type(float, gt=0) = Field(0.5)


@register(ScaleConfig)
def _scale(net: PolicyNet, cfg: ScaleConfig, ctx: Context) -> PolicyNet:
    with torch.no_grad():
        for layer, f in zip(net.layers, setting_values(cfg, "factor", len(net.layers))):
            if f is not None:
                layer.weight.mul_(f)
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

# per layer: sampled one param per layer, swept one layer at a time, as ScaleConfig declares
import numpy as np
import optuna
from autocompress import layer_sensitivity as sens
from autocompress.space import suggest

space = SearchSpace.model_validate({"name": "s", "trial_spec": "t.yaml", "techniques": {
    "scale": {"factor": {"per_layer": {"low": 0.1, "high": 1.0, "layers": 2}}}}})
assert len(suggest(optuna.trial.FixedTrial({"scale.enabled": True, "scale.factor.0": 0.5, "scale.factor.1": 0.2}),
                   space)["scale"]["factor"]) == 2
assert "scale" in sens.check_techniques(None) and sens.DEFAULT_SETTINGS["scale"] == [0.9, 0.5]
obs = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
table = sens.measure(net, {"kind": "discrete", "n": 2}, obs, None, settings=sens.check_settings({"scale": [0.5, 0.9]}),
                     episodes=0)
assert [(r["layer"], r["setting"]) for r in table["rows"]] == [(0, 0.9), (0, 0.5), (1, 0.9), (1, 0.5)]
print("ok")
'''


def test_a_technique_is_one_new_file(tmp_path):
    pkg = tmp_path / "autocompress"
    shutil.copytree(PKG, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "techniques" / "scale.py").write_text(NEW_TECHNIQUE)
    r = subprocess.run([sys.executable, "-c", CHECK], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
