import json

import pytest

import autocompress as ac

from autocompress.errors import TeacherError
import torch

from autocompress.config import load_compress_config
from autocompress.errors import ConfigError
from autocompress.tracking import default_uri, run_uri
from autocompress.urls import is_redacted, redact


@pytest.mark.parametrize("url,expected,had_password", [
    ("postgresql://alice:s3cret@db.example:5432/optuna", "postgresql://alice:***@db.example:5432/optuna", True),
    ("http://bob:pw@127.0.0.1:5000", "http://bob:***@127.0.0.1:5000", True),
    ("postgresql://alice@db/optuna", "postgresql://alice@db/optuna", False),
    ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db", False),
    (None, None, False),
])
def test_redact(url, expected, had_password):
    assert redact(url) == expected
    assert is_redacted(redact(url)) == had_password


def test_a_redacted_tracking_uri_must_be_given_again(tmp_path):
    # the run dir records a password-bearing tracking URI redacted: sync, register, re-evaluation and resume
    # take the full one again rather than log to (or fail on) the masked one
    full, state = "http://bob:pw@127.0.0.1:5000", {"tracking_uri": "http://bob:***@127.0.0.1:5000"}
    assert run_uri(tmp_path, state, full) == full
    assert run_uri(tmp_path, {"tracking_uri": "http://h:5000"}) == "http://h:5000"
    assert run_uri(tmp_path, {}) == default_uri(tmp_path)
    (tmp_path / "search.json").write_text(json.dumps(state))
    with pytest.raises(ConfigError, match="was searched with a password in the tracking URI: give it again"):
        ac.sync(tmp_path)


def test_yaml_is_loaded_safely(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("quantize: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_compress_config(p)
    assert not (tmp_path / "pwned").exists()


def test_teacher_cache_refuses_pickled_code_and_corruption(tmp_path, net):
    from autocompress import teacher as teachers

    state = {f"actor.{k}": v.numpy() for k, v in net.state_dict().items()}
    path = tmp_path / "t"
    teachers._save_teacher(path, state, {"actor_spec": net.spec(), "actor_prefix": "actor", "head": {"kind": "discrete"}})
    assert torch.equal(teachers.load_teacher(path).actor.layers[0].weight, net.layers[0].weight)
    blob = bytearray((path / "teacher.pt").read_bytes())
    blob[len(blob) // 2] ^= 0xFF                       # flip a byte
    (path / "teacher.pt").write_bytes(bytes(blob))
    with pytest.raises(TeacherError, match="corrupted"):
        teachers.load_teacher(path)
    # a pickle that would run code is refused by weights_only loading even with a matching checksum
    import hashlib
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, path / "teacher.pt", _use_new_zipfile_serialization=True, pickle_module=pickle)
    info = json.loads((path / "teacher.json").read_text())
    info["sha256"] = hashlib.sha256((path / "teacher.pt").read_bytes()).hexdigest()
    (path / "teacher.json").write_text(json.dumps(info))
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        teachers.load_teacher(path)
