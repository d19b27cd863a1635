"""s3fs and pyarrow's fsspec bridge, tightened: no bucket creation, no "not found" for an
unreachable endpoint, a time-bounded retry of connection failures.

Used through :func:`gair.data.storage.resolve` only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pyarrow.fs as pafs
import s3fs
from botocore.exceptions import ConnectionClosedError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

from gair.data.storage import BucketNotFoundError, StorageUnavailableError
from gair.redaction import strip_credentials

# Connection-level failures: the request never got an answer. Retried here, for
# S3Options.retry_time_limit_s in all, around every request s3fs makes (ranges of an open file
# included). Not by s3fs itself: its five retries of each request, each with botocore's own
# attempts, took ~15 s before the time limit was first looked at (a 3 s limit waited 15 s).
CONNECTION_ERRORS = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError)
log = logging.getLogger(__name__)
_RETRY_NOTICE_EVERY_S = 10.0  # one "unreachable, retrying" line per endpoint this often, not one per request
_last_notice: dict[str, float] = {}


class GairS3FileSystem(s3fs.S3FileSystem):
    """s3fs that never creates buckets and turns an unreachable endpoint into
    :class:`StorageUnavailableError` after retrying it for ``retry_time_limit_s`` seconds."""

    def __init__(self, *args: Any, retry_time_limit_s: float = 60.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_time_limit_s = retry_time_limit_s

    @property
    def endpoint(self) -> str:
        return strip_credentials(self.endpoint_url or self.client_kwargs.get("endpoint_url") or "AWS S3")

    async def _call_s3(self, method: Any, *akwarglist: Any, **kwargs: Any) -> Any:
        start = time.monotonic()
        delay = 0.5
        while True:
            try:
                return await super()._call_s3(method, *akwarglist, **kwargs)
            except CONNECTION_ERRORS as exc:
                waited = time.monotonic() - start
                if waited + delay > self.retry_time_limit_s:
                    raise StorageUnavailableError(
                        f"S3 endpoint {self.endpoint} unreachable for {waited:.0f}s "
                        f"({type(exc).__name__}); retry when it is back"
                    ) from exc
                self._notice_retry(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 8.0)

    async def set_session(self, *args: Any, **kwargs: Any) -> Any:
        client = await super().set_session(*args, **kwargs)
        if not getattr(client, "_gair_retry_notice", False):
            # botocore and s3fs retry a connection failure themselves before it reaches
            # _call_s3: say so where it happens (botocore asks every handler whether to retry).
            client.meta.events.register("needs-retry.s3", self._on_needs_retry)
            client._gair_retry_notice = True
        return client

    def _on_needs_retry(self, caught_exception: BaseException | None = None, **_: Any) -> None:
        if isinstance(caught_exception, CONNECTION_ERRORS):
            self._notice_retry(caught_exception)
        return None  # no opinion: the retry handlers decide

    def _notice_retry(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - _last_notice.get(self.endpoint, -_RETRY_NOTICE_EVERY_S) >= _RETRY_NOTICE_EVERY_S:
            _last_notice[self.endpoint] = now
            log.warning(
                "S3 endpoint %s unreachable (%s); retrying for up to %.0fs",
                self.endpoint,
                type(exc).__name__,
                self.retry_time_limit_s,
            )

    async def _bucket_exists(self, bucket: str) -> bool:
        try:
            await self._call_s3("head_bucket", Bucket=bucket)
            return True
        except StorageUnavailableError:
            raise
        except FileNotFoundError:
            return False
        except PermissionError:
            return True  # exists, but not ours to inspect; writes will tell
        except OSError as exc:
            if "404" in str(exc) or "NoSuchBucket" in str(exc) or "Not Found" in str(exc):
                return False
            raise

    async def _mkdir(self, path: str, acl: Any = False, create_parents: bool = True, **kwargs: Any) -> None:
        # S3 has no directories: only check that the bucket is there; never create it.
        bucket, _, _ = self.split_path(self._strip_protocol(path).rstrip("/"))
        if not await self._bucket_exists(bucket):
            raise BucketNotFoundError(
                f"bucket {bucket!r} does not exist at {self.endpoint} (gair never creates buckets: create it first)"
            )

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        await self._mkdir(path)

    mkdir = s3fs.core.sync_wrapper(_mkdir)
    makedirs = s3fs.core.sync_wrapper(_makedirs)


class StrictFSSpecHandler(pafs.FSSpecHandler):
    """pyarrow's fsspec handler, except that opening or listing asks for the object's info
    (which raises the real error) instead of ``isfile``/``isdir`` (which answer "no" to
    every error, so a refused connection read as "file not found")."""

    def _require_file(self, path: str) -> None:
        info = self.fs.info(path)  # FileNotFoundError only when the object is absent
        if info.get("type") == "directory":
            raise IsADirectoryError(path)

    def open_input_stream(self, path: str) -> Any:
        self._require_file(path)
        return super().open_input_stream(path)

    def open_input_file(self, path: str) -> Any:
        self._require_file(path)
        return super().open_input_file(path)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> Any:
        try:
            self.fs.info(selector.base_dir)
        except FileNotFoundError:
            if selector.allow_not_found:
                return []
            raise
        return super().get_file_info_selector(selector)
