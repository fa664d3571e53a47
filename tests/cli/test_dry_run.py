"""`klingbot generate --dry-run` in a subprocess: validation, exit codes and the printed tasks."""

import base64
import io
import json
import os
import subprocess
import sys
import uuid

import pytest
from PIL import Image


def run_cli(*args, cwd, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWARE_", "DISCORD_", "KLINGBOT_"))}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def make_png(path, size, color=(200, 30, 30)):
    Image.new("RGB", size, color).save(path, format="PNG")
    return str(path)


def decode_data_uri(uri):
    head, _, data = uri.partition(",")
    assert head == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


@pytest.mark.parametrize(("model", "model_id", "size"), [
    ("kling-2.5-turbo-pro", "klingai:6@1", (1280, 720)),
    ("kling-2.1-pro", "klingai:5@2", (1920, 1080)),
])
def test_dry_run_json_with_first_and_last_frames(tmp_path, model, model_id, size):
    first = make_png(tmp_path / "first.png", (1600, 900))
    last = make_png(tmp_path / "last.png", (800, 450), (10, 10, 200))
    proc = run_cli("generate", "--dry-run", "--json", "a fox in the snow", "--model", model,
                   "--first-frame", first, "--last-frame", last, "--duration", "10", "--variations", "2",
                   "--cfg", "0.6", "--negative", "blurry", "--format", "MOV", "--quality", "70", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    (task,) = out["tasks"]
    uuid.UUID(task["taskUUID"], version=4)
    frames = task.pop("inputs")["frameImages"]
    assert [f["frame"] for f in frames] == ["first", "last"]
    assert decode_data_uri(frames[0]["image"]).size == (1600, 900)
    assert decode_data_uri(frames[1]["image"]).size == (800, 450)
    assert task == {
        "taskType": "videoInference", "taskUUID": task["taskUUID"], "deliveryMethod": "async",
        "outputType": "URL", "includeCost": True, "model": model_id,
        "positivePrompt": "a fox in the snow", "negativePrompt": "blurry",
        "width": size[0], "height": size[1], "duration": 10, "CFGScale": 0.6, "numberResults": 2,
        "outputFormat": "MOV", "outputQuality": 70, "ttl": 86400,
        "safety": {"checkContent": True, "mode": "fast"},
    }
    assert not (tmp_path / "data").exists()  # nothing reserved: no database was even created


def test_dry_run_loop_shows_the_first_frame_as_the_last_one_too(tmp_path):
    first = make_png(tmp_path / "first.png", (1280, 720))
    proc = run_cli("generate", "--dry-run", "--json", "a lantern swaying", "--first-frame", first, "--loop",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (task,) = json.loads(proc.stdout.strip().splitlines()[-1])["tasks"]
    [start, end] = task["inputs"]["frameImages"]
    assert (start["frame"], end["frame"]) == ("first", "last")
    assert start["image"] == end["image"] and decode_data_uri(start["image"]).size == (1280, 720)
    human = run_cli("generate", "--dry-run", "a lantern swaying", "--first-frame", first, "--loop", cwd=tmp_path)
    assert "a loop (ends on its first frame)" in human.stdout.partition("\n")[0]


@pytest.mark.parametrize(("frames", "words"), [
    ((), "`loop`: is on but no first_frame was given; allowed: loop only together with a first_frame"),
    (("--first-frame", "--last-frame"), "`loop`: is on and a last_frame was given; allowed: loop or a "
                                        "last_frame, not both: loop uses the first frame as the last."),
])
def test_loop_refusals_exit_2(tmp_path, frames, words):
    files = [arg for flag in frames for arg in (flag, make_png(tmp_path / f"{flag[2:]}.png", (1280, 720)))]
    proc = run_cli("generate", "--dry-run", "a lantern", "--loop", *files, cwd=tmp_path)
    assert proc.returncode == 2
    assert words in proc.stderr


def test_loop_on_a_model_without_last_frames_exits_2_naming_the_models_that_take_one(tmp_path):
    (tmp_path / "config.toml").write_text('[models."kling-2.1-pro"]\nlast_frame = false\n')
    first = make_png(tmp_path / "first.png", (1920, 1080))
    proc = run_cli("generate", "--dry-run", "a lantern", "--loop", "--first-frame", first, "--model",
                   "kling-2.1-pro", cwd=tmp_path)
    assert proc.returncode == 2
    assert ("`loop`: is on, but Kling 2.1 Pro takes no last frame; allowed: loop with a model that takes a "
            "last frame: Kling 2.5 Turbo Pro (kling-2.5-turbo-pro).") in proc.stderr


def test_kling_21_without_first_frame_exits_2_naming_it(tmp_path):
    proc = run_cli("generate", "--dry-run", "--json", "a fox", "--model", "kling-2.1-pro", cwd=tmp_path)
    assert proc.returncode == 2
    assert "first_frame" in proc.stderr and "is required" in proc.stderr


@pytest.mark.parametrize(("args", "words"), [
    (["--duration", "7"], "`duration` = 7"),
    (["--aspect", "4:3"], "`aspect` = '4:3'"),
    (["--cfg", "2"], "`cfg_scale`"),
    (["--variations", "9"], "`variations`"),
    (["--quality", "5"], "`quality`"),
    (["--format", "GIF"], "`format`"),
])
def test_invalid_flags_exit_2(tmp_path, args, words):
    proc = run_cli("generate", "--dry-run", "a fox", *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert words in proc.stderr and "allowed" in proc.stderr


def test_bad_frame_file_exits_2(tmp_path):
    fake = tmp_path / "photo.png"
    fake.write_text("not an image at all")
    proc = run_cli("generate", "--dry-run", "a fox", "--first-frame", str(fake), cwd=tmp_path)
    assert proc.returncode == 2
    assert "first_frame" in proc.stderr


def test_human_dry_run_prints_the_task_with_its_frame_inline(tmp_path):
    first = make_png(tmp_path / "f.png", (720, 1280))
    proc = run_cli("generate", "--dry-run", "a fox", "--first-frame", first, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary, _, body = proc.stdout.partition("\n")
    assert "Dry run: nothing sent, nothing reserved." in summary
    assert "720x1280" in summary  # aspect picked from the frame: 9:16
    (task,) = json.loads(body)["tasks"]
    uuid.UUID(task["taskUUID"], version=4)
    assert decode_data_uri(task["inputs"]["frameImages"][0]["image"]).size == (720, 1280)


def test_bad_config_exits_2_naming_key(tmp_path):
    (tmp_path / "config.toml").write_text("[limits]\nbogus = 1\n")
    proc = run_cli("generate", "--dry-run", "a fox", cwd=tmp_path)
    assert proc.returncode == 2
    assert "limits.bogus" in proc.stderr and "config.toml" in proc.stderr
