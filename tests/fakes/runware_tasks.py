"""Raw Runware tasks as a client sends them, for tests that speak to the simulator over loopback
HTTP directly (no RunwareClient in between)."""

from __future__ import annotations

import base64
import io
import uuid
from typing import Any

import httpx
from PIL import Image

from bot.simulator import Simulator

KEY = "sandbox"


def png_bytes(size: int = 320) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (200, 40, 40)).save(buf, format="PNG")
    return buf.getvalue()


PNG = png_bytes()
PNG_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()


def video_task(model_id: str = "klingai:6@1", /, **overrides: Any) -> dict[str, Any]:
    """A valid task for `model_id`; an override of None removes the key."""
    task: dict[str, Any] = {
        "taskType": "videoInference",
        "taskUUID": str(uuid.uuid4()),
        "model": model_id,
        "positivePrompt": "a red fox running through fresh snow",
        "duration": 5,
        "deliveryMethod": "async",
        "outputType": "URL",
        "includeCost": True,
    }
    if model_id == "klingai:5@2":
        task.update(width=1920, height=1080, inputs={"frameImages": [PNG_URI]})
    else:
        task.update(width=1280, height=720)
    for key, value in overrides.items():
        if value is None:
            task.pop(key, None)
        else:
            task[key] = value
    return task


def poll(*task_uuids: str) -> list[dict[str, str]]:
    return [{"taskType": "getResponse", "taskUUID": t} for t in task_uuids]


async def call(client: httpx.AsyncClient, sim: Simulator, tasks: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post(sim.url, json=tasks)
    assert resp.headers["content-type"] == "application/json"
    return resp.status_code, resp.json()
