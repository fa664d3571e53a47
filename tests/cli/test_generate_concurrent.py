"""Several `klingbot generate` processes at once on one database (SPEC 2.1): each shows and delivers
only the job it created, into its own --out, and none waits on another's job. Real processes: the
simulator is one, each run is one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fakes.processes import cli_env, simulator_process

RUNS = 6
DAILY = 3
KEY = "k-concurrent"
CHILD_TIMEOUT_S = 120


def test_six_generate_runs_at_once_each_get_exactly_their_own_video(tmp_path: Path) -> None:
    # Generations of about 10 s (the last --speed wins): the admitted runs' jobs are at Runware together.
    with simulator_process(KEY, "--speed", "6") as port:
        config = tmp_path / "config.toml"
        config.write_text(
            f'[runware]\napi_url = "http://127.0.0.1:{port}/v1"\ndownload_hosts = ["127.0.0.1"]\n'
            "first_poll_after_s = 0.2\npoll_interval_s = 0.2\n"
            f'[storage]\npath = "{tmp_path / "shared.sqlite3"}"\n'
            f"[limits]\ndaily_videos = {DAILY}\nmax_concurrent = {RUNS}\n"
        )
        outs = [tmp_path / f"out{i}" for i in range(RUNS)]
        procs = [
            subprocess.Popen([sys.executable, "-m", "bot", "generate", f"run {i}: a lighthouse in a storm",
                              "--config", str(config), "--json", "--out", str(out)],
                             cwd=tmp_path, env=cli_env(RUNWARE_API_KEY=KEY), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for i, out in enumerate(outs)
        ]
        finished = []
        try:
            for proc in procs:
                stdout, stderr = proc.communicate(timeout=CHILD_TIMEOUT_S)  # none may hang
                finished.append((proc.returncode, stdout, stderr))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    codes = sorted(code for code, _, _ in finished)
    assert codes == [0] * DAILY + [3] * (RUNS - DAILY), [(c, e[-600:]) for c, _, e in finished]
    job_ids = set()
    for (code, stdout, stderr), out in zip(finished, outs, strict=True):
        line = json.loads(stdout.strip().splitlines()[-1])
        files = sorted(p.name for p in out.iterdir()) if out.exists() else []
        if code == 3:
            assert line["status"] == "refused" and line["job_id"] is None
            assert "daily" in stderr.lower()
            assert files == []
            continue
        # Exactly one line: its own job, no other run's job resumed or reported.
        json_lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
        assert len(json_lines) == 1, stdout
        assert line["status"] == "delivered" and line["error"] is None, line
        assert len(line["videos"]) == 1
        video = Path(line["videos"][0])
        assert video.parent.resolve() == out.resolve()
        assert files == [video.name] and f"job{line['job_id']}-" in video.name
        assert video.read_bytes()[4:8] == b"ftyp"
        job_ids.add(line["job_id"])
    assert len(job_ids) == DAILY
    assert not os.path.exists(tmp_path / "videos")  # nobody fell back to the default --out
