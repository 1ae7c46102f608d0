"""Teacher training is resumable: a run killed mid-way continues from its last checkpoint."""

import json
from pathlib import Path

import pytest

from autocompress import teacher as teachers
from autocompress.config import TrialSpec
from tests.conftest import tiny_cartpole

pytestmark = pytest.mark.slow


class Killed(Exception):
    pass


def test_interrupted_teacher_resumes_from_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(teachers, "CHECKPOINT_EVERY_S", 0.0)  # checkpoint after every iteration
    monkeypatch.chdir(tmp_path)
    tmp_path = Path("cache")  # a relative cache dir, as `AUTOCOMPRESS_CACHE=teachers` gives
    spec = TrialSpec.model_validate({**tiny_cartpole("resume", 1), "teacher": {"hidden": [32], "max_iterations": 3}})
    seen: list[str] = []

    def die_after_second(msg: str) -> None:
        seen.append(msg)
        if msg.strip().startswith("iter 2/3"):
            raise Killed  # as if the process died after iteration 2 (its checkpoint is written after the log)

    with pytest.raises(Killed):
        teachers.train_teacher(spec, tmp_path, log=die_after_second)
    partial = teachers.teacher_dir(spec, tmp_path).with_name(teachers.teacher_dir(spec, tmp_path).name + ".partial")
    assert json.loads((partial / "progress.json").read_text())["returns"].__len__() == 1

    resumed: list[str] = []
    teacher = teachers.train_teacher(spec, tmp_path, log=resumed.append)
    assert any("resuming from iteration 1" in m for m in resumed)
    assert [m.split(":")[0].strip() for m in resumed if m.strip().startswith("iter")] == ["iter 2/3", "iter 3/3"]
    assert teacher.info["iterations"] == 3 and 1 <= teacher.info["best_iteration"] <= 3
    assert not partial.exists()  # cleaned up once the teacher is cached


def test_unreadable_checkpoint_starts_over(tmp_path):
    spec = TrialSpec.model_validate({**tiny_cartpole("resume_bad", 1), "teacher": {"hidden": [32], "max_iterations": 1}})
    partial = teachers.teacher_dir(spec, tmp_path).with_name(teachers.teacher_dir(spec, tmp_path).name + ".partial")
    partial.mkdir(parents=True)
    (partial / "progress.json").write_text('{"returns": [1.0]')  # cut off mid-write
    logs: list[str] = []
    teacher = teachers.train_teacher(spec, tmp_path, log=logs.append)
    assert any("unreadable" in m and "starting over" in m for m in logs)
    assert teacher.info["iterations"] == 1
