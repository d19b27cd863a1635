"""Object-store faults from outside: a TCP proxy on loopback in front of the S3 server,
stopped (connections refused) and started again while the client works."""

from __future__ import annotations

import threading
import time

import pytest

from gair.data import storage
from tests._proxy import TcpProxy, assert_outage_is_named


@pytest.fixture
def s3_proxy(s3_server):
    proxy = TcpProxy(s3_server)
    proxy.start()
    yield proxy
    proxy.stop()


def test_a_ten_second_refusal_is_ridden_out(s3_bucket, s3_proxy):
    opts = storage.S3Options(endpoint_url=s3_proxy.url, retry_time_limit_s=60)
    uri = f"s3://{s3_bucket}/blip/x.bin"
    storage.write_bytes(uri, b"payload", opts)
    s3_proxy.stop()
    restart = threading.Timer(10.0, s3_proxy.start)
    restart.start()
    start = time.monotonic()
    try:
        assert storage.read_bytes(uri, opts) == b"payload"  # refused for 10 s, then served
        took = time.monotonic() - start
        assert took >= 9.5, took
        storage.write_bytes(f"s3://{s3_bucket}/blip/y.bin", b"after", opts)
    finally:
        restart.join()


def test_an_unreachable_endpoint_is_a_retryable_error_naming_it_not_not_found(s3_bucket, s3_proxy):
    opts = storage.S3Options(endpoint_url=s3_proxy.url, retry_time_limit_s=3)
    assert_outage_is_named(f"s3://{s3_bucket}", opts, s3_proxy, "S3 endpoint")
