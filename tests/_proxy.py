"""A TCP proxy on loopback for outside faults: ``stop()`` refuses connections (and cuts the
open ones) until ``start()``."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from urllib.parse import urlparse


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


def assert_outage_is_named(base: str, opts: object, proxy: TcpProxy, label: str) -> None:
    """Through ``proxy`` (``opts`` points at it), objects under ``base``/down: an absent one is "not
    found"; once the proxy stops, reading, listing and writing raise StorageUnavailableError
    naming ``label`` (a ConnectionError, never FileNotFoundError)."""
    import pytest

    from gair.data import storage

    storage.write_bytes(f"{base}/down/x.bin", b"1", opts)
    with pytest.raises(FileNotFoundError):  # absent objects stay "not found"
        storage.read_bytes(f"{base}/down/absent.bin", opts)
    proxy.stop()
    for call in (
        lambda: storage.read_bytes(f"{base}/down/x.bin", opts),
        lambda: storage.list_parquet(f"{base}/down", opts),
        lambda: storage.write_bytes(f"{base}/down/z.bin", b"1", opts),
    ):
        start = time.monotonic()
        with pytest.raises(storage.StorageUnavailableError, match=f"{label} {proxy.url} unreachable") as err:
            call()
        assert isinstance(err.value, ConnectionError) and not isinstance(err.value, FileNotFoundError)
        # The outage is said once retry_time_limit_s has passed, give or take one attempt's backoff
        # (S3 waited ~15 s on a 3 s limit while s3fs retried each request five times on its own).
        waited = time.monotonic() - start
        assert waited < opts.retry_time_limit_s + 9, f"{waited:.1f}s on a {opts.retry_time_limit_s}s retry limit"
