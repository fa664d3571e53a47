import re
from pathlib import Path

import pytest

from bot.config import BUILTIN_MODELS, Config, ConfigError, load_config
from bot.sandbox import sandbox_db_path
from bot.usd import micro_to_decimal_str, micro_to_usd, usd_to_micro

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_default_file_means_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, env={})
    assert cfg == Config()
    assert cfg.limits.monthly_micro_usd == 5_000_000
    assert cfg.limits.global_daily_micro_usd == 50_000_000
    assert cfg.runware.poll_batch_size == 50
    assert cfg.models["kling-2.5-turbo-pro"].micro_usd_per_second == 70_000
    assert cfg.models["kling-2.1-pro"].text_to_video is False
    assert cfg.secrets.discord_token is None


def test_explicit_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_example_file_loads_and_equals_defaults():
    cfg = load_config(ROOT / "config.example.toml", env={})
    assert cfg.model_dump() == Config().model_dump()


def test_env_var_names_the_file(tmp_path):
    path = write(tmp_path, "[limits]\ndaily_videos = 9\n")
    cfg = load_config(None, env={"KLINGBOT_CONFIG": str(path)})
    assert cfg.limits.daily_videos == 9


def test_secrets_come_from_env_and_are_hidden(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, env={"DISCORD_TOKEN": "tok-123", "RUNWARE_API_KEY": "key-456"})
    assert cfg.secrets.discord_token.get_secret_value() == "tok-123"
    assert "tok-123" not in repr(cfg) and "key-456" not in repr(cfg)
    assert "key-456" not in str(cfg.model_dump())


def test_secrets_in_file_are_refused(tmp_path):
    path = write(tmp_path, '[secrets]\ndiscord_token = "x"\n')
    with pytest.raises(ConfigError, match="secrets"):
        load_config(path, env={})


def test_money_becomes_micro_and_unlimited_lifts(tmp_path):
    path = write(tmp_path, '[limits]\nmonthly_usd = 12.345678\nguild_monthly_usd = "unlimited"\n'
                           'daily_videos = "unlimited"\nglobal_daily_usd = 7\n')
    cfg = load_config(path, env={})
    assert cfg.limits.monthly_micro_usd == 12_345_678
    assert cfg.limits.guild_monthly_micro_usd is None
    assert cfg.limits.daily_videos is None
    assert cfg.limits.global_daily_micro_usd == 7_000_000


def test_premium_keys(tmp_path):
    assert Config().premium.enabled is False  # off by default: no SKU
    path = write(tmp_path, '[premium]\nsku_ids = [1300000000000000001, "1300000000000000002"]\n'
                           'daily_videos = 20\nmonthly_usd = 12.50\nmax_concurrent = "unlimited"\n')
    premium = load_config(path, env={}).premium
    assert premium.enabled and premium.sku_ids == [1300000000000000001, 1300000000000000002]
    assert (premium.daily_videos, premium.monthly_micro_usd, premium.max_concurrent) == (20, 12_500_000, "unlimited")
    path = write(tmp_path, '[premium]\nsku_ids = [7]\ndaily_videos = "default"\nmonthly_usd = "Unlimited"\n')
    premium = load_config(path, env={}).premium
    assert (premium.daily_videos, premium.monthly_micro_usd, premium.max_concurrent) == (None, "unlimited", None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[limits]\nfoo = 1\n", "unknown key 'limits.foo'"),
        ("[nope]\nx = 1\n", "unknown key 'nope'"),
        ('[limits]\ndaily_videos = "lots"\n', "limits.daily_videos = 'lots'"),
        ('[limits]\nmonthly_usd = "five"\n', "limits.monthly_usd = 'five'"),
        ("[runware]\noutput_ttl_s = 10\n", "runware.output_ttl_s = 10"),
        ('[runware]\nsafety_mode = "off"\n', "runware.safety_mode = 'off'"),
        ("[runware]\npoll_batch_size = 0\n", "runware.poll_batch_size = 0"),
        ('[runware]\nwebhook_listen = "nowhere"\n', "runware.webhook_listen = 'nowhere'"),
        ('[progress]\ntimezone = "Mars/Olympus"\n', "progress.timezone = 'Mars/Olympus'"),
        ("[discord]\nallow_dms = 3\n", "discord.allow_dms = 3"),
        ("[delivery]\ntranscode_concurrency = 0\n", "delivery.transcode_concurrency = 0"),
        ("[delivery]\nfit = true\n", "unknown key 'delivery.fit'"),
        ('[models."kling-2.5-turbo-pro"]\nfps = 0\n', "models.kling-2.5-turbo-pro.fps = 0"),
        ('[models."kling-2.5-turbo-pro"]\nbogus = 1\n', "unknown key 'models.kling-2.5-turbo-pro.bogus'"),
        ('[models.new]\nmodel_id = "x:1@1"\n', "models.new.label: required key is missing"),
        ("[limits\n", "not valid TOML"),
        ("[premium]\nsku_id = [1]\n", "unknown key 'premium.sku_id'"),
        ('[premium]\nsku_ids = ["abc"]\n', "premium.sku_ids.0 = 'abc': expected a Discord SKU id"),
        ("[premium]\nsku_ids = [0]\n", "premium.sku_ids.0 = 0: expected a Discord SKU id"),
        ("[premium]\nsku_ids = 123\n", "premium.sku_ids = 123"),
        ('[premium]\ndaily_videos = "lots"\n',
         "premium.daily_videos = 'lots': expected a whole number, \"unlimited\" or \"default\""),
        ("[premium]\ndaily_videos = -1\n", "premium.daily_videos = -1: expected 0 or more"),
        ("[premium]\nmax_concurrent = 2.5\n", "premium.max_concurrent = 2.5: expected a whole number"),
        ('[premium]\nmonthly_usd = "twenty"\n',
         "premium.monthly_usd = 'twenty': expected an amount in USD, \"unlimited\" or \"default\""),
        ("[premium]\nmonthly_usd = -5\n", "premium.monthly_usd = -5: expected 0 or more"),
        ("[limits]\ndaily_videos = -3\n", "limits.daily_videos = -3: expected 0 or more"),
        ("[limits]\nmax_concurrent = -1\n", "limits.max_concurrent = -1: expected 0 or more"),
        ("[limits]\nmonthly_usd = -1\n", "limits.monthly_usd = -1: expected 0 or more USD"),
        ("[limits]\nglobal_daily_usd = -0.5\n", "limits.global_daily_usd = -0.5: expected 0 or more USD"),
    ],
)
def test_bad_files_name_key_value_and_file(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_registry_merges_key_by_key_and_adds_models(tmp_path):
    path = write(
        tmp_path,
        '[models."kling-2.5-turbo-pro"]\nusd_per_second = 0.08\n'
        '[models."kling-2.5-turbo-pro".sizes]\n"16:9" = [1920, 1080]\n'
        '[models.mini]\nmodel_id = "vendor:1@1"\nlabel = "Mini"\nsizes = { "1:1" = [512, 512] }\n'
        'durations = [10, 5]\nfps = 24\ntext_to_video = true\nlast_frame = false\nusd_per_second = 0.01\n',
    )
    cfg = load_config(path, env={})
    turbo = cfg.models["kling-2.5-turbo-pro"]
    assert turbo.micro_usd_per_second == 80_000
    assert turbo.model_id == BUILTIN_MODELS["kling-2.5-turbo-pro"]["model_id"]  # untouched keys kept
    assert turbo.sizes == {"16:9": (1920, 1080)}
    assert cfg.models["mini"].durations == [5, 10]
    assert "kling-2.1-pro" in cfg.models


def test_money_helpers():
    assert usd_to_micro("0.0000005") == 1  # half up
    assert usd_to_micro(0.35) == 350_000
    assert micro_to_usd(350_000) == "$0.35"
    assert micro_to_usd(1_234_567) == "$1.234567"
    assert micro_to_usd(-5_000_000) == "-$5.00"
    assert micro_to_decimal_str(350_000) == "0.350000"
    assert sandbox_db_path("data/klingbot.sqlite3") == "data/klingbot.sandbox.sqlite3"


@pytest.mark.parametrize("section,key", [("runware", "api_url"), ("discord", "api_base_url")])
def test_endpoints_that_carry_a_secret_must_use_https_except_on_loopback(tmp_path, section, key):
    # The Runware key and the Discord token travel in these requests' headers: never in clear text.
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, f'[{section}]\n{key} = "http://api.example.com/v1"\n'), env={})
    assert f"{section}.{key}" in str(err.value) and "https" in str(err.value)
    for ok in ("http://127.0.0.1:8787/v1", "http://localhost:9/v1", "https://proxy.example.com/v1"):
        cfg = load_config(write(tmp_path, f'[{section}]\n{key} = "{ok}"\n'), env={})
        assert getattr(getattr(cfg, section), key) == ok
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, f'[{section}]\n{key} = "ftp://127.0.0.1/v1"\n'), env={})


@pytest.mark.parametrize(("shards", "error"), [
    ("shard_count = 4\nshard_ids = [0, 4]", "discord.shard_ids = [0, 4]"),
    ("shard_ids = [0]", "shard_count is 0"),
    ("shard_count = 2\nshard_ids = [1, 1]", "distinct shard numbers"),
    ("shard_count = -1", "discord.shard_count = -1"),
])
def test_shard_keys_are_checked(tmp_path, shards, error):
    path = tmp_path / "config.toml"
    path.write_text(f"[discord]\n{shards}\n")
    with pytest.raises(ConfigError, match=re.escape(error)):
        load_config(path, env={})


def test_shards_and_the_postgres_url(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[discord]\nshard_count = 4\nshard_ids = [1, 3]\n[storage]\nurl = "postgresql://bot@db:5432/k"\n')
    cfg = load_config(path, env={})
    assert (cfg.discord.shard_count, cfg.discord.shard_ids) == (4, [1, 3])
    assert cfg.database.get_secret_value() == "postgresql://bot@db:5432/k"
    env_url = "postgresql://bot:pw@other:5432/k"
    cfg = load_config(path, env={"KLINGBOT_DATABASE_URL": env_url})
    assert cfg.database.get_secret_value() == env_url and "pw" not in repr(cfg)
    path.write_text("[storage]\npath = \"db/bot.sqlite3\"\n")
    assert load_config(path, env={}).database == "db/bot.sqlite3"
