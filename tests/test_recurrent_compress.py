"""`autocompress.compress` and `search` on an imported recurrent (LSTM) teacher (issue 28):
teacher states, quantize + prune, the artifact, evaluation, bytes and latency per step, all with the state
carried and reset per episode; and the clear errors where a recurrent trial cannot run yet.
"""

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from torch import nn

import autocompress as ac
from autocompress import measure, pipeline
from autocompress import teacher as teachers
from autocompress.errors import ConfigError
from autocompress.nets import torch_act
from autocompress.runtime import read_artifact
from autocompress.space import load_search_space

from conftest import agree

#: the controller the teacher's LSTM carries through: push the cart the way the pole turns
CONTROL = [0.0, 0.0, 0.0, 1.0]
HIDDEN = 16


def save_lstm_teacher(tmp: Path, algorithm: str = "PPO") -> Path:
    """A CartPole LSTM policy in the torch YAML importer's format (as tests/test_recurrent.py's), weights set so
    it balances: the encoder's unit 0 reads CONTROL · obs, the LSTM's unit 0 passes it on (input and output gates
    open, forget gate shut) and the head takes its sign. Every other weight is small and random, the recurrent
    ones included, so the state does change the outputs a little."""
    torch.manual_seed(0)
    enc, rnn, pi = nn.Linear(4, 32), nn.LSTM(32, HIDDEN), nn.Linear(HIDDEN, 2)
    with torch.no_grad():
        for p in (*enc.parameters(), *rnn.parameters(), *pi.parameters()):
            p.mul_(0.1)
        enc.weight[0] = 5 * torch.tensor(CONTROL)
        rnn.bias_ih_l0[:HIDDEN] += 3  # gates stacked i, f, g, o (torch's order)
        rnn.bias_ih_l0[HIDDEN:2 * HIDDEN] -= 3
        rnn.bias_ih_l0[3 * HIDDEN:] += 3
        rnn.weight_ih_l0[2 * HIDDEN, 0] = 3.0
        pi.weight[:, 0] = torch.tensor([-2.0, 2.0])
    state = {f"{name}.{k}": v for name, m in (("enc", enc), ("memory", rnn), ("pi", pi)) for k, v in
             m.state_dict().items()}
    path = tmp / "lstm.pt"
    torch.save(state, path)
    path.with_suffix(".yaml").write_text(yaml.safe_dump({
        "algorithm": algorithm, "layers": ["enc", "pi"], "activation": "tanh", "head": "discrete",
        "recurrent": {"cell": "lstm", "module": "memory", "after": 1}}))
    return path


def spec_file(tmp: Path, iterations: int = 0, heldout: int = 0, algorithm: str = "PPO") -> Path:
    p = tmp / "spec.yaml"
    p.write_text(yaml.safe_dump({
        "name": "rnn-cartpole", "env": "CartPole-v1", "algorithm": algorithm, "seed": 1, "sample_steps": 300,
        "teacher": {"from": str(save_lstm_teacher(tmp, algorithm)), "critic_warmup": 1},
        "training": {"train_batch_size_per_learner": 500, "minibatch_size": 64, "num_epochs": 2},
        "finetune": {"iterations": iterations},
        "eval": {"episodes": 3, "heldout_episodes": heldout, "fresh_episodes": 0},
        "latency": {"warmup": 20, "calls": 100, "rounds": 2, "kernel_calls": 5, "kernel_rounds": 10}}))
    return p


def test_compress_a_recurrent_teacher_quantized_and_pruned(tmp_path):
    config = {"quantize": {"bits": 8}, "prune": {"sparsity": 0.5}}
    r = ac.compress(spec_file(tmp_path), config, output_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    assert r.bytes < r.teacher_bytes and r.sparsity >= 0.4
    assert r.teacher_return_mean > 100 and np.isfinite(r.return_ratio) and r.return_ratio > 0.5
    assert len(r.returns) == 3
    assert r.latency_ms > 0 and r.teacher_latency_ms > 0 and r.latency_ratio > 0 and r.latency_call_ms > 0
    # the returns are the artifact's, acting in the trial's runtime with its kernels, reset per episode
    spec = ac.load_trial_spec(tmp_path / "spec.yaml")
    measured = ac.Policy.load(tmp_path / "out" / "policy.acz", r.runtime, r.kernels)
    assert measured.recurrent and ac.evaluate(measured, spec).tolist() == r.returns
    # and it acts as the compressed torch net (fp32 kernels: int8 ones round the inputs), state carried and reset
    t = cached_teacher(tmp_path)
    small = ac.compress_net(t.actor, config)  # the techniques are deterministic: the trial's net
    policy = ac.Policy.load(tmp_path / "out" / "policy.acz", kernels=["dense"] * 2)
    assert agree([torch_act(small, t.info["head"]), policy.act], "CartPole-v1") >= 256


def test_a_recurrent_teacher_distilled_into_a_smaller_gru_pruned_and_fine_tuned(tmp_path):
    """distill (an LSTM teacher's GRU student, on episodes), structured (the cell loses units), int8 QAT, and one
    RLlib fine-tune round of the recurrent student: the artifact is that net, and it still balances."""
    config = {"distill": {"hidden": [16], "units": 8, "cell": "gru", "rounds": 2, "epochs": 20, "steps_per_round": 300},
              "structured": {"amount": 0.25}, "quantize": {"bits": 8, "mode": "qat"}}
    r = ac.compress(spec_file(tmp_path, iterations=1), config, output_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    header, _ = read_artifact((tmp_path / "out" / "policy.acz").read_bytes())
    assert header["rnn"]["cell"] == "gru" and header["rnn"]["hidden"] == 6  # 8 units less a quarter
    assert [layer["w"]["shape"] for layer in header["layers"]] == [[12, 4], [2, 6]]  # 16 less a quarter; logits
    assert r.bytes < r.teacher_bytes / 4 and r.return_ratio > 0.5, (r.bytes, r.teacher_bytes, r.return_ratio)


def cached_teacher(tmp: Path):
    """The imported teacher as a trial caches it (spec_file's, under tmp / cache)."""
    return teachers.train_teacher(ac.load_trial_spec(tmp / "spec.yaml"), tmp / "cache", log=lambda m: None,
                                  train=False)


def test_teacher_states_carry_the_state_and_reset_per_episode(tmp_path):
    spec = ac.load_trial_spec(spec_file(tmp_path))
    t = cached_teacher(tmp_path)
    raw, _, starts = pipeline.teacher_states(t, spec, spec.env_creator())
    episodes = measure.collect_episodes(torch_act(t.actor, t.info["head"]), spec.env_creator(), spec.sample_steps,
                                        spec.seed)
    np.testing.assert_array_equal(raw, np.concatenate(episodes))
    assert len(episodes) > 1 and starts.tolist() == [i == 0 for e in episodes for i in range(len(e))]


def test_finetuning_a_recurrent_q_network_is_one_error_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "compress_trial", lambda *a, **k: pytest.fail("the trial started"))
    with pytest.raises(ConfigError, match=r"finetune.iterations 2: the teacher is a recurrent \(lstm\) policy, which "
                                          r"DQN does not fine-tune here \(recurrent policies fine-tune with PPO\)"):
        ac.compress(spec_file(tmp_path, iterations=2, algorithm="DQN"), {"quantize": {"bits": 8}},
                    output_dir=tmp_path / "out", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_an_imported_recurrent_teacher_fine_tunes_after_a_recurrent_critic_warm_up(tmp_path):
    logs = []
    r = ac.compress(spec_file(tmp_path, iterations=1), {"prune": {"sparsity": 0.5}}, output_dir=tmp_path / "out",
                    cache_dir=tmp_path / "cache", log=logs.append)
    assert any("critic warm-up 1/1" in m for m in logs) and len(r.finetune_rounds) == 1
    assert r.sparsity >= 0.45 and r.teacher_return_mean > 100 and r.return_ratio > 0.5


def test_a_recurrent_teacher_compressed_for_an_mcu_target_is_measured_there(tmp_path):
    """The fp32 cell cross-built and emulated (state carried over the recorded states), the device's actions
    those of the numpy runtime; 8-bit codes take less flash than the teacher's fp32 matrices."""
    from test_mcu import require_arm_toolchain

    require_arm_toolchain()
    r = ac.compress(spec_file(tmp_path), {"quantize": {"bits": 8}}, output_dir=tmp_path / "out", target="cortex-m4f",
                    cache_dir=tmp_path / "cache")
    assert r.target == "cortex-m4f" and r.device_agreement == 1.0
    assert 0 < r.flash < r.teacher_flash and r.ram > 0 and r.cycles > 0 and r.teacher_cycles > 0
    assert r.latency_ratio == pytest.approx(r.cycles / r.teacher_cycles)


def test_unsupported_techniques_are_refused(tmp_path):
    spec = spec_file(tmp_path)
    with pytest.raises(ConfigError, match=r"lowrank: not supported on a recurrent \(lstm\) net yet"):
        ac.compress(spec, {"lowrank": {"rank": 4}}, output_dir=tmp_path / "out", cache_dir=tmp_path / "cache")


def test_layer_sensitivity_counts_the_cell_as_one_layer_and_carries_the_state(tmp_path):
    t = ac.sensitivity(spec_file(tmp_path), settings={"quantize": [2, 8], "structured": [0.5]}, episodes=1,
                       output_dir=tmp_path / "s", cache_dir=tmp_path / "cache")
    assert [e["label"] for e in t["layers"]] == ["0: 4→32", "1: lstm 32→16", "2: 16→2"]
    assert [(r["technique"], r["layer"]) for r in t["rows"]] == [("quantize", i) for i in (0, 0, 1, 1, 2, 2)] + \
        [("structured", 0), ("structured", 1)]
    cell = {r["setting"]: r for r in t["rows"] if r["technique"] == "quantize" and r["layer"] == 1}
    assert cell[8]["agreement"] > 0.95 and cell[8]["return_ratio"] > 0.9  # the 8-bit cell acts as the teacher


def test_a_search_space_counts_the_recurrent_layer_as_one_layer(tmp_path):
    spec_file(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"name": "rnn", "trial_spec": "spec.yaml",
                                     "techniques": {"quantize": {"bits": {"per_layer": {"low": 4, "high": 8}}}}}))
    assert load_search_space(space)[0].techniques["quantize"]["bits"].layers == 3  # enc, lstm, pi


def test_a_search_samples_per_layer_settings_for_a_recurrent_students_cell_too(tmp_path):
    """distill on: the student's layers are its hidden ones, its cell and the output layer, and the config
    sampled is one the trial accepts (CompressConfig's counts agree)."""
    import optuna

    from autocompress.config import CompressConfig, parse
    from autocompress.space import suggest

    spec_file(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"name": "rnn", "trial_spec": "spec.yaml", "techniques": {
        "distill": {"hidden": {"choices": [[8], [8, 8]]}, "units": 8},
        "quantize": {"bits": {"per_layer": {"low": 4, "high": 8}}}}}))
    loaded, spec, _ = load_search_space(space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    students = set()
    for _ in range(24):
        cfg = suggest(study.ask(), loaded)
        if "distill" in cfg and "quantize" in cfg:
            assert len(cfg["quantize"]["bits"]) == len(cfg["distill"]["hidden"]) + 2  # + the cell, the output
            parse(CompressConfig, cfg, "sampled").check_layers(spec.teacher.n_layers(), recurrent=True)
            students.add(len(cfg["distill"]["hidden"]))
    assert students == {1, 2}


@pytest.mark.slow
def test_search_on_a_recurrent_teacher(tmp_path):
    spec_file(tmp_path, heldout=2)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "name": "rnn-search", "trial_spec": "spec.yaml", "budget": {"trials": 3, "parallel": 1}, "seed": 0,
        "techniques": {"distill": {"hidden": {"choices": [[8], [16]]}, "units": 8, "epochs": 5},
                       "quantize": {"bits": {"low": 4, "high": 8}}, "prune": {"sparsity": {"low": 0.1, "high": 0.6}}}}))
    run = ac.search(space, run_dir=tmp_path / "run", cache_dir=tmp_path / "cache")
    assert run.summary["complete"] == 3 and len(run.front()) >= 1
    assert any("distill" in r["config"] for r in run.rows())  # its baseline: a recurrent student
    # each complete trial's policy is an MLflow model (READY), which loads and acts over a whole episode as the
    # runtime with its state carried and reset at the episode's start
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelStatus

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    trial_runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                    filter_string="tags.`autocompress.kind` = 'trial'")
    assert len(trial_runs) == 3 and all(r.outputs and r.outputs.model_outputs for r in trial_runs)
    for r in trial_runs:
        assert client.get_logged_model(r.outputs.model_outputs[0].model_id).status == LoggedModelStatus.READY
    trial = run.front()[0].trial
    rid = next(r.info.run_id for r in trial_runs if r.data.tags["trial"] == str(trial))
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(f"runs:/{rid}/policy", model_config={"runtime": "numpy"})
    finally:
        mlflow.set_tracking_uri(None)
    policy = ac.Policy.load(tmp_path / "run" / "trials" / str(trial) / "policy.acz", "numpy")
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=5)
    policy.reset()
    seen, actions, done = [], [], False
    while not done:
        seen.append(np.asarray(obs, np.float32))
        actions.append(policy.act(obs))
        obs, _, term, trunc, _ = env.step(actions[-1])
        done = term or trunc
    assert (model.predict(np.stack(seen)) == np.asarray(actions)).all()
    version = run.register(trial, "rnn-policy")
    assert version is not None
