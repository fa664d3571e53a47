"""The enhancer in the core: the config key (runware.enhance_reserve_usd) and resolve_request with
enhance (the reserve in the estimate; a prompt over 300 characters refused, naming field and limit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import Config, ConfigError, load_config
from bot.errors import InvalidInput
from bot.requests import build_task, resolve_request


def test_the_reserve_key_defaults_to_a_cent_and_refuses_a_negative(tmp_path: Path) -> None:
    assert Config().runware.enhance_reserve_micro_usd == 10_000
    path = tmp_path / "config.toml"
    path.write_text("[runware]\nenhance_reserve_usd = 0.05\n")
    assert load_config(path, env={}).runware.enhance_reserve_micro_usd == 50_000
    path.write_text("[runware]\nenhance_reserve_usd = -0.01\n")
    with pytest.raises(ConfigError, match=r"runware\.enhance_reserve_usd = -0\.01: .*greater than or equal to 0"):
        load_config(path, env={})
    path.write_text('[runware]\nenhance_reserve_usd = "lots"\n')
    with pytest.raises(ConfigError, match=r"runware\.enhance_reserve_usd = 'lots'"):
        load_config(path, env={})


def test_enhance_adds_its_reserve_to_the_estimate() -> None:
    cfg = Config()
    plain = resolve_request(cfg, prompt="a fox")
    enhanced = resolve_request(cfg, prompt="a fox", enhance=True)
    assert (plain.enhance, plain.enhance_reserve_micro, plain.estimate_micro) == (False, 0, 350_000)
    assert (enhanced.enhance, enhanced.enhance_reserve_micro, enhanced.estimate_micro) == (True, 10_000, 360_000)
    task = build_task(enhanced, task_uuid="t", runware=cfg.runware, prompt="a fox, highly detailed")
    assert task.to_wire()["positivePrompt"] == "a fox, highly detailed"
    assert resolve_request(cfg, prompt="x" * 300, enhance=True).enhance
    assert resolve_request(cfg, prompt="x" * 301).prompt == "x" * 301  # the 300 limit is the enhancer's only


def test_a_long_prompt_with_enhance_names_the_field_its_length_and_the_limit() -> None:
    with pytest.raises(InvalidInput) as refused:
        resolve_request(Config(), prompt="x" * 301, enhance=True)
    assert refused.value.field == "prompt"
    assert str(refused.value) == ("`prompt`: is 301 characters long; allowed: at most 300 characters with enhance "
                                  "(the limit of Runware's prompt enhancer), or enhance off.")
    with pytest.raises(InvalidInput, match="`enhance`"):
        resolve_request(Config(), prompt="a fox", enhance="yes")
