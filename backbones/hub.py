"""Weights by URL: downloaded once into a local cache, then read as local files.

The cache is ``$RESDET_CACHE``, else ``$TORCH_HOME/resdet``, else ``~/.cache/resdet``; a URL's file lives at
``<cache>/<host>/<path of the URL>`` (``https://dl.fbaipublicfiles.com/detectron2/COCO-Detection/…/model_final.pkl``
→ ``<cache>/dl.fbaipublicfiles.com/detectron2/COCO-Detection/…/model_final.pkl``), so a file can be put there by
hand on a machine without internet access. Once the file is there, no network access is attempted.

A download goes to ``<file>.part`` (resumed with an HTTP ``Range`` request when a previous try was cut off), shows a
tqdm progress bar, and is renamed to the final name only when complete, so the cache never holds a half-written
file under a name that is read. Concurrent downloads of one file (the ranks of a torchrun job) take turns on a file
lock; the later ones find the file in place. Any failure is a :class:`DownloadError` whose one-line message names
the URL and the path to place the file at.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

__all__ = ["DownloadError", "cache_dir", "cached_file", "download", "file_lock", "is_url"]

CHUNK = 1 << 20
USER_AGENT = "resdet"


class DownloadError(RuntimeError):
    """A file that could not be downloaded; the message names the URL and where to put the file by hand."""


def cache_dir() -> Path:
    """``$RESDET_CACHE``, else ``$TORCH_HOME/resdet``, else ``~/.cache/resdet`` (not created here)."""
    if os.environ.get("RESDET_CACHE"):
        return Path(os.environ["RESDET_CACHE"]).expanduser()
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser() / "resdet"
    return Path("~/.cache/resdet").expanduser()


def is_url(source: object) -> bool:
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def cached_file(url: str) -> Path:
    """Where the file of ``url`` lives in the cache (whether or not it is there yet)."""
    parts = urllib.parse.urlsplit(url)
    segments = [s for s in urllib.parse.unquote(parts.path).split("/") if s not in ("", ".", "..")]
    if not parts.hostname or not segments:
        raise DownloadError(f"cannot download {url}: not a URL of a file")
    host = parts.hostname + (f"_{parts.port}" if parts.port else "")
    return cache_dir().joinpath(host, *segments)


def download(url: str, *, progress: bool = True, sha256_prefix: str | None = None, timeout: float = 60.0) -> Path:
    """The cached file of ``url``, downloaded first if it is not in the cache yet.

    ``sha256_prefix``: the leading hex digits of the file's SHA-256 (torchvision puts them in its file names); a
    download that does not match is removed and is an error."""
    dest = cached_file(url)
    if dest.is_file():
        return dest
    where = f"download it elsewhere and put it at {dest} (RESDET_CACHE moves the cache)"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(dest.with_name(dest.name + ".lock")):
            if dest.is_file():  # another process finished it while this one waited
                return dest
            part = dest.with_name(dest.name + ".part")
            _fetch(url, part, progress=progress, timeout=timeout)
            if sha256_prefix and not _sha256(part).startswith(sha256_prefix):
                part.unlink()
                raise DownloadError(f"the file downloaded from {url} does not have the expected SHA-256 "
                                    f"({sha256_prefix}…); {where}")
            part.replace(dest)  # atomic: the name is read only once the file is whole
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"could not download {url}: HTTP {exc.code} {exc.reason}; {where}") from None
    except urllib.error.URLError as exc:
        raise DownloadError(f"could not download {url}: {exc.reason}; {where}") from None
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, disk full, read-only cache
        reason = f"{type(exc).__name__}: {exc.strerror or exc}" if isinstance(exc, OSError) else repr(exc)
        raise DownloadError(f"could not download {url} ({reason}); {where}") from None
    return dest


def _fetch(url: str, part: Path, *, progress: bool, timeout: float) -> None:
    """Download ``url`` into ``part``, continuing a partial file with a ``Range`` request when the server allows."""
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not have:  # 416: the range starts at or past the end: start over
            raise
        part.unlink()
        return _fetch(url, part, progress=progress, timeout=timeout)
    with response:
        resumed = have > 0 and response.status == 206
        start = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as f, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name[:-len(".part")],
            disable=not progress, dynamic_ncols=True,
        ) as bar:
            while chunk := response.read(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:  # the connection ended early: keep the part for the next try
        raise DownloadError(f"could not download {url}: got {size} of {total} bytes (run again to resume); "
                            f"or download it elsewhere and put it at {part.with_suffix('')}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (no locking where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
