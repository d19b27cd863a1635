"""A 10 s S3 outage in the middle of `python jobs/pretrain.py` costs no worker restart.

The job reads its manifest and images from, and writes its checkpoints to, a moto S3
server behind a TCP proxy on loopback. Once training has logged a step, the proxy refuses
every connection for 10 s (an outside fault: the listening socket is closed, open
connections are cut), then serves again. The storage layer retries connection failures
for ``S3Options.retry_time_limit_s`` (60 s): the run must finish with one worker group
started, and the retry notice shows that the outage was met.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest

from tests._proxy import TcpProxy
from tests.conftest import REPO_ROOT
from tests.train.test_stop_resume import _stop_processes_under, job_env

pytestmark = pytest.mark.slow

OUTAGE_S = 10.0


def test_a_ten_second_s3_refusal_costs_no_restart(s3_server):
    import boto3

    bucket = f"gair-blip-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    proxy = TcpProxy(s3_server)
    proxy.start()
    ray_tmpdir = tempfile.mkdtemp(prefix="gblip-", dir="/tmp")
    env = {**job_env(ray_tmpdir), "AWS_ENDPOINT_URL": proxy.url}
    sets = [
        "run.name=blip",
        f"run.storage_path=s3://{bucket}/runs",
        f"run.synthetic_dir=s3://{bucket}/synthetic",
        "train.max_steps=12",
        "train.checkpoint_every=2",
        "train.log_every=1",
        "optim.warmup_steps=1",
        "mlflow.enabled=false",
    ]
    cmd = [sys.executable, "jobs/pretrain.py", "--config", "configs/pretrain_smoke.yaml"]
    cmd += [a for s in sets for a in ("--set", s)]
    lines: list[str] = []
    outage: dict[str, float] = {}

    def blip() -> None:
        outage["start"] = time.monotonic()
        proxy.stop()
        time.sleep(OUTAGE_S)
        proxy.start()
        outage["end"] = time.monotonic()

    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )  # fmt: skip
    blipper = threading.Thread(target=blip, daemon=True)
    try:
        deadline = time.monotonic() + 900
        for line in proc.stdout:
            lines.append(line)
            if not blipper.is_alive() and "start" not in outage and "step 1/12 loss=" in line:
                blipper.start()  # training is under way: data streaming, checkpoints due
            assert time.monotonic() < deadline, "job ran past 900 s"
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        blipper.join(timeout=OUTAGE_S + 5)
        proxy.stop()
        _stop_processes_under(ray_tmpdir)
    out = "".join(lines)
    assert proc.returncode == 0, out[-6000:]
    assert "end" in outage, "the outage never happened (no step was logged?)"
    assert "done: 12 steps" in out, out[-4000:]
    assert f"S3 endpoint {proxy.url} unreachable" in out, "the outage was not met by any request"
    assert out.count("Started training worker group") == 1, "a worker group was restarted"
