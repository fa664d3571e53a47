"""The task side of the simulator: accepting videoInference tasks, revealing their outcome at the
ready time, answering getResponse, storing uploads. A mixin of `Simulator`, so tests see one object
with `faults` and `stats`; the HTTP side lives in server.py."""

from __future__ import annotations

import heapq
import random
import uuid
from collections.abc import Callable
from typing import Any

from .media import EXTENSIONS
from .state import Faults, SimTask, Stats
from .validation import ApiError, check_task_uuid, decode_image, image_url_ok, validate_video


class TaskLogic:
    # Provided by Simulator.
    faults: Faults
    stats: Stats
    rng: random.Random
    clock: Callable[[], float]
    speed: float
    fail_rate: float
    base_generation_s: float
    base_url: str
    images: dict[str, bytes | str]
    videos: dict[str, str]
    _pending: list[tuple[float, str]]
    _webhook_backlog: list[SimTask]

    def _wake_scheduler(self) -> None:
        raise NotImplementedError

    def _task_submitted(self) -> None:
        raise NotImplementedError

    def prepare_video(self, sim: SimTask) -> None:
        raise NotImplementedError

    @staticmethod
    def output_format(task: dict[str, Any]) -> str:
        return str(task.get("outputFormat", "MP4"))

    def finish_all(self) -> None:
        """Make every pending task ready now (its webhooks follow from the scheduler)."""
        now = self.clock()
        for sim in self.stats.tasks.values():
            if not sim.done:
                sim.ready_at = min(sim.ready_at, now)
                self._finalize(sim)
        self._pending.clear()

    def finish(self, task_uuid: str) -> None:
        sim = self.stats.tasks[task_uuid]
        if not sim.done:
            sim.ready_at = min(sim.ready_at, self.clock())
            self._finalize(sim)

    def reveal(self, task_uuid: str, count: int) -> None:
        """Runware made the task's first ``count`` videos; the others are still being made. They are
        answered (and billed) from now on, beside a processing item, until the task finishes."""
        sim = self.stats.tasks[task_uuid]
        if sim.done:
            return
        for item in sim.planned[sim.revealed:count]:
            if item["status"] == "success":
                sim.billed_micro += sim.video_micro
                self.stats.billed_micro += sim.video_micro
        sim.revealed = max(sim.revealed, min(count, len(sim.planned)))

    def task_ready(self, task_uuid: str) -> bool:
        sim = self.stats.tasks.get(task_uuid)
        return sim is not None and (sim.done or self.clock() >= sim.ready_at)

    def _new_uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _balance_left(self) -> int:
        held = sum(t.billed_micro if t.done else t.planned_micro for t in self.stats.tasks.values())
        return (self.faults.balance_micro or 0) - held - self.stats.enhance_billed_micro

    def _submit(self, task: dict[str, Any]) -> dict[str, Any]:
        task_uuid = check_task_uuid(task, "videoInference")
        if task_uuid in self.stats.tasks:
            raise ApiError("conflictTaskUUID", f"A task with taskUUID {task_uuid} already exists.",
                           parameter="taskUUID", task_type="videoInference", task_uuid=task_uuid)
        req = validate_video(task, self.images)
        per_video = req.model.cost_micro(req.duration)
        planned_micro = per_video * req.number_results
        if self.faults.balance_micro is not None and planned_micro > self._balance_left():
            raise ApiError("insufficientCredits", "Insufficient credits: top up your account balance.",
                           status=402, task_type="videoInference", task_uuid=task_uuid)
        drawn_failure = self.fail_rate > 0 and self.rng.random() < self.fail_rate
        fail_all = "FAIL_PROVIDER" in req.prompt or drawn_failure
        fail_last = "FAIL_PARTIAL" in req.prompt
        ext = EXTENSIONS[self.output_format(task)]
        planned = []
        for index in range(req.number_results):
            item: dict[str, Any] = {"taskType": "videoInference", "taskUUID": task_uuid}
            if fail_all or (fail_last and index == req.number_results - 1):
                item.update(status="error", code="providerError",
                            message="The provider failed to generate the video. Retry the task.")
                if req.include_cost:
                    item["cost"] = 0
            else:
                video_uuid = self._new_uuid()
                self.videos[video_uuid] = task_uuid
                seed = req.seed + index if req.seed is not None else self.rng.randrange(1, 2**31)
                item.update(status="success", videoUUID=video_uuid,
                            videoURL=f"{self.base_url}/video/{video_uuid}.{ext}", seed=seed)
                if req.include_cost:
                    item["cost"] = round(per_video / 1_000_000, 6)
                if "SIM_NSFW" in req.prompt:
                    item["NSFWContent"] = True
            planned.append(item)
        now = self.clock()
        sim = SimTask(
            task_uuid=task_uuid, body=task, model_id=req.model.model_id, accepted_at=now,
            ready_at=now + self.base_generation_s * (req.duration / 5) / self.speed,
            planned=planned, planned_micro=planned_micro, video_micro=per_video,
            include_cost=req.include_cost, webhook_url=req.webhook_url,
        )
        self.stats.tasks[task_uuid] = sim
        self.stats.submits += 1
        heapq.heappush(self._pending, (sim.ready_at, task_uuid))
        if any(item.get("status") == "success" for item in planned):
            self.prepare_video(sim)
        self._task_submitted()
        return {"taskType": "videoInference", "taskUUID": task_uuid}

    def _get_response(self, task: dict[str, Any]) -> tuple[list[dict], list[dict]]:
        task_uuid = task.get("taskUUID")
        if not isinstance(task_uuid, str) or not task_uuid:
            raise ApiError("invalidTaskUUID", "getResponse needs the taskUUID of a submitted task.",
                           parameter="taskUUID", task_type="getResponse")
        sim = self.stats.tasks.get(task_uuid)
        if sim is None:
            error = ApiError("taskNotFound", f"No task found with taskUUID {task_uuid}.",
                             parameter="taskUUID", task_type="getResponse", task_uuid=task_uuid)
            return [], [error.item()]
        if not sim.done:
            data, errors = self._split(sim.planned[:sim.revealed])
            return [*data, {"taskType": "videoInference", "taskUUID": task_uuid, "status": "processing"}], errors
        return self._split(sim.results)

    def _split(self, items: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
        """Failures go to `errors` (without status), or stay in `data` when faults say so."""
        data, errors = [], []
        for item in items:
            if item["status"] == "error" and not self.faults.errors_in_data:
                errors.append({k: v for k, v in item.items() if k != "status"})
            else:
                data.append(dict(item))
        return data, errors

    def _upload(self, task: dict[str, Any]) -> dict[str, Any]:
        task_uuid = check_task_uuid(task, "imageUpload")
        image = task.get("image")
        if set(task) - {"taskType", "taskUUID", "image"}:
            extra = sorted(set(task) - {"taskType", "taskUUID", "image"})[0]
            raise ApiError("unsupportedParameter", f"Unsupported parameter {extra!r} for imageUpload.",
                           parameter=extra, task_type="imageUpload", task_uuid=task_uuid)
        image_uuid = self._new_uuid()
        if isinstance(image, str) and image.startswith(("http://", "https://")) and image_url_ok(image):
            self.images[image_uuid] = image
            image_url = image
        else:
            try:
                if not isinstance(image, str):
                    raise ValueError("image must be a string")
                self.images[image_uuid] = decode_image(image)
            except ValueError as exc:
                raise ApiError("invalidImage", f"Invalid value for image parameter: {exc}.",
                               parameter="image", task_type="imageUpload", task_uuid=task_uuid) from None
            image_url = f"{self.base_url}/image/{image_uuid}"
        return {"taskType": "imageUpload", "taskUUID": task_uuid, "imageUUID": image_uuid,
                "imageURL": image_url}

    def _finalize(self, sim: SimTask) -> None:
        if sim.done:
            return
        sim.done = True
        sim.results = sim.planned
        # Billed whether or not includeCost asked to show the cost.
        billed = sim.video_micro * sum(item["status"] == "success" for item in sim.planned)
        self.stats.billed_micro += billed - sim.billed_micro  # revealed items were billed already
        sim.billed_micro = billed
        if sim.webhook_url:
            self._webhook_backlog.append(sim)
            self._wake_scheduler()

    def _sweep(self) -> None:
        now = self.clock()
        while self._pending and self._pending[0][0] <= now:
            _, task_uuid = heapq.heappop(self._pending)
            self._finalize(self.stats.tasks[task_uuid])
