"""gair.tune.trial: what a trial gets from the sweep driver travels to Tune's trial actors."""

from __future__ import annotations

from ray import cloudpickle

from gair.tracking import RunHandle
from gair.tune.trial import TrialContext, trial_run_name


def test_context_pickles_with_its_run_handle():
    ctx = TrialContext({"train": {"max_steps": 2}}, "sw", "/tmp/trials", "exp", RunHandle("http://h:1", "r1"))
    assert cloudpickle.loads(cloudpickle.dumps(ctx)) == ctx


def test_trial_run_name_is_unique_per_sweep_and_trial():
    assert trial_run_name("sw", "abc_00001") == "sw-abc_00001"
