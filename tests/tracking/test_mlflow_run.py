from gair.configs import load_config
from gair.configs.train import PretrainConfig
from gair.tracking import config_params, redact, resolve_tracking_uri, strip_credentials


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
    assert resolve_tracking_uri(cfg, cwd=tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve_tracking_uri(cfg) == "http://127.0.0.1:1"
    cfg = load_config(PretrainConfig, None, ["mlflow.tracking_uri=http://h:2"])
    assert resolve_tracking_uri(cfg) == "http://h:2"
