"""Size-capped streaming downloads from allowed hosts only (SPEC 2.2, 3.2): Discord attachments and
Runware's result videos. Redirects are followed by hand so that every hop is checked against the hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx

from bot.errors import UserFacingError
from bot.hosts import DisallowedURL, check_url, host_matches

MAX_REDIRECTS = 5
_REDIRECT_CODES = (301, 302, 303, 307, 308)
_WRITE_BUFFER = 1024 * 1024  # gather this much before handing a write to a worker thread


class DownloadError(UserFacingError):
    """A download was refused or failed. ``reason`` is one of: "host", "redirects", "status", "too_large",
    "network"; ``status`` is the HTTP status for "status"."""

    def __init__(self, message: str, *, reason: str, status: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


def safe_url(url: str) -> str:
    """scheme://host[:port]/path: no user info, query or fragment (Discord's CDN puts tokens there)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return f"{parts.scheme}://{netloc}{parts.path}"


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB" if n >= 1024 * 1024 else f"{n} bytes"


def _check_hop(url: str, allowed_hosts: list[str], what: str, *, redirected: bool = False) -> None:
    try:
        check_url(url, allowed_hosts, what=what)
    except DisallowedURL:
        # check_url's own text may quote the whole URL, query included; say it again without it.
        host = (urlsplit(url).hostname or "").lower()
        if not host:
            why = "the URL has no host"
        elif not host_matches(host, allowed_hosts):
            why = f"host {host!r} is not allowed (allowed: {', '.join(allowed_hosts)})"
        else:
            why = "only https is allowed (plain http only on loopback)"
        verb = "follow a redirect to" if redirected else "download from"
        raise DownloadError(f"Refused to {verb} {safe_url(url)} for {what}: {why}.", reason="host") from None


def _too_large(what: str, url: str, max_bytes: int, size: str) -> DownloadError:
    return DownloadError(
        f"Could not download {what} from {safe_url(url)}: it is {size}, over the limit of {_mb(max_bytes)}.",
        reason="too_large",
    )


@contextlib.asynccontextmanager
async def _open(
    client: httpx.AsyncClient, url: str, allowed_hosts: list[str], max_bytes: int, what: str
) -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
    """Follow redirects (each hop checked), then yield the final URL and its size-capped body chunks."""
    _check_hop(url, allowed_hosts, what)
    current = url
    try:
        for hop in range(MAX_REDIRECTS + 1):
            async with client.stream(
                "GET", current, follow_redirects=False, headers={"Accept-Encoding": "identity"}
            ) as resp:
                if resp.status_code in _REDIRECT_CODES and "location" in resp.headers:
                    if hop == MAX_REDIRECTS:
                        raise DownloadError(
                            f"Could not download {what} from {safe_url(url)}: "
                            f"more than {MAX_REDIRECTS} redirects.", reason="redirects",
                        )
                    current = urljoin(current, resp.headers["location"])
                    _check_hop(current, allowed_hosts, what, redirected=True)
                    continue
                if not 200 <= resp.status_code < 300:
                    raise DownloadError(
                        f"Could not download {what} from {safe_url(current)}: the server answered "
                        f"HTTP {resp.status_code} {resp.reason_phrase}".rstrip() + ".",
                        reason="status", status=resp.status_code,
                    )
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise _too_large(what, current, max_bytes, _mb(int(declared)))
                yield current, _capped(resp, current, max_bytes, what)
                return
    except httpx.TimeoutException:
        raise DownloadError(
            f"Could not download {what} from {safe_url(current)}: the server did not answer in time.",
            reason="network",
        ) from None
    except httpx.HTTPError as exc:
        # Only the class name: httpx messages may repeat the URL with its query.
        raise DownloadError(
            f"Could not download {what} from {safe_url(current)}: network error ({type(exc).__name__}).",
            reason="network",
        ) from None


async def _capped(resp: httpx.Response, url: str, max_bytes: int, what: str) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in resp.aiter_bytes():
        received += len(chunk)
        if received > max_bytes:
            # Leaving the stream closes the connection: the rest of the body is never read.
            raise _too_large(what, url, max_bytes, f"more than {_mb(max_bytes)}")
        yield chunk


async def fetch_bytes(
    client: httpx.AsyncClient, url: str, *, allowed_hosts: list[str], max_bytes: int, what: str
) -> bytes:
    """Download ``url`` into memory; at most ``max_bytes``. Raises DownloadError."""
    parts: list[bytes] = []
    async with _open(client, url, allowed_hosts, max_bytes, what) as (_, body):
        async for chunk in body:
            parts.append(chunk)
    return b"".join(parts)


async def download_to_file(
    client: httpx.AsyncClient, url: str, path: Path, *, allowed_hosts: list[str], max_bytes: int, what: str
) -> int:
    """Download ``url`` to ``path`` (at most ``max_bytes``); return the bytes written. The body goes to a
    temporary file beside ``path`` that is renamed into place only when complete, so a failed or cancelled
    download never leaves a partial file under the final name. Raises DownloadError."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    tmp = Path(tmp_name)
    written = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            pending: list[bytes] = []
            size = 0
            async with _open(client, url, allowed_hosts, max_bytes, what) as (_, body):
                async for chunk in body:
                    pending.append(chunk)
                    size += len(chunk)
                    if size >= _WRITE_BUFFER:
                        await asyncio.to_thread(fh.write, b"".join(pending))
                        written += size
                        pending, size = [], 0
            if pending:
                await asyncio.to_thread(fh.write, b"".join(pending))
                written += size
        # mkstemp makes the file private (0600); a saved video gets the usual mode for the umask.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        await asyncio.to_thread(os.replace, tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written


def prune_old_files(folder: Path, pattern: str, cutoff: float) -> int:
    """Delete the files in ``folder`` matching ``pattern`` last written before ``cutoff`` (epoch s);
    returns how many. Files that vanish or resist meanwhile are skipped. Blocking: run it in a thread."""
    removed = 0
    for path in folder.glob(pattern) if folder.is_dir() else ():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed
