"""python -m bench [--quick] [--json PATH] [--only NAME[,NAME]] [--watchdog] [--profile] [--keep]

Runs the scenarios of SPEC 6 one after another, each in a fresh temporary directory, prints the
machine and a table (scenario, measure, value, bar, result) and writes the JSON. Exit status 0 when
every bar was reached, 1 otherwise."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import ack, contention, contention_pg, edits, fanin, latency, memory, resume, transcode
from bench.common import ScenarioResult, format_table, machine_info, write_json

DEFAULT_JSON = Path(__file__).resolve().parent / "results.json"

Runner = Callable[..., Awaitable[ScenarioResult]]
SCENARIOS: dict[str, Runner] = {
    fanin.NAME: fanin.run,
    edits.NAME: edits.run,
    contention.NAME: contention.run,
    contention_pg.NAME: contention_pg.run,
    ack.NAME: ack.run,
    resume.NAME: resume.run,
    memory.NAME: memory.run,
    transcode.NAME: transcode.run,
    latency.NAME: latency.run,
}
PROFILED = {ack.NAME, memory.NAME}  # the scenarios whose bot process can run under cProfile


async def run_one(name: str, tmp: Path, *, quick: bool, profile: bool = False, watchdog: bool = False
                  ) -> ScenarioResult:
    kwargs: dict[str, Any] = {"quick": quick}
    if name in PROFILED:
        if profile:
            kwargs["profile"] = tmp / f"profile-{name}.txt"
        kwargs["watchdog"] = watchdog
    started = time.monotonic()
    try:
        result = await SCENARIOS[name](tmp, **kwargs)
    except Exception as exc:  # one broken scenario must not hide the others' numbers
        result = ScenarioResult(name, error=f"{type(exc).__name__}: {exc}")
        result.add("scenario ran", "error", bar="runs", passed=False)
        result.details["traceback"] = traceback.format_exc()
    result.seconds = time.monotonic() - started
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the bench, measures little")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH",
                        help="where to write the results (default bench/results.json)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help=f"run only these scenarios (repeat or comma-separate): {', '.join(SCENARIOS)}")
    parser.add_argument("--profile", action="store_true",
                        help="run the bot's process under cProfile in ack and memory (kept in the "
                             "scenario's temporary directory)")
    parser.add_argument("--watchdog", action="store_true",
                        help="in ack and memory, sample the bot's stack whenever its event loop stalls")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directories (logs, databases)")
    args = parser.parse_args(argv)
    names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.names = names or list(SCENARIOS)
    return args


async def main_async(args: argparse.Namespace) -> list[ScenarioResult]:
    results = []
    for name in args.names:
        tmp = Path(tempfile.mkdtemp(prefix=f"klingbot-bench-{name}-"))
        print(f"running {name} ...", file=sys.stderr, flush=True)
        result = await run_one(name, tmp, quick=args.quick, profile=args.profile, watchdog=args.watchdog)
        verdict = "error" if result.error else ("pass" if result.passed else "FAIL")
        error = f" ({result.error})" if result.error else ""
        print(f"  {name}: {verdict} in {result.seconds:.1f} s{error}",
              file=sys.stderr, flush=True)
        if args.keep or result.error or (args.profile and name in PROFILED):
            result.details["tmp"] = str(tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    machine = machine_info()
    results = asyncio.run(main_async(args))
    rows = [row for r in results for row in r.rows]
    print(f"klingbot bench{' (quick)' if args.quick else ''}, {machine['date']}: {machine['nproc']} CPU "
          f"({machine['cpu']}), {machine['memory_mb']} MB RAM, Python {machine['python']}, "
          f"{machine['platform']}")
    print(format_table(rows))
    write_json(args.json, machine, results, {"quick": args.quick, "only": args.names})
    print(f"\nJSON: {args.json}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
