"""The simulator's mutable state: fault switches, counters and accepted tasks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

# What a forced HTTP status (Faults.next_statuses, the 5xx/429 rates) answers: Runware's code, message.
FAULT_STATUSES = {
    400: ("invalidRequestBody", "The request body is not valid."),
    401: ("invalidApiKey", "Invalid API key."),
    402: ("insufficientCredits", "Insufficient credits to run this task."),
    403: ("forbidden", "This API key has no permission for this operation."),
    429: ("rateLimitExceeded", "Too many requests. Slow down and retry."),
    500: ("internalServerError", "Internal server error. Retry later."),
    502: ("badGateway", "Bad gateway. Retry later."),
    503: ("serviceUnavailable", "Service temporarily unavailable. Retry later."),
    504: ("gatewayTimeout", "Gateway timeout. Retry later."),
}


@dataclass
class Faults:
    """Fault injection, changed at run time by tests and the bench."""

    latency_s: float = 0.0  # added to every HTTP answer
    rate_5xx: float = 0.0  # share of requests answered 500/502/503
    rate_429: float = 0.0
    rate_drop: float = 0.0  # share of connections dropped before answering
    next_statuses: list[int] = field(default_factory=list)  # forced statuses, popped in order
    drop_next: int = 0  # drop the next N connections before processing
    drop_after_processing_next: int = 0  # process, then drop: the "lost answer"
    reject_batches: bool = False  # >1 getResponse tasks in a request -> 400 invalidRequestBody
    errors_in_data: bool = False  # failed items in `data` with status "error"
    upload_as_object: bool = False  # imageUpload answers `data` as an object
    balance_micro: int | None = None  # account balance; None = unlimited
    malformed_next: int = 0  # answer the next N requests with 200 and a non-JSON body
    video_body: bytes | None = None  # served at every videoURL instead of the made video (a damaged file...)
    hold: asyncio.Event | None = None  # API requests wait for it to be set before they are answered

    def reset(self) -> None:
        for name, value in Faults().__dict__.items():
            setattr(self, name, value)


@dataclass
class SimTask:
    """One accepted videoInference task. Its outcome is drawn at acceptance and revealed at ready_at."""

    task_uuid: str
    body: dict[str, Any]  # the wire task exactly as received
    model_id: str
    accepted_at: float
    ready_at: float
    planned: list[dict[str, Any]]  # one item per variation; failures carry status "error"
    planned_micro: int  # the cost if every variation succeeds (held against the balance)
    video_micro: int  # the cost of one delivered variation
    include_cost: bool = False
    webhook_url: str | None = None
    done: bool = False
    results: list[dict[str, Any]] = field(default_factory=list)  # filled when done
    revealed: int = 0  # planned items answered (and billed) while the rest are still being made
    billed_micro: int = 0  # successful variations answered so far (all of them once done)


@dataclass
class Stats:
    http_requests: int = 0
    in_flight: int = 0  # API requests being answered now
    max_in_flight: int = 0
    poll_requests: int = 0  # HTTP requests carrying >= 1 getResponse task
    get_response_tasks: int = 0
    submits: int = 0  # accepted videoInference tasks
    upload_requests: int = 0  # HTTP requests carrying >= 1 imageUpload task
    upload_tasks: int = 0
    billed_micro: int = 0  # delivered results only; failed variations bill 0
    webhook_posts: int = 0  # every POST attempt, retries included
    video_downloads: int = 0
    dropped_connections: int = 0
    tasks: dict[str, SimTask] = field(default_factory=dict)
    enhance_tasks: int = 0  # promptEnhance tasks answered (repeats of a taskUUID included)
    enhance_billed_micro: int = 0  # what they billed (kept apart from the videos' billed_micro)
    enhance_calls: dict[str, int] = field(default_factory=dict)  # taskUUID -> times answered
    enhance_bodies: dict[str, dict[str, Any]] = field(default_factory=dict)  # taskUUID -> the last task as received
