"""Object-store faults from outside: a TCP proxy on loopback in front of the S3 server,
stopped (connections refused) and started again while the client works."""

from __future__ import annotations

import threading
import time

import pytest

from gair.data import storage
from tests._proxy import TcpProxy


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
    storage.write_bytes(f"s3://{s3_bucket}/down/x.bin", b"1", opts)
    with pytest.raises(FileNotFoundError):  # absent objects stay "not found"
        storage.read_bytes(f"s3://{s3_bucket}/down/absent.bin", opts)
    s3_proxy.stop()
    for call in (
        lambda: storage.read_bytes(f"s3://{s3_bucket}/down/x.bin", opts),
        lambda: storage.list_parquet(f"s3://{s3_bucket}/down", opts),
        lambda: storage.write_bytes(f"s3://{s3_bucket}/down/z.bin", b"1", opts),
    ):
        with pytest.raises(storage.StorageUnavailableError, match=f"S3 endpoint {s3_proxy.url} unreachable") as err:
            call()
        assert isinstance(err.value, ConnectionError) and not isinstance(err.value, FileNotFoundError)
