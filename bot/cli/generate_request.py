"""The request half of `klingbot generate`: the flags validated exactly as /video validates its
options, and `--dry-run`, which prints the tasks and sends nothing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bot.config import Config
from bot.errors import InvalidInput
from bot.images import CheckedImage, check_frame_pair, check_image
from bot.requests import ResolvedRequest, build_task, resolve_request
from bot.runware.models import VideoInferenceTask, new_task_uuid
from bot.services.enhance import enhance_task
from bot.usd import micro_to_usd


def read_frame(path: str | None, field: str) -> CheckedImage | None:
    if not path:
        return None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(
            field, path, "a readable PNG, JPEG or WEBP file", f"cannot be read ({exc.strerror})"
        ) from None
    return check_image(data, field=field)


MAX_FIT_MB = 4096


def fit_limit_from_args(args: argparse.Namespace) -> int | None:
    """--fit-mb N as bytes (None without it); a bad N is invalid input, before anything runs."""
    value = getattr(args, "fit_mb", None)
    if value is None:
        return None
    if not 0.1 <= value <= MAX_FIT_MB:
        raise InvalidInput("--fit-mb", value, f"a size in MiB from 0.1 to {MAX_FIT_MB}")
    return int(value * 1024 * 1024)


def resolve_from_args(cfg: Config, args: argparse.Namespace) -> tuple[ResolvedRequest, CheckedImage | None,
                                                                      CheckedImage | None]:
    """Validate the flags exactly as /video validates its options: the frame files are read and
    checked first (the first frame's size picks the aspect), then every field. Nothing is spent."""
    fit_limit_from_args(args)
    first = read_frame(args.first_frame, "first_frame")
    last = read_frame(args.last_frame, "last_frame")
    if first and last:
        check_frame_pair(first, last)
    request = resolve_request(
        cfg,
        prompt=args.prompt,
        model=args.model,
        duration=args.duration,
        aspect=args.aspect,
        negative_prompt=args.negative,
        cfg_scale=args.cfg,
        variations=args.variations,
        output_format=args.format,
        quality=args.quality,
        first_frame_size=(first.width, first.height) if first else None,
        has_last_frame=last is not None,
        loop=args.loop,
        enhance=args.enhance,
    )
    return request, first, last


def dry_run(cfg: Config, args: argparse.Namespace) -> int:
    request, first, last = resolve_from_args(cfg, args)
    task_uuid = new_task_uuid()
    task: VideoInferenceTask = build_task(
        request,
        task_uuid=task_uuid,
        runware=cfg.runware,
        first_image=first.data_uri() if first else None,
        last_image=last.data_uri() if last else None,
    )
    # With --enhance the promptEnhance task goes first; its text then replaces positivePrompt.
    tasks = [enhance_task(task_uuid, request.prompt).to_wire()] if request.enhance else []
    tasks.append(task.to_wire())
    if args.json:
        print(json.dumps({"tasks": tasks}))
        return 0
    spec = cfg.models[request.model_key]
    reserve = micro_to_usd(request.enhance_reserve_micro)
    enhancer = f" (with {reserve} for the prompt enhancer)" if request.enhance else ""
    print(
        f"{spec.label}: {request.width}x{request.height}, {request.duration} s, "
        f"{request.variations} variation(s){', a loop (ends on its first frame)' if request.loop else ''}, "
        f"estimated {micro_to_usd(request.estimate_micro)}"
        f"{enhancer}. "
        + ("Runware's prompt enhancer rewrites the prompt first: its text replaces positivePrompt. "
           if request.enhance else "")
        + "Dry run: nothing sent, nothing reserved."
    )
    print(json.dumps({"tasks": tasks}, indent=2))
    return 0
