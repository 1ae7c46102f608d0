"""Conv policies end to end: a CNN teacher trained by RLlib on MinAtar, every technique applied to it and
fine-tuned in RLlib at a tiny budget, the artifact acting as the fine-tuned net; bad conv settings refused
before Ray starts."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from autocompress.config import TrialSpec, load_trial_spec, parse
from autocompress.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MINATAR = yaml.safe_load((ROOT / "trials" / "minatar_breakout_ppo.yaml").read_text())


def spec_with(**teacher) -> dict:
    doc = yaml.safe_load(yaml.safe_dump(MINATAR))
    doc["teacher"].update(teacher)
    return doc


@pytest.mark.parametrize("change, words", [
    ({"conv_filters": [[16, 5, 1, "valid"], [16, 5, 1, "valid"], [16, 5, 1, "valid"]]},
     ["conv_filters[2]", "below 1x1"]),
    ({"obs_layout": "chw"}, ["obs_layout", "channels-last"]),
    ({"conv_filters": [[16, 0, 1]]}, ["conv_filters[0]", "[channels, kernel, stride]"]),
    ({"conv_filters": [[16, 3, 1, "full"]]}, ["conv_filters[0]", "'same' | 'valid'"]),
])
def test_conv_settings_that_do_not_fit_the_observations_are_one_clear_error(change, words):
    with pytest.raises(ConfigError) as e:
        parse(TrialSpec, spec_with(**change), "x.yaml")
    assert str(e.value).startswith("x.yaml") and all(w in str(e.value) for w in words), str(e.value)


def test_a_conv_encoder_on_flat_observations_or_sac_is_refused():
    doc = {"name": "c", "env": "CartPole-v1", "teacher": {"conv_filters": [[8, 3, 1]]}}
    with pytest.raises(ConfigError, match="rank 3"):
        parse(TrialSpec, doc, "x.yaml")
    doc = {"name": "p", "env": "Pendulum-v1", "algorithm": "SAC", "teacher": {"conv_filters": [[8, 3, 1]]}}
    with pytest.raises(ConfigError, match="PPO and DQN"):
        parse(TrialSpec, doc, "x.yaml")


def test_the_shipped_minatar_spec_builds_a_cnn_whose_layers_count_for_per_layer_settings():
    from autocompress.config import CompressConfig

    spec = load_trial_spec(ROOT / "trials" / "minatar_breakout_ppo.yaml")
    assert spec.teacher.n_layers() == 4  # 2 conv + 1 hidden + output
    parse(CompressConfig, {"quantize": {"bits": [8, 4, 4, 8]}}, "c.yaml").check_against(spec)
    with pytest.raises(ConfigError, match="conv_filters"):
        parse(CompressConfig, {"quantize": {"bits": [8, 4, 8]}}, "c.yaml").check_against(spec)


def tiny_minatar(tmp_path: Path) -> TrialSpec:
    """The shipped spec at a tiny budget: a 1-iteration teacher (its own cache key) and 1 fine-tune round."""
    doc = spec_with(max_iterations=1)
    doc.update(name="tiny_minatar", env_config={"game": "breakout", "max_steps": 200},
               training={**doc["training"], "train_batch_size_per_learner": 400, "minibatch_size": 100,
                         "num_epochs": 1},
               finetune={"iterations": 1, "lr": 1e-4, "keep_best": False},
               eval={"episodes": 2, "seed": 10000}, latency={"warmup": 5, "calls": 50, "rounds": 2},
               sample_steps=100)
    return parse(TrialSpec, doc, "tiny")


@pytest.mark.slow
def test_every_technique_compresses_and_fine_tunes_a_cnn_teacher(tmp_path):
    """Each technique on the conv teacher through the real pipeline (RLlib fine-tune included): the artifact
    acts exactly as the fine-tuned torch net, and the conv layers really changed as the technique says."""
    from autocompress import artifact, pipeline
    from autocompress.config import CompressConfig
    from autocompress.nets import torch_act
    from autocompress.runtime import NumpyPolicy

    spec = tiny_minatar(tmp_path)
    obs = (np.random.default_rng(0).random((200, 10, 10, 4)) > 0.8).astype(np.float32)
    configs = {
        "quantize": {"quantize": {"bits": 4, "mode": "qat"}},
        "prune": {"prune": {"sparsity": 0.8}},
        "share": {"share": {"bits": 3}},
        "lowrank": {"lowrank": {"rank": 4}},
        "structured": {"structured": {"amount": 0.5}},
        "distill": {"distill": {"channels": [8], "hidden": [32], "rounds": 1, "steps_per_round": 200, "epochs": 5}},
    }
    teacher_bytes = None
    for name, raw in configs.items():
        cfg = parse(CompressConfig, raw, name)
        out = pipeline.build_compressed(spec, cfg, tmp_path / "cache", log=lambda m: None)
        net, head = out.net, out.teacher.info["head"]
        data = artifact.to_bytes(net, head)
        acts = NumpyPolicy.from_bytes(data)
        torch_acts = torch_act(net, head)
        assert [acts.act(o) for o in obs] == [torch_acts(o) for o in obs], name
        assert out.rounds, name  # it was fine-tuned
        convs = [layer for layer in net.layers if layer.conv is not None]
        teacher_bytes = teacher_bytes or len(out.teacher.artifact())
        assert len(data) < teacher_bytes, name
        if name == "structured":
            assert [layer.out_features for layer in convs] == [8, 16]
            assert convs[1].conv["in_shape"][0] == 8
        if name == "lowrank":  # the 32-filter conv became 4 filters + a 1x1 conv
            assert any(layer.conv["kernel"] == [1, 1] for layer in convs)
        if name == "distill":
            assert [layer.out_features for layer in convs] == [8]
        if name == "prune":
            assert float((convs[1].raw_weight() == 0).float().mean()) >= 0.75


def test_a_per_layer_space_on_the_cnn_teacher_samples_one_setting_per_conv_and_dense_layer(tmp_path):
    """The shipped MinAtar space with per-layer bits: every sampled config (distilled students included) has
    one bit width per layer of the net it compresses, and passes the spec's checks."""
    import optuna

    from autocompress.config import CompressConfig
    from autocompress.space import load_search_space, suggest

    doc = yaml.safe_load((ROOT / "search_spaces" / "minatar_breakout_ppo.yaml").read_text())
    doc["trial_spec"] = str(ROOT / "trials" / "minatar_breakout_ppo.yaml")
    doc["techniques"]["quantize"]["bits"] = {"per_layer": {"low": 2, "high": 8}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    space, spec, _ = load_search_space(tmp_path / "s.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    lengths = set()
    for _ in range(40):
        cfg = suggest(study.ask(), space)
        CompressConfig.model_validate(cfg).check_against(spec)
        if "quantize" in cfg:
            d = cfg.get("distill")
            lengths.add(len(cfg["quantize"]["bits"]))
            assert len(cfg["quantize"]["bits"]) == (4 if d is None else len(d["channels"]) + len(d["hidden"]) + 1)
    assert 4 in lengths  # the teacher's 2 conv + 1 hidden + output layers


def test_every_shipped_spec_finds_its_committed_teacher():
    """Adding a teacher option must not rename the cache entries of teachers trained before it (a search would
    then retrain them): each shipped spec's teacher directory name is one committed under teachers/."""
    from autocompress.teacher import SHIPPED_TEACHERS, teacher_dir

    committed = {p.name for p in SHIPPED_TEACHERS.iterdir() if (p / "teacher.json").exists()}
    for path in sorted((ROOT / "trials").glob("*.yaml")):
        if path.stem == "hopper_sac":  # not shipped: hours of SAC here (teachers/README.md)
            continue
        assert teacher_dir(load_trial_spec(path), SHIPPED_TEACHERS).name in committed, path.name
