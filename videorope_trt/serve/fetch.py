"""A request's video, wherever it is, as a local file the decoder can open; every way in is bounded.

    data:video/mp4;base64,...   decoded into a temporary file (size checked before decoding)
    /path, file:///path         read in place, only under the server's media root (off unless one is given)
    http://, https://           streamed into a temporary file, only when the server allows it (off by default: a
                                server that fetches any URL a client names can be made to reach internal hosts),
                                within the size bound and the fetch timeout

A problem is a `FetchError` with the HTTP status it deserves (400, 403, 408, 413) and a message naming the limit.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

CHUNK = 1 << 20
#: media type → file suffix, so that FFmpeg's probing starts from the right container
SUFFIXES = {"video/mp4": ".mp4", "video/webm": ".webm", "video/x-matroska": ".mkv", "video/quicktime": ".mov",
            "video/x-msvideo": ".avi", "video/mpeg": ".mpg"}


class FetchError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int
    timeout_s: float
    allow_http: bool = False
    media_root: str | None = None
    tmp_dir: str | None = None


@dataclass(frozen=True)
class Fetched:
    path: Path
    temporary: bool  # ours to delete once the request is done

    def cleanup(self) -> None:
        if self.temporary:
            self.path.unlink(missing_ok=True)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n} bytes"


def _temporary(limits: FetchLimits, suffix: str):
    fd, name = tempfile.mkstemp(prefix="videorope-serve-", suffix=suffix, dir=limits.tmp_dir)
    return os.fdopen(fd, "wb"), Path(name)


def _from_data_url(url: str, limits: FetchLimits) -> Fetched:
    header, comma, payload = url[5:].partition(",")
    if not comma or not header.endswith(";base64"):
        raise FetchError(400, "video_url: a data URL must be base64 (data:video/mp4;base64,...)")
    if len(payload) * 3 // 4 > limits.max_bytes + 2:
        raise FetchError(413, f"video_url: the video is over the server's limit of {_mib(limits.max_bytes)}")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise FetchError(400, "video_url: the data URL's payload is not valid base64") from None
    out, path = _temporary(limits, SUFFIXES.get(header[: -len(";base64")].lower(), ".bin"))
    with out:
        out.write(data)
    return Fetched(path, True)


def _from_path(url: str, limits: FetchLimits) -> Fetched:
    if limits.media_root is None:
        raise FetchError(403, "video_url: local files are off on this server; start it with --media-root DIR to "
                              "read videos under DIR, or send the video as a data: URL")
    raw = unquote(urlparse(url).path) if url.startswith("file://") else url
    root = Path(limits.media_root).resolve()
    path = (root / raw).resolve()  # an absolute `raw` replaces the root; either way it must land inside it
    if not path.is_relative_to(root):
        raise FetchError(403, f"video_url: {raw} is outside the server's media root")
    if not path.is_file():
        raise FetchError(400, f"video_url: no file {raw} under the server's media root")
    if path.stat().st_size > limits.max_bytes:
        raise FetchError(413, f"video_url: {raw} is over the server's limit of {_mib(limits.max_bytes)}")
    return Fetched(path, False)


def _from_http(url: str, limits: FetchLimits) -> Fetched:
    import urllib.error
    import urllib.request

    if not limits.allow_http:
        raise FetchError(400, "video_url: http(s) URLs are off on this server (start it with --allow-http-urls); "
                              "send the video as a data: URL")
    deadline = time.monotonic() + limits.timeout_s
    out, path = _temporary(limits, Path(urlparse(url).path).suffix or ".bin")
    try:
        with out, urllib.request.urlopen(url, timeout=limits.timeout_s) as response:
            size = 0
            while block := response.read(CHUNK):
                size += len(block)
                if size > limits.max_bytes:
                    raise FetchError(413, f"video_url: {url} is over the server's limit of {_mib(limits.max_bytes)}")
                if time.monotonic() > deadline:
                    raise FetchError(408, f"video_url: {url} did not arrive within {limits.timeout_s:g} s")
                out.write(block)
    except FetchError:
        path.unlink(missing_ok=True)
        raise
    except (urllib.error.URLError, OSError, ValueError) as e:
        path.unlink(missing_ok=True)
        raise FetchError(400, f"video_url: cannot fetch {url} ({e})") from None
    return Fetched(path, True)


def fetch_video(url: str, limits: FetchLimits) -> Fetched:
    """The video `url` names, as a local file (FetchError when it cannot or may not be had)."""
    scheme = urlparse(url).scheme.lower() if "://" in url or url.startswith("data:") else ""
    if scheme == "data":
        return _from_data_url(url, limits)
    if scheme in ("", "file"):
        return _from_path(url, limits)
    if scheme in ("http", "https"):
        return _from_http(url, limits)
    raise FetchError(400, f"video_url: unsupported URL scheme {scheme!r}; expected data:, file://, a path, or "
                          "http(s):// where the server allows it")
