"""compose.yaml against the compose specification's JSON schema (as shipped by check-jsonschema, run
as its own command line), and what an operator relies on in it: the bot's volume and healthcheck, the
optional profiles, the secrets named in .env.example, Prometheus scraping the bot."""

import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
SECRETS = {"DISCORD_TOKEN", "RUNWARE_API_KEY", "RUNWARE_WEBHOOK_SECRET", "KLINGBOT_DATABASE_URL"}


def load_yaml(path: Path):
    return YAML(typ="safe").load(path.read_text())


def check_compose_schema(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True, text=True, timeout=60,
    )


@pytest.fixture(scope="module")
def compose():
    return load_yaml(ROOT / "compose.yaml")


def test_compose_file_passes_the_compose_spec_schema():
    result = check_compose_schema(ROOT / "compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "validation done" in result.stdout


@pytest.mark.parametrize("breakage", [
    ("    healthcheck:\n", "    healthcheck:\n      intervall: 30s\n"),   # a misspelt key
    ("    restart: unless-stopped\n", "    restart: [unless-stopped]\n"),  # a wrong type
])
def test_the_schema_check_rejects_a_broken_compose_file(tmp_path, breakage):
    text = (ROOT / "compose.yaml").read_text()
    old, new = breakage
    assert old in text
    broken = tmp_path / "compose.yaml"
    broken.write_text(text.replace(old, new, 1))
    result = check_compose_schema(broken)
    assert result.returncode != 0
    assert "Schema validation errors" in result.stdout + result.stderr


def test_bot_service_has_its_volume_healthcheck_and_secrets(compose):
    bot = compose["services"]["bot"]
    assert "profiles" not in bot  # the bot always starts; the others are opt-in
    assert bot["build"] == "."
    assert bot["healthcheck"]["test"] == ["CMD", "klingbot", "health"]
    assert any(v.split(":")[1] == "/data" and v.split(":")[0] in compose["volumes"] for v in bot["volumes"])
    env = bot["environment"]
    assert SECRETS <= set(env)
    for name in SECRETS:  # taken from .env / the environment, never written into the file
        assert env[name].startswith("${" + name), env[name]
    config_mount = next(v for v in bot["volumes"] if v.split(":")[1] == env["KLINGBOT_CONFIG"])
    assert config_mount.endswith(":ro")


def test_postgres_and_prometheus_are_optional_profiles(compose):
    services = compose["services"]
    assert services["postgres"]["profiles"] == ["postgres"]
    assert services["prometheus"]["profiles"] == ["prometheus"]
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]


def test_env_example_names_the_secrets_without_values():
    entries = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, line
            entries[name.strip()] = value
    assert SECRETS <= set(entries)
    assert all(value == "" for value in entries.values()), entries


def test_prometheus_scrapes_the_bot_where_it_listens(compose):
    prometheus = compose["services"]["prometheus"]
    mount = next(v for v in prometheus["volumes"] if v.split(":")[1] == "/etc/prometheus/prometheus.yml")
    scrape = load_yaml(ROOT / mount.split(":")[0])
    job = next(j for j in scrape["scrape_configs"] if j["job_name"] == "klingbot")
    assert job["metrics_path"] == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert targets == [f"bot:{port}" for port in compose["services"]["bot"]["expose"]]
