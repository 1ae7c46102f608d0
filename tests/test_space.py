from pathlib import Path

import optuna
import pytest
import yaml

from autocompress.config import CompressConfig
from autocompress.errors import ConfigError
from autocompress.space import load_search_space, suggest
from autocompress.space_entries import entry as entry_of
from autocompress._search.stacking import baseline_params, stacked_params

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "cartpole_ppo.yaml"


def test_shipped_spaces_load_with_their_trial_specs():
    space, spec, spec_path = load_search_space(SPACE)
    assert spec.env == "CartPole-v1" and spec_path.resolve() == (ROOT / "trials" / "cartpole_ppo.yaml").resolve()
    for p in (ROOT / "search_spaces").glob("*.yaml"):
        space, spec, spec_path = load_search_space(p)
        assert space.name == p.stem and p.stem.startswith(spec_path.stem)  # e.g. lunarlander_dqn_per_layer


def test_suggest_is_conditional_and_always_valid():
    space, spec, _ = load_search_space(SPACE)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        t = study.ask()
        cfg = suggest(t, space)
        CompressConfig.model_validate(cfg).check_against(spec)   # every sample is a valid config
        assert not ("share" in cfg and "quantize" in cfg)
        for name in space.techniques:
            sampled = {k for k in t.params if k.startswith(name + ".") and k != f"{name}.enabled"}
            assert bool(sampled) == (name in cfg)                 # params only when enabled
        if "distill" in cfg:
            assert cfg["distill"]["hidden"] in ([16, 16], [32, 32], [64, 64])
        seen |= set(cfg)
        study.tell(t, [0.0, 0.0])
    assert seen == set(space.techniques)


def test_baselines_are_teacher_then_each_technique_alone_in_stack_order():
    space, spec, _ = load_search_space(SPACE)
    study = optuna.create_study(directions=["maximize"])
    for p in baseline_params(space):
        study.enqueue_trial(p)
    cfgs = [suggest(study.ask(), space) for _ in range(len(space.techniques) + 1)]
    assert cfgs[0] == {}
    # a distilled student first, weight codes next (as listed), then the rest as listed
    assert [next(iter(c)) for c in cfgs[1:]] == ["distill", "share", "quantize", "prune", "structured", "lowrank"]
    assert list(space.techniques) == ["distill", "structured", "lowrank", "prune", "share", "quantize"]
    assert cfgs[3]["quantize"]["bits"] == 5
    for c in cfgs:
        CompressConfig.model_validate(c).check_against(spec)


def test_stacks_join_the_anchor_with_the_others_in_stack_order_at_their_gentle_end():
    space, spec, _ = load_search_space(SPACE)

    def cfg(params):
        return suggest(optuna.trial.FixedTrial(params), space)
    alone = {next(iter(cfg(p)), None): p for p in baseline_params(space)}  # technique -> its baseline's params
    assert space.stack == 2  # the default
    stacks = [cfg(p) for p in stacked_params(space, "distill", alone["distill"])]
    # on distill at its baseline's [32, 32]: the weight codes first, at the gentle end of their range
    # (share 6 of 2..6 bits, quantize 8 of 2..8), other settings as their baseline
    assert stacks == [{"distill": {"hidden": [32, 32]}, "share": {"bits": 6}},
                      {"distill": {"hidden": [32, 32]}, "quantize": {**cfg(alone["quantize"])["quantize"], "bits": 8}}]
    for c in stacks:
        CompressConfig.model_validate(c).check_against(spec)
    # on share (at its middle, 4 bits): distill joins at its widest student; quantize is of share's
    # exclusive group (weight_coding): skipped; then prune at its lowest sparsity
    stacks = [cfg(p) for p in stacked_params(space.model_copy(update={"stack": 3}), "share", alone["share"])]
    assert stacks == [{"share": {"bits": 4}, "distill": {"hidden": [64, 64]}},
                      {"share": {"bits": 4}, "prune": {**cfg(alone["prune"])["prune"], "sparsity": 0.5}},
                      {"share": {"bits": 4}, "structured": {**cfg(alone["structured"])["structured"], "amount": 0.25}}]
    assert stacked_params(space.model_copy(update={"stack": 0}), "share", alone["share"]) == []


def test_on_an_mcu_target_a_stack_takes_the_codes_that_run_integer_only():
    space, _, _ = load_search_space(SPACE)
    techniques = {**space.techniques}
    # symmetric listed [true, false]: its middle (what the baseline and a host stack take) is false
    techniques["quantize"] = {**techniques["quantize"], "symmetric": entry_of("quantize", "symmetric", {"choices": [True, False]})}
    space = space.model_copy(update={"techniques": techniques})

    def quantize_stack(s):
        alone = {next(iter(suggest(optuna.trial.FixedTrial(p), s)), None): p for p in baseline_params(s)}
        stacks = [suggest(optuna.trial.FixedTrial(p), s) for p in stacked_params(s, "distill", alone["distill"])]
        return next(c["quantize"] for c in stacks if "quantize" in c)
    assert quantize_stack(space)["symmetric"] is False
    on_m0 = quantize_stack(space.model_copy(update={"target": "cortex-m0plus"}))
    assert on_m0["symmetric"] is True and on_m0["bits"] == 8


def test_under_a_device_budget_the_codes_stacks_run_again_at_the_narrower_student():
    space, _, _ = load_search_space(SPACE)
    at = {"hidden": [16, 16]}

    def stacks(s):
        alone = {next(iter(suggest(optuna.trial.FixedTrial(p), s)), None): p for p in baseline_params(s)}
        return [suggest(optuna.trial.FixedTrial(p), s) for p in stacked_params(s, "distill", alone["distill"], at)]
    assert [c["distill"]["hidden"] for c in stacks(space)] == [[32, 32], [32, 32]]  # the host: no device codes
    on_m0 = stacks(space.model_copy(update={"target": "cortex-m0plus"}))
    # the space's two stacks at the baseline's [32, 32], then the integer-only codes stack once more at [16, 16]
    assert [c["distill"]["hidden"] for c in on_m0] == [[32, 32], [32, 32], [16, 16]]
    assert on_m0[2] == {**on_m0[1], "distill": at} and on_m0[2]["quantize"]["symmetric"] is True
    assert "share" in on_m0[0]  # share's codebook runs as fp32 on a device: not repeated


def test_baseline_settings_replace_a_techniques_middle():
    space, _, _ = load_search_space(SPACE)
    cfgs = [suggest(optuna.trial.FixedTrial(p), space) for p in baseline_params(space, {"distill": {"hidden": [16, 16]}})]
    assert cfgs[1] == {"distill": {"hidden": [16, 16]}}
    assert cfgs[2:] == [suggest(optuna.trial.FixedTrial(p), space) for p in baseline_params(space)][2:]


def test_a_per_layer_partner_joins_with_every_layer_at_the_gentle_end():
    space, _, _ = load_search_space(ROOT / "search_spaces" / "lunarlander_dqn_per_layer.yaml")
    space = space.model_copy(update={"stack": 2})
    alone = {next(iter(suggest(optuna.trial.FixedTrial(p), space)), None): p for p in baseline_params(space)}
    stacks = [suggest(optuna.trial.FixedTrial(p), space) for p in stacked_params(space, "share", alone["share"])]
    assert stacks[1] == {"share": {"bits": [4, 4, 4]}, "structured": {"criterion": "importance", "amount": [0.25, 0.25]}}


def test_the_default_finish_at_never_ends_a_fine_tune_below_a_higher_constraint(tmp_path):
    from autocompress.pruners import make_pruner

    data = {**yaml.safe_load(SPACE.read_text()), "constraints": {"min_return_ratio": 1.05},
            "trial_spec": str(ROOT / "trials" / "cartpole_ppo.yaml")}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(data))
    space, _, _ = load_search_space(tmp_path / "space.yaml")  # the default 1.0 is no error here
    assert make_pruner(space.pruner.kind, 1.05, **space.pruner.model_dump(exclude={"kind"})).finish_at == 1.05


@pytest.mark.parametrize("change,needle", [
    ({"techniques": {"quantize": {"bits": {"low": 2, "high": 12}}}}, "quantize.bits"),
    ({"techniques": {"quantise": {}}}, "unknown technique 'quantise'"),
    ({"techniques": {"prune": {"sparsity": {"lo": 0.1, "hi": 0.5}}}}, "a range is"),
    ({"techniques": {"prune": {"sparsty": 0.5}}}, "unknown setting 'sparsty'"),
    ({"techniques": {"distill": {"hidden": {"choices": [[512, 512]]}}}}, "not smaller than the teacher"),
    ({"techniques": {"prune": {"sparsity": {"low": 0.9, "high": 0.5}}}}, "prune.sparsity: low 0.9 > high 0.5"),
    ({"objectives": ["latency", "bytes"]}, "including 'return'"),
    ({"sampler": "cmaes"}, "sampler"),
    ({"budget": {"trials": 0}}, "budget.trials"),
    ({"constraints": {"min_return_ratio": 0.9}, "pruner": {"finish_at": 0.8}}, "pruner: .*finish_at 0.8 is below"),
    ({"pruner": {"finish_at": 0}}, "pruner.finish_at"),
    ({"trial_spec": "nope.yaml"}, "file not found"),
])
def test_bad_space_names_the_key(tmp_path, change, needle):
    data = {**yaml.safe_load(SPACE.read_text()), **change}
    data["trial_spec"] = str(ROOT / "trials" / "cartpole_ppo.yaml") if "trial_spec" not in change else change["trial_spec"]
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=needle):
        load_search_space(p)


def critic_space(tmp_path, trial="cartpole_ppo"):
    data = {**yaml.safe_load(SPACE.read_text()), "trial_spec": str(ROOT / "trials" / f"{trial}.yaml"),
            "critic_techniques": {"prune": {"sparsity": {"low": 0.5, "high": 0.9}}, "quantize": {"bits": {"low": 4,
                                                                                                         "high": 8}},
                                  "share": {"bits": {"low": 2, "high": 4}}}}
    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_critic_settings_are_sampled_separately(tmp_path):
    space, spec, _ = load_search_space(critic_space(tmp_path))
    study = optuna.create_study(directions=["maximize"], sampler=optuna.samplers.RandomSampler(seed=1))
    critics = []
    for _ in range(40):
        t = study.ask()
        cfg = suggest(t, space)
        CompressConfig.model_validate(cfg).check_against(spec)
        critic = cfg.get("critic", {})
        assert not ("share" in critic and "quantize" in critic)
        assert bool({k for k in t.params if k.startswith("critic.prune.") and k != "critic.prune.enabled"}) == \
            ("prune" in critic)
        critics.append(critic)
        study.tell(t, 0.0)
    assert any(critics) and not all(critics)
    # baselines never compress the critic: they measure each actor technique alone
    study = optuna.create_study(directions=["maximize"])
    for p in baseline_params(space):
        study.enqueue_trial(p)
    assert all("critic" not in suggest(study.ask(), space) for _ in range(len(space.techniques) + 1))


@pytest.mark.parametrize("trial", ["cartpole_dqn", "pendulum_sac"])
def test_critic_techniques_need_ppo(tmp_path, trial):
    with pytest.raises(ConfigError, match="critic_techniques: only PPO"):
        load_search_space(critic_space(tmp_path, trial))


def test_critic_config_rejects_distill_and_other_algorithms(tmp_path):
    from autocompress.config import TrialSpec, parse

    with pytest.raises(ConfigError, match="critic: unknown or unsupported technique 'distill'"):
        parse(CompressConfig, {"critic": {"distill": {"hidden": [8]}}}, "c.yaml")
    dqn = TrialSpec.model_validate(yaml.safe_load((ROOT / "trials" / "cartpole_dqn.yaml").read_text()))
    with pytest.raises(ConfigError, match="Q-network is the deployed net"):
        parse(CompressConfig, {"critic": {"prune": {}}}, "c.yaml").check_against(dqn)
