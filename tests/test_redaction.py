from gair.redaction import REDACTED, known_secrets, redact_text, split_credentials, strip_credentials


def test_credentials_are_split_off_uris():
    assert split_credentials("http://alice:s3cr%40t@mlflow.example:5000/x?y=1") == (
        "http://mlflow.example:5000/x?y=1",
        "alice",
        "s3cr@t",
    )
    assert split_credentials("http://mlflow:5000") == ("http://mlflow:5000", None, None)
    assert strip_credentials("https://token@host/p") == "https://host/p"
    assert strip_credentials("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_text_loses_userinfo_and_known_secrets():
    text = "View run at http://alice:pw1234@host:5000/#/runs/1; key=AKIASECRET9 and s3cr%40t"
    out = redact_text(text, ["AKIASECRET9", "s3cr@t", "ab"])
    assert out == f"View run at http://{REDACTED}@host:5000/#/runs/1; key={REDACTED} and {REDACTED}"


def test_known_secrets_come_from_the_credential_variables():
    env = {"AWS_SECRET_ACCESS_KEY": "topsecretvalue", "MLFLOW_TRACKING_PASSWORD": "pw1234", "HOME": "/root"}
    assert known_secrets(env) == ["topsecretvalue", "pw1234"]
