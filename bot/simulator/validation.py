"""Request validation with Runware's error shapes: every rule of the model pages, strictly, so a
client bug surfaces as the error Runware would send."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Container
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .models import MODELS, SimModel

DOCS = "https://runware.ai/docs/en"
_DOC_PAGES = {
    "videoInference": "video-inference/api-reference",
    "getResponse": "utilities/task-responses",
    "imageUpload": "utilities/image-upload",
    "authentication": "getting-started/how-to-connect",
}
_UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.I)
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}

# Every key the model pages document for videoInference (platform options included).
VIDEO_KEYS = frozenset({
    "taskType", "taskUUID", "outputType", "outputFormat", "outputQuality", "webhookURL",
    "deliveryMethod", "uploadEndpoint", "safety", "ttl", "includeCost", "numberResults", "inputs",
    "model", "positivePrompt", "negativePrompt", "width", "height", "duration", "CFGScale", "seed",
})
OUTPUT_FORMATS = ["MP4", "WEBM", "MOV"]
SAFETY_MODES = ["none", "fast", "full"]
FRAME_POSITIONS = {"first": "first", "last": "last", 0: "first", -1: "last"}


class ApiError(Exception):
    """One Runware error item plus the HTTP status it implies."""

    def __init__(self, code: str, message: str, *, status: int = 400, parameter: str | None = None,
                 task_type: str | None = None, task_uuid: str | None = None,
                 allowed_values: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.parameter = parameter
        self.task_type = task_type
        self.task_uuid = task_uuid
        self.allowed_values = allowed_values

    def item(self) -> dict[str, Any]:
        page = _DOC_PAGES.get(self.task_type or "", "")
        doc = f"{DOCS}/{page}" if page else DOCS
        if self.parameter and page:
            doc += "#request-" + self.parameter.lower().replace(".", "-")
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.parameter is not None:
            out["parameter"] = self.parameter
        if self.task_type is not None:
            out["taskType"] = self.task_type
        if self.task_uuid is not None:
            out["taskUUID"] = self.task_uuid
        out["documentation"] = doc
        if self.allowed_values is not None:
            out["allowedValues"] = self.allowed_values
        return out


@dataclass(frozen=True)
class VideoRequest:
    """The parts of an accepted videoInference task the simulator acts on."""

    task_uuid: str
    model: SimModel
    prompt: str
    width: int
    height: int
    duration: int
    number_results: int
    include_cost: bool
    webhook_url: str | None
    seed: int | None


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_task_uuid(task: dict[str, Any], task_type: str) -> str:
    value = task.get("taskUUID")
    if not isinstance(value, str) or not _UUID4.match(value):
        raise ApiError("invalidTaskUUID", "Invalid value for taskUUID parameter. It must be a UUID v4.",
                       parameter="taskUUID", task_type=task_type,
                       task_uuid=value if isinstance(value, str) else None)
    return value


def looks_like_image(data: bytes) -> bool:
    return (data.startswith(b"\x89PNG\r\n\x1a\n") or data.startswith(b"\xff\xd8\xff")
            or data.startswith((b"GIF87a", b"GIF89a"))
            or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"))


def decode_image(value: str) -> bytes:
    """Bytes of a data URI or plain base64 image; ValueError when it is not an image."""
    payload = value
    if value.startswith("data:"):
        header, sep, payload = value.partition(",")
        if not sep or not header.endswith(";base64") or not header[5:].startswith("image/"):
            raise ValueError("a data URI must look like data:image/<type>;base64,<data>")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the image data is not valid base64") from exc
    if not looks_like_image(data):
        raise ValueError("the data is not a PNG, JPEG, WEBP or GIF image")
    return data


def image_url_ok(value: str) -> bool:
    """https anywhere, plain http only on loopback (as the bot's host rules do)."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    if not parts.hostname:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK)


def _http_url_ok(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _frame_image_problem(image: Any, uploaded: Container[str]) -> str | None:
    if not isinstance(image, str) or not image:
        return "each image must be a non-empty string"
    if _UUID4.match(image):
        return None if image in uploaded else f"no uploaded image has imageUUID {image}"
    if image.startswith(("http://", "https://")):
        return None if image_url_ok(image) else "image URLs must use https"
    try:
        decode_image(image)
    except ValueError as exc:
        return str(exc)
    return None


def _check_frames(inputs: Any, model: SimModel, uploaded: Container[str], err) -> None:
    if inputs is None:
        frames = None
    else:
        if not isinstance(inputs, dict):
            raise err("invalidInputs", "inputs must be an object.", "inputs")
        extra = sorted(set(inputs) - {"frameImages"})
        if extra:
            raise err("unsupportedParameter", f"Unsupported parameter inputs.{extra[0]} for this model.",
                      f"inputs.{extra[0]}")
        frames = inputs.get("frameImages")
    param = "inputs.frameImages"
    if frames is None:
        if not model.text_to_video:
            raise err("invalidFrameImages", f"Model {model.model_id} requires inputs.frameImages "
                      "(it does not support text-to-video).", param)
        return
    if not isinstance(frames, list) or not 1 <= len(frames) <= 2:
        raise err("invalidFrameImages", "inputs.frameImages must be an array of 1 to 2 items.", param)
    positions: list[str] = []
    for index, item in enumerate(frames):
        image = item
        if isinstance(item, dict):
            if set(item) - {"image", "frame"} or "image" not in item:
                raise err("invalidFrameImages", f"inputs.frameImages[{index}] must be an image or "
                          "an object with 'image' and optional 'frame'.", param)
            image = item["image"]
            frame = item.get("frame")
            if frame is not None:
                if isinstance(frame, bool) or frame not in FRAME_POSITIONS:
                    raise err("invalidFrameImages", f"inputs.frameImages[{index}].frame must be one of "
                              "first, last, 0, -1.", param, ["first", "last", 0, -1])
                positions.append(FRAME_POSITIONS[frame])
            else:
                positions.append("first" if index == 0 else "last")
        else:
            positions.append("first" if index == 0 else "last")
        problem = _frame_image_problem(image, uploaded)
        if problem:
            raise err("invalidFrameImages", f"inputs.frameImages[{index}]: {problem}.", param)
    if len(set(positions)) != len(positions):
        raise err("invalidFrameImages", "Two frame images target the same frame.", param)
    if "first" not in positions:
        raise err("invalidFrameImages", "This model needs a first frame when a last frame is given.", param)


def _check_range(task: dict, key: str, low: float, high: float | None, err, *, integer: bool) -> None:
    if key not in task:
        return
    value = task[key]
    ok = is_int(value) if integer else is_number(value)
    if not ok or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        kind = "an integer" if integer else "a number"
        raise err(f"invalid{key[0].upper()}{key[1:]}",
                  f"Invalid value for {key} parameter. It must be {kind} {bound}.", key)


def validate_video(task: dict[str, Any], uploaded: Container[str]) -> VideoRequest:
    """Check one videoInference task (taskUUID already checked); raise the first ApiError found."""
    task_uuid = task["taskUUID"]

    def err(code: str, message: str, parameter: str, allowed: Any = None) -> ApiError:
        return ApiError(code, message, parameter=parameter, task_type="videoInference",
                        task_uuid=task_uuid, allowed_values=allowed)

    for key in task:
        if key not in VIDEO_KEYS:
            raise err("unsupportedParameter", f"Unsupported parameter {key!r} for videoInference.", key)
    model = MODELS.get(task["model"]) if isinstance(task.get("model"), str) else None
    if model is None:
        raise err("invalidModel", f"Invalid value for model parameter: {task.get('model')!r} is not a "
                  "supported video model.", "model", sorted(MODELS))
    prompt = task.get("positivePrompt")
    if not isinstance(prompt, str) or not 2 <= len(prompt) <= 2500:
        raise err("invalidPositivePrompt", "Invalid value for positivePrompt parameter. It must be a "
                  "string between 2 and 2500 characters.", "positivePrompt")
    negative = task.get("negativePrompt")
    if "negativePrompt" in task and (not isinstance(negative, str) or not 2 <= len(negative) <= 2500):
        raise err("invalidNegativePrompt", "Invalid value for negativePrompt parameter. It must be a "
                  "string between 2 and 2500 characters.", "negativePrompt")
    width, height = task.get("width"), task.get("height")
    if not is_int(width) or width not in model.widths:
        raise err("invalidWidth", f"Invalid value for width parameter. Supported values for "
                  f"{model.model_id} are: {model.widths}.", "width", model.widths)
    heights = model.heights_for(width)
    if not is_int(height) or height not in heights:
        raise err("invalidHeight", f"Invalid value for height parameter. With width {width}, supported "
                  f"values for {model.model_id} are: {heights}.", "height", heights)
    duration = task.get("duration", 5)
    if not is_number(duration) or duration not in model.durations:
        raise err("unsupportedDuration", f"Unsupported duration {duration!r} for {model.model_id}. "
                  f"Supported values are: {list(model.durations)}.", "duration", list(model.durations))
    _check_range(task, "CFGScale", 0, 1, err, integer=False)
    if "CFGScale" in task and abs(task["CFGScale"] * 100 - round(task["CFGScale"] * 100)) > 1e-6:
        raise err("invalidCFGScale", "Invalid value for CFGScale parameter. Its step is 0.01.", "CFGScale")
    _check_range(task, "numberResults", 1, 4, err, integer=True)
    _check_range(task, "outputQuality", 20, 99, err, integer=True)
    _check_range(task, "ttl", 60, None, err, integer=True)
    if "seed" in task and (not is_int(task["seed"]) or task["seed"] < 0):
        raise err("invalidSeed", "Invalid value for seed parameter.", "seed")
    if task.get("outputFormat", "MP4") not in OUTPUT_FORMATS:
        raise err("invalidOutputFormat", "Invalid value for outputFormat parameter.", "outputFormat",
                  OUTPUT_FORMATS)
    if task.get("outputType", "URL") != "URL":
        raise err("invalidOutputType", "Invalid value for outputType parameter.", "outputType", ["URL"])
    if task.get("deliveryMethod", "async") != "async":
        raise err("invalidDeliveryMethod", "Video inference requires deliveryMethod 'async'.",
                  "deliveryMethod", ["async"])
    if not isinstance(task.get("includeCost", False), bool):
        raise err("invalidIncludeCost", "includeCost must be a boolean.", "includeCost")
    for key in ("webhookURL", "uploadEndpoint"):
        if key in task and not _http_url_ok(task[key]):
            raise err(f"invalid{key[0].upper()}{key[1:]}", f"{key} must be an http(s) URL.", key)
    _check_safety(task.get("safety"), err)
    _check_frames(task.get("inputs"), model, uploaded, err)
    return VideoRequest(
        task_uuid=task_uuid, model=model, prompt=prompt, width=width, height=height,
        duration=int(duration), number_results=task.get("numberResults", 1),
        include_cost=task.get("includeCost", False), webhook_url=task.get("webhookURL"),
        seed=task.get("seed"),
    )


def _check_safety(safety: Any, err) -> None:
    if safety is None:
        return
    if not isinstance(safety, dict) or set(safety) - {"checkContent", "mode"}:
        raise err("invalidSafety", "safety must be an object with checkContent and mode.", "safety")
    if not isinstance(safety.get("checkContent", False), bool):
        raise err("invalidSafety", "safety.checkContent must be a boolean.", "safety.checkContent")
    if safety.get("mode", "none") not in SAFETY_MODES:
        raise err("invalidSafetyMode", "Invalid value for safety.mode parameter.", "safety.mode",
                  SAFETY_MODES)
