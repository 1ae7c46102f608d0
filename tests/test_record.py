"""The trial record and the study's attrs (autocompress._search.record): what is written reads back
equal, the stored keys are the ones studies on disk have, and a study written before a field existed
reads with that field's default."""

import dataclasses

import optuna
import pytest

from autocompress.results import TrialResult
from autocompress._search.record import (StudyAttrs, TrialRecord, copy_attrs, enqueue, queue_item, queued_record,
                                         write, write_finished)


def full_record() -> TrialRecord:
    result = TrialResult(return_mean=480.0, return_ratio=0.96, latency_ms=0.01, bytes=1234, kernels=["int8", "dense"],
                         timings={"finetune": 3.5}, artifact="/runs/x/trials/3/policy.acz", driver_seconds=9.5)
    return TrialRecord(config={"quantize": {"bits": 6}}, driver="host:1", launched_at=1.5, reuse_key="abc",
                       result=result, intermediate=[[0, 0.5], [1, 0.9]], stopped=None, partial=None,
                       fail_reason=None, interrupted=False, duplicate_of=0, free_repeat=True,
                       copied_from="old#2", baseline=True, stacked=True, guided={"quantize": {"bits": 6}},
                       warm_start="old#4")


def study() -> optuna.Study:
    return optuna.create_study(directions=["maximize"])


def test_a_record_written_to_a_trial_reads_back_equal():
    s, rec = study(), full_record()
    trial = s.ask()
    write(trial, **{name: getattr(rec, name) for name in rec.attrs()})  # the fields that are set, typed
    s.tell(trial, 1.0)
    back = TrialRecord.of(s.trials[0])
    assert back == rec and s.trials[0].user_attrs == rec.attrs()
    assert len(rec.attrs()) == len(dataclasses.fields(rec)) - 4  # stopped, partial, fail_reason, interrupted unset
    assert back.result.returns == [] and back.result.finetune_rounds == []  # what the study keeps of a result


def test_the_stored_keys_are_the_field_names_and_unset_fields_are_not_stored():
    s = study()
    trial = s.ask()
    write(trial, config={}, driver="host:1", fail_reason="boom")
    s.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert s.trials[0].user_attrs == {"config": {}, "driver": "host:1", "fail_reason": "boom"}
    assert TrialRecord(baseline=True, free_repeat=False, duplicate_of=0).attrs() == {"duplicate_of": 0,
                                                                                     "baseline": True}
    stored = full_record().attrs()["result"]
    assert "returns" not in stored and "finetune_rounds" not in stored and stored["bytes"] == 1234


def test_an_old_trial_with_missing_attrs_reads_as_defaults():
    s = study()
    s.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={"config": {"prune": {"sparsity": 0.5}},
                                                                 "result": {"return_mean": 10.0, "params": 42},
                                                                 "someone_elses": 1}))
    rec = TrialRecord.of(s.trials[0])
    assert rec.config == {"prune": {"sparsity": 0.5}} and rec.result.return_mean == 10.0
    assert rec.result.n_params == 42  # a result key of an older release, renamed
    assert rec == TrialRecord(config=rec.config, result=rec.result)  # everything else at its default
    assert TrialRecord.of(s.ask()) == TrialRecord()


def test_a_finished_trial_of_another_driver_is_written_through_the_storage():
    s = study()
    trial = s.ask()
    write(trial, driver="elsewhere:7")
    write_finished(s, s.trials[0], fail_reason="interrupted", interrupted=True)
    rec = TrialRecord.of(s.trials[0])
    assert (rec.driver, rec.fail_reason, rec.interrupted) == ("elsewhere:7", "interrupted", True)
    with pytest.raises(AttributeError, match="no field 'typo'"):
        write(trial, typo=1)


def test_queue_items_and_copies_keep_their_attrs():
    s = study()
    item = queue_item({"x": 3}, baseline=True)
    assert item == {"params": {"x": 3}, "user_attrs": {"baseline": True}} and queued_record(item).baseline
    enqueue(s, item)
    trial = s.ask()
    assert trial.params == {} and TrialRecord.of(trial).baseline  # x is suggested later, from the params
    write(trial, config={})
    s.tell(trial, 1.0)
    assert copy_attrs(s.trials[0], copied_from="old#0") == {"baseline": True, "config": {}, "copied_from": "old#0"}


def test_study_attrs_read_back_and_default_when_never_written():
    s = study()
    attrs = StudyAttrs(s)
    assert (attrs.queue, attrs.runtime, attrs.heldout, attrs.reference, attrs.noise_floor, attrs.stacked,
            attrs.sensitivity_guided, attrs.tracking_uri, attrs.parent_run_id) == ([], None, None, None, None,
                                                                                    None, None, None, None)
    assert attrs.heartbeats() == {} and attrs.latencies() == {} and attrs.fresh(3) is None
    attrs.queue = [queue_item({"x": 1}, stacked=True)]
    attrs.runtime, attrs.stacked, attrs.sensitivity_guided = "c", 0, 2
    attrs.noise_floor, attrs.parent_run_id, attrs.tracking_uri = {"min": 0.9}, "run1", "sqlite:///m.db"
    attrs.heldout, attrs.reference = {"episodes": 5}, {"artifact": "a"}
    attrs.beat("host:1")
    attrs.set_latency("sig", {"trial": 3, "latency_ms": 0.01})
    attrs.set_fresh(3, {"episodes": 100, "return_ratio": 0.9})
    # the keys studies on disk have
    assert set(s.user_attrs) == {"queue", "runtime", "stacked", "sensitivity_guided", "latency_noise_floor",
                                 "mlflow_parent_run_id", "tracking_uri", "heldout", "reference", "heartbeat:host:1",
                                 "latency:sig", "fresh:3"}
    again = StudyAttrs(s)
    assert again.stacked == 0 and again.runtime == "c" and again.queue[0]["user_attrs"] == {"stacked": True}
    assert list(again.heartbeats()) == ["host:1"] and again.latencies() == {"sig": {"trial": 3, "latency_ms": 0.01}}
    assert again.fresh(3) == {"episodes": 100, "return_ratio": 0.9} and again.fresh(4) is None
