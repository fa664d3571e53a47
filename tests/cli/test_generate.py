"""`klingbot generate` end to end in subprocesses: the sandbox (in-process simulator) and a
separate `klingbot simulator` process, checking the files written and the --json line."""

import os
import socket
import subprocess
import sys

import av
import pytest
from PIL import Image

from bot.db.records import JobRecord  # noqa: F401  (the package imports cleanly without discord)
from bot.simulator import run_simulator
from tests.fakes.processes import cli, cli_env, free_port, last_json, run_cli, simulator_process

MP4_BRAND = b"ftyp"


def frame(path, size, color):
    Image.new("RGB", size, color).save(path)
    return str(path)


@pytest.mark.parametrize("model", ["kling-2.5-turbo-pro", "kling-2.1-pro"])
def test_sandbox_generate_with_frames_and_three_variations(tmp_path, model):
    first = frame(tmp_path / "first.png", (1280, 720), (250, 120, 20))
    last = frame(tmp_path / "last.jpg", (1920, 1080), (20, 120, 250))
    out = tmp_path / "clips"
    proc = run_cli("generate", "--sandbox", "--json", "a slow dolly shot through a forest", "--model", model,
                   "--first-frame", first, "--last-frame", last, "--variations", "3", "--out", str(out),
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    line = last_json(proc.stdout)
    assert set(line) == {"job_id", "status", "task_uuid", "model", "videos", "seeds", "cost_usd", "error"}
    assert line["status"] == "delivered" and line["error"] is None
    assert line["model"] == {"kling-2.5-turbo-pro": "klingai:6@1", "kling-2.1-pro": "klingai:5@2"}[model]
    assert len(line["videos"]) == 3 and len(set(line["videos"])) == 3
    assert len(line["seeds"]) == 3 and all(isinstance(s, int) for s in line["seeds"])
    for path in line["videos"]:
        data = open(path, "rb").read()
        assert data[4:8] == MP4_BRAND and len(data) > 1000
        assert os.path.dirname(path) == str(out)
    # The simulator's prices: $0.07/s (2.5 Turbo Pro) and $0.098/s (2.1 Pro), 5 s x 3 variations.
    expected = {"kling-2.5-turbo-pro": 1.05, "kling-2.1-pro": 1.47}[model]
    assert line["cost_usd"] == pytest.approx(expected, abs=1e-9)
    # Sandbox jobs live in their own database.
    assert (tmp_path / "data" / "klingbot.sandbox.sqlite3").exists()
    assert not (tmp_path / "data" / "klingbot.sqlite3").exists()


def test_sandbox_limit_refusal_exits_3_naming_daily_limit(tmp_path):
    (tmp_path / "config.toml").write_text("[limits]\ndaily_videos = 1\n")
    first = run_cli("generate", "--sandbox", "--json", "a fox", "--out", str(tmp_path / "v"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = run_cli("generate", "--sandbox", "--json", "another fox", cwd=tmp_path)
    assert second.returncode == 3
    assert "daily" in second.stderr.lower() and "1" in second.stderr and "resets" in second.stderr
    refused = last_json(second.stdout)
    assert refused["status"] == "refused" and refused["job_id"] is None


def test_generate_against_a_separate_simulator_process(tmp_path):
    with simulator_process("k-123") as port:
        (tmp_path / "config.toml").write_text(
            f'[runware]\napi_url = "http://127.0.0.1:{port}/v1"\ndownload_hosts = ["127.0.0.1"]\n'
            "first_poll_after_s = 0.2\npoll_interval_s = 0.2\n"
        )
        proc = run_cli("generate", "--json", "a lighthouse in a storm", "--duration", "10",
                       cwd=tmp_path, env=cli_env(RUNWARE_API_KEY="k-123"))
        assert proc.returncode == 0, proc.stderr
        line = last_json(proc.stdout)
        assert line["status"] == "delivered"
        assert line["cost_usd"] == pytest.approx(0.70)  # the simulator's cost for 10 s of klingai:6@1
        assert "k-123" not in proc.stdout + proc.stderr
        # A wrong key is refused by the simulator: a clear error, exit 1, the key not echoed.
        bad = run_cli("generate", "--json", "a lighthouse", cwd=tmp_path, env=cli_env(RUNWARE_API_KEY="nope-999"))
        assert bad.returncode == 1
        assert "nope-999" not in bad.stdout + bad.stderr


def test_fit_mb_writes_each_video_fitted_too(tmp_path):
    # The simulator makes ~0.5 MiB results at 1280x720 for 5 s; --fit-mb 0.2 fits each to 0.2 MiB.
    with simulator_process("k-fit", "--video-mb", "0.5") as port:
        (tmp_path / "config.toml").write_text(
            f'[runware]\napi_url = "http://127.0.0.1:{port}/v1"\ndownload_hosts = ["127.0.0.1"]\n'
            "first_poll_after_s = 0.2\npoll_interval_s = 0.2\n"
        )
        proc = run_cli("generate", "--json", "a lighthouse in a storm", "--fit-mb", "0.2", "--out", "out",
                       cwd=tmp_path, env=cli_env(RUNWARE_API_KEY="k-fit"))
    assert proc.returncode == 0, proc.stderr
    line = last_json(proc.stdout)
    [original] = line["videos"]
    [fitted] = line["fitted"]
    assert (tmp_path / original).stat().st_size > 0.4 * 1024 * 1024
    assert fitted.endswith(".fit.mp4") and (tmp_path / fitted).stat().st_size <= 0.2 * 1024 * 1024
    container = av.open(str(tmp_path / fitted))
    assert sum(1 for _ in container.decode(video=0)) == 150  # all 5 s at 30 fps
    bad = run_cli("generate", "a fox", "--fit-mb", "0", "--sandbox", cwd=tmp_path)
    assert bad.returncode == 2 and "--fit-mb" in bad.stderr


def test_missing_key_without_sandbox_is_a_clear_error(tmp_path):
    proc = run_cli("generate", "a fox", cwd=tmp_path)
    assert proc.returncode == 1
    assert "RUNWARE_API_KEY" in proc.stderr
    assert not (tmp_path / "data").exists()  # refused before any database was opened


def test_a_result_withheld_by_the_content_check_is_reported_not_silent(tmp_path):
    # The simulator flags prompts with SIM_NSFW: the video is withheld, the cost still settles.
    proc = run_cli("generate", "--sandbox", "--json", "SIM_NSFW a fox", "--out", str(tmp_path / "v"),
                   cwd=tmp_path)
    line = last_json(proc.stdout)
    assert line["videos"] == [] and line["cost_usd"] == pytest.approx(0.35)
    assert line["error"] and "content check" in line["error"]
    assert proc.returncode == 1  # no video was written: not a success
    plain = run_cli("generate", "--sandbox", "SIM_NSFW a fox", "--out", str(tmp_path / "v"), cwd=tmp_path)
    assert plain.returncode == 1 and "content check" in plain.stdout


def test_a_video_that_could_not_be_downloaded_is_reported_with_its_link(tmp_path):
    with simulator_process("k-1") as port:
        # download_hosts left at its default (*.runware.ai): the simulator's 127.0.0.1 links are refused.
        (tmp_path / "config.toml").write_text(
            f'[runware]\napi_url = "http://127.0.0.1:{port}/v1"\nfirst_poll_after_s = 0.2\npoll_interval_s = 0.2\n'
        )
        proc = run_cli("generate", "--json", "a lighthouse in a storm", cwd=tmp_path,
                       env=cli_env(RUNWARE_API_KEY="k-1"))
        line = last_json(proc.stdout)
        assert line["videos"] == []
        assert line["error"] and f"http://127.0.0.1:{port}/video/" in line["error"]
        assert proc.returncode == 1


def test_simulator_command_prints_its_url_once_it_listens(tmp_path):
    import re

    import httpx

    sim = subprocess.Popen([sys.executable, "-m", "bot", "simulator", "--port", "0", "--api-key", "k-2"],
                           env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = sim.stdout.readline()
        assert "Runware simulator at" in line
        url = re.search(r"http://\S+/v1", line).group(0)
        assert not url.endswith(":0/v1")  # the port it really listens on
        # The line means "ready": the server answers at once, no waiting.
        answer = httpx.post(url, json=[{"taskType": "ping"}], headers={"Authorization": "Bearer k-2"})
        assert answer.status_code == 200 and answer.json()["data"][0]["pong"] is True
    finally:
        sim.terminate()
        sim.wait(timeout=10)


def test_generate_beside_a_bot_with_webhooks_on_polls_instead_of_taking_the_webhook_port(tmp_path):
    port = free_port()
    sim = subprocess.Popen([sys.executable, "-m", "bot", "simulator", "--port", str(port), "--api-key", "k-3",
                            "--speed", "50"], env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    bot_receiver = socket.socket()  # the running bot's webhook receiver holds webhook_listen
    try:
        bot_receiver.bind(("127.0.0.1", 0))
        bot_receiver.listen()
        hook_port = bot_receiver.getsockname()[1]
        assert "Runware simulator at" in sim.stdout.readline()
        (tmp_path / "config.toml").write_text(
            f'[runware]\napi_url = "http://127.0.0.1:{port}/v1"\ndownload_hosts = ["127.0.0.1"]\n'
            "first_poll_after_s = 0.2\npoll_interval_s = 0.2\n"
            f'webhook_public_url = "https://bot.example.com/hook"\nwebhook_listen = "127.0.0.1:{hook_port}"\n'
        )
        # The operator's shell has the Runware key; the webhook secret lives in the bot's environment.
        proc = run_cli("generate", "--json", "a lighthouse in a storm", cwd=tmp_path,
                       env=cli_env(RUNWARE_API_KEY="k-3"))
        assert proc.returncode == 0, proc.stderr
        line = last_json(proc.stdout)
        assert line["status"] == "delivered" and len(line["videos"]) == 1
    finally:
        bot_receiver.close()
        sim.terminate()
        sim.wait(timeout=10)


def test_an_out_folder_that_cannot_be_made_exits_2_before_anything_is_reserved(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run_cli("generate", "--sandbox", "--json", "a fox", "--out", str(blocker / "videos"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "`--out`" in proc.stderr and "cannot be created" in proc.stderr
    assert last_json(proc.stdout)["status"] == "invalid"
    assert not (tmp_path / "data").exists()  # no database, so nothing was reserved


async def test_loop_sends_the_first_frame_as_the_last_one_uploaded_once(tmp_path):
    # The simulator in this process, the CLI a process of its own: the task Runware receives is asserted.
    async with run_simulator(api_key="k-loop", base_generation_s=0.5) as sim:
        (tmp_path / "config.toml").write_text(
            f'[runware]\napi_url = "{sim.url}"\ndownload_hosts = ["127.0.0.1"]\n'
            "first_poll_after_s = 0.2\npoll_interval_s = 0.2\n"
        )
        first = frame(tmp_path / "first.png", (1280, 720), (250, 120, 20))
        code, out, err = await cli(tmp_path, "generate", "--json", "a lantern swaying", "--first-frame", first,
                                   "--loop", "--out", str(tmp_path / "clips"),
                                   env_extra={"RUNWARE_API_KEY": "k-loop"})
        assert code == 0, err
        assert last_json(out)["status"] == "delivered"
        [task] = sim.stats.tasks.values()
        [image_uuid] = sim.images
        assert task.body["inputs"] == {"frameImages": [{"image": image_uuid, "frame": "first"},
                                                       {"image": image_uuid, "frame": "last"}]}
        assert sim.stats.upload_tasks == 1
