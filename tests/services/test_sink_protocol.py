"""Both faces implement the whole sink protocol: every method, same parameters, same sync/async."""

import inspect

import pytest

from bot.cli.generate_run import TerminalSink
from bot.discordbot.sink import DiscordSink
from bot.services.sink import JobSink

PROTOCOL_METHODS = sorted(
    name for name, value in vars(JobSink).items() if inspect.isfunction(value) and not name.startswith("_")
)


def test_the_protocol_names_every_method_the_engine_calls():
    assert PROTOCOL_METHODS == ["alert", "deliver", "download_cap", "download_dir", "fit_limit", "handles", "progress"]


@pytest.mark.parametrize("sink_class", [DiscordSink, TerminalSink])
@pytest.mark.parametrize("name", PROTOCOL_METHODS)
def test_each_sink_implements_the_protocol(sink_class, name):
    wanted = getattr(JobSink, name)
    method = getattr(sink_class, name, None)
    assert method is not None, f"{sink_class.__name__} has no {name}()"
    assert inspect.iscoroutinefunction(method) == inspect.iscoroutinefunction(wanted), name
    assert list(inspect.signature(method).parameters) == list(inspect.signature(wanted).parameters), name
