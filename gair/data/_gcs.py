"""pyarrow's GcsFileSystem, tightened like the S3 one: no bucket creation, and an endpoint that
cannot be reached is :class:`StorageUnavailableError` naming it (not a bare ``UNAVAILABLE`` status).

Used through :func:`gair.data.storage.resolve` only.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlparse

import pyarrow.fs as pafs

from gair.data.storage import BucketNotFoundError, StorageUnavailableError
from gair.redaction import strip_credentials

T = TypeVar("T")
GOOGLE_ENDPOINT = "https://storage.googleapis.com"
# google-cloud-cpp status codes (in the text of the OSError pyarrow raises) of a request that got no answer.
_UNREACHABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CURL error")


class GcsHandler(pafs.FileSystemHandler):
    """A ``pyarrow.fs.PyFileSystem`` handler around ``pafs.GcsFileSystem`` at ``endpoint``.

    ``endpoint``: ``http(s)://host[:port]``, empty for Google's. A plain-``http://`` endpoint
    (an emulator) is reached anonymously; otherwise credentials come from Google's default
    chain, which this class never sees. Picklable (Ray Train ships it to its workers): the
    client is rebuilt in each process.
    """

    def __init__(self, endpoint: str, retry_time_limit_s: float) -> None:
        self.endpoint = endpoint
        self.retry_time_limit_s = retry_time_limit_s
        self._fs: pafs.GcsFileSystem | None = None

    @property
    def where(self) -> str:
        """The endpoint, safe to print."""
        return strip_credentials(self.endpoint or GOOGLE_ENDPOINT)

    @property
    def fs(self) -> pafs.GcsFileSystem:
        if self._fs is None:
            kwargs: dict[str, Any] = {"retry_time_limit": datetime.timedelta(seconds=self.retry_time_limit_s)}
            if self.endpoint:
                url = urlparse(self.endpoint)
                kwargs.update(endpoint_override=url.netloc, scheme=url.scheme, anonymous=url.scheme == "http")
            self._fs = pafs.GcsFileSystem(**kwargs)
        return self._fs

    def __getstate__(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "retry_time_limit_s": self.retry_time_limit_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["endpoint"], state["retry_time_limit_s"])  # type: ignore[misc]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GcsHandler) and (other.endpoint, other.retry_time_limit_s) == (
            self.endpoint,
            self.retry_time_limit_s,
        )

    def __hash__(self) -> int:
        return hash((self.endpoint, self.retry_time_limit_s))

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except FileNotFoundError:
            raise
        except OSError as exc:
            text = str(exc)
            if any(code in text for code in _UNREACHABLE):
                reason = text.split(" error_info=")[0].split("last message of ")[-1].strip()[:200]
                raise StorageUnavailableError(
                    f"GCS endpoint {self.where} unreachable for {self.retry_time_limit_s:.0f}s ({reason}); "
                    "retry when it is back"
                ) from exc
            raise

    def _check_bucket(self, path: str) -> None:
        bucket = path.strip("/").split("/", 1)[0]
        if not bucket:
            raise ValueError("a gs:// path needs a bucket")
        info = self._call(lambda: self.fs.get_file_info(bucket))
        if info.type == pafs.FileType.NotFound:
            raise BucketNotFoundError(
                f"bucket {bucket!r} does not exist at {self.where} (gair never creates buckets: create it first)"
            )

    # ------------------------------------------------------------------ FileSystemHandler

    def get_type_name(self) -> str:
        return "gair-gcs"

    def normalize_path(self, path: str) -> str:
        return self.fs.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self._call(lambda: self.fs.get_file_info(paths))

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        """The listing, with the directories that objects imply.

        pyarrow lists a "directory" only where a marker object (``dir/``) exists, as its own
        ``create_dir`` writes; objects written any other way (gsutil, our ``create_dir``, which
        writes no marker) would leave their directories out of every listing: a checkpoint
        directory would not be listed, nor its subdirectories copied. So list the whole
        subtree and derive the directories (and, for a non-recursive selector, keep the first level).
        """
        base = selector.base_dir.rstrip("/")
        deep = pafs.FileSelector(base, allow_not_found=selector.allow_not_found, recursive=True)
        infos = self._call(lambda: self.fs.get_file_info(deep))
        depth = 1 << 30 if selector.recursive else 1  # levels below base to report
        out: dict[str, pafs.FileInfo] = {}
        for info in infos:
            parts = info.path[len(base) + 1 :].strip("/").split("/")
            for level in range(1, min(len(parts), depth + 1)):
                implied = f"{base}/{'/'.join(parts[:level])}"
                out.setdefault(implied, pafs.FileInfo(implied, pafs.FileType.Directory))
            if len(parts) <= depth and parts != [""]:
                out[info.path.rstrip("/")] = info
        return list(out.values())

    def create_dir(self, path: str, recursive: bool) -> None:
        # GCS has no directories (objects under a prefix make one): only check that the
        # bucket is there. pyarrow's own create_dir would create a missing bucket.
        self._check_bucket(path)

    def delete_dir(self, path: str) -> None:
        self._call(lambda: self.fs.delete_dir(path))

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._call(lambda: self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok))

    def delete_root_dir_contents(self) -> None:
        raise PermissionError("gair does not delete whole buckets")

    def delete_file(self, path: str) -> None:
        self._call(lambda: self.fs.delete_file(path))

    def move(self, src: str, dest: str) -> None:
        self._call(lambda: self.fs.move(src, dest))

    def copy_file(self, src: str, dest: str) -> None:
        self._call(lambda: self.fs.copy_file(src, dest))

    def open_input_stream(self, path: str) -> Any:
        return self._call(lambda: self.fs.open_input_stream(path))

    def open_input_file(self, path: str) -> Any:
        return self._call(lambda: self.fs.open_input_file(path))

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        try:
            return self._call(lambda: self.fs.open_output_stream(path, metadata=metadata))
        except FileNotFoundError:
            self._check_bucket(path)  # the usual cause: no such bucket
            raise

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        return self._call(lambda: self.fs.open_append_stream(path, metadata=metadata))
