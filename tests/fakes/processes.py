"""Running the bot's own command line as a subprocess, as an operator would: a clean environment
(none of the developer's RUNWARE_/DISCORD_/KLINGBOT_ variables leak in), a free loopback port, the
`klingbot` CLI and `klingbot simulator` as processes of their own."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWARE_", "DISCORD_", "KLINGBOT_"))}
    env.update(extra)
    return env


def run_cli(*args: str, cwd: Path | str, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m bot ARGS`, waited for."""
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout)


async def cli(tmp_path: Path, *args: str, env_extra: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`python -m bot ARGS --config tmp_path/config.toml` from an async test: (code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, "--config", str(tmp_path / "config.toml"), cwd=tmp_path,
        env=cli_env(**(env_extra or {})), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def last_json(stdout: str) -> Any:
    """The last line of --json output."""
    return json.loads(stdout.strip().splitlines()[-1])


@contextmanager
def simulator_process(api_key: str, *extra: str) -> Iterator[int]:
    """`klingbot simulator` as its own process; yields its port once it listens."""
    port = free_port()
    sim = subprocess.Popen([sys.executable, "-m", "bot", "simulator", "--port", str(port), "--api-key", api_key,
                            "--speed", "50", *extra], env=cli_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        assert sim.stdout is not None and "Runware simulator at" in sim.stdout.readline()
        yield port
    finally:
        sim.terminate()
        sim.wait(timeout=10)
