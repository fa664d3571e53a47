"""A member's request (slash options or CLI flags) -> a validated, registry-resolved request ->
Runware's videoInference task. Field names in errors are the slash command's option names."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from bot.config import ASPECTS, DEFAULT_MODEL_KEY, OUTPUT_FORMATS, SAFETY_MODES, Config, ModelSpec, RunwareConfig
from bot.errors import InvalidInput
from bot.runware.models import FrameImage, OutputFormat, Safety, SafetyMode, VideoInferenceTask

PROMPT_MIN, PROMPT_MAX = 2, 2500
CFG_MIN, CFG_MAX = 0.0, 1.0
VARIATIONS_MIN, VARIATIONS_MAX = 1, 4
QUALITY_MIN, QUALITY_MAX = 20, 99
ENHANCE_PROMPT_MAX = 300  # what Runware's prompt enhancer takes (1..300 characters)


class ResolvedRequest(BaseModel):
    """Everything needed to (re)build the Runware task, stored as the job's params (JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_key: str
    model_id: str
    prompt: str
    negative_prompt: str | None = None
    aspect: str
    width: int
    height: int
    duration: int
    cfg_scale: float | None = None
    variations: int = 1
    output_format: OutputFormat = "MP4"
    quality: int | None = None
    has_first_frame: bool = False
    has_last_frame: bool = False
    # A seamless loop: the first frame's image is also sent as the last frame (no last frame of its own).
    loop: bool = False
    # Runware's prompt enhancer rewrites the prompt before the video task is built; its share of
    # estimate_micro (runware.enhance_reserve_usd at the time) is enhance_reserve_micro.
    enhance: bool = False
    enhance_reserve_micro: int = 0
    estimate_micro: int
    # Set on an Extend: the job and video (1-based) whose last frame is this job's first frame.
    extends_job_id: int | None = None
    extends_video: int | None = None
    # How a job with a parent was asked for (Details names it); None for a /video of its own.
    origin: Literal["reroll", "extend", "remix"] | None = None

    @model_validator(mode="after")
    def _loop_has_one_frame(self) -> ResolvedRequest:
        if self.loop and (not self.has_first_frame or self.has_last_frame):
            raise ValueError("a loop has a first frame and no last frame of its own")
        return self


def _check_text(field: str, value: str | None, *, required: bool) -> str | None:
    if value is None or (not required and value == ""):
        if required:
            raise InvalidInput(field, value, f"text of {PROMPT_MIN} to {PROMPT_MAX} characters", "is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(field, value, f"text of {PROMPT_MIN} to {PROMPT_MAX} characters")
    text = value.strip()
    if "\x00" in text:
        raise InvalidInput(field, "(contains a NUL character)", "printable text")
    if not PROMPT_MIN <= len(text) <= PROMPT_MAX:
        raise InvalidInput(
            field,
            value,
            f"{PROMPT_MIN} to {PROMPT_MAX} characters",
            f"is {len(text)} characters long",
        )
    return text


def _check_flag(field: str, value: Any) -> bool:
    """A true/false option; left out means false."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput(field, value, "true or false")
    return value


def _check_int(field: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value.strip())
        else:
            raise InvalidInput(field, value, f"a whole number from {low} to {high}")
    if not low <= value <= high:
        raise InvalidInput(field, value, f"a whole number from {low} to {high}")
    return value


def _check_cfg(value: Any) -> float:
    allowed = "a number from 0 to 1 in steps of 0.01 (e.g. 0.5)"
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput("cfg_scale", value, allowed) from None
    if isinstance(value, bool) or number != number or not CFG_MIN <= number <= CFG_MAX:
        raise InvalidInput("cfg_scale", value, allowed)
    hundredths = round(number * 100)
    if abs(number * 100 - hundredths) > 1e-6:
        raise InvalidInput("cfg_scale", value, allowed)
    return hundredths / 100


def closest_aspect(spec: ModelSpec, ratio: float) -> str:
    """The registry aspect whose size ratio is closest to ``ratio`` (compared as log-ratios)."""
    import math

    return min(spec.sizes, key=lambda a: abs(math.log((spec.sizes[a][0] / spec.sizes[a][1]) / ratio)))


def resolve_request(
    cfg: Config,
    *,
    prompt: str | None,
    model: str | None = None,
    duration: Any = None,
    aspect: str | None = None,
    negative_prompt: str | None = None,
    cfg_scale: Any = None,
    variations: Any = None,
    output_format: str | None = None,
    quality: Any = None,
    first_frame_size: tuple[int, int] | None = None,
    has_last_frame: bool = False,
    loop: Any = False,
    enhance: Any = False,
) -> ResolvedRequest:
    """Check every field against the model's registry entry and the seeds' limits.

    ``first_frame_size`` is the checked first frame's (width, height) when one was given; the
    aspect defaults to the model size closest to it, else 16:9. ``loop``: the video ends on its first
    frame (sent to Runware as the last frame too), so it needs a first frame, no last frame, and a
    model that takes a last frame. ``enhance``: Runware's prompt enhancer rewrites the prompt first
    (at most 300 characters then); its reserve is part of the estimate."""
    model_key = model or DEFAULT_MODEL_KEY
    if model_key not in cfg.models:
        raise InvalidInput("model", model_key, ", ".join(sorted(cfg.models)))
    spec = cfg.models[model_key]

    text = _check_text("prompt", prompt, required=True)
    assert text is not None
    negative = _check_text("negative_prompt", negative_prompt, required=False)
    enhance = _check_flag("enhance", enhance)
    if enhance and len(text) > ENHANCE_PROMPT_MAX:
        raise InvalidInput("prompt", prompt, f"at most {ENHANCE_PROMPT_MAX} characters with enhance (the limit "
                           "of Runware's prompt enhancer), or enhance off",
                           f"is {len(text)} characters long")

    if duration is None:
        seconds = spec.durations[0]
    else:
        allowed = " or ".join(f"{d}" for d in spec.durations) + f" seconds for {spec.label}"
        try:
            seconds = int(duration)
        except (TypeError, ValueError):
            raise InvalidInput("duration", duration, allowed) from None
        if isinstance(duration, bool) or seconds != duration and str(seconds) != str(duration).strip():
            raise InvalidInput("duration", duration, allowed)
        if seconds not in spec.durations:
            raise InvalidInput("duration", duration, allowed)

    has_first = first_frame_size is not None
    if not spec.text_to_video and not has_first:
        raise InvalidInput(
            "first_frame",
            None,
            f"an image (PNG, JPEG or WEBP); {spec.label} makes videos from a first frame only",
            "is required",
        )
    loop = _check_flag("loop", loop)
    if loop:
        _check_loop(cfg, spec, has_first=has_first, has_last=has_last_frame)
    if has_last_frame and not has_first:
        raise InvalidInput("last_frame", "(image)", "a last frame only together with a first frame",
                           "needs a first frame")
    if has_last_frame and not spec.last_frame:
        raise InvalidInput("last_frame", "(image)", f"no last frame for {spec.label}")

    if aspect is None or aspect == "":
        if first_frame_size is not None:
            chosen = closest_aspect(spec, first_frame_size[0] / first_frame_size[1])
        else:
            chosen = "16:9" if "16:9" in spec.sizes else next(iter(spec.sizes))
    else:
        if aspect not in spec.sizes:
            known = [a for a in ASPECTS if a in spec.sizes] + [a for a in spec.sizes if a not in ASPECTS]
            raise InvalidInput("aspect", aspect, ", ".join(known))
        chosen = aspect
    width, height = spec.sizes[chosen]

    cfg_value = None if cfg_scale is None else _check_cfg(cfg_scale)
    count = 1 if variations is None else _check_int("variations", variations, VARIATIONS_MIN, VARIATIONS_MAX)
    fmt = (output_format or "MP4").upper() if isinstance(output_format, str) or output_format is None else None
    if fmt not in OUTPUT_FORMATS:
        raise InvalidInput("format", output_format, ", ".join(OUTPUT_FORMATS))
    qual = None if quality is None else _check_int("quality", quality, QUALITY_MIN, QUALITY_MAX)
    reserve = cfg.runware.enhance_reserve_micro_usd if enhance else 0

    return ResolvedRequest(
        model_key=model_key,
        model_id=spec.model_id,
        prompt=text,
        negative_prompt=negative,
        aspect=chosen,
        width=width,
        height=height,
        duration=seconds,
        cfg_scale=cfg_value,
        variations=count,
        output_format=fmt,
        quality=qual,
        has_first_frame=has_first,
        has_last_frame=has_last_frame,
        loop=loop,
        enhance=enhance,
        enhance_reserve_micro=reserve,
        estimate_micro=spec.estimate_micro_usd(seconds, count) + reserve,
    )


def _check_loop(cfg: Config, spec: ModelSpec, *, has_first: bool, has_last: bool) -> None:
    if not has_first:
        raise InvalidInput("loop", True, "loop only together with a first_frame (the video ends on the frame "
                           "it starts from)", "is on but no first_frame was given")
    if has_last:
        raise InvalidInput("loop", True, "loop or a last_frame, not both: loop uses the first frame as the "
                           "last", "is on and a last_frame was given")
    if not spec.last_frame:
        able = [f"{s.label} ({key})" for key, s in cfg.models.items() if s.last_frame]
        allowed = ("loop with a model that takes a last frame: " + ", ".join(able) if able
                   else "no loop: none of the configured models takes a last frame")
        raise InvalidInput("loop", True, allowed, f"is on, but {spec.label} takes no last frame")


def stricter_safety(*modes: str | None) -> SafetyMode:
    """The strictest of the given safety modes (a guild may raise, never lower, the config's)."""
    chosen = [m for m in SAFETY_MODES if m in modes]
    return chosen[-1] if chosen else "fast"


def build_task(
    request: ResolvedRequest,
    *,
    task_uuid: str,
    runware: RunwareConfig,
    first_image: str | None = None,
    last_image: str | None = None,
    safety_mode: str | None = None,
    webhook_url: str | None = None,
    prompt: str | None = None,
) -> VideoInferenceTask:
    """The videoInference task for a resolved request. Images are imageUUIDs (a real run) or data
    URIs (--dry-run). A loop sends its first frame's image as the last frame too (uploaded once).
    ``prompt``: the enhancer's text, sent instead of the request's own."""
    if request.loop:
        if last_image not in (None, first_image):
            raise ValueError("a loop ends on its first frame; no other last image can be given")
        last_image = first_image
    if request.has_first_frame and not first_image:
        raise ValueError("the request has a first frame but no image was given for it")
    if request.has_last_frame and not last_image:
        raise ValueError("the request has a last frame but no image was given for it")
    frames: list[FrameImage] = []
    if first_image:
        frames.append(FrameImage(image=first_image, frame="first"))
    if last_image:
        frames.append(FrameImage(image=last_image, frame="last"))
    return VideoInferenceTask(
        task_uuid=task_uuid,
        model=request.model_id,
        positive_prompt=prompt or request.prompt,
        negative_prompt=request.negative_prompt,
        width=request.width,
        height=request.height,
        duration=request.duration,
        cfg_scale=request.cfg_scale,
        number_results=request.variations,
        output_format=request.output_format,
        output_quality=request.quality,
        frame_images=tuple(frames),
        ttl=runware.output_ttl_s,
        safety=Safety.for_mode(stricter_safety(runware.safety_mode, safety_mode)),
        webhook_url=webhook_url,
    )
