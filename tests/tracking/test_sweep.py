"""gair.tracking.sweep: the sweep's parent run and its trials' child runs, resumed by tag."""

from __future__ import annotations

import pytest

from gair.tracking import PARENT_TAG, closing_run
from gair.tracking.sweep import (
    STARTS_TAG,
    STATUS_TAG,
    close_trial_run,
    start_or_resume_sweep_run,
    start_or_resume_trial_run,
    trial_runs,
)

pytestmark = pytest.mark.slow  # shares the MLflow store of tests/tracking (slow to create)


def test_parent_and_trials_are_found_again_on_resume(sqlite_uri, experiment):
    parent = start_or_resume_sweep_run(sqlite_uri, experiment, "sw", {"sweep.search.metric": "val_loss"})
    assert start_or_resume_sweep_run(sqlite_uri, experiment, "sw", {}) == parent
    trial = start_or_resume_trial_run(parent, experiment, "sw", "t1", "sw-t1", {"optim.lr": 0.1})
    again = start_or_resume_trial_run(parent, experiment, "sw", "t1", "sw-t1", {})
    assert again == trial
    tags = trial.client.get_run(trial.run_id).data.tags
    assert tags[PARENT_TAG] == parent.run_id and tags[STARTS_TAG] == "2"
    assert trial_runs(sqlite_uri, experiment, "sw") == {"t1": trial}
    assert trial_runs(sqlite_uri, experiment, "other") == {}


def test_close_trial_run_sets_status_and_last_step(sqlite_uri, experiment):
    parent = start_or_resume_sweep_run(sqlite_uri, experiment, "sw2", {})
    with closing_run(parent):
        ok = start_or_resume_trial_run(parent, experiment, "sw2", "a", "sw2-a", {})
        err = start_or_resume_trial_run(parent, experiment, "sw2", "b", "sw2-b", {})
        close_trial_run(ok, "stopped_early", {"step": 4.0, "val_loss": 1.0})
        close_trial_run(err, "error", {})
    runs = {r.run_id: r.client.get_run(r.run_id) for r in (parent, ok, err)}
    assert runs[ok.run_id].info.status == "FINISHED" and runs[err.run_id].info.status == "FAILED"
    assert runs[ok.run_id].data.tags[STATUS_TAG] == "stopped_early"
    assert runs[ok.run_id].data.tags["gair.tune.last_step"] == "4"
    assert runs[parent.run_id].info.status == "FINISHED"
