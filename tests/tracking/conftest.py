"""Fixtures of the tracking tests: a real MLflow store in a sqlite file."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real MLflow store: a sqlite file (the client API needs no server). Its schema takes
    seconds to create, so the tracking tests share it (each uses its own run names)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def experiment(sqlite_uri: str, tmp_path, request: pytest.FixtureRequest) -> str:
    """A fresh experiment (named after the test) whose artifacts go under ``tmp_path``."""
    from gair.tracking.mlflow_run import mlflow_client

    name = request.node.name
    mlflow_client(sqlite_uri).create_experiment(name, artifact_location=(tmp_path / "artifacts").as_uri())
    return name
