"""gair.tracking.evaluation: where the evaluation run goes and how it links to its source."""

from __future__ import annotations

import pytest

from gair.tracking import PARENT_TAG, start_or_resume_run
from gair.tracking.evaluation import DEFAULT_EXPERIMENT, LAST_EVAL_TAG, link_source_run, start_eval_run

pytestmark = pytest.mark.slow  # shares the MLflow store of tests/tracking (slow to create)


def test_nested_under_the_source_run_of_the_same_experiment(sqlite_uri, experiment):
    source = start_or_resume_run(sqlite_uri, experiment, "train", {})
    exp_id = source.client.get_run(source.run_id).info.experiment_id
    run = start_eval_run(
        sqlite_uri, "eval-x", source_run_id=source.run_id, source_experiment_id=exp_id, tags={"k": "v"}
    )
    info = run.client.get_run(run.run_id)
    assert info.info.experiment_id == exp_id and info.data.tags[PARENT_TAG] == source.run_id
    assert info.data.tags["k"] == "v"
    link_source_run(run, source.run_id)
    assert source.client.get_run(source.run_id).data.tags[LAST_EVAL_TAG] == run.run_id


def test_other_experiment_is_not_nested(sqlite_uri, experiment, capsys):
    source = start_or_resume_run(sqlite_uri, experiment, "train", {})
    exp_id = source.client.get_run(source.run_id).info.experiment_id
    run = start_eval_run(sqlite_uri, "e", experiment=f"{experiment}-eval", source_run_id=source.run_id,
                         source_experiment_id=exp_id)  # fmt: skip
    assert PARENT_TAG not in run.client.get_run(run.run_id).data.tags
    no_source = start_eval_run(sqlite_uri, "e2")
    exp = no_source.client.get_experiment(no_source.client.get_run(no_source.run_id).info.experiment_id)
    assert exp.name == DEFAULT_EXPERIMENT
    link_source_run(run, "no-such-run")  # only warns
    assert "could not tag source run no-such-run" in capsys.readouterr().out
