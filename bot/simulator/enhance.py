"""promptEnhance at the simulator (Runware's prompt enhancer): ``prompt`` 1..300 characters,
``promptMaxLength`` 12..400 tokens, ``promptVersions`` 1..5, ``includeCost``; one ``data`` item per
version with the text (and the cost when asked). The text is deterministic: the prompt with
keywords added, a different order per version, within about ``promptMaxLength`` tokens (~0.75 words
a token). A prompt containing SIM_ENHANCE_REFUSE is rejected (400, naming ``prompt``).

What Runware does with a repeated taskUUID is not documented; the simulator takes the pessimistic
view: it answers again and bills again (counted per taskUUID in ``stats.enhance_calls``)."""

from __future__ import annotations

from typing import Any

from .state import Faults, Stats
from .validation import ApiError, check_task_uuid, is_int

KEYS = frozenset({"taskType", "taskUUID", "prompt", "promptMaxLength", "promptVersions", "includeCost"})
MICRO_PER_VERSION = 300  # the simulator's own price: $0.0003 per version
KEYWORDS = ("cinematic lighting", "highly detailed", "smooth camera motion", "rich colours", "sharp focus",
            "natural depth of field")
REFUSE = "SIM_ENHANCE_REFUSE"


def enhanced_text(prompt: str, version: int, max_tokens: int) -> str:
    shift = version % len(KEYWORDS)
    words = (prompt.strip().rstrip(".,") + ", " + ", ".join(KEYWORDS[shift:] + KEYWORDS[:shift])).split(" ")
    keep = max(len(prompt.split()), max_tokens * 3 // 4)
    return " ".join(words[:keep]).rstrip(",")


class EnhanceLogic:
    # Provided by Simulator.
    faults: Faults
    stats: Stats

    def _balance_left(self) -> int:
        raise NotImplementedError

    def _enhance(self, task: dict[str, Any]) -> list[dict[str, Any]]:
        task_uuid = check_task_uuid(task, "promptEnhance")

        def err(code: str, message: str, parameter: str, status: int = 400) -> ApiError:
            return ApiError(code, message, status=status, parameter=parameter, task_type="promptEnhance",
                            task_uuid=task_uuid)

        for key in task:
            if key not in KEYS:
                raise err("unsupportedParameter", f"Unsupported parameter {key!r} for promptEnhance.", key)
        prompt = task.get("prompt")
        if not isinstance(prompt, str) or not 1 <= len(prompt) <= 300:
            raise err("invalidPrompt", "Invalid value for prompt parameter. It must be a string between 1 "
                      "and 300 characters.", "prompt")
        max_length = task.get("promptMaxLength")
        if not is_int(max_length) or not 12 <= max_length <= 400:
            raise err("invalidPromptMaxLength", "Invalid value for promptMaxLength parameter. It must be an "
                      "integer between 12 and 400.", "promptMaxLength")
        versions = task.get("promptVersions")
        if not is_int(versions) or not 1 <= versions <= 5:
            raise err("invalidPromptVersions", "Invalid value for promptVersions parameter. It must be an "
                      "integer between 1 and 5.", "promptVersions")
        include_cost = task.get("includeCost", False)
        if not isinstance(include_cost, bool):
            raise err("invalidIncludeCost", "includeCost must be a boolean.", "includeCost")
        if REFUSE in prompt:
            raise err("invalidPrompt", "The prompt was rejected by the prompt enhancer.", "prompt")
        cost = MICRO_PER_VERSION * versions
        if self.faults.balance_micro is not None and cost > self._balance_left():
            raise ApiError("insufficientCredits", "Insufficient credits: top up your account balance.",
                           status=402, task_type="promptEnhance", task_uuid=task_uuid)
        self.stats.enhance_tasks += 1
        self.stats.enhance_calls[task_uuid] = self.stats.enhance_calls.get(task_uuid, 0) + 1
        self.stats.enhance_bodies[task_uuid] = task
        self.stats.enhance_billed_micro += cost
        items = []
        for version in range(versions):
            item: dict[str, Any] = {"taskType": "promptEnhance", "taskUUID": task_uuid,
                                    "text": enhanced_text(prompt, version, max_length)}
            if include_cost:
                item["cost"] = round(MICRO_PER_VERSION / 1_000_000, 6)
            items.append(item)
        return items
