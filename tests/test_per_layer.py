"""Per-layer settings (techniques/per_layer.py): quantize.bits, prune.sparsity, share.bits and
structured.amount as a scalar, a list (one per layer) or a map {layer: value} (only those layers);
checked against the net before any training; sampled per layer by a search space; and mixed settings
per layer go through the artifact, both runtimes and every export with the same actions."""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pytest
import torch
import yaml

from autocompress import exports, native
from autocompress.artifact import to_bytes
from autocompress.config import CompressConfig, load_trial_spec, parse
from autocompress.errors import ConfigError
from autocompress.layers import layers_of
from autocompress.nets import PolicyNet
from autocompress.pipeline import compress_net
from autocompress.runtime import NumpyPolicy, read_artifact
from autocompress.space import load_search_space, suggest
from autocompress._search.stacking import baseline_params
from autocompress.techniques import Context
from autocompress.techniques.per_layer import logical_layers
from test_export import build
from test_exports import HEADS, assert_same_actions, run_c
from test_native import require_compiler

ROOT = Path(__file__).resolve().parents[1]
SPEC = load_trial_spec(ROOT / "trials" / "cartpole_ppo.yaml")  # teacher hidden [256, 256]: 3 layers


def cfg(data: dict) -> CompressConfig:
    return parse(CompressConfig, data, "cfg.yaml")


def bits_of(net: PolicyNet) -> list:
    return [None if layer.quant is None else layer.quant["bits"] for layer in net.layers]


def zeros_of(net: PolicyNet) -> list[float]:
    return [float((layer.raw_weight() == 0).float().mean()) for layer in net.layers]


# -- config: three forms, JSON round trips, errors naming the key -------------------------------

@pytest.mark.parametrize("data,value", [
    ({"quantize": {"bits": 4}}, 4),
    ({"quantize": {"bits": [8, 4, 2]}}, [8, 4, 2]),
    ({"quantize": {"bits": {0: 8, 2: 4}}}, {0: 8, 2: 4}),
    ({"quantize": {"bits": {"2": 4, "0": 8}}}, {0: 8, 2: 4}),  # as JSON gives a map back: string keys
])
def test_three_forms_parse_and_survive_json(data, value):
    c = cfg(data)
    assert c.quantize.bits == value
    again = CompressConfig.model_validate(json.loads(json.dumps(c.model_dump(exclude_none=True))))
    assert again == c and again.quantize.bits == value
    again.check_against(SPEC)


@pytest.mark.parametrize("data,needle", [
    ({"quantize": {"bits": [8, 12, 4]}}, r"quantize.bits: layer 1: .*less than or equal to 8 \(got 12\)"),
    ({"quantize": {"bits": {1: 1}}}, r"quantize.bits: layer 1: .*greater than or equal to 2"),
    ({"prune": {"sparsity": [0.5, 1.0]}}, r"prune.sparsity: layer 1: .*less than 1"),
    ({"structured": {"amount": {0: 0.0}}}, r"structured.amount: layer 0: .*greater than 0"),
    ({"share": {"bits": {"x": 2}}}, r"share.bits: map keys are layer indices .* not 'x'"),
    ({"share": {"bits": {-1: 2}}}, r"share.bits: map keys are layer indices .* not -1"),
    ({"quantize": {"bits": {1: 4, "1": 5}}}, r"quantize.bits: layer 1 is given twice"),
    ({"quantize": {"bits": []}}, r"quantize.bits: an empty list"),
    ({"quantize": {"bits": [[4]]}}, r"quantize.bits: layer 0: a number is expected"),
])
def test_bad_values_name_the_key_and_layer(data, needle):
    with pytest.raises(ConfigError, match=needle):
        cfg(data)


@pytest.mark.parametrize("data,needle", [
    ({"quantize": {"bits": [8, 4]}}, r"quantize.bits: a list of 2 values for a net of 3 layers \(teacher.hidden "
                                     r"\[256, 256\] \+ the output layer\): give 3 values"),
    ({"prune": {"sparsity": [0.1] * 4}}, r"prune.sparsity: a list of 4 values for a net of 3 layers"),
    ({"quantize": {"bits": {3: 4}}}, r"quantize.bits: layer 3 is out of range: the net has 3 layers"),
    ({"structured": {"amount": [0.5, 0.5, 0.5]}}, r"structured.amount: a list of 3 values for a net of 2 hidden "
                                                  r"layers"),
    ({"structured": {"amount": {2: 0.5}}}, r"structured.amount: layer 2 is out of range: the net has 2 hidden"),
    ({"distill": {"hidden": [32]}, "quantize": {"bits": [8, 4, 4]}},  # the student has 2 layers, not 3
     r"quantize.bits: a list of 3 values for a net of 2 layers \(distill.hidden \[32\] \+ the output layer\)"),
    ({"critic": {"share": {"bits": [2]}}}, r"critic.share.bits: a list of 1 values for a net of 3 layers"),
])
def test_lengths_and_indices_are_checked_against_the_net_before_training(data, needle):
    c = cfg(data)
    with pytest.raises(ConfigError, match=needle):
        c.check_against(SPEC)


def test_distill_student_depth_sets_the_count():
    cfg({"distill": {"hidden": [32]}, "quantize": {"bits": [8, 4]}, "prune": {"sparsity": {1: 0.5}}}
        ).check_against(SPEC)


def test_imported_teacher_is_checked_when_loaded_before_any_technique():
    spec = SPEC.updated({"teacher": {"from": "/somewhere/policy.zip"}})
    c = cfg({"quantize": {"bits": [8, 4, 8]}})
    c.check_against(spec)  # the architecture is in the file: not known yet
    torch.manual_seed(0)
    one_hidden = PolicyNet.mlp(4, [16], 2)
    with pytest.raises(ConfigError, match=r"quantize.bits: a list of 3 values for a net of 2 layers"):
        compress_net(one_hidden, c, Context(), lambda *a: pytest.fail("fine-tuned before the check"))


# -- techniques applied per layer ---------------------------------------------------------------

def test_quantize_list_and_map(net, obs):
    assert bits_of(build(net, obs, {"quantize": {"bits": [2, 5, 8]}})) == [2, 5, 8]
    mixed = build(net, obs, {"quantize": {"bits": {0: 3, 2: 8}, "mode": "qat"}})
    assert bits_of(mixed) == [3, None, 8]
    assert torch.equal(mixed.layers[1].effective_weight(), net.layers[1].weight)  # left fp32, untouched
    assert bits_of(build(net, obs, {"quantize": {"bits": 6}})) == [6, 6, 6]


def test_prune_list_map_and_iterative_ramp(net, obs):
    assert zeros_of(build(net, obs, {"prune": {"sparsity": [0.25, 0.9, 0.5]}})) == pytest.approx(
        [0.25, 0.9, 0.5], abs=1 / 128)
    only = build(net, obs, {"prune": {"sparsity": {1: 0.8}}})
    assert [layer.mask is not None for layer in only.layers] == [False, True, False]
    assert zeros_of(only)[1] == pytest.approx(0.8, abs=1 / 4096)
    rounds = cfg({"prune": {"sparsity": {0: 0.4, 2: 0.8}, "schedule": "iterative", "steps": 2}}).prune.round_configs()
    assert [r.sparsity for r in rounds] == [pytest.approx({0: 0.35, 2: 0.7}), {0: 0.4, 2: 0.8}]
    assert zeros_of(build(net, obs, {"prune": {"sparsity": [0.2, 0.6, 0.0], "schedule": "iterative"}})) == \
        pytest.approx([0.2, 0.6, 0.0], abs=1 / 128)


def test_share_list_and_map(net, obs):
    shared = build(net, obs, {"share": {"bits": [1, 3, 2]}})
    assert [layer.codebook.numel() for layer in shared.layers] == [2, 8, 4]
    only = build(net, obs, {"prune": {"sparsity": 0.5}, "share": {"bits": {2: 2}}})
    assert [layer.codebook is not None for layer in only.layers] == [False, False, True]
    assert len(torch.unique(only.layers[0].raw_weight())) > 16  # unshared: its own fp32 weights


def test_structured_per_hidden_layer(net, obs):
    assert build(net, obs, {"structured": {"amount": [0.25, 0.75]}}).hidden_widths() == [48, 16]
    assert build(net, obs, {"structured": {"amount": {1: 0.5}}}).hidden_widths() == [64, 32]


def test_lowrank_factors_keep_their_layers_index(net, obs):
    c = build(net, obs, {"lowrank": {"rank": 4}, "quantize": {"bits": {1: 3, 2: 8}}})  # only 64x64 gets smaller
    assert [len(g) for g in logical_layers(c)] == [1, 2, 1]
    assert bits_of(c) == [None, 3, 3, 8]


# -- search spaces: one param per layer ---------------------------------------------------------

def write_space(tmp_path, techniques: dict, trial: str | Path = ROOT / "trials" / "cartpole_ppo.yaml",
                critic: dict | None = None) -> Path:
    data = {"name": "per_layer", "trial_spec": str(trial), "techniques": techniques,
            **({"critic_techniques": critic} if critic else {})}
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_space_samples_one_param_per_layer_and_follows_the_student(tmp_path):
    space, spec, _ = load_search_space(write_space(tmp_path, {
        "distill": {"hidden": {"choices": [[16], [32, 32]]}},
        "quantize": {"bits": {"per_layer": {"low": 2, "high": 8}}},
        "structured": {"amount": {"per_layer": {"choices": [0.25, 0.5]}}},
        "prune": {"sparsity": {"per_layer": {"low": 0.5, "high": 0.9}}, "schedule": "oneshot"}}))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    depths = set()
    for _ in range(40):
        t = study.ask()
        c = suggest(t, space)
        n = len(c["distill"]["hidden"]) + 1 if "distill" in c else 3
        for name, key, count in (("quantize", "bits", n), ("prune", "sparsity", n), ("structured", "amount", n - 1)):
            if name in c:
                assert [t.params[f"{name}.{key}.{i}"] for i in range(count)] == c[name][key]
                assert f"{name}.{key}.{count}" not in t.params and f"{name}.{key}" not in t.params
                depths.add(count)
        t.set_user_attr("config", c)
        study.tell(t, [0.0, 0.0])
    assert {1, 2, 3} <= depths  # a [16] student: 2 layers, 1 hidden; the teacher: 3 layers, 2 hidden
    for t in study.trials:  # as stored by Optuna (JSON): the same config, valid for the spec
        stored = CompressConfig.model_validate(t.user_attrs["config"])
        assert stored == CompressConfig.model_validate(json.loads(json.dumps(t.user_attrs["config"])))
        stored.check_against(spec)


def test_space_baselines_set_every_layer_to_the_middle(tmp_path):
    space, spec, _ = load_search_space(write_space(tmp_path, {
        "quantize": {"bits": {"per_layer": {"low": 2, "high": 8}}},
        "share": {"bits": {0: 2, 2: 4}},  # a fixed per-layer map
        "structured": {"amount": {"per_layer": {"low": 0.2, "high": 0.6}}}}))
    study = optuna.create_study(directions=["maximize"])
    for p in baseline_params(space):
        study.enqueue_trial(p)
    cfgs = [suggest(study.ask(), space) for _ in range(4)]
    assert cfgs[0] == {}
    assert cfgs[1]["quantize"]["bits"] == [5, 5, 5]
    assert cfgs[2]["share"]["bits"] == {0: 2, 2: 4}
    assert cfgs[3]["structured"]["amount"] == pytest.approx([0.4, 0.4])
    for c in cfgs:
        CompressConfig.model_validate(c).check_against(spec)


@pytest.mark.parametrize("techniques,needle", [
    ({"quantize": {"symmetric": {"per_layer": {"choices": [True, False]}}}},
     r"quantize.symmetric: per_layer is only for .*quantize.bits"),
    ({"quantize": {"bits": {"per_layer": {"low": 2, "high": 12}}}}, r"quantize.bits: .*less than or equal to 8 \(got 12\)"),
    ({"quantize": {"bits": {"per_layer": {"lo": 2}}}}, r"quantize.bits.per_layer: a range is"),
    ({"quantize": {"bits": {"per_layer": {"low": 2, "high": 8}, "low": 2}}}, r"quantize.bits.per_layer: give"),
    ({"quantize": {"bits": {"per_layer": {"low": 2, "high": 8, "layers": 4}}}},
     r"quantize.bits.per_layer.layers: 4 given, but the teacher has 3 layers"),
    ({"prune": {"sparsity": {"per_layer": {"low": 0.1, "high": 0.5, "layers": 0}}}},
     r"prune.sparsity.per_layer.layers: .*int >= 1"),
    ({"quantize": {"bits": {0: 4, 3: 8}}}, r"quantize.bits = \{0: 4, 3: 8\}: .*layer 3 is out of range"),
    ({"quantize": {"bits": [4, 8]}}, r"quantize.bits = \[4, 8\]: .*a list of 2 values for a net of 3 layers"),
])
def test_bad_per_layer_space_names_the_key(tmp_path, techniques, needle):
    with pytest.raises(ConfigError, match=needle):
        load_search_space(write_space(tmp_path, techniques))


def test_imported_teacher_space_reads_its_layer_count_from_the_file(tmp_path):
    torch.manual_seed(0)  # a PPO policy 4 -> 16 -> 16 -> 2 as a plain state dict: 3 layers, no critic in the file
    torch.save({"a.weight": torch.randn(16, 4), "a.bias": torch.zeros(16), "b.weight": torch.randn(16, 16),
                "b.bias": torch.zeros(16), "c.weight": torch.randn(2, 16), "c.bias": torch.zeros(2)},
               tmp_path / "pi.pt")
    (tmp_path / "pi.yaml").write_text(yaml.safe_dump({"algorithm": "PPO", "layers": ["a", "b", "c"],
                                                       "activation": "relu", "head": "discrete"}))
    trial = yaml.safe_load((ROOT / "trials" / "cartpole_ppo.yaml").read_text())
    trial["teacher"] = {"from": "pi.pt"}
    (tmp_path / "trial.yaml").write_text(yaml.safe_dump(trial))
    bits = {"quantize": {"bits": {"per_layer": {"low": 2, "high": 8}}}}
    space, _, _ = load_search_space(write_space(tmp_path, bits, tmp_path / "trial.yaml"))
    assert space.techniques["quantize"]["bits"].layers == 3
    study = optuna.create_study()
    study.enqueue_trial({"quantize.enabled": True})
    assert len(suggest(study.ask(), space)["quantize"]["bits"]) == 3
    with pytest.raises(ConfigError, match=r"quantize.bits.per_layer.layers: 4 given, but the teacher has 3 layers "
                                          r"\(the imported policy's 4->16 relu, 16->16 relu, 16->2 none\)"):
        load_search_space(write_space(tmp_path, {"quantize": {"bits": {"per_layer": {"low": 2, "high": 8,
                                                                                      "layers": 4}}}},
                                      tmp_path / "trial.yaml"))
    # the file holds no critic: a per-layer critic setting must state its layer count
    with pytest.raises(ConfigError, match=r"critic_techniques.quantize.bits.per_layer.layers: the imported policy "
                                          r"has no critic in its file"):
        load_search_space(write_space(tmp_path, bits, tmp_path / "trial.yaml", critic=bits))


def test_conv_ppo_critic_is_counted_with_its_encoder(tmp_path):
    # PPO's conv critic has the teacher's conv encoder (rl.algo_config): 2 conv + [128] + output = 4 layers
    trial = ROOT / "trials" / "minatar_breakout_ppo.yaml"
    spec = load_trial_spec(trial)
    critic = PolicyNet.cnn([10, 10, 4], "hwc", spec.teacher.conv_filters, spec.teacher.hidden, 1, "relu")
    assert spec.teacher.n_layers(critic=True) == len(logical_layers(critic)) == 4
    bits = {"quantize": {"bits": {"per_layer": {"low": 2, "high": 8}}}}
    space, _, _ = load_search_space(write_space(tmp_path, bits, trial, critic=bits))
    study = optuna.create_study()
    study.enqueue_trial({"critic.quantize.enabled": True})
    sampled = suggest(study.ask(), space)
    assert len(sampled["critic"]["quantize"]["bits"]) == 4
    CompressConfig.model_validate(sampled).check_against(spec)  # what the search samples, it can launch
    with pytest.raises(ConfigError, match=r"critic.quantize.bits: a list of 3 values for a net of 4 layers"):
        cfg({"critic": {"quantize": {"bits": [8, 8, 8]}}}).check_against(spec)


def test_shipped_per_layer_space(tmp_path):
    space, spec, _ = load_search_space(ROOT / "search_spaces" / "lunarlander_dqn_per_layer.yaml")
    assert space.techniques["quantize"]["bits"].layers == len(spec.teacher.hidden) + 1 == 3


# -- artifact, runtimes and exports with mixed settings per layer -------------------------------

MIXED = {
    "bits-2-5-8": ({"quantize": {"bits": [2, 5, 8]}}, [("quant", 2), ("quant", 5), ("quant", 8)]),
    "fp32-middle-sym": ({"quantize": {"bits": {0: 4, 2: 8}, "symmetric": True, "per_channel": False}},
                        [("quant", 4), ("f32", 32), ("quant", 8)]),
    "pruned-middle-bits": ({"prune": {"sparsity": {1: 0.9}}, "quantize": {"bits": [8, 3, 6], "mode": "qat"}},
                           [("quant", 8), ("quant", 3), ("quant", 6)]),
    "shared-unshared": ({"prune": {"sparsity": [0.5, 0.9, 0.0]}, "share": {"bits": {0: 2, 2: 5}}},
                        [("codebook", 2), ("f32", 32), ("codebook", 5)]),
    "lowrank-structured": ({"structured": {"amount": {1: 0.5}}, "lowrank": {"rank": 8}, "quantize": {"bits": {1: 4}}},
                           None),
}


def mixed_artifact(case: str, head: dict, obs: np.ndarray) -> tuple[bytes, PolicyNet]:
    torch.manual_seed(3)
    net = PolicyNet.mlp(4, [64, 64], 3 if head["kind"] == "discrete" else 4, "silu")
    built = build(net, obs, MIXED[case][0])
    return to_bytes(built, head), built


@pytest.fixture(scope="module")
def observations() -> np.ndarray:
    return (np.random.default_rng(7).standard_normal((400, 4)) * 2).astype(np.float32)


@pytest.mark.parametrize("case", MIXED)
def test_artifact_stores_each_layers_own_encoding_and_acts_like_torch(case, observations):
    data, built = mixed_artifact(case, HEADS["discrete"], observations)
    header, blob = read_artifact(data)
    want = MIXED[case][1]
    if want is not None:
        assert [(m["w"]["enc"], m["w"]["bits"]) for m in header["layers"]] == want
    else:  # structured then low-rank: layer 1's two factors at 4 bits, the rest fp32
        assert [m["w"]["enc"] for m in header["layers"]] == ["f32", "quant", "quant", "f32"]
    with torch.no_grad():
        expected = built(torch.as_tensor(observations)).numpy()
    np.testing.assert_allclose(NumpyPolicy.from_bytes(data).forward(observations), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("head", ["discrete", "continuous"])
@pytest.mark.parametrize("case", MIXED)
def test_mixed_layers_act_alike_in_c_runtime_c_export_and_onnx(case, head, observations, tmp_path):
    require_compiler()
    data, _ = mixed_artifact(case, HEADS[head], observations)
    layers = layers_of(*read_artifact(data))
    c_runtime = native.NativePolicy.from_bytes(data)  # kernels chosen by timing, as in a trial
    got = np.array([c_runtime.act(o) for o in observations])
    assert_same_actions(got, NumpyPolicy.from_bytes(data, c_runtime.kernels), observations, "NativePolicy")
    for kernels in (None, exports.int8_kernels(data), [layer.kernels()[-1] for layer in layers]):
        exports.write(data, "c", tmp_path / "c", kernels)
        assert_same_actions(run_c(tmp_path / "c", observations), NumpyPolicy.from_bytes(data, kernels),
                            observations, f"C {kernels}")
    int8 = exports.int8_kernels(data)
    for fmt, acts_as in (("onnx", None), ("onnx-int8", int8)):
        path = exports.write(data, fmt, tmp_path / "p.onnx")[0]
        got = ort.InferenceSession(str(path)).run(None, {"obs": observations})[0]
        assert_same_actions(got, NumpyPolicy.from_bytes(data, acts_as), observations, fmt)


# -- a real trial ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_compress_with_per_layer_settings_fine_tunes_and_exports_them(tmp_path):
    """The committed CartPole teacher, one RLlib fine-tune iteration with QAT on layers 0 and 2 only
    (layer 1 fp32) and a different sparsity per layer: the artifact holds exactly that."""
    import autocompress as ac

    spec = SPEC.updated({"finetune": {"iterations": 1}, "eval": {"episodes": 3},
                         "latency": {"calls": 200, "kernel_rounds": 20}})
    config = {"quantize": {"bits": {"0": 4, "2": 8}, "mode": "qat"}, "prune": {"sparsity": [0.3, 0.9, 0.5]}}
    r = ac.compress(spec, json.loads(json.dumps(config)), output_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    data = Path(r.artifact).read_bytes()
    header, blob = read_artifact(data)
    assert [(m["w"]["enc"], m["w"]["bits"]) for m in header["layers"]] == [("quant", 4), ("f32", 32), ("quant", 8)]
    zeros = [float((layer.w == 0).mean()) for layer in layers_of(header, blob)]
    # exactly round(s * n) weights pruned per layer (QAT may round a few more to 0 on a quantized layer)
    assert zeros[0] >= 307 / 1024 and zeros[1] == pytest.approx(0.9, abs=1e-4) and zeros[2] >= 0.5, zeros
    assert r.bytes < r.teacher_bytes / 4 and np.isfinite(r.return_mean)
    stored = json.loads((tmp_path / "out" / "result.json").read_text())["config"]
    assert CompressConfig.model_validate(stored).quantize.bits == {0: 4, 2: 8}
