"""Layer sensitivity (autocompress/layer_sensitivity.py): the table ranks a layer that cannot take a
setting above one that can, the metrics mean what they say, guided configs pick the expected per-layer
settings (and are exactly what a per-layer space's params give), bad input is rejected before any
work, and the CLI on the committed CartPole teacher writes its JSON, heatmap and MLflow run."""

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from typer.testing import CliRunner

import autocompress.teacher
from autocompress import layer_sensitivity as sens
from autocompress._search import guided
from autocompress.cli import app
from autocompress.config import CompressConfig, load_trial_spec
from autocompress.errors import ConfigError
from autocompress.nets import PolicyNet
from autocompress.techniques import PER_LAYER
from autocompress.space import SearchSpace, suggest

ROOT = Path(__file__).resolve().parents[1]
DISCRETE = {"kind": "discrete", "n": 4}


def invoke(*args):
    return CliRunner(env={"MLFLOW_TRACKING_URI": None}).invoke(app, [str(a) for a in args])


@pytest.fixture
def lopsided() -> PolicyNet:
    """4 -> 32 -> 4: layer 0 dense and all of it matters; half of layer 1's weights are ~0 already,
    so pruning it to 50% removes nothing the policy uses."""
    torch.manual_seed(0)
    net = PolicyNet.mlp(4, [32], 4)
    with torch.no_grad():
        net.layers[0].weight.normal_(0.0, 1.0)
        w = torch.randn(4, 32)
        w[:, ::2] = 1e-6
        net.layers[1].weight.copy_(w)
    return net


def test_table_ranks_the_layer_that_cannot_take_the_setting_as_more_sensitive(lopsided, obs):
    table = sens.measure(lopsided, DISCRETE, obs, None, settings={"prune": [0.5]}, episodes=0)
    by_layer = {r["layer"]: r for r in table["rows"]}
    assert set(by_layer) == {0, 1} and table["episodes"] == 0
    assert by_layer[1]["agreement"] == 1.0 and by_layer[1]["kl"] < 1e-9   # only ~0 weights went
    assert by_layer[0]["drop"] > 0.1 and by_layer[0]["kl"] > 0.01         # real weights went
    assert all(r["return_ratio"] is None and r["drop"] == r["action_drop"] for r in table["rows"])


def test_only_the_named_layer_is_compressed(lopsided, obs):
    table = sens.measure(lopsided, DISCRETE, obs, None, settings={"quantize": [2], "structured": [0.5]}, episodes=0)
    assert [(r["technique"], r["layer"]) for r in table["rows"]] == [("quantize", 0), ("quantize", 1),
                                                                     ("structured", 0)]  # hidden layers only
    cfg = CompressConfig.model_validate(sens.one_layer_config("quantize", 1, 2))
    from autocompress.pipeline import compress_net
    from autocompress.techniques import Context

    net = compress_net(lopsided, cfg, Context(), None)
    assert net.layers[0].quant is None and net.layers[1].quant["bits"] == 2


def test_kl_and_agreement_on_known_outputs(obs):
    """Continuous: outputs are the biases (zero weights), so Δaction and the Gaussian KL are exact."""
    def net(mean):
        n = PolicyNet.mlp(4, [8], 2)
        with torch.no_grad():
            n.layers[1].weight.zero_()
            n.layers[1].bias.copy_(torch.tensor([mean, np.log(0.5)]))
        return n

    head = {"kind": "continuous", "act_dim": 1, "low": [-2.0], "high": [2.0], "squash": "none"}
    ref = sens.Reference(net(0.1), obs, head, q_values=False)
    got = ref.compare(net(0.5))
    assert got["action_delta"] == pytest.approx(0.4 / 4.0)
    assert got["agreement"] == pytest.approx(0.9)
    assert got["kl"] == pytest.approx(0.4 ** 2 / (2 * 0.25), rel=1e-5)
    # DQN: KL over Boltzmann policies at the teacher's own Q spread, so scaling Q leaves it as it was
    q = PolicyNet.mlp(4, [8], 3)
    big = q.clone()
    with torch.no_grad():
        big.layers[1].weight.mul_(100.0)
        big.layers[1].bias.mul_(100.0)
    other = q.clone()
    with torch.no_grad():
        other.layers[1].bias.add_(torch.tensor([0.3, 0.0, 0.0]))
    other_big = other.clone()
    with torch.no_grad():
        other_big.layers[1].weight.mul_(100.0)
        other_big.layers[1].bias.mul_(100.0)
    small_kl = sens.Reference(q, obs, {"kind": "discrete", "n": 3}, True).compare(other)["kl"]
    big_kl = sens.Reference(big, obs, {"kind": "discrete", "n": 3}, True).compare(other_big)["kl"]
    assert small_kl > 0 and big_kl == pytest.approx(small_kl, rel=1e-4)


def _table(rows: dict, layers: int = 3) -> dict:
    """A sensitivity table from {technique: {layer: {setting: drop}}}."""
    out = []
    for t, by_layer in rows.items():
        for layer, drops in by_layer.items():
            for s, d in drops.items():
                out.append({"technique": t, "key": PER_LAYER[t], "layer": layer, "setting": s,
                            "drop": d, "action_drop": d, "return_drop": None})
    settings = {t: sens.gentlest_first(t, {s for d in by_layer.values() for s in d}) for t, by_layer in rows.items()}
    return {"layers": [{"index": i, "in": 8, "out": 8, "act": "tanh"} for i in range(layers)],
            "techniques": {t: {"key": PER_LAYER[t], "settings": s, "base": {}} for t, s in settings.items()},
            "rows": out}


TABLE = _table({
    # layer 0: 4 bits is the last setting within 0.05 (the 2-bit pass after a 3-bit failure is noise);
    # layer 1 takes every setting; layer 2 not even 8 bits
    "quantize": {0: {8: 0.0, 6: 0.01, 4: 0.04, 3: 0.2, 2: 0.01}, 1: {8: 0.0, 6: 0.0, 4: 0.0, 3: 0.01, 2: 0.02},
                 2: {8: 0.3, 6: 0.3, 4: 0.5, 3: 0.6, 2: 0.9}},
    # layer 0: 0.7; 0.99 passes but lies outside the space's range; layers 1, 2: nothing
    "prune": {0: {0.5: 0.01, 0.7: 0.03, 0.9: 0.5, 0.99: 0.0}, 1: {0.5: 0.2, 0.9: 0.9}, 2: {0.5: 0.3}},
})


def _space(**techniques) -> SearchSpace:
    return SearchSpace.model_validate({"name": "s", "trial_spec": "t.yaml", "techniques": techniques,
                                       "sensitivity": {"enabled": True, "max_drop": 0.05}})


def test_guided_configs_pick_the_most_aggressive_setting_within_max_drop_per_layer():
    space = _space(prune={"sparsity": {"low": 0.5, "high": 0.95}, "schedule": {"choices": ["oneshot", "iterative"]}},
                   quantize={"bits": {"low": 2, "high": 8}, "per_channel": False})
    configs = guided.guided_configs(TABLE, space)
    prune = {"sparsity": {0: 0.7}, "schedule": "iterative", "method": "magnitude"}
    quantize = {"bits": {0: 4, 1: 2}, "per_channel": False}
    assert configs == [{"prune": prune}, {"quantize": quantize}, {"prune": prune, "quantize": quantize}]
    for cfg in configs:
        CompressConfig.model_validate(json.loads(json.dumps(cfg)))  # valid, also as stored (string keys)
    # the params the study records for the combined config: each map's mean, within the space
    assert guided.guided_params(configs[2], space) == {"prune.enabled": True, "prune.sparsity": 0.7,
                                                     "prune.schedule": "iterative", "quantize.enabled": True,
                                                     "quantize.bits": 3}
    tight = space.model_copy(update={"sensitivity": space.sensitivity.model_copy(update={"max_drop": 0.0})})
    assert guided.guided_configs(TABLE, tight) == [{"quantize": {"bits": {0: 8, 1: 4}, "per_channel": False}}]


def test_guided_config_of_a_per_layer_space_is_exactly_what_its_params_sample():
    space = _space(quantize={"bits": {"per_layer": {"low": 3, "high": 8, "layers": 3}}},
                   share={"bits": {"low": 2, "high": 6}})
    (cfg,) = guided.guided_configs(TABLE, space)
    assert cfg == {"quantize": {"bits": [4, 3, 8]}}  # 2 bits is outside the space; layer 2 at the mildest
    params = guided.guided_params(cfg, space)
    assert params == {"weight_coding": "quantize", "quantize.bits.0": 4, "quantize.bits.1": 3, "quantize.bits.2": 8}
    assert suggest(optuna.trial.FixedTrial(params), space) == cfg


def test_space_settings_follow_the_space():
    space = _space(quantize={"bits": {"per_layer": {"low": 5, "high": 8, "layers": 3}}},
                   prune={"sparsity": {"low": 0.6, "high": 0.92}}, structured={"amount": 0.5}, lowrank={})
    assert guided.space_settings(space) == {"quantize": [8, 7, 6, 5], "prune": [0.6, 0.7, 0.9, 0.92],
                                          "structured": [0.5]}


def test_bad_input_is_rejected_before_any_work(tmp_path, monkeypatch):
    def tripwire(*a, **k):
        raise AssertionError("the teacher was loaded for rejected input")

    monkeypatch.setattr(autocompress.teacher, "train_teacher", tripwire)
    spec = ROOT / "trials" / "cartpole_ppo.yaml"
    for args, named in (((tmp_path / "nope.yaml",), "nope.yaml: file not found"),
                        ((spec, "--techniques", "quantize,lowrank"), "--techniques: 'lowrank' has no per-layer"),
                        ((spec, "--techniques", "quantise"), "--techniques: 'quantise' is not a technique"),
                        ((spec, "--settings", "quantize=1,4"), "--settings: quantize bits = 1"),
                        ((spec, "--settings", "prune"), "--settings: 'prune': write TECHNIQUE=V1,V2"),
                        ((spec, "-t", "quantize", "-s", "prune=0.5"), "--settings: settings for 'prune'")):
        r = invoke("sensitivity", *args, "--cache-dir", tmp_path / "cache", "-o", tmp_path / "out")
        assert r.exit_code == 2, r.output
        assert named in " ".join(r.output.split()), r.output
        assert "Traceback" not in r.output
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="sensitivity.max_drop"):
        from autocompress.config import parse

        parse(SearchSpace, {"name": "s", "trial_spec": "t.yaml", "techniques": {"quantize": {}},
                            "sensitivity": {"enabled": True, "max_drop": 2}}, "space.yaml")


def test_search_stage_measures_once_and_reuses_its_cache(tmp_path):
    """The stage as a search runs it, on the committed CartPole teacher: actions only, 2 settings."""
    spec = load_trial_spec(ROOT / "trials" / "cartpole_ppo.yaml").updated({"sample_steps": 300})
    space = _space(quantize={"bits": {"low": 7, "high": 8}})
    space = space.model_copy(update={"sensitivity": space.sensitivity.model_copy(update={"episodes": 0})})
    table, files = guided.search_stage(space, spec, tmp_path / "cache", tmp_path / "run", log=lambda m: None)
    assert [(r["layer"], r["setting"]) for r in table["rows"]] == [(i, b) for i in range(3) for b in (8, 7)]
    assert table["states"] == 300 and all(f.exists() for f in files)
    logged = []
    again, _ = guided.search_stage(space, spec, tmp_path / "cache", tmp_path / "run", log=logged.append)
    assert again == json.loads(json.dumps(table)) and any("cached" in m for m in logged)


@pytest.mark.slow
def test_cli_on_the_committed_cartpole_teacher(tmp_path):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "out"
    r = invoke("sensitivity", ROOT / "trials" / "cartpole_ppo.yaml", "-t", "quantize,prune",
               "-s", "quantize=8,2", "-s", "prune=0.5,0.95", "--episodes", "1", "-o", out,
               "--cache-dir", tmp_path / "cache")
    assert r.exit_code == 0, r.output
    assert "quantize.bits" in r.output and "prune.sparsity" in r.output
    table = json.loads((out / "sensitivity.json").read_text())
    assert len(table["rows"]) == 3 * 2 * 2 and table["seed"] == sens.SENSITIVITY_SEED and table["episodes"] == 1
    assert table["teacher"]["return_mean"] > 400  # the committed teacher, on the sensitivity seeds
    for row in table["rows"]:
        assert 0.0 <= row["agreement"] <= 1.0 and row["kl"] >= 0.0 and row["return_ratio"] is not None
    mild = {(r["technique"], r["layer"]): r for r in table["rows"] if r["setting"] in (8, 0.5)}
    harsh = {(r["technique"], r["layer"]): r for r in table["rows"] if r["setting"] in (2, 0.95)}
    assert all(mild[k]["kl"] <= harsh[k]["kl"] for k in mild)  # 8 bits / 50% never hurts more than 2 bits / 95%
    assert (out / "sensitivity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    client = MlflowClient(tracking_uri=table["mlflow"]["tracking_uri"])
    run = client.get_run(table["mlflow"]["run_id"])
    assert run.info.run_name == "sensitivity" and run.data.tags["autocompress.kind"] == "sensitivity"
    assert run.info.status == "FINISHED" and run.data.params["techniques"] == "quantize,prune"
    assert {a.path for a in client.list_artifacts(run.info.run_id, "sensitivity")} == {
        "sensitivity/sensitivity.json", "sensitivity/sensitivity.png"}


def test_a_sensitivity_stage_needs_a_per_layer_technique():
    from autocompress.config import parse

    with pytest.raises(ConfigError, match="sensitivity: enabled, but none of the space's techniques"):
        parse(SearchSpace, {"name": "s", "trial_spec": "t.yaml", "techniques": {"distill": {}, "lowrank": {}},
                            "sensitivity": {"enabled": True}}, "space.yaml")
    parse(SearchSpace, {"name": "s", "trial_spec": "t.yaml", "techniques": {"distill": {}},
                        "sensitivity": {"enabled": False}}, "space.yaml")  # off: nothing asked of the space


@pytest.mark.slow
def test_a_search_with_the_stage_runs_its_guided_configs(tmp_path):
    """run_search wiring: the stage runs before the trials, its guided per-layer configs are enqueued
    and run as given (not as their approximate params), its table lands on the MLflow parent."""
    import yaml
    from mlflow.tracking import MlflowClient

    import autocompress as ac

    spec = yaml.safe_load((ROOT / "trials" / "cartpole_ppo.yaml").read_text())
    spec.update(finetune={"iterations": 0}, eval={"episodes": 3, "heldout_episodes": 0}, latency={"calls": 200},
                sample_steps=300)
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(spec))
    space = {"name": "guided", "trial_spec": "trial.yaml", "baselines": False, "budget": {"trials": 2, "parallel": 1},
             "sensitivity": {"enabled": True, "episodes": 0, "max_drop": 0.05},
             "techniques": {"quantize": {"bits": {"low": 2, "high": 8}}}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    run = ac.search(tmp_path / "space.yaml", run_dir=tmp_path / "run", cache_dir=ROOT / "teachers")
    assert run.study.user_attrs["sensitivity_guided"] >= 1
    guided = [t for t in run.study.trials if "guided" in t.user_attrs]
    assert guided and all(t.user_attrs["config"] == t.user_attrs["guided"] for t in guided)
    bits = guided[0].user_attrs["config"]["quantize"]["bits"]
    assert isinstance(bits, dict) and all(2 <= b <= 8 for b in bits.values())  # per layer, within the space
    client = MlflowClient(run.state["tracking_uri"])
    names = {a.path for a in client.list_artifacts(run.state["parent_run_id"], "sensitivity")}
    assert any(n.endswith(".json") for n in names) and any(n.endswith(".png") for n in names)
