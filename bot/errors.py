"""Errors a person can act on. Every layer raises these; the CLI maps them to exit codes and the
Discord layer shows their message ephemerally. Anything else is a bug and gets an error id."""

from __future__ import annotations

from datetime import datetime
from typing import Any


class UserFacingError(Exception):
    """An error whose message is safe and useful to show to the member or operator."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


class InvalidInput(UserFacingError):
    """A field of a request is not allowed. Names the field, the value and what is allowed."""

    exit_code = 2

    def __init__(self, field: str, value: Any, allowed: str, problem: str | None = None) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        lead = f"`{field}`: {problem}" if problem else f"`{field}` = {_show(value)} is not allowed"
        super().__init__(f"{lead}; allowed: {allowed}.")


class LimitExceeded(UserFacingError):
    """A request refused by a quota, a ban, a pause or a budget (exit code 3)."""

    exit_code = 3

    def __init__(
        self,
        limit: str,
        message: str,
        *,
        used: int | None = None,
        allowed: int | None = None,
        resets_at: datetime | None = None,
    ) -> None:
        self.limit = limit
        self.used = used
        self.allowed = allowed
        self.resets_at = resets_at
        super().__init__(message)


class NotPermitted(UserFacingError):
    """The caller may not do this (not a moderator, not the job's owner, wrong channel)."""

    exit_code = 3


class RunwareUnavailable(UserFacingError):
    """Runware cannot take work now (key rejected, balance exhausted, generation paused)."""

    exit_code = 1


class DatabaseUnavailable(UserFacingError):
    """SQLite could not write: locked by another process past the busy timeout, or the disk is full.
    The transaction was rolled back, so nothing was half-written."""

    exit_code = 1
