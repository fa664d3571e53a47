"""Video work the bot does with PyAV: fit a result to an upload limit, take a video's last frame.

FFmpeg runs in a worker process per job (``python -m bot.services.media_ops``), never on the event
loop and never in the bot's own process: a crash or a hang there costs the worker only, and a
worker that dies or overruns its time gives a typed error here instead of hanging the delivery.
At most ``delivery.transcode_concurrency`` workers run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

WORKER_MODULE = "bot.services.media_ops"
# A 10 s 1080p fit takes about 10 s on 2 cores; a worker far past that is stuck, not slow.
FIT_TIMEOUT_S = 300.0
FRAME_TIMEOUT_S = 60.0


class MediaError(Exception):
    """A video that could not be used; ``message`` is fit for the member to read."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CorruptVideo(MediaError):
    """The file is not a video FFmpeg can read (damaged, truncated, not a video)."""


class NoFrames(MediaError):
    """The file holds no picture (no video track, or a track without frames)."""


class CannotFit(MediaError):
    """No bitrate and size down to 480p bring the video under the limit at a watchable quality."""


class WorkerFailed(MediaError):
    """The worker process died (killed, crashed in FFmpeg) or overran its time."""


_KINDS: dict[str, type[MediaError]] = {"corrupt": CorruptVideo, "no_frames": NoFrames, "cannot_fit": CannotFit}


@dataclass(frozen=True)
class FittedVideo:
    path: Path
    size: int
    width: int
    height: int
    source_format: str  # MP4, WEBM or MOV: what the original was (the fitted file is always MP4)


class MediaWorkers:
    """Runs media jobs in worker processes, ``concurrency`` at a time."""

    def __init__(self, concurrency: int = 1) -> None:
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._running: set[asyncio.subprocess.Process] = set()

    async def fit(self, src: Path, dest: Path, limit_bytes: int) -> FittedVideo:
        """``src`` as an H.264 MP4 of at most ``limit_bytes`` at ``dest`` (written whole or not at all)."""
        answer = await self._run(["fit", str(src), str(dest), str(int(limit_bytes))], FIT_TIMEOUT_S,
                                 "fitting the video")
        return FittedVideo(Path(answer["path"]), int(answer["size"]), int(answer["width"]),
                           int(answer["height"]), str(answer["source_format"]))

    async def last_frame(self, src: Path) -> bytes:
        """The video's last picture, as PNG bytes."""
        with tempfile.TemporaryDirectory(prefix="klingbot-frame-") as folder:
            dest = Path(folder) / "last.png"
            await self._run(["last-frame", str(src), str(dest)], FRAME_TIMEOUT_S, "reading the last frame")
            return dest.read_bytes()

    async def close(self) -> None:
        """Stop every worker still running (the bot is shutting down)."""
        for proc in list(self._running):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for proc in list(self._running):
            await proc.wait()

    async def _run(self, args: list[str], timeout_s: float, what: str) -> dict:
        async with self._slots:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", WORKER_MODULE, *args,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            self._running.add(proc)
            try:
                out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise WorkerFailed(f"{what} took longer than {timeout_s:.0f} s and was stopped") from None
            except asyncio.CancelledError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise
            finally:
                self._running.discard(proc)
        return _answer(proc.returncode, out, err, what)


def _answer(returncode: int | None, out: bytes, err: bytes, what: str) -> dict:
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines and returncode == 0 else None
    except json.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        log.warning("media worker %s failed (exit %s): %s", what, returncode, " | ".join(tail))
        raise WorkerFailed(f"{what} stopped unexpectedly ({_exit_text(returncode)})")
    if not answer.get("ok"):
        raise _KINDS.get(str(answer.get("kind")), MediaError)(str(answer.get("message") or what + " failed"))
    return answer


def _exit_text(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        try:
            return f"the worker was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"the worker was killed by signal {-returncode}"
    return f"the worker exited with status {returncode}"
