"""Object-store faults from outside: a TCP proxy on loopback in front of the S3 server,
stopped (connections refused) and started again while the client works."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from urllib.parse import urlparse

import pytest

from gair.data import storage


class TcpProxy:
    """Forwards a loopback port to ``upstream``; ``stop()`` refuses connections until ``start()``."""

    def __init__(self, upstream: str) -> None:
        u = urlparse(upstream)
        self.upstream = (u.hostname, u.port)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


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
