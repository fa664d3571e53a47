"""The sink protocol: the interface through which services report a job's life, and what it
carries. The Discord package (DiscordSink) and the terminal (cli TerminalSink) each implement it;
services never import discord.

One sink serves every job: after a restart the engine rebuilds everything from the database, so a
sink must work from the job record alone (channel id, progress message id), never from memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from bot.db.records import JobRecord, ResultRecord

# "fitting": the video is done and being transcoded to the sink's size limit before it is posted.
Phase = Literal["queued", "submitted", "processing", "fitting"]


@dataclass(frozen=True)
class ProgressUpdate:
    """What a progress message shows; sinks render it and skip edits that change nothing visible."""

    job: JobRecord
    phase: Phase
    elapsed_s: float
    queue_position: int | None = None  # 1-based while queued
    estimate_s: float | None = None    # median of past jobs of the same model and duration
    note: str | None = None            # e.g. "Runware is not answering, retrying"


@dataclass(frozen=True)
class ResultFile:
    """One finished variation, downloaded when it fits the sink's size cap."""

    result: ResultRecord
    path: Path | None            # None when it did not fit (then post the link) or it was flagged
    size: int | None
    expires_at: float | None     # unix time when Runware's URL expires (ttl)
    # Set when the sink has a fit limit and the video was over it: the MP4 made to fit, or why none.
    fitted: Path | None = None
    fitted_size: int | None = None
    converted_from: str | None = None  # "WEBM" or "MOV" when the fitted MP4 was made from another format
    fit_error: str | None = None

    def attachment(self, cap: int) -> tuple[Path, int] | None:
        """The file to hand over within ``cap`` bytes: the fitted one first, else the original."""
        if self.fitted is not None and self.fitted_size is not None and self.fitted_size <= cap:
            return self.fitted, self.fitted_size
        if self.path is not None and self.size is not None and self.size <= cap:
            return self.path, self.size
        return None


@dataclass(frozen=True)
class Outcome:
    """A finished job as the member should see it."""

    job: JobRecord
    files: list[ResultFile] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)   # one user-facing line per failed variation
    flagged: int = 0                                     # results withheld by the content check
    cost_micro: int | None = None
    # The final message went out before a restart (a result was already marked delivered): a sink
    # that posts messages must not post it again.
    already_posted: bool = False


class DeliveryFailed(Exception):
    """The sink could not deliver now; the engine tries again on a later tick."""


_PHASES: dict[str, Phase] = {"queued": "queued", "submitted": "submitted", "processing": "processing"}


def phase_of(state: str) -> Phase | None:
    """The progress phase of a job in ``state``; None once it left Runware's hands (final)."""
    return _PHASES.get(state)


class JobSink(Protocol):
    """What a face (the Discord bot, the terminal) gives the engine. One sink serves every job.

    The terminal and a running bot may share one database: each engine submits and polls any job,
    but only the sink a job came from shows it (``handles``)."""

    def handles(self, job: JobRecord) -> bool:
        """Whether this sink shows this job's progress and posts its final message."""
        ...

    def download_cap(self, job: JobRecord) -> int:
        """Largest file (bytes) the sink can hand over for this job; larger results are linked."""
        ...

    def fit_limit(self, job: JobRecord) -> int | None:
        """Bytes a result larger than this is transcoded to fit before delivery; None: never."""
        ...

    def download_dir(self, job: JobRecord) -> Path:
        """Where the engine downloads this job's results before calling ``deliver``."""
        ...

    async def progress(self, update: ProgressUpdate) -> int | None:
        """Show progress. May be called often: coalesce and pace. Returns the progress message id
        when it posted a new one, so the engine can store it."""
        ...

    async def deliver(self, outcome: Outcome) -> int | None:
        """Post the final message (results or failure notice). Returns its id. Raise DeliveryFailed
        to be called again later; any other exception is logged and retried too."""
        ...

    async def alert(self, text: str) -> None:
        """Tell the operator something needs them: Runware refused the key or the balance, has not
        answered for minutes, or failed several jobs in a row."""
        ...
