"""Shard bytes wherever they live: local files, http(s):// URLs, and s3:// and other schemes through fsspec.

The training stream reads one sample at a time at the offsets of the shard's `.idx`
(snps3_ds.data.stream.index), so a remote shard is never downloaded whole nor scanned: over http(s) each
read is one Range request; other schemes go through fsspec's `cat_file(path, start, end)`, which needs the
scheme's own package (s3fs for s3://, gcsfs for gs://). Evaluation streams whole shards; a body that breaks
off is asked for again from the byte it reached. Every request has a timeout; a failed one (refused, timed
out, dropped, 5xx) is tried again after a doubling wait, `data.remote.attempts` tries in all, and then
RemoteReadError says what happened to which URL (the reader counts the sample as skipped: `remote`).

http(s) goes through requests, not fsspec's HTTP filesystem: that one needs aiohttp and an event loop in
every DataLoader worker, while requests is synchronous, well kept and already installed. The retry loop is
our own because urllib3's Retry does not cover a body that breaks off after the headers, nor a short body.
"""

from __future__ import annotations

import http.client
import logging
import posixpath
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3

from snps3_ds.config import RemoteShardsConfig
from snps3_ds.data.errors import RemoteReadError

log = logging.getLogger(__name__)

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
MAX_WAIT_S = 30.0  # the doubling waits between tries stop growing here
T = TypeVar("T")


def is_url(spec: str) -> bool:
    """Whether a shard spec names a URL (any `scheme://`) rather than a local path."""
    return bool(_SCHEME.match(spec))


def sibling(url: str, suffix: str) -> str:
    """`X-000000.idx` beside `X-000000.tar`, for a local path or in a URL's path (a query string stays)."""
    if not is_url(url):
        return str(Path(url).with_suffix(suffix))
    parts = urlsplit(url)
    head, _, name = parts.path.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return urlunsplit(parts._replace(path=f"{head}/{stem}{suffix}"))


def beside(url: str, name: str) -> str:
    """`name` (a path relative to the folder of `url`, as in a `.shards.json`) as a URL of the same scheme and host.
    urllib's urljoin is not used: it leaves schemes it does not know (memory://, some object stores) unjoined."""
    if is_url(name):
        return name
    parts = urlsplit(url)
    path = posixpath.normpath(posixpath.join(posixpath.dirname(parts.path) or "/", name))
    return urlunsplit(parts._replace(path=path, query="", fragment=""))


class _RetryableStatus(OSError):
    """A status that says "try again later" (5xx, 429, 408)."""


class _Answered(OSError):
    """A definite answer that trying again will not change (an unexpected status, a range request ignored)."""


def _transient(err: BaseException) -> bool:
    """Whether trying again may help: connection, timeout and short-body failures, 5xx; not 404, 403 or bad URLs."""
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, EOFError,
                        requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema, _Answered)):
        return False
    return isinstance(err, (OSError, urllib3.exceptions.HTTPError))  # requests' errors are OSErrors too


def _causes(err: BaseException) -> list[BaseException]:
    """The error and what it wraps (requests wraps urllib3 wraps socket errors), a bounded walk."""
    seen: list[BaseException] = []
    todo = [err]
    while todo and len(seen) < 16:
        current = todo.pop()
        if any(current is s for s in seen):
            continue
        seen.append(current)
        todo.extend(a for a in current.args if isinstance(a, BaseException))
        todo.extend(e for e in (getattr(current, "reason", None), current.__cause__, current.__context__)
                    if isinstance(e, BaseException))
    return seen


def describe(err: BaseException, timeout_s: float) -> str:
    """A few words for what went wrong with a request, for logs and skip-rate errors."""
    causes = _causes(err)
    if any(isinstance(e, ConnectionRefusedError) for e in causes):
        return "connection refused"
    if any(isinstance(e, (requests.Timeout, TimeoutError, urllib3.exceptions.TimeoutError)) for e in causes):
        return f"no answer within {timeout_s:g} s"
    if any(isinstance(e, http.client.RemoteDisconnected) for e in causes):
        return "connection closed without a response"
    if any(isinstance(e, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError,
                          http.client.IncompleteRead, ConnectionResetError)) for e in causes):
        return "connection dropped mid-transfer"
    if isinstance(err, _RetryableStatus):
        return str(err)
    return f"{type(err).__name__}: {err}"[:300]


class ShardFiles:
    """One reader's access to shard bytes: a few local files kept open (seeks are cheap, opens are not on
    network filesystems), one HTTP session (connections reused), fsspec's filesystems (cached by fsspec).

    `down_for()` is how long every remote request has been failing (0 while they succeed), which the
    training reader compares with data.remote.max_outage_s to stop instead of skipping forever.
    """

    def __init__(self, remote: RemoteShardsConfig | None = None, capacity: int = 8) -> None:
        self.remote, self.capacity = remote or RemoteShardsConfig(), capacity
        self.files: OrderedDict[str, BinaryIO] = OrderedDict()
        self._session: requests.Session | None = None
        self._failing_since: float | None = None

    def read(self, url: str, offset: int, size: int) -> bytes:
        """`size` bytes at `offset`; EOFError when the file ends first, RemoteReadError when a URL fails every try."""
        if not is_url(url):
            return self._read_local(url, offset, size)
        return self.retrying(url, lambda: self._read_range(url, offset, size))

    def size(self, url: str) -> int:
        """The file's length in bytes; for http(s) also a check that the server answers Range requests."""
        if not is_url(url):
            return Path(url).stat().st_size
        if _scheme(url) in ("http", "https"):
            return self.retrying(url, lambda: self._http_size(url))
        fs, path = self._fs(url)
        return self.retrying(url, lambda: int(fs.size(path)))

    def read_all(self, url: str) -> bytes:
        """A small file whole (a `.idx`, a `.shards.json`)."""
        if not is_url(url):
            return Path(url).read_bytes()
        if _scheme(url) in ("http", "https"):
            return self.retrying(url, lambda: self._http_get(url).content)
        fs, path = self._fs(url)
        return self.retrying(url, lambda: fs.cat_file(path))

    def open_stream(self, url: str) -> BinaryIO:
        """The whole shard as a stream (evaluation); over http(s) it resumes where a broken body stopped."""
        if not is_url(url):
            return open(url, "rb")  # noqa: SIM115 - the caller closes it
        if _scheme(url) in ("http", "https"):
            return _HttpStream(self, url)  # type: ignore[return-value]
        fs, path = self._fs(url)
        return self.retrying(url, lambda: fs.open(path, "rb"))

    def down_for(self) -> float:
        return 0.0 if self._failing_since is None else time.monotonic() - self._failing_since

    def close(self) -> None:
        while self.files:
            self.files.popitem()[1].close()
        if self._session is not None:
            self._session.close()
            self._session = None

    def retrying(self, url: str, call: Callable[[], T]) -> T:
        """`call()`, tried again after waits of backoff_s, 2 x backoff_s, ... while it fails in a way that may
        pass; RemoteReadError naming the failure and the URL once every try failed."""
        cfg, began, wait = self.remote, time.monotonic(), self.remote.backoff_s
        for attempt in range(1, cfg.attempts + 1):
            try:
                result = call()
            except Exception as err:  # noqa: BLE001 - sorted into transient and not below
                if not _transient(err):
                    raise
                what = describe(err, cfg.timeout_s)
                if attempt == cfg.attempts:
                    if self._failing_since is None:
                        self._failing_since = began
                    raise RemoteReadError(f"{what} to {url} ({cfg.attempts} tries over "
                                          f"{time.monotonic() - began:.1f} s)") from err
                log.warning("%s to %s; try %d of %d in %.2f s", what, url, attempt + 1, cfg.attempts, wait)
                time.sleep(wait)
                wait = min(2 * wait, MAX_WAIT_S)
            else:
                self._failing_since = None
                return result
        raise AssertionError("unreachable: attempts >= 1")

    def _read_local(self, url: str, offset: int, size: int) -> bytes:
        handle = self.files.pop(url, None) or open(url, "rb")  # noqa: SIM115 - kept open on purpose
        self.files[url] = handle
        while len(self.files) > self.capacity:
            self.files.popitem(last=False)[1].close()
        handle.seek(offset)
        data = handle.read(size)
        if len(data) != size:
            raise EOFError(f"{url}: {size} bytes expected at offset {offset}, got {len(data)}")
        return data

    def _read_range(self, url: str, offset: int, size: int) -> bytes:
        if _scheme(url) not in ("http", "https"):
            fs, path = self._fs(url)
            data = fs.cat_file(path, start=offset, end=offset + size)
        else:
            response = self._http_get(url, offset, offset + size - 1)
            data = response.content
            if len(data) != size and not _ends_before(response, offset + size):
                raise urllib3.exceptions.ProtocolError(f"{len(data)} of {size} bytes arrived")
        if len(data) != size:
            raise EOFError(f"{url}: {size} bytes expected at offset {offset}, got {len(data)} (truncated shard)")
        return data

    def _http_size(self, url: str) -> int:
        response = self._http_get(url, 0, 0)
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not match or match.group(3) == "*":
            raise _Answered(f"{url}: no length in the answer to a Range request (Content-Range "
                          f"{response.headers.get('Content-Range')!r})")
        return int(match.group(3))

    def _http_get(self, url: str, first: int | None = None, last: int | None = None,
                  stream: bool = False) -> requests.Response:
        """GET (bytes first..last, or from `first` on when last is None); statuses sorted into errors."""
        headers = {"Accept-Encoding": "identity"}  # offsets count stored bytes: no compressed bodies
        if first is not None:
            headers["Range"] = f"bytes={first}-{'' if last is None else last}"
        timeout = (self.remote.timeout_s, self.remote.timeout_s)
        response = self._http().get(url, headers=headers, timeout=timeout, stream=True)
        status = response.status_code
        if status in (200, 206) and (first is None or status == 206):
            if not stream:
                response.content  # the body now, inside the caller's retries  # noqa: B018
            return response
        response.close()
        if first is not None and status == 200:
            raise _Answered(f"{url}: the server ignored a Range request (HTTP 200); remote shards need a "
                                f"server that answers byte ranges (nginx, S3, GCS ...)")
        if status == 416:
            raise EOFError(f"{url}: bytes from {first} asked, the file is shorter (truncated shard)")
        if status in (404, 410):
            raise FileNotFoundError(f"{url}: not found (HTTP {status})")
        if status in (401, 403):
            raise PermissionError(f"{url}: access denied (HTTP {status})")
        if status in _RETRY_STATUS:
            raise _RetryableStatus(f"HTTP {status}")
        raise _Answered(f"{url}: unexpected HTTP {status}")

    def _http(self) -> requests.Session:
        if self._session is None:
            self._session = requests.Session()
        return self._session

    def _fs(self, url: str) -> tuple[Any, str]:
        """fsspec's filesystem for the URL (fsspec caches them); a missing package (s3fs, gcsfs) named in the error."""
        import fsspec

        scheme = _scheme(url)
        try:
            return fsspec.core.url_to_fs(url)
        except ImportError as err:
            raise ImportError(f"{url}: reading {scheme}:// shards needs fsspec's package for {scheme}://, which is "
                              f"not installed ({err}); e.g. `pip install s3fs` for s3://") from err
        except ValueError as err:
            raise ValueError(f"{url}: no fsspec filesystem for {scheme}:// ({err})") from err


def _scheme(url: str) -> str:
    match = _SCHEME.match(url)
    return match.group(1).lower() if match else ""


def _ends_before(response: requests.Response, end: int) -> bool:
    """Whether a 206 answer says the file ends before byte `end` (a short body that is the truth, not a drop)."""
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    return bool(match) and match.group(3) != "*" and int(match.group(3)) < end


class _HttpStream:
    """A shard's body over HTTP for tarfile's streaming mode: a read that breaks off is retried from the byte it
    reached with a Range request (the same tries and waits as every request), so a dropped connection costs
    a reconnect, not the rest of the shard."""

    def __init__(self, files: ShardFiles, url: str) -> None:
        self.files, self.url, self.pos = files, url, 0
        self.total: int | None = None
        self.response: requests.Response | None = None

    def read(self, size: int = -1) -> bytes:
        return self.files.retrying(self.url, lambda: self._read(size))

    def _read(self, size: int) -> bytes:
        try:
            if self.response is None:
                self.response = self.files._http_get(self.url, self.pos or None, stream=True)
                if self.total is None:
                    self.total = int(self.response.headers.get("Content-Length", -1))
            data = self.response.raw.read(None if size < 0 else size)
        except BaseException:
            self._drop()
            raise
        if not data and size != 0 and self.total is not None and 0 <= self.pos < self.total:
            self._drop()
            raise urllib3.exceptions.ProtocolError(f"the body ended at byte {self.pos} of {self.total}")
        self.pos += len(data)
        return data

    def _drop(self) -> None:
        if self.response is not None:
            self.response.close()
            self.response = None

    def close(self) -> None:
        self._drop()
