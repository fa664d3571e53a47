"""What an operator and CI rely on outside the code: the Dockerfile, .ci/run, the README's two
commands and the example config."""

import re
import tomllib
from pathlib import Path

from bot.config import Config

ROOT = Path(__file__).resolve().parents[1]
README_COMMANDS = [
    'pip install -e . && klingbot generate --sandbox "a red fox running through fresh snow"',
    'pip install -e ".[dev]" && python -m pytest',
]


def code_blocks(text):
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S)]


def test_readme_opens_with_the_two_commands():
    blocks = code_blocks((ROOT / "README.md").read_text())
    assert blocks[:2] == README_COMMANDS


def test_ci_runs_exactly_the_readme_test_command_in_a_fresh_venv():
    script = (ROOT / ".ci" / "run").read_text()
    lines = [line.strip() for line in script.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert "python3 -m venv .venv" in lines
    assert ". .venv/bin/activate" in lines
    assert lines[-1] == README_COMMANDS[1]


def test_dockerfile_runs_as_non_root_with_a_volume_and_a_healthcheck():
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert any(line.startswith("FROM python:3.11-slim") for line in lines)
    assert any(line.startswith("VOLUME") and "/data" in line for line in lines)
    assert any(line.startswith("HEALTHCHECK") and '"klingbot", "health"' in line for line in lines)
    for secret in ("DISCORD_TOKEN", "RUNWARE_API_KEY", "RUNWARE_WEBHOOK_SECRET"):
        assert not any(line.startswith(("ENV", "ARG")) and secret in line for line in lines)


def test_example_config_documents_every_key():
    example = tomllib.loads((ROOT / "config.example.toml").read_text())
    documented = {f"{section}.{key}" for section, table in example.items() if section != "models"
                  for key in table}
    expected = set()
    for section, model in Config.model_fields.items():
        if section in ("models", "secrets", "source"):
            continue
        for name, field in model.annotation.model_fields.items():
            expected.add(f"{section}.{field.alias or name}")
    assert documented == expected
    spec_keys = {"model_id", "label", "sizes", "durations", "fps", "text_to_video", "last_frame", "usd_per_second"}
    for entry in example["models"].values():
        assert set(entry) == spec_keys


def test_gitignore_keeps_local_state_out():
    ignored = (ROOT / ".gitignore").read_text().split()
    for entry in ("config.toml", "data/", "videos/"):
        assert entry in ignored
