"""Which URLs the bot may fetch from: host patterns (SPEC 2.2), https except on loopback."""

from __future__ import annotations

import fnmatch
import ipaddress
from urllib.parse import urlsplit

from bot.errors import UserFacingError


class DisallowedURL(UserFacingError):
    pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_matches(host: str, patterns: list[str] | tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower().strip()
        if pattern.startswith("*."):
            # "*.runware.ai" matches sub-domains at any depth, never the bare suffix trick "evilrunware.ai".
            if host.endswith(pattern[1:]):
                return True
        elif fnmatch.fnmatchcase(host, pattern) if any(c in pattern for c in "*?[") else host == pattern:
            return True
    return False


def check_url(url: str, patterns: list[str] | tuple[str, ...], *, what: str = "URL") -> None:
    """Raise DisallowedURL unless ``url`` is on an allowed host, over https (or http on loopback)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        raise DisallowedURL(f"{what} {url!r} has no host")
    if not host_matches(host, patterns):
        raise DisallowedURL(f"{what} host {host!r} is not allowed; allowed hosts: {', '.join(patterns)}")
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback(host)):
        return
    raise DisallowedURL(f"{what} must use https (plain http only on loopback), got {parts.scheme!r}")
