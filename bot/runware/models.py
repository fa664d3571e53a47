"""Runware wire models. Runware's field names (positivePrompt, CFGScale, ...) appear only here,
at the serialisation edge; the rest of the bot speaks snake_case."""

from __future__ import annotations

import uuid
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FrameName = Literal["first", "last"]
SafetyMode = Literal["none", "fast", "full"]
OutputFormat = Literal["MP4", "WEBM", "MOV"]


def new_task_uuid() -> str:
    return str(uuid.uuid4())


def cost_to_micro(cost: Any) -> int | None:
    """Runware's float ``cost`` (USD) -> integer micro-USD, rounded half up; None when absent."""
    if cost is None or isinstance(cost, bool):
        return None
    try:
        amount = Decimal(str(cost))
    except ArithmeticError:
        return None
    if not amount.is_finite():
        return None
    return int((amount * 1_000_000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class FrameImage(_Wire):
    image: str  # imageUUID after upload; a data URI in --dry-run output
    frame: FrameName


class Safety(_Wire):
    check_content: bool = Field(serialization_alias="checkContent")
    mode: SafetyMode

    @classmethod
    def for_mode(cls, mode: SafetyMode) -> Safety:
        return cls(check_content=mode != "none", mode=mode)


class VideoInferenceTask(_Wire):
    task_uuid: str = Field(serialization_alias="taskUUID")
    model: str
    positive_prompt: str = Field(serialization_alias="positivePrompt")
    negative_prompt: str | None = Field(None, serialization_alias="negativePrompt")
    width: int
    height: int
    duration: int
    cfg_scale: float | None = Field(None, serialization_alias="CFGScale")
    number_results: int = Field(1, serialization_alias="numberResults")
    output_format: OutputFormat = Field("MP4", serialization_alias="outputFormat")
    output_quality: int | None = Field(None, serialization_alias="outputQuality")
    frame_images: tuple[FrameImage, ...] = ()
    ttl: int
    safety: Safety
    webhook_url: str | None = Field(None, serialization_alias="webhookURL")

    def to_wire(self) -> dict[str, Any]:
        body = super().to_wire()
        frames = body.pop("frame_images", [])
        wire: dict[str, Any] = {
            "taskType": "videoInference",
            "deliveryMethod": "async",
            "outputType": "URL",
            "includeCost": True,
            **body,
        }
        if frames:
            wire["inputs"] = {"frameImages": frames}
        return wire


class GetResponseTask(_Wire):
    task_uuid: str = Field(serialization_alias="taskUUID")

    def to_wire(self) -> dict[str, Any]:
        return {"taskType": "getResponse", "taskUUID": self.task_uuid}


class ImageUploadTask(_Wire):
    task_uuid: str = Field(serialization_alias="taskUUID")
    image: str  # data URI

    def to_wire(self) -> dict[str, Any]:
        return {"taskType": "imageUpload", "taskUUID": self.task_uuid, "image": self.image}


class PromptEnhanceTask(_Wire):
    """Runware's prompt enhancer: ``prompt`` 1..300 characters, ``max_length`` 12..400 tokens,
    ``versions`` 1..5 (one text back per version)."""

    task_uuid: str = Field(serialization_alias="taskUUID")
    prompt: str
    max_length: int = Field(serialization_alias="promptMaxLength")
    versions: int = Field(1, serialization_alias="promptVersions")

    def to_wire(self) -> dict[str, Any]:
        return {"taskType": "promptEnhance", **super().to_wire(), "includeCost": True}


# ---- responses -------------------------------------------------------------------------------


class VideoResult(BaseModel):
    """One finished variation (a ``success`` item of getResponse)."""

    model_config = ConfigDict(frozen=True)

    task_uuid: str
    video_uuid: str
    video_url: str | None
    seed: int | None = None
    cost_micro: int | None = None
    nsfw: bool = False


class EnhancedPrompt(BaseModel):
    """One version of a promptEnhance answer."""

    model_config = ConfigDict(frozen=True)

    task_uuid: str
    text: str
    cost_micro: int | None = None


def parse_enhanced_item(item: dict[str, Any]) -> EnhancedPrompt | None:
    text = item.get("text")
    if item.get("taskType") != "promptEnhance" or not isinstance(text, str) or not text.strip():
        return None
    return EnhancedPrompt(task_uuid=str(item.get("taskUUID", "")), text=text.strip(),
                          cost_micro=cost_to_micro(item.get("cost")))


class TaskError(BaseModel):
    """An error item, from ``errors`` or a ``data`` item with status ``error``."""

    model_config = ConfigDict(frozen=True)

    code: str
    message: str
    task_uuid: str | None = None
    parameter: str | None = None
    task_type: str | None = None
    cost_micro: int | None = None
    allowed_values: Any = None


class TaskStatus(BaseModel):
    """What one getResponse said about one task: results so far, errors, still processing."""

    task_uuid: str
    results: list[VideoResult] = Field(default_factory=list)
    errors: list[TaskError] = Field(default_factory=list)
    processing: bool = False


def parse_video_item(item: dict[str, Any]) -> VideoResult:
    return VideoResult(
        task_uuid=str(item.get("taskUUID", "")),
        video_uuid=str(item["videoUUID"]),
        video_url=item.get("videoURL"),
        seed=item.get("seed"),
        cost_micro=cost_to_micro(item.get("cost")),
        nsfw=bool(item.get("NSFWContent", False)),
    )


def parse_error_item(item: dict[str, Any]) -> TaskError:
    return TaskError(
        code=str(item.get("code") or item.get("error") or "unknown"),
        message=str(item.get("message") or item.get("responseContent") or "Runware reported an error"),
        task_uuid=item.get("taskUUID"),
        parameter=item.get("parameter"),
        task_type=item.get("taskType"),
        cost_micro=cost_to_micro(item.get("cost")),
        allowed_values=item.get("allowedValues"),
    )


# ---- response envelope (added for the client: keeps Runware's key names in this file) ----------


def split_response(body: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
    """A decoded response body -> (data items, error items); None when it is not Runware's envelope.
    ``data`` may be an array or a single object (one imageUpload docs example); non-objects are dropped."""
    if not isinstance(body, dict):
        return None
    data, errors = body.get("data"), body.get("errors")
    data_items = [data] if isinstance(data, dict) else data if isinstance(data, list) else []
    error_items = [errors] if isinstance(errors, dict) else errors if isinstance(errors, list) else []
    return (
        [item for item in data_items if isinstance(item, dict)],
        [item for item in error_items if isinstance(item, dict)],
    )


def item_task_uuid(item: dict[str, Any]) -> str | None:
    value = item.get("taskUUID")
    return str(value) if value else None


def item_status(item: dict[str, Any]) -> str | None:
    """``processing``/``pending``, ``success`` or ``error``; None for a bare acknowledgement."""
    value = item.get("status")
    return str(value) if value else None


def item_has_video(item: dict[str, Any]) -> bool:
    return bool(item.get("videoUUID"))


def item_image_uuid(item: dict[str, Any]) -> str | None:
    value = item.get("imageUUID")
    return str(value) if value else None
