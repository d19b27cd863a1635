"""Range reads of (Cloud-Optimized) GeoTIFFs through the project's storage, counting the bytes fetched.

rasterio (GDAL) reads a COG through a Python file object handed over by an ``opener``
(rasterio >= 1.4): GDAL asks for the header, then for the tiles that cover a window. The
file object here fetches aligned blocks of ``block_size`` bytes with one ranged GET each
(``s3://``) or one ``pread`` (local files), keeps the last few in memory, and adds every
byte it fetched to a :class:`ByteCounter`; that is what ``bench/prepare_tiles.py`` reports
as bytes read from object storage.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from urllib.parse import urlparse

from gair.data import storage

DEFAULT_BLOCK = 64 << 10  # COG tiles of 256x256 uint16 deflate are ~50-130 KiB: a few blocks each


class ByteCounter:
    """Bytes and requests fetched from storage (thread-safe)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.requests = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.bytes += n
            self.requests += 1


Fetch = Callable[[int, int], bytes]  # (start, end) -> bytes[start:end]


def _fetcher(uri: str, s3: storage.S3Options | None) -> tuple[Fetch, int, Callable[[], None]]:
    """(fetch, size, close) for a local path or s3:// URI."""
    parsed = urlparse(uri)
    if parsed.scheme in ("s3", "s3a"):
        fs, path = storage.resolve(uri, s3)
        s3fs_fs = fs.handler.fs  # the s3fs filesystem behind pyarrow's PyFileSystem
        try:
            size = int(s3fs_fs.size(path))
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise FileNotFoundError(f"{uri}: {exc}") from exc
        return (lambda start, end: s3fs_fs.cat_file(path, start=start, end=end)), size, lambda: None
    path = parsed.path if parsed.scheme == "file" else uri
    fd = os.open(path, os.O_RDONLY)
    return (lambda start, end: os.pread(fd, end - start, start)), os.fstat(fd).st_size, lambda: os.close(fd)


class RangeFile(io.RawIOBase):
    """A read-only, seekable file over ranged fetches with a small LRU block cache."""

    def __init__(
        self,
        uri: str,
        counter: ByteCounter,
        s3: storage.S3Options | None = None,
        block_size: int = DEFAULT_BLOCK,
        max_blocks: int = 64,
    ) -> None:
        super().__init__()
        self._fetch, self.size, self._close = _fetcher(uri, s3)
        self.counter, self.block_size, self.max_blocks = counter, block_size, max_blocks
        self._pos = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _block(self, i: int) -> bytes:
        if i in self._blocks:
            self._blocks.move_to_end(i)
            return self._blocks[i]
        start = i * self.block_size
        data = self._fetch(start, min(self.size, start + self.block_size))
        self.counter.add(len(data))
        self._blocks[i] = data
        if len(self._blocks) > self.max_blocks:
            self._blocks.popitem(last=False)
        return data

    def read(self, n: int = -1) -> bytes:
        end = self.size if n is None or n < 0 else min(self.size, self._pos + n)
        if end <= self._pos:
            return b""
        first, last = self._pos // self.block_size, (end - 1) // self.block_size
        missing = [i for i in range(first, last + 1) if i not in self._blocks]
        if len(missing) > 2:  # a long read (a whole COG tile): one request for the run of blocks
            lo, hi = missing[0] * self.block_size, min(self.size, (missing[-1] + 1) * self.block_size)
            data = self._fetch(lo, hi)
            self.counter.add(len(data))
            for i in missing:
                off = (i - missing[0]) * self.block_size
                self._blocks[i] = data[off : off + self.block_size]
            while len(self._blocks) > max(self.max_blocks, len(missing)):
                self._blocks.popitem(last=False)
        out = b"".join(self._block(i) for i in range(first, last + 1))
        skip = self._pos - first * self.block_size
        chunk = out[skip : skip + (end - self._pos)]
        self._pos += len(chunk)
        return chunk

    def readinto(self, b) -> int:  # noqa: ANN001 - buffer protocol
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._close()
        super().close()


def opener(counter: ByteCounter, s3: storage.S3Options | None = None) -> Callable[..., RangeFile]:
    """An ``opener`` for ``rasterio.open(uri, opener=...)`` that counts into ``counter``."""

    def open_(path: str, mode: str = "rb") -> RangeFile:
        if "r" not in mode:
            raise OSError(f"read-only opener cannot open {path} in mode {mode!r}")
        return RangeFile(path, counter, s3)

    return open_


@contextlib.contextmanager
def open_raster(uri: str, counter: ByteCounter, s3: storage.S3Options | None = None) -> Iterator:
    """``rasterio.open`` of a local or remote GeoTIFF with counted range reads.

    ``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR`` stops GDAL from probing for side-car files
    (``.aux.xml``, ``.msk``, ...): on object storage each probe would be a request.
    """
    import rasterio

    with (
        rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"),
        rasterio.open(uri, opener=opener(counter, s3)) as src,
    ):
        yield src
