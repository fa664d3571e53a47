"""The one fold that sorts Runware's response items into task states: an error, a new video
(deduplicated by videoUUID: getResponse repeats the full state every time), or "still processing".
The client folds getResponse answers with it and the webhook receiver folds pushed items; the
engine then applies both through the same path."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bot.runware.models import (
    TaskError,
    TaskStatus,
    VideoResult,
    item_has_video,
    item_status,
    parse_error_item,
    parse_video_item,
)

log = logging.getLogger(__name__)

PROCESSING_STATES = frozenset({"processing", "pending"})


def _as_is(error: TaskError) -> TaskError:
    return error


def fold_item(
    statuses: dict[str, TaskStatus],
    task_uuid: str,
    item: dict[str, Any],
    scrub: Callable[[TaskError], TaskError] = _as_is,
) -> None:
    """Sort one item about ``task_uuid`` into ``statuses[task_uuid]`` (made when missing). A
    malformed item (a field of the wrong type) is logged and left out; it never sinks the others."""
    state = item_status(item)
    found: TaskError | VideoResult | None = None
    try:
        if state == "error":
            found = scrub(parse_error_item(item))
        elif state == "success" or (state is None and item_has_video(item)):
            if not item_has_video(item):
                log.warning("success item without a video id for %s ignored", task_uuid)
                return
            found = parse_video_item(item)
        elif state not in PROCESSING_STATES:
            # Any state Runware adds later: known to Runware, not finished.
            log.debug("Runware state %r for %s read as processing", state, task_uuid)
    except ValueError as exc:  # pydantic's ValidationError too
        log.warning("malformed Runware item for %s ignored (%s)", task_uuid, type(exc).__name__)
        return
    status = statuses.setdefault(task_uuid, TaskStatus(task_uuid=task_uuid))
    if isinstance(found, TaskError):
        status.errors.append(found)
    elif isinstance(found, VideoResult):
        if all(r.video_uuid != found.video_uuid for r in status.results):
            status.results.append(found)
    else:
        status.processing = True
