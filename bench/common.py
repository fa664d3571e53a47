"""What every scenario shares: result rows, the table, machine facts, a simulator that tells the bot's
requests from the baseline's, configs, and small statistics."""

from __future__ import annotations

import json
import math
import os
import platform
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from bot.config import Config, Secrets
from bot.simulator.server import Simulator
from bot.simulator.state import SimTask

SIM_KEY = "bench-key"
# Who sent a request to the simulator: the bot's client uses /v1, the per-job baseline /baseline/v1.
ORIGIN: ContextVar[str] = ContextVar("bench_origin", default="bot")
BOT, BASELINE = "bot", "baseline"


@dataclass
class Row:
    """One line of the table: a measure, its value, and the bar it must reach (None: informative)."""

    scenario: str
    measure: str
    value: float | int | str
    unit: str = ""
    bar: str = ""
    passed: bool | None = None

    def shown_value(self) -> str:
        if isinstance(self.value, float):
            text = f"{self.value:,.3f}" if abs(self.value) < 10 else f"{self.value:,.1f}"
        elif isinstance(self.value, int):
            text = f"{self.value:,}"
        else:
            text = str(self.value)
        return f"{text} {self.unit}".strip()

    @property
    def verdict(self) -> str:
        return "" if self.passed is None else ("pass" if self.passed else "FAIL")


@dataclass
class ScenarioResult:
    name: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def add(self, measure: str, value: float | int | str, unit: str = "", bar: str = "",
            passed: bool | None = None) -> Row:
        row = Row(self.name, measure, value, unit, bar, passed)
        self.rows.append(row)
        return row

    @property
    def passed(self) -> bool:
        return self.error is None and all(r.passed is not False for r in self.rows)


# ---- the simulator ---------------------------------------------------------------------------------


class BenchSimulator(Simulator):
    """The Runware simulator, counting getResponse requests per origin (the bot at /v1, the per-job
    baseline at /baseline/v1) and noting when each origin was first answered about each task, and
    first answered with the finished task."""

    def __init__(self, *, generation_s: tuple[float, float] | None = None, **kwargs: Any) -> None:
        """``generation_s``: each task takes a uniform draw from this range (simulated seconds,
        divided by ``speed``) whatever its duration, so ready times fall at any phase of a poll."""
        kwargs.setdefault("api_key", SIM_KEY)
        kwargs.setdefault("clock", time.time)  # the bot's clock too: ready_at and seen times compare
        super().__init__(**kwargs)
        self.app.router.add_post("/baseline/v1", self._handle_baseline)
        self.polls: Counter[str] = Counter()       # origin -> HTTP requests carrying getResponse
        self.poll_tasks: Counter[str] = Counter()  # origin -> getResponse tasks
        self.first_answer: dict[str, dict[str, float]] = {BOT: {}, BASELINE: {}}
        self.first_done: dict[str, dict[str, float]] = {BOT: {}, BASELINE: {}}
        self.on_submit: Callable[[SimTask], None] | None = None
        self.generation_s = generation_s
        self._draws = random.Random(kwargs.get("seed"))

    @property
    def baseline_url(self) -> str:
        return self.base_url + "/baseline/v1"

    def reset_seen(self) -> None:
        self.polls.clear()
        self.poll_tasks.clear()
        for table in (*self.first_answer.values(), *self.first_done.values()):
            table.clear()

    async def _handle_baseline(self, request: web.Request) -> web.StreamResponse:
        token = ORIGIN.set(BASELINE)
        try:
            return await self._handle_api(request)
        finally:
            ORIGIN.reset(token)

    def _count(self, tasks: Any) -> None:
        super()._count(tasks)
        if isinstance(tasks, list):
            polls = sum(1 for t in tasks if isinstance(t, dict) and t.get("taskType") == "getResponse")
            if polls:
                self.polls[ORIGIN.get()] += 1
                self.poll_tasks[ORIGIN.get()] += polls

    def _get_response(self, task: dict[str, Any]) -> tuple[list[dict], list[dict]]:
        answer = super()._get_response(task)
        uuid = task.get("taskUUID")
        sim = self.stats.tasks.get(uuid) if isinstance(uuid, str) else None
        if sim is not None:
            now, origin = self.clock(), ORIGIN.get()
            self.first_answer[origin].setdefault(sim.task_uuid, now)
            if sim.done:
                self.first_done[origin].setdefault(sim.task_uuid, now)
        return answer

    def _submit(self, task: dict[str, Any]) -> dict[str, Any]:
        if self.generation_s is not None:
            # The simulator scales its base time by duration / 5: undo that for a plain draw.
            duration = task.get("duration") if isinstance(task.get("duration"), (int, float)) else 5
            self.base_generation_s = self._draws.uniform(*self.generation_s) * 5 / max(duration, 1)
        ack = super()._submit(task)
        if self.on_submit is not None:
            self.on_submit(self.stats.tasks[ack["taskUUID"]])
        return ack

    def in_flight(self) -> int:
        return sum(1 for t in self.stats.tasks.values() if not t.done)


# ---- configuration -------------------------------------------------------------------------------

UNLIMITED = {
    "daily_videos": "unlimited", "monthly_usd": "unlimited", "max_concurrent": "unlimited",
    "guild_monthly_usd": "unlimited", "global_daily_usd": "unlimited", "max_in_flight": 5000,
    "confirm_above_usd": 0,  # the bench drives /video in one step
}


def config_data(*, sim_url: str, db_path: Path, discord_url: str | None = None,
                runware: dict[str, Any] | None = None, limits: dict[str, Any] | None = None,
                progress: dict[str, Any] | None = None) -> dict[str, Any]:
    """The bench's own config (SPEC 6): limits lifted, max_in_flight large, loopback hosts."""
    data: dict[str, Any] = {
        "runware": {"api_url": sim_url, "download_hosts": ["127.0.0.1"], "max_retries": 4,
                    "request_timeout_s": 30.0, **(runware or {})},
        "storage": {"path": str(db_path)},
        "limits": {**UNLIMITED, **(limits or {})},
        "progress": {**(progress or {})},
    }
    if discord_url:
        data["discord"] = {"api_base_url": discord_url, "attachment_hosts": ["127.0.0.1"]}
    return data


def make_config(data: dict[str, Any], *, discord_token: str | None = None) -> Config:
    secrets = Secrets(runware_api_key=SecretStr(SIM_KEY),
                      discord_token=SecretStr(discord_token) if discord_token else None)
    return Config.model_validate({**data, "secrets": secrets})


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def write_toml(data: dict[str, dict[str, Any]], path: Path) -> Path:
    """A config file for the bot's own process (sections of scalars and lists only)."""
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# ---- statistics ----------------------------------------------------------------------------------


def percentile(values: Iterable[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def rss_kb(pid: int, field_name: str = "VmHWM") -> int | None:
    """A process's resident set (VmRSS) or its peak (VmHWM), in KiB, from /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system, all threads) of a process so far: ``pid``, else this one."""
    if pid is None:
        usage = os.times()
        return usage.user + usage.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- the machine and the output --------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_mb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_mb = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_mb": mem_mb,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def format_table(rows: list[Row]) -> str:
    header = ("scenario", "measure", "value", "bar", "result")
    lines = [(r.scenario, r.measure, r.shown_value(), r.bar, r.verdict) for r in rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=False)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    out = [line(header), line(tuple("-" * w for w in widths))]
    out += [line(cells) for cells in lines]
    return "\n".join(out)


def write_json(path: Path, machine: dict[str, Any], results: list[ScenarioResult],
               args: dict[str, Any]) -> None:
    payload = {
        "machine": machine,
        "args": args,
        "passed": all(r.passed for r in results),
        "scenarios": [
            {"name": r.name, "passed": r.passed, "seconds": round(r.seconds, 2), "error": r.error,
             "rows": [asdict(row) | {"verdict": row.verdict} for row in r.rows], "details": r.details}
            for r in results
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
