"""gair.tracking.mlflow_run: URIs, redaction, the run handle and its lifecycle, on a real sqlite store."""

import os

import pytest

from gair.configs import load_config
from gair.configs.train import PretrainConfig
from gair.tracking import (
    MetricsSink,
    RunHandle,
    closing_run,
    config_params,
    redact,
    resolve_tracking_uri,
    start_or_resume_run,
    strip_credentials,
)


def test_redaction_and_credentials():
    out = redact({"s3.secret_access_key": "abc", "x.token": "t", "uri": "https://u:pw@host:5000/p", "lr": 0.1})
    assert out == {"s3.secret_access_key": "***", "x.token": "***", "uri": "https://host:5000/p", "lr": "0.1"}
    assert strip_credentials("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_params_are_the_flat_resolved_config():
    params = config_params(load_config(PretrainConfig, None, ["optim.lr=0.01"]))
    assert params["optim.lr"] == "0.01" and params["train.zero_stage"] == "2"


def test_tracking_uri_resolution(monkeypatch, tmp_path):
    cfg = load_config(PretrainConfig, None, [])
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(cfg.mlflow.tracking_uri, cwd=tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve_tracking_uri(cfg.mlflow.tracking_uri) == "http://127.0.0.1:1"
    cfg = load_config(PretrainConfig, None, ["mlflow.tracking_uri=http://h:2"])
    assert resolve_tracking_uri(cfg.mlflow.tracking_uri) == "http://h:2"


@pytest.mark.slow  # the first MLflow import and store creation take ~40 s on 2 busy cores
def test_start_or_resume_run_reuses_an_unfinished_run(sqlite_uri):
    first = start_or_resume_run(sqlite_uri, "exp", "run-a", {"optim.lr": 0.1, "s3.secret_key": "x"})
    assert isinstance(first, RunHandle) and first.tracking_uri == sqlite_uri
    again = start_or_resume_run(sqlite_uri, "exp", "run-a", {})
    assert again == first  # unfinished: resumed
    data = first.client.get_run(first.run_id).data
    assert data.params == {"optim.lr": "0.1", "s3.secret_key": "***"}
    first.end()
    assert start_or_resume_run(sqlite_uri, "exp", "run-a", {}) != first  # finished: a new run


@pytest.mark.slow
def test_closing_run_ends_finished_failed_or_killed(sqlite_uri):
    def status(run):
        return run.client.get_run(run.run_id).info.status

    ok = start_or_resume_run(sqlite_uri, "exp", "ok", {})
    with closing_run(ok) as run:
        run.log_metrics({"loss": 1.5, "recall@1": 0.5}, step=3)
    assert status(ok) == "FINISHED"
    history = ok.client.get_metric_history(ok.run_id, "recall_1")  # '@' is not a valid metric name
    assert [(m.step, m.value) for m in history] == [(3, 0.5)]

    bad = start_or_resume_run(sqlite_uri, "exp", "bad", {})
    with pytest.raises(RuntimeError, match="boom"), closing_run(bad, failure_tags={"why": "boom"}):
        raise RuntimeError("boom")
    assert status(bad) == "FAILED" and bad.client.get_run(bad.run_id).data.tags["why"] == "boom"

    stopped = start_or_resume_run(sqlite_uri, "exp", "stopped", {})
    with pytest.raises(KeyboardInterrupt), closing_run(stopped, killed_on=(KeyboardInterrupt,)):
        raise KeyboardInterrupt
    assert status(stopped) == "KILLED"

    with closing_run(None) as nothing:  # tracking off
        assert nothing is None


@pytest.mark.slow
def test_metrics_sink_only_warns_when_logging_fails(capsys, sqlite_uri):
    sink = MetricsSink(RunHandle(sqlite_uri, "no-such-run"))
    sink.log(1, {"loss": 1.0})
    assert "MLflow metric logging failed at step 1" in capsys.readouterr().out


@pytest.mark.slow
def test_steps_replayed_after_a_restart_are_logged_once(sqlite_uri):
    run = start_or_resume_run(sqlite_uri, "exp", "replay", {})
    first = MetricsSink(run)
    for step in (2, 4, 6):
        first.log(step, {"loss": float(step)})
    restarted = MetricsSink(run)  # a new worker group, resumed from the step-4 checkpoint
    for step in (6, 8):
        restarted.log(step, {"loss": 100.0 + step, "val_loss": 1.0})
    history = sorted((m.step, m.value) for m in run.client.get_metric_history(run.run_id, "loss"))
    assert history == [(2, 2.0), (4, 4.0), (6, 6.0), (8, 108.0)]
    assert [m.step for m in run.client.get_metric_history(run.run_id, "val_loss")] == [6, 8]


def test_credentials_leave_the_tracking_uri_before_mlflow_sees_it(monkeypatch):
    import pickle

    from gair.tracking.mlflow_run import redact_message

    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://envuser:envpass99@127.0.0.1:5999")
    uri = resolve_tracking_uri("http://gair:pa%3Ass-w0rd@127.0.0.1:5000/mlflow")
    assert uri == "http://127.0.0.1:5000/mlflow"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "gair"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "pa:ss-w0rd"
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5999"  # no credentials left for MLflow
    run = RunHandle(uri, "abc")
    assert run.auth == ("gair", "pa:ss-w0rd") and "w0rd" not in repr(run)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    on_worker = pickle.loads(pickle.dumps(run))  # a worker's environment lacks the credentials
    on_worker.client  # noqa: B018 - installs them where MLflow reads them
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "pa:ss-w0rd"
    assert redact_message("failed at http://gair:pa:ss-w0rd@h/x with pa:ss-w0rd") == "failed at http://***@h/x with ***"
