"""The Runware HTTP client: submit, upload, batched polling, retries. It knows nothing of jobs or
Discord; it turns Runware's answers into models.py objects and errors.py exceptions."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from bot.runware.errors import (
    AuthError,
    BalanceError,
    ConflictTaskUUID,
    ForbiddenError,
    RunwareError,
    TransportError,
    error_for,
)
from bot.runware.fold import fold_item
from bot.runware.models import (
    EnhancedPrompt,
    GetResponseTask,
    ImageUploadTask,
    PromptEnhanceTask,
    TaskError,
    TaskStatus,
    VideoInferenceTask,
    item_image_uuid,
    item_status,
    item_task_uuid,
    new_task_uuid,
    parse_enhanced_item,
    parse_error_item,
    split_response,
)

log = logging.getLogger(__name__)

Tasks = list[dict[str, Any]]

# A multi-task poll answered with one of these, naming none of its tasks, is a rejection of batching.
_BATCH_REJECTED = frozenset({400, 413})
_MAX_MESSAGE = 500
POLL_CONCURRENCY = 4  # getResponse requests of one round in flight at once
# What a key check may be refused with; anything else said about the probe task means the key works.
_KEY_REFUSED = (AuthError, BalanceError, ForbiddenError)


@dataclass
class _Reply:
    status: int
    data: list[dict[str, Any]]
    errors: list[TaskError]
    retry_after_s: float | None = None


class RunwareClient:
    def __init__(
        self,
        *,
        api_url: str,
        api_key: SecretStr,
        http: httpx.AsyncClient | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 4,
        poll_batch_size: int = 50,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 8.0,
        on_request: Callable[[str, str], None] | None = None,
    ) -> None:
        if poll_batch_size < 1:
            raise ValueError("poll_batch_size must be >= 1")
        self._url = api_url
        self._key = api_key
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)))
        self.max_retries = max_retries
        self.poll_batch_size = poll_batch_size
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.http_requests = 0
        self.batching_enabled = True
        # Told (task type, outcome) after every HTTP attempt, retries included: the metrics' counter.
        self._on_request = on_request

    def __repr__(self) -> str:
        return f"RunwareClient(api_url={self._url!r}, batching_enabled={self.batching_enabled})"

    async def __aenter__(self) -> RunwareClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # ---- public operations -------------------------------------------------------------------

    async def submit(self, task: VideoInferenceTask) -> None:
        """Send one videoInference task. Returns once Runware has it (also when it already had it)."""
        wire = task.to_wire()
        reply = await self._exchange(lambda: [wire], what="submit")
        errors = [self._error(reply.status, e) for e in _errors_for_task(reply, task.task_uuid)]
        if any(isinstance(error, ConflictTaskUUID) for error in errors):
            # Same taskUUID already accepted: a retry after a lost answer, or a resubmit after a crash.
            log.info("submit %s: Runware already has this task", task.task_uuid)
            return
        if errors:
            raise errors[0]
        if reply.status >= 400:
            raise self._error(reply.status, None)
        log.debug("submitted %s", task.task_uuid)

    async def enhance_prompt(self, task: PromptEnhanceTask) -> list[EnhancedPrompt]:
        """One promptEnhance task, sent ONCE: a call repeated after a lost answer may be billed again,
        so the caller (which writes each call down first) asks again when the error is ``retryable``."""
        wire = task.to_wire()
        reply = await self._exchange(lambda: [wire], what="enhance", retries=0)
        errors = [self._error(reply.status, e) for e in _errors_for_task(reply, task.task_uuid)]
        if errors:
            raise errors[0]
        if reply.status >= 400:
            raise self._error(reply.status, None)
        texts = [e for i in reply.data if item_task_uuid(i) == task.task_uuid and (e := parse_enhanced_item(i))]
        if not texts:
            raise TransportError("missingText", f"HTTP {reply.status}: the promptEnhance answer carried no text")
        return texts

    async def upload_image(self, data_uri: str) -> str:
        """Upload one image (a data URI); returns its imageUUID."""
        # A fresh taskUUID per attempt: retrying a lost upload must not look like a conflict.
        reply = await self._exchange(
            lambda: [ImageUploadTask(task_uuid=new_task_uuid(), image=data_uri).to_wire()], what="upload"
        )
        errors = reply.errors + [parse_error_item(i) for i in reply.data if item_status(i) == "error"]
        if errors:
            raise self._error(reply.status, errors[0])
        if reply.status >= 400:
            raise self._error(reply.status, None)
        for item in reply.data:
            image_uuid = item_image_uuid(item)
            if image_uuid:
                return image_uuid
        raise RunwareError("missingImageUUID", "imageUpload answer carried no image id", status=reply.status)

    async def poll_many(self, task_uuids: Sequence[str]) -> dict[str, TaskStatus]:
        """getResponse for many tasks, ``poll_batch_size`` per HTTP request, up to
        ``POLL_CONCURRENCY`` requests at once: every batch of a round leaves at about the same time,
        so a task's polls stay one interval apart wherever its batch falls in the round. Every
        requested uuid gets a TaskStatus (empty when Runware said nothing about it). The first
        error is raised once every batch has been answered."""
        statuses = {uuid: TaskStatus(task_uuid=uuid) for uuid in task_uuids}
        pending = list(statuses)
        size = self.poll_batch_size if self.batching_enabled else 1
        gate = asyncio.Semaphore(POLL_CONCURRENCY)

        async def one(batch: list[str]) -> None:
            async with gate:
                await self._poll_batch(batch, statuses)

        outcomes = await asyncio.gather(*(one(pending[i:i + size]) for i in range(0, len(pending), size)),
                                        return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return statuses

    async def _poll_batch(self, batch: list[str], statuses: dict[str, TaskStatus]) -> None:
        reply = await self._exchange(
            lambda: [GetResponseTask(task_uuid=u).to_wire() for u in batch], what="poll"
        )
        if reply.status >= 400 and not self._poll_errors_are_per_task(reply, batch):
            if len(batch) > 1 and reply.status in _BATCH_REJECTED:
                self._disable_batching(reply)
                for uuid in batch:  # redo this batch, one task per request
                    await self._poll_batch([uuid], statuses)
                return
            raise self._error(reply.status, reply.errors[0] if reply.errors else None)
        _absorb(reply, batch, statuses, self._scrubbed)

    async def check_key(self) -> None:
        """One cheap authenticated call (a getResponse for a random uuid); raises when the key or
        account is refused. Runware authenticates before it reads the tasks, so any answer about the
        unknown task (taskNotFound, or another code: Runware's codes vary) means the key works."""
        probe = new_task_uuid()
        reply = await self._exchange(lambda: [GetResponseTask(task_uuid=probe).to_wire()], what="check")
        for item in reply.errors:
            error = self._error(reply.status, item)
            if isinstance(error, _KEY_REFUSED):
                raise error
        if reply.status in (401, 402, 403) or (reply.status >= 400 and not reply.errors):
            raise self._error(reply.status, None)

    # ---- polling helpers ---------------------------------------------------------------------

    @staticmethod
    def _poll_errors_are_per_task(reply: _Reply, batch: list[str]) -> bool:
        """A 400 that names tasks of the batch (or a single-task 400) is about those tasks, not the
        request; everything else >= 400 is about the request."""
        if reply.status != 400 or not reply.errors:
            return False
        if len(batch) == 1:
            return True
        members = set(batch)
        return any(error.task_uuid in members for error in reply.errors)

    def _disable_batching(self, reply: _Reply) -> None:
        if self.batching_enabled:
            self.batching_enabled = False
            codes = ", ".join(sorted({e.code for e in reply.errors})) or "no error code"
            log.warning(
                "Runware rejected a batched getResponse (HTTP %s, %s); "
                "polling one task per request from now on",
                reply.status,
                codes,
            )

    # ---- HTTP --------------------------------------------------------------------------------

    async def _exchange(self, build: Callable[[], Tasks], *, what: str, retries: int | None = None) -> _Reply:
        """POST the tasks, retrying with capped, jittered backoff while the request's failure is
        ``retryable`` (errors.py decides: transport errors, 429, 5xx, provider trouble), at most
        ``retries`` times (default ``max_retries``). Returns any other answer (2xx, or a final
        refusal) for the caller to read."""
        max_retries = self.max_retries if retries is None else retries
        attempt = 0
        while True:
            try:
                reply = await self._send_once(build())
            except TransportError as exc:
                if not exc.retryable:
                    raise
                failure: RunwareError = exc
                retry_after = None
            else:
                if reply.status < 400:
                    return reply
                failure = self._error(reply.status, _request_error(reply))
                if not failure.retryable:
                    return reply  # a final refusal (400..403, a bad request): the caller reads it
                retry_after = reply.retry_after_s
            if attempt >= max_retries:
                log.warning("%s failed after %d attempts: %s", what, attempt + 1, failure)
                raise failure
            delay = self.backoff_delay(attempt)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.backoff_cap_s))
            log.info("%s: %s; retry %d in %.2fs", what, failure.code, attempt + 1, delay)
            await self._sleep(delay)
            attempt += 1

    def backoff_delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * (2 ** min(attempt, 32)))
        return self._rng.uniform(0, ceiling)

    async def _send_once(self, tasks: Tasks) -> _Reply:
        self.http_requests += 1
        task_type = str(tasks[0].get("taskType", "unknown")) if tasks else "unknown"
        headers = {"Authorization": f"Bearer {self._key.get_secret_value()}"}
        try:
            response = await self._http.post(self._url, json=tasks, headers=headers)
        except httpx.RequestError as exc:
            self._count(task_type, "transport_error")
            # httpx's messages carry no headers, but scrub anyway: the key must never leak.
            raise TransportError("transportError", self._scrub(f"{type(exc).__name__}: {exc}")) from exc
        status = response.status_code
        try:
            envelope = split_response(response.json())
        except ValueError:
            envelope = None
        if envelope is None:
            if status < 400:
                self._count(task_type, "transport_error")
                raise TransportError("malformedResponse", f"HTTP {status}: the body is not Runware JSON")
            envelope = ([], [])
        self._count(task_type, request_outcome(status))
        data, raw_errors = envelope
        errors = [self._scrubbed(parse_error_item(item)) for item in raw_errors]
        return _Reply(status, data, errors, _retry_after(response))

    def _count(self, task_type: str, outcome: str) -> None:
        if self._on_request is not None:
            self._on_request(task_type, outcome)

    # ---- errors and secrets ------------------------------------------------------------------

    def _error(self, status: int | None, item: TaskError | None) -> RunwareError:
        return error_for(status, self._scrubbed(item) if item is not None else None)

    def _scrub(self, text: str) -> str:
        secret = self._key.get_secret_value()
        if secret:
            text = text.replace(secret, "[redacted]")
        return text[:_MAX_MESSAGE]

    def _scrubbed(self, item: TaskError) -> TaskError:
        clean = self._scrub(item.message)
        return item if clean == item.message else item.model_copy(update={"message": clean})


def request_outcome(status: int) -> str:
    """How one answered request ended, for the metrics: ok, rejected (bad parameters: 400 and other
    4xx), refused (401/402/403: key, balance, permission), rate_limited (429), server_error (5xx).
    ``transport_error`` (no answer, or not Runware JSON) is counted where it happens."""
    if status < 400:
        return "ok"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    return "refused" if status in (401, 402, 403) else "rejected"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None


def _request_error(reply: _Reply) -> TaskError | None:
    """The error item about the request itself (naming no task); items naming a task are answers
    about that task (a failed video), not reasons to send the request again."""
    return next((e for e in reply.errors if e.task_uuid is None), None)


def _errors_for_task(reply: _Reply, task_uuid: str) -> list[TaskError]:
    """Error items of a single-task request: those naming the task, or naming no task at all."""
    errors = [e for e in reply.errors if e.task_uuid in (None, task_uuid)]
    errors += [
        parse_error_item(item)
        for item in reply.data
        if item_status(item) == "error" and item_task_uuid(item) in (None, task_uuid)
    ]
    return errors


def _absorb(
    reply: _Reply,
    batch: list[str],
    statuses: dict[str, TaskStatus],
    scrub: Callable[[TaskError], TaskError],
) -> None:
    """Fold one getResponse answer into the per-task statuses, matching items by taskUUID."""
    members = set(batch)
    sole = batch[0] if len(batch) == 1 else None
    for item in reply.data:
        uuid = item_task_uuid(item)
        if uuid is None or uuid not in members:
            log.debug("getResponse item for an unrequested task ignored: %s", uuid)
            continue
        fold_item(statuses, uuid, item, scrub)
    for error in reply.errors:
        uuid = error.task_uuid if error.task_uuid in members else sole if error.task_uuid is None else None
        if uuid is None:
            log.debug("getResponse error for an unrequested task ignored: %s %s", error.code, error.task_uuid)
            continue
        statuses[uuid].errors.append(error)
