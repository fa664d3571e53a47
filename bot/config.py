"""Configuration: pydantic models loaded once from TOML and the environment.

Money in the file is USD (decimals); it is converted to integer micro-USD on load, so no float
ever reaches the ledger. A limit written as the string "unlimited" becomes ``None``.
"""

from __future__ import annotations

import copy
import logging
import os
import tomllib
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bot.config_premium import PremiumConfig  # the [premium] table
from bot.runware.models import OutputFormat, SafetyMode
from bot.usd import MICRO, usd_to_micro

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = "config.toml"
SAFETY_MODES: tuple[SafetyMode, ...] = get_args(SafetyMode)  # weakest first
ASPECTS = ("16:9", "9:16", "1:1")
OUTPUT_FORMATS: tuple[OutputFormat, ...] = get_args(OutputFormat)


class ConfigError(Exception):
    """A config file that cannot be used; the message names the key, the value and the file."""


def _unlimited_or(kind: str):
    def parse(value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() == "unlimited"):
            return None
        if kind == "usd":
            micro = usd_to_micro(value)
            if micro < 0:
                raise ValueError('expected 0 or more USD, or "unlimited"')
            return micro
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError('expected a whole number or "unlimited"')
        if value < 0:
            raise ValueError('expected 0 or more, or "unlimited"')
        return value

    return BeforeValidator(parse)


MicroUSDLimit = Annotated[int | None, _unlimited_or("usd")]
CountLimit = Annotated[int | None, _unlimited_or("count")]
MicroUSD = Annotated[int, BeforeValidator(usd_to_micro)]


def _secure_endpoint(value: str) -> str:
    """An endpoint the bot sends a secret to (the Runware key, the Discord token): https, or plain
    http only on loopback (a local simulator or fake), so a typo cannot put a secret on the wire."""
    from urllib.parse import urlsplit

    from bot.hosts import is_loopback

    parts = urlsplit(value.strip())
    host = (parts.hostname or "").lower()
    if not host or not (parts.scheme == "https" or (parts.scheme == "http" and is_loopback(host))):
        raise ValueError("expected an https:// URL (plain http:// only on a loopback host)")
    return value


def _host_port(value: str, lowest_port: int = 1) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not lowest_port <= int(port) < 65536:
        raise ValueError('expected "HOST:PORT", e.g. "127.0.0.1:8788"')
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class DiscordConfig(_Section):
    api_base_url: str = "https://discord.com/api/v10"
    dev_guild_id: int = 0
    allow_dms: bool = False
    attachment_hosts: list[str] = ["cdn.discordapp.com", "media.discordapp.net"]
    ops_channel_id: int = 0
    shard_count: int = Field(0, ge=0)  # 0: one gateway connection; N: AutoShardedBot with N shards
    shard_ids: list[int] = []          # the shards of shard_count this process runs ([] = all)

    @field_validator("shard_ids")
    @classmethod
    def _shard_ids(cls, ids: list[int], info: ValidationInfo) -> list[int]:
        count = info.data.get("shard_count", 0)
        if ids and not (count and len(set(ids)) == len(ids) and all(0 <= i < count for i in ids)):
            raise ValueError(f"distinct shard numbers from 0 to shard_count - 1 (shard_count is {count})")
        return ids

    _api_base_url = field_validator("api_base_url")(_secure_endpoint)


class RunwareConfig(_Section):
    api_url: str = "https://api.runware.ai/v1"
    first_poll_after_s: float = Field(10.0, ge=0)
    poll_interval_s: float = Field(3.0, gt=0)
    poll_batch_size: int = Field(50, ge=1, le=500)
    job_deadline_s: float = Field(1800, gt=0)
    late_result_window_s: float = Field(86400, ge=0)
    request_timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(4, ge=0, le=20)
    webhook_public_url: str = ""
    webhook_listen: str = "127.0.0.1:8788"
    download_hosts: list[str] = ["*.runware.ai"]
    safety_mode: Literal["none", "fast", "full"] = "fast"
    output_ttl_s: int = Field(86400, ge=60)
    # Reserved with a job whose prompt Runware's enhancer rewrites; the bound of an unanswered call.
    enhance_reserve_micro_usd: MicroUSD = Field(10_000, alias="enhance_reserve_usd", ge=0)

    _api_url = field_validator("api_url")(_secure_endpoint)

    @field_validator("webhook_listen")
    @classmethod
    def _webhook_listen(cls, value: str) -> str:
        return _host_port(value)


class MetricsConfig(_Section):
    listen: str = ""  # "HOST:PORT" serves /metrics (SPEC 2.4); port 0 picks a free one; empty: off

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _host_port(value, lowest_port=0) if value else value


class StorageConfig(_Section):
    path: str = "data/klingbot.sqlite3"
    url: SecretStr = SecretStr("")  # may carry a password: never printed; KLINGBOT_DATABASE_URL overrides it

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        if (text := value.get_secret_value().strip()) and not text.lower().startswith(("postgresql://", "postgres://")):
            raise ValueError('expected "" (SQLite at storage.path) or a "postgresql://user@host:5432/db" URL')
        return SecretStr(text)


class LimitsConfig(_Section):
    """Defaults for every member of every guild. ``None`` means unlimited; money is micro-USD."""
    daily_videos: CountLimit = 5
    monthly_micro_usd: MicroUSDLimit = Field(5 * MICRO, alias="monthly_usd")
    max_concurrent: CountLimit = 2
    guild_monthly_micro_usd: MicroUSDLimit = Field(100 * MICRO, alias="guild_monthly_usd")
    global_daily_micro_usd: MicroUSDLimit = Field(50 * MICRO, alias="global_daily_usd")
    max_in_flight: int = Field(20, ge=1)
    confirm_above_micro_usd: MicroUSD = Field(1 * MICRO, alias="confirm_above_usd", ge=0)  # 0 = never ask


class ProgressConfig(_Section):
    min_edit_interval_s: float = Field(8.0, ge=0)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError('expected an IANA time zone such as "UTC" or "Europe/Berlin"') from exc
        return value

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


class DeliveryConfig(_Section):  # a video over the upload limit is transcoded (PyAV) so it stays in Discord
    fit_to_limit: bool = True
    transcode_concurrency: int = Field(1, ge=1, le=16)  # worker processes at once


class ModelSpec(_Section):
    """One entry of the model registry: everything the bot knows about a Runware model."""

    model_id: str
    label: str
    sizes: dict[str, tuple[int, int]]
    durations: list[int]
    fps: int = Field(gt=0)
    text_to_video: bool
    last_frame: bool
    micro_usd_per_second: MicroUSD = Field(alias="usd_per_second")

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, value: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        if not value:
            raise ValueError("at least one size is needed")
        for aspect, (width, height) in value.items():
            if width <= 0 or height <= 0:
                raise ValueError(f"size for {aspect!r} must be positive, got {width}x{height}")
        return value

    @field_validator("durations")
    @classmethod
    def _durations(cls, value: list[int]) -> list[int]:
        if not value or any(d <= 0 for d in value):
            raise ValueError("expected a non-empty list of positive whole seconds")
        return sorted(set(value))

    def estimate_micro_usd(self, duration_s: int, variations: int) -> int:
        return self.micro_usd_per_second * duration_s * variations


# The registry's built-in entries (SPEC 9). Config tables merge over these key by key.
BUILTIN_MODELS: dict[str, dict[str, Any]] = {
    "kling-2.5-turbo-pro": {
        "model_id": "klingai:6@1",
        "label": "Kling 2.5 Turbo Pro",
        "sizes": {"16:9": [1280, 720], "9:16": [720, 1280], "1:1": [720, 720]},
        "durations": [5, 10],
        "fps": 30,
        "text_to_video": True,
        "last_frame": True,
        "usd_per_second": "0.07",
    },
    "kling-2.1-pro": {
        "model_id": "klingai:5@2",
        "label": "Kling 2.1 Pro",
        "sizes": {"16:9": [1920, 1080], "9:16": [1080, 1920], "1:1": [1080, 1080]},
        "durations": [5, 10],
        "fps": 24,
        "text_to_video": False,
        "last_frame": True,
        "usd_per_second": "0.10",
    },
}
DEFAULT_MODEL_KEY = "kling-2.5-turbo-pro"


class Secrets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    discord_token: SecretStr | None = None
    runware_api_key: SecretStr | None = None
    runware_webhook_secret: SecretStr | None = None
    database_url: SecretStr | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str] | None = None) -> Secrets:
        env = os.environ if env is None else env

        def get(name: str) -> SecretStr | None:
            value = env.get(name, "").strip()
            return SecretStr(value) if value else None

        return cls(
            discord_token=get("DISCORD_TOKEN"),
            runware_api_key=get("RUNWARE_API_KEY"),
            runware_webhook_secret=get("RUNWARE_WEBHOOK_SECRET"),
            database_url=get("KLINGBOT_DATABASE_URL"),
        )


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    discord: DiscordConfig = DiscordConfig()
    runware: RunwareConfig = RunwareConfig()
    storage: StorageConfig = StorageConfig()
    limits: LimitsConfig = LimitsConfig()
    premium: PremiumConfig = PremiumConfig()
    progress: ProgressConfig = ProgressConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    metrics: MetricsConfig = MetricsConfig()
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    secrets: Secrets = Field(default_factory=Secrets, exclude=True)
    source: str = Field("(defaults)", exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _merge_registry(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            data["models"] = merge_models(data.get("models") or {})
        return data

    def model(self, key: str) -> ModelSpec:
        return self.models[key]

    @property
    def database(self) -> str | SecretStr:
        """For ``open_database``: the PostgreSQL URL (the env's, else storage.url), or storage.path."""
        url = self.secrets.database_url or self.storage.url
        return url if url.get_secret_value() else self.storage.path

    def with_overrides(self, **sections: Any) -> Config:
        """A copy with some fields replaced (used by --sandbox and tests)."""
        return self.model_copy(update=sections)


def merge_models(overrides: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(overrides, dict):
        raise ValueError("[models] must be a table of model tables")
    merged: dict[str, Any] = copy.deepcopy(BUILTIN_MODELS)
    for key, table in overrides.items():
        if isinstance(table, ModelSpec):
            merged[key] = table
            continue
        if not isinstance(table, dict):
            raise ValueError(f"[models.{key}] must be a table")
        merged[key] = {**merged.get(key, {}), **table}
    return merged


def resolve_config_path(cli_path: str | os.PathLike[str] | None, env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if cli_path:
        return Path(cli_path)
    if env.get("KLINGBOT_CONFIG"):
        return Path(env["KLINGBOT_CONFIG"])
    return Path(DEFAULT_CONFIG_PATH)


def _describe(error: dict[str, Any], data: dict[str, Any]) -> str:
    loc = [str(part) for part in error["loc"]]
    # pydantic adds the validator's function name for Annotated validators; keep real keys only.
    key = ".".join(p for p in loc if not p.startswith("function-"))
    value: Any = data
    for part in error["loc"]:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            value = None
            break
    msg = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"unknown key {key!r}"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    if key == "storage.url":  # never repeated: it may hold a password
        return f"{key} (value not shown): {msg}"
    return f"{key} = {value!r}: {msg}"


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
) -> Config:
    """Load config from TOML (``--config``, else ``KLINGBOT_CONFIG``, else ./config.toml) and secrets
    from the environment. A missing file means all defaults."""
    env_map = os.environ if env is None else env
    file = resolve_config_path(path, env_map)
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"{file}: cannot be read: {exc.strerror}") from exc
        source = str(file)
    else:
        if path:
            raise ConfigError(f"{file}: config file not found")
        log.info("no config file at %s: using defaults", file)
        source = "(defaults)"
    if "secrets" in data or "source" in data:
        bad = "secrets" if "secrets" in data else "source"
        raise ConfigError(f"{file}: unknown key {bad!r} (secrets come from the environment)")
    try:
        return Config.model_validate({**data, "secrets": Secrets.from_env(env_map), "source": source})
    except ValidationError as exc:
        problems = "; ".join(_describe(e, data) for e in exc.errors())
        raise ConfigError(f"{file}: {problems}") from None
    except ValueError as exc:
        raise ConfigError(f"{file}: {exc}") from None
