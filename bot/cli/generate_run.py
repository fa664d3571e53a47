"""The real run of `klingbot generate`: the same engine as the bot, with a terminal sink."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from bot.cli.generate_request import fit_limit_from_args, resolve_from_args
from bot.config import Config
from bot.db import open_database
from bot.db.jobs import get_job
from bot.db.money import job_money
from bot.db.records import JobRecord
from bot.errors import InvalidInput, RunwareUnavailable, UserFacingError
from bot.runware.client import RunwareClient
from bot.sandbox import enter_sandbox
from bot.services.engine import Engine
from bot.services.quotas import Member
from bot.services.sink import Outcome, ProgressUpdate
from bot.usd import micro_to_usd

NO_DOWNLOAD_CAP = 4 * 1024**3
TERMINAL_GUILD = 0
TERMINAL_CHANNEL = 0  # Discord jobs always have a channel, DMs included


class TerminalSink:
    """Shows a progress bar on stderr and saves results into --out."""

    def __init__(self, out_dir: Path, show_bar: bool = True, fit_bytes: int | None = None) -> None:
        self.out_dir = out_dir
        self.show_bar = show_bar
        self.fit_bytes = fit_bytes  # --fit-mb: each video also written fitted to this size
        self.outcomes: dict[int, Outcome] = {}
        self.refused: str | None = None  # Runware refused the key or balance: the run cannot finish
        self.finished = asyncio.Condition()
        self._bars: dict[int, tqdm] = {}

    def handles(self, job: JobRecord) -> bool:
        return job.channel_id == TERMINAL_CHANNEL  # a running bot on the same database shows its own

    def download_cap(self, job: JobRecord) -> int:
        return NO_DOWNLOAD_CAP

    def download_dir(self, job: JobRecord) -> Path:
        # A job taken over from a run that is gone still goes to the --out it was created with.
        if job.deliver_to and job.deliver_to != str(self.out_dir.resolve()):
            return Path(job.deliver_to)
        return self.out_dir

    def fit_limit(self, job: JobRecord) -> int | None:
        return self.fit_bytes

    async def progress(self, update: ProgressUpdate) -> int | None:
        if not self.show_bar:
            return None
        bar = self._bars.get(update.job.id)
        total = round(update.estimate_s or update.job.duration_s * 12)
        if bar is None:
            bar = tqdm(total=total, unit="s", file=sys.stderr, dynamic_ncols=True, leave=False,
                       bar_format="{desc} |{bar}| {n:.0f}/{total:.0f} s")
            self._bars[update.job.id] = bar
        phase = update.phase if update.queue_position is None else f"queued (#{update.queue_position})"
        note = f" - {update.note}" if update.note else ""
        bar.set_description_str(f"job #{update.job.id} {phase}{note}")
        bar.n = min(update.elapsed_s, bar.total)
        bar.refresh()
        return None

    async def deliver(self, outcome: Outcome) -> int | None:
        bar = self._bars.pop(outcome.job.id, None)
        if bar is not None:
            bar.close()
        async with self.finished:
            self.outcomes[outcome.job.id] = outcome
            self.finished.notify_all()
        return None

    async def alert(self, text: str) -> None:
        """An operator alert (Runware down for long, failures in a row): the terminal user is the operator."""
        tqdm.write(f"warning: {text}", file=sys.stderr)

    async def refuse(self, text: str) -> None:
        """Runware refused the key or balance: the run cannot finish."""
        async with self.finished:
            self.refused = text
            self.finished.notify_all()

    async def wait_for(self, job_id: int) -> Outcome:
        """The job's outcome; RunwareUnavailable when Runware refuses the key or balance, since
        nothing in this process would ever lift that pause."""
        async with self.finished:
            await self.finished.wait_for(lambda: job_id in self.outcomes or self.refused is not None)
            if job_id not in self.outcomes:
                raise RunwareUnavailable(f"{self.refused}")
            return self.outcomes[job_id]


def status_of(job: JobRecord) -> str:
    return "delivered" if job.state == "succeeded" and job.notified_at else job.state


def outcome_notes(job: JobRecord, outcome: Outcome) -> list[str]:
    """What the terminal user must be told besides the files: failures, videos withheld by the
    content check, and videos not downloaded (their link, as Discord would post it)."""
    notes = [line for line in (job.error or "").splitlines() if line]
    if outcome.flagged:
        what = "1 video was" if outcome.flagged == 1 else f"{outcome.flagged} videos were"
        notes.append(f"{what} withheld by the content check (its cost still counts).")
    for f in outcome.files:
        if f.path is None and f.result.video_url and job.state == "succeeded":
            until = (time.strftime(" until %Y-%m-%d %H:%M UTC", time.gmtime(f.expires_at))
                     if f.expires_at else "")
            notes.append(f"video not downloaded (see the log); it is at {f.result.video_url}{until}.")
        if f.fit_error:
            notes.append(f"{f.path.name if f.path else 'a video'} could not be fitted: {f.fit_error}.")
    return notes


def fitted_paths(outcome: Outcome, limit: int | None) -> list[str]:
    """--fit-mb: each video's fitted file; a video already within the limit is its own."""
    if limit is None:
        return []
    paths = []
    for f in outcome.files:
        if f.fitted is not None:
            paths.append(str(f.fitted))
        elif f.path is not None and f.size is not None and f.size <= limit:
            paths.append(str(f.path))
    return paths


def summary(job: JobRecord, outcome: Outcome, cost_micro: int | None, fit_limit: int | None = None) -> dict:
    notes = outcome_notes(job, outcome)
    fitted = {"fitted": fitted_paths(outcome, fit_limit)} if fit_limit is not None else {}
    return {
        "job_id": job.id,
        "status": status_of(job),
        "task_uuid": job.task_uuid,
        "model": job.params.get("model_id"),
        "videos": [str(f.path) for f in outcome.files if f.path],
        "seeds": [f.result.seed for f in outcome.files],
        "cost_usd": (cost_micro or 0) / 1_000_000,
        "error": "\n".join(notes) or None,
        **fitted,
    }


def prepare_out_dir(path: str) -> Path:
    """--out must be a writable folder; checked before anything is reserved."""
    out_dir = Path(path)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput("--out", path, "a folder the videos can be written to",
                           f"cannot be created ({exc.strerror})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise InvalidInput("--out", path, "a folder the videos can be written to", "is not writable")
    return out_dir


async def _generate(cfg: Config, args: argparse.Namespace) -> int:
    request, first, last = resolve_from_args(cfg, args)  # invalid input exits 2 before anything runs
    out_dir = prepare_out_dir(args.out)
    async with contextlib.AsyncExitStack() as stack:
        if args.sandbox:
            cfg, api_key = await enter_sandbox(stack, cfg)
        else:
            if cfg.secrets.runware_api_key is None:
                raise UserFacingError("RUNWARE_API_KEY is not set (or use --sandbox to try the simulator)")
            api_key = cfg.secrets.runware_api_key
        # Webhooks are the running bot's: its receiver holds webhook_listen (and its environment the
        # secret). A terminal run polls, as the bot does when a webhook is lost.
        cfg = cfg.with_overrides(runware=cfg.runware.model_copy(update={"webhook_public_url": ""}))
        db = await open_database(cfg.database)
        stack.push_async_callback(db.close)
        client = RunwareClient(
            api_url=cfg.runware.api_url,
            api_key=api_key,
            timeout_s=cfg.runware.request_timeout_s,
            max_retries=cfg.runware.max_retries,
            poll_batch_size=cfg.runware.poll_batch_size,
        )
        stack.push_async_callback(client.aclose)
        fit_bytes = fit_limit_from_args(args)
        sink = TerminalSink(out_dir, show_bar=sys.stderr.isatty(), fit_bytes=fit_bytes)
        # This run shows and delivers only its own job, and those of earlier runs that are gone
        # (killed mid-job), which it takes over at start and waits for too, so their videos still
        # land in their --out (once). Runs beside it keep theirs.
        engine = Engine(cfg=cfg, db=db, client=client, sink=sink, kind="terminal", deliver_to=str(out_dir.resolve()),
                        heartbeat=False, adopt_while_running=False)
        engine.submitter.on_refused = sink.refuse
        await engine.start()
        resumed = list(engine.adopted)
        engine_running = True

        async def stop_engine() -> None:
            nonlocal engine_running
            if engine_running:
                engine_running = False
                await engine.stop()

        stack.push_async_callback(stop_engine)
        if not await engine.probe_runware():
            raise RunwareUnavailable("Runware refuses the API key (or the account has no balance); "
                                     "nothing was reserved.")
        job = await engine.create_job(
            Member(TERMINAL_GUILD, args.user), request, channel_id=TERMINAL_CHANNEL, first=first,
            last=last,
        )
        try:
            outcomes = {job_id: await sink.wait_for(job_id) for job_id in [*resumed, job.id]}
        except RunwareUnavailable:
            # Nobody is left to wait for the queued job here: give its reservation back.
            await engine.store.request_cancel(job.id, "cli")
            raise RunwareUnavailable(
                f"Runware refused the request (the API key was rejected or the account balance is "
                f"exhausted); job #{job.id} was cancelled and nothing was charged."
            ) from None
        # The sink hears of a job before delivered/notified are written: let that tick finish.
        await stop_engine()
        results = []
        for job_id, outcome in outcomes.items():
            final = await get_job(engine.db, job_id)
            assert final is not None
            results.append(summary(final, outcome, (await job_money(engine.db, job_id)).settled, fit_bytes))
    for result in results:  # resumed jobs first; the new job's line is the last one
        if args.json:
            print(json.dumps(result))
            continue
        for path in result["videos"]:
            print(path)
        for path in result.get("fitted", []):
            if path not in result["videos"]:
                print(path)
        resumed_note = " (resumed)" if result["job_id"] != job.id else ""
        print(f"job #{result['job_id']}{resumed_note}: {result['status']}, "
              f"cost {micro_to_usd(round(result['cost_usd'] * 1_000_000))}"
              + (f"; {result['error']}" if result["error"] else ""))
    # Success is a video in --out: a result withheld or not downloaded is reported, and exits 1.
    return 0 if results[-1]["status"] == "delivered" and results[-1]["videos"] else 1


def run_generation(cfg: Config, args: argparse.Namespace) -> int:
    return asyncio.run(_generate(cfg, args))
