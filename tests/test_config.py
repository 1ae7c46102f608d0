import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autocompress.config import load_compress_config, load_trial_spec
from autocompress.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "trials" / "cartpole_ppo.yaml"


def write(tmp_path, data, name="x.yaml"):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def test_shipped_files_are_valid():
    assert load_trial_spec(SPEC).env == "CartPole-v1"
    for p in (ROOT / "configs").glob("*.yaml"):
        load_compress_config(p).check_against(load_trial_spec(SPEC))
    specs = {p.stem: load_trial_spec(p) for p in (ROOT / "trials").glob("*.yaml")}
    assert {s.algorithm for s in specs.values()} == {"PPO", "DQN", "SAC"}


@pytest.mark.parametrize("data,needle", [
    ({"quantise": {"bits": 4}}, "unknown technique 'quantise'"),
    ({"quantize": {"bits": 9}}, "quantize.bits"),
    ({"quantize": {"bits": 4, "mode": "dynamic"}}, "quantize.mode"),
    ({"prune": {"sparsity": 1.2}}, "prune.sparsity"),
    ({"prune": {"sparsity": 0.5, "colour": 1}}, "prune.colour"),
    ({"distill": {}}, "distill.hidden"),
    ("- just\n- a list\n", "expected a mapping"),
    ("quantize: {bits: [\n", "not valid YAML"),
])
def test_bad_compress_config_names_the_key(tmp_path, data, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        load_compress_config(write(tmp_path, data))


@pytest.mark.parametrize("change,needle", [
    ({"env": "CartPol-v9"}, "unknown Gymnasium env id 'CartPol-v9'"),
    ({"env": "nosuchpkg.mod:Env"}, "cannot import env class"),
    ({"teacher": {"hidden": [0, 4]}}, "teacher.hidden"),
    ({"eval": {"episodes": 0}}, "eval.episodes"),
    ({"algorithm": "A3C"}, "algorithm"),
    ({"finetune": {"iters": 3}}, "finetune.iters"),
])
def test_bad_trial_spec_names_the_key(tmp_path, change, needle):
    data = {**yaml.safe_load(SPEC.read_text()), **change}
    with pytest.raises(ConfigError, match=needle):
        load_trial_spec(write(tmp_path, data))


def test_missing_file():
    with pytest.raises(ConfigError, match="file not found"):
        load_trial_spec("nope.yaml")


@pytest.mark.parametrize("hidden", [[256, 256], [512], [32, 32, 32], [300, 8]])
def test_student_not_smaller_than_teacher_is_rejected(tmp_path, hidden):
    cfg = load_compress_config(write(tmp_path, {"distill": {"hidden": hidden}}))
    with pytest.raises(ConfigError, match="not smaller than the teacher"):
        cfg.check_against(load_trial_spec(SPEC))


def test_share_and_quantize_together_rejected(tmp_path):
    """One exclusive group (declared by the techniques), checked when the config loads, critic included."""
    with pytest.raises(ConfigError, match="share and quantize both enabled"):
        load_compress_config(write(tmp_path, {"share": {"bits": 3}, "quantize": {"bits": 4}}))
    with pytest.raises(ConfigError, match="critic: share and quantize both enabled"):
        load_compress_config(write(tmp_path, {"critic": {"share": {"bits": 3}, "quantize": {"bits": 4}}}))


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "autocompress.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("cfg,needle", [
    ({"quantize": {"bits": 12}}, "quantize.bits"),
    ({"magic": {}}, "unknown technique 'magic'"),
    ({"distill": {"hidden": [512, 512]}}, "not smaller than the teacher"),
])
def test_cli_compress_rejects_bad_input_before_training(tmp_path, cfg, needle):
    r = run_cli("compress", SPEC, "--config", write(tmp_path, cfg), "--cache-dir", tmp_path / "cache")
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "cache").exists()  # no teacher training was started


def test_cli_unknown_training_key_and_missing_file(tmp_path):
    data = {**yaml.safe_load(SPEC.read_text()), "training": {"learning_rate_typo": 1}}
    r = run_cli("validate", write(tmp_path, data))
    assert r.returncode == 2 and "learning_rate_typo" in r.stderr
    r = run_cli("compress", tmp_path / "missing.yaml", "--config", tmp_path / "c.yaml")
    assert r.returncode == 2 and "file not found" in r.stderr


def test_cli_validate_ok():
    r = run_cli("validate", ROOT / "configs" / "combo.yaml")
    assert r.returncode == 0 and "valid techniques config" in r.stdout


def test_cli_search_unreachable_tracking_server_fails_before_any_work(tmp_path):
    r = run_cli("search", ROOT / "search_spaces" / "cartpole_ppo.yaml", "--run-dir", tmp_path / "run",
                "--tracking-uri", "http://user:secret@127.0.0.1:9")
    assert r.returncode == 4 and "tracking server unreachable" in r.stderr  # TrackingError
    assert "secret" not in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()
