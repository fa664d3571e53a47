"""Runware failures as exceptions. `error_for` is the ONE place that turns an HTTP status and a
Runware error code into an exception class; everything else catches these classes."""

from __future__ import annotations

import re
from typing import Any

from bot.runware.models import TaskError


class RunwareError(Exception):
    """A failure reported by (or on the way to) Runware.

    ``message`` is Runware's own text (already scrubbed of secrets by the client) and goes to logs;
    ``user_message`` is a fixed sentence safe to show a Discord member."""

    default_retryable = False
    default_user_message = "Runware could not process this request."

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        task_uuid: str | None = None,
        parameter: str | None = None,
        retryable: bool | None = None,
        allowed_values: Any = None,
    ) -> None:
        self.code = code
        self.message = message
        self.status = status
        self.task_uuid = task_uuid
        self.parameter = parameter
        self.retryable = self.default_retryable if retryable is None else retryable
        self.allowed_values = allowed_values
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else "no HTTP status"
        parts = [f"{self.code} ({where})"]
        if self.parameter:
            parts.append(f"parameter={self.parameter}")
        if self.task_uuid:
            parts.append(f"task={self.task_uuid}")
        return " ".join(parts) + f": {self.message}"

    @property
    def user_message(self) -> str:
        return self.default_user_message

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(code={self.code!r}, status={self.status!r}, task_uuid={self.task_uuid!r})"


class AuthError(RunwareError):
    default_user_message = "Video generation is unavailable: Runware did not accept the bot's API key."


class BalanceError(RunwareError):
    default_user_message = "Video generation is paused: the bot's Runware balance is used up."


class ForbiddenError(RunwareError):
    default_user_message = "Runware does not allow the bot's account to make this request."


_CODE_WORDS = {
    "invalidPositivePrompt": "prompt",
    "invalidNegativePrompt": "negative prompt",
    "invalidWidth": "size",
    "invalidHeight": "size",
    "unsupportedDuration": "duration",
    "invalidDuration": "duration",
    "invalidCFGScale": "CFG scale",
    "invalidNumberResults": "number of variations",
    "invalidOutputFormat": "format",
    "invalidOutputQuality": "quality",
    "invalidModel": "model",
}


class RequestValidationError(RunwareError):
    @property
    def user_message(self) -> str:
        what = _CODE_WORDS.get(self.code) or _words(self.parameter)
        text = f"Runware did not accept the {what}." if what else "Runware did not accept a setting."
        allowed = _short_allowed(self.allowed_values)
        return f"{text} Allowed: {allowed}." if allowed else text


def _words(parameter: str | None) -> str | None:
    # "someParameter" -> "some parameter": readable without keeping a table of Runware's field names.
    if not parameter or len(parameter) > 40 or not parameter.replace("_", "").isalnum():
        return None
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", parameter).lower()


def _short_allowed(values: Any) -> str | None:
    # Only plain scalar lists are shown: anything richer would read as raw JSON to a member.
    if not isinstance(values, list | tuple) or not values or len(values) > 10:
        return None
    if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values):
        return None
    text = ", ".join(str(v) for v in values)
    return text if len(text) <= 120 else None


class RateLimited(RunwareError):
    default_retryable = True
    default_user_message = "Runware is busy right now; retrying."


class ServerError(RunwareError):
    default_retryable = True
    default_user_message = "Runware is not answering, retrying."


class TransportError(RunwareError):
    default_retryable = True
    default_user_message = "Runware is not answering, retrying."


class ProviderError(RunwareError):
    default_retryable = True
    default_user_message = "The video provider failed to make this video."


class SafetyError(RunwareError):
    default_user_message = "The content check flagged this request, so no video was made."


class ConflictTaskUUID(RunwareError):
    default_user_message = "This task was already submitted to Runware."


class TaskNotFound(RunwareError):
    default_user_message = "Runware has no record of this task."


_BY_CODE: dict[str, type[RunwareError]] = {
    "invalidApiKey": AuthError,
    "missingApiKey": AuthError,
    "invalidApiKeyFormat": AuthError,
    "unauthorized": AuthError,
    "insufficientCredits": BalanceError,
    "insufficientBalance": BalanceError,
    "notEnoughCredits": BalanceError,
    "forbidden": ForbiddenError,
    "accessDenied": ForbiddenError,
    "providerError": ProviderError,
    "timeoutProvider": ProviderError,
    "providerTimeout": ProviderError,
    "providerUnavailable": ProviderError,
    "inferenceFailed": ProviderError,
    "timeout": ProviderError,
    "conflictTaskUUID": ConflictTaskUUID,
    "taskNotFound": TaskNotFound,
    "rateLimitExceeded": RateLimited,
    "tooManyRequests": RateLimited,
    "internalServerError": ServerError,
    "serviceUnavailable": ServerError,
}

# Runware names content-check failures in several ways across providers: match on fragments.
_SAFETY_FRAGMENTS = ("nsfw", "safety", "moderat", "contentpolicy", "unsafe", "flagged", "inappropriate")


def _class_for_status(status: int | None, has_parameter: bool) -> type[RunwareError]:
    if status is None:
        return RunwareError
    if status == 401:
        return AuthError
    if status == 402:
        return BalanceError
    if status == 403:
        return ForbiddenError
    if status == 429:
        return RateLimited
    if status >= 500:
        return ServerError
    if status == 400 or has_parameter:
        return RequestValidationError
    return RunwareError


def _class_for_code(code: str) -> type[RunwareError] | None:
    if code in _BY_CODE:
        return _BY_CODE[code]
    lowered = code.lower()
    if any(fragment in lowered for fragment in _SAFETY_FRAGMENTS):
        return SafetyError
    if lowered.startswith(("invalid", "unsupported", "missing", "outofrange")):
        return RequestValidationError
    return None


def error_for(status: int | None, item: TaskError | None) -> RunwareError:
    """Map an HTTP status and (optionally) one Runware error item to an exception.

    The error code decides when it is known; otherwise the status class decides."""
    if item is None:
        cls = _class_for_status(status, False)
        code = f"http{status}" if status is not None else "unknown"
        return cls(code, _status_text(status), status=status)
    has_parameter = bool(item.parameter)
    cls = _class_for_code(item.code) or _class_for_status(status, has_parameter)
    return cls(
        item.code,
        item.message,
        status=status,
        task_uuid=item.task_uuid,
        parameter=item.parameter,
        allowed_values=item.allowed_values,
    )


def _status_text(status: int | None) -> str:
    texts = {
        400: "bad request",
        401: "API key rejected",
        402: "insufficient balance",
        403: "forbidden",
        429: "rate limited",
    }
    if status is None:
        return "no answer"
    if status >= 500:
        return "server error"
    return texts.get(status, "unexpected answer")
