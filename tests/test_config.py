"""``Config``: defaults, validation, immutability, and the command line generated from it."""

from __future__ import annotations

import dataclasses
import logging
import math
import socket
import types
import typing

import pytest

import netserve
from netserve import ConfigError, NetserveError, cli
from netserve.config import DEFAULT_BIND, DEFAULT_HANDLER, Config, Option, options
from netserve.demo import ReverseHandler

pytestmark = pytest.mark.timeout(30)


def test_defaults_serve_the_demo_on_localhost_9999() -> None:
    config = Config()
    assert config.handler == DEFAULT_HANDLER == "netserve.demo:ReverseLineHandler"
    assert config.bind == (DEFAULT_BIND,) == ("localhost:9999",)
    assert config.udp is False
    assert config.log_level == "info"
    assert config.logging_level == logging.INFO


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("debug", logging.DEBUG),
        ("info", logging.INFO),
        ("warning", logging.WARNING),
        ("error", logging.ERROR),
    ],
)
def test_logging_level(level: str, expected: int) -> None:
    assert Config(log_level=level).logging_level == expected


def test_endpoints_parses_every_bind_address() -> None:
    config = Config(bind=("127.0.0.1:0", "[::1]:8080", "unix:/tmp/app.sock"))
    endpoints = config.endpoints()
    assert [e.family for e in endpoints] == [socket.AF_INET, socket.AF_INET6, socket.AF_UNIX]
    assert [e.address for e in endpoints] == [("127.0.0.1", 0), ("::1", 8080), "/tmp/app.sock"]


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"bind": ()}, "bind"),
        ({"handler": "no_colon"}, "handler"),
        ({"handler": ""}, "handler"),
        ({"log_level": "loud"}, "log_level"),
        ({"log_level": "INFO"}, "log_level"),
    ],
)
def test_bad_value_raises_config_error_naming_the_option(
    kwargs: dict[str, object], option: str
) -> None:
    with pytest.raises(ConfigError) as error:
        Config(**kwargs)  # type: ignore[arg-type]
    assert str(error.value).startswith(f"{option}: ")


@pytest.mark.parametrize("address", ["127.0.0.1:99999", "::1:80", "nohost.invalid:1", "unix:"])
def test_bad_bind_address_raises_config_error_naming_the_address(address: str) -> None:
    with pytest.raises(ConfigError) as error:
        Config(bind=("127.0.0.1:0", address))
    assert repr(address) in str(error.value)


def test_bad_bind_address_names_the_option() -> None:
    with pytest.raises(ConfigError, match=r"^bind: "):
        Config(bind=("127.0.0.1:99999",))


def test_config_error_is_a_value_error_and_a_netserve_error() -> None:
    with pytest.raises(ConfigError) as error:
        Config(log_level="loud")
    assert isinstance(error.value, ValueError)
    assert isinstance(error.value, NetserveError)


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.bind = ("127.0.0.1:0",)  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.udp = True  # type: ignore[misc]
    assert config == Config()
    assert hash(config) == hash(Config())


def test_replace_validates_again() -> None:
    config = dataclasses.replace(Config(), bind=("127.0.0.1:0",), udp=True)
    assert (config.bind, config.udp) == (("127.0.0.1:0",), True)
    with pytest.raises(ConfigError):
        dataclasses.replace(config, log_level="loud")


def test_options_describe_every_field() -> None:
    described = {option.name: option for option in options()}
    fields = dataclasses.fields(Config)
    assert list(described) == [f.name for f in fields]
    defaults = Config()
    for f in fields:
        option = described[f.name]
        assert isinstance(option, Option)
        assert option.default == getattr(defaults, f.name)
        assert option.flag == "--" + f.name.replace("_", "-")
        assert option.help, f"{f.name} has no help text"
        assert option.repeatable == isinstance(option.default, tuple)
        assert option.is_flag == isinstance(option.default, bool)


def test_options_kinds() -> None:
    described = {option.name: option for option in options()}
    assert described["handler"].positional
    assert described["handler"].metavar == "MODULE:HANDLER"
    assert described["bind"].repeatable
    assert described["udp"].is_flag
    assert described["log_level"].choices == ("debug", "info", "warning", "error")


def test_serve_help_shows_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in options():
        assert str(option.metavar if option.positional else option.flag) in text, option.name
        first_words = " ".join(option.help.split()[:3])
        assert first_words in " ".join(text.split()), option.name


def test_parser_defaults_make_the_default_config() -> None:
    args = cli.build_parser().parse_args(["serve"])
    assert set(args.config_fields) == {f.name for f in dataclasses.fields(Config)}
    assert cli._config_from(args) == Config()


def test_every_option_reaches_the_config() -> None:
    args = cli.build_parser().parse_args(
        [
            "serve",
            "pkg.module:Handler",
            "--bind",
            "127.0.0.1:0",
            "--bind",
            "[::1]:0",
            "--udp",
            "--threads",
            "4",
            "--max-queued",
            "8",
            "--overflow",
            "wait",
            "--max-connections",
            "100",
            "--max-connections-per-ip",
            "10",
            "--idle-timeout",
            "2.5",
            "--drain-timeout",
            "7",
            "--workers",
            "3",
            "--worker-timeout",
            "12",
            "--max-requests",
            "1000",
            "--loop",
            "asyncio",
            "--transport",
            "loop",
            "--max-requests-jitter",
            "50",
            "--log-level",
            "warning",
        ]
    )
    config = cli._config_from(args)
    expected = Config(
        handler="pkg.module:Handler",
        bind=("127.0.0.1:0", "[::1]:0"),
        udp=True,
        threads=4,
        max_queued=8,
        overflow="wait",
        max_connections=100,
        max_connections_per_ip=10,
        idle_timeout=2.5,
        drain_timeout=7.0,
        workers=3,
        worker_timeout=12.0,
        max_requests=1000,
        max_requests_jitter=50,
        loop="asyncio",
        transport="loop",
        log_level="warning",
    )
    assert config == expected
    # every field was set to something other than its default: none is left out of the CLI
    for f in dataclasses.fields(Config):
        assert getattr(config, f.name) != getattr(Config(), f.name), f.name


# --- bounded concurrency: defaults -----------------------------------------------------------


NEW_DEFAULTS = {
    "threads": 32,
    "max_queued": 64,
    "overflow": "reject",
    "max_connections": None,
    "max_connections_per_ip": None,
    "idle_timeout": None,
    "drain_timeout": 30.0,
    "workers": 0,
    "worker_timeout": 30.0,
    "max_requests": 0,
    "max_requests_jitter": 0,
}


@pytest.mark.parametrize(("name", "default"), NEW_DEFAULTS.items(), ids=NEW_DEFAULTS)
def test_default_of_each_concurrency_option(name: str, default: object) -> None:
    value = getattr(Config(), name)
    assert value == default
    assert type(value) is type(default)


def test_defaults_serve_in_this_process_with_a_bounded_pool() -> None:
    config = Config()
    assert config.workers == 0, "one process unless asked: workers need a decision"
    assert config.threads > 0, "a bounded pool, not a thread per connection"


# --- bounded concurrency: validation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("threads", -1),
        ("max_queued", -1),
        ("overflow", "drop"),
        ("overflow", "Reject"),
        ("max_connections", 0),
        ("max_connections", -5),
        ("max_connections_per_ip", 0),
        ("idle_timeout", 0),
        ("idle_timeout", -0.5),
        ("drain_timeout", -1.0),
        ("workers", -1),
        ("worker_timeout", 0),
        ("worker_timeout", -1.0),
        ("worker_timeout", 0.5),  # two heartbeats at least
        ("idle_timeout", 1e12),  # past what socket timeouts hold
        ("drain_timeout", 1e12),
        ("worker_timeout", 1e12),
        ("max_requests", -1),
        ("max_requests_jitter", -1),
    ],
)
def test_bad_concurrency_option_raises_config_error_naming_it(name: str, value: object) -> None:
    with pytest.raises(ConfigError) as error:
        Config(**{name: value})  # type: ignore[arg-type]
    message = str(error.value)
    assert message.startswith(f"{name}: "), message
    if name != "overflow":
        assert str(value) in message, "the message shows the value given"


def test_bad_overflow_lists_the_policies() -> None:
    with pytest.raises(ConfigError, match=r"^overflow: ") as error:
        Config(overflow="drop")
    assert "reject" in str(error.value)
    assert "wait" in str(error.value)


def test_bad_transport_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"^transport: expected one of auto, epoll, loop"):
        Config(transport="io_uring")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("threads", 0),
        ("threads", 1),
        ("max_queued", 0),
        ("overflow", "wait"),
        ("max_connections", 1),
        ("max_connections_per_ip", 1),
        ("idle_timeout", 0.001),
        ("drain_timeout", 0),
        ("workers", 0),
        ("workers", 4),
        ("worker_timeout", 1.0),
        ("idle_timeout", 1e7),
        ("drain_timeout", 1e7),
        ("max_requests", 1),
        ("max_requests_jitter", 10),
    ],
)
def test_boundary_values_are_accepted(name: str, value: object) -> None:
    assert getattr(Config(**{name: value}), name) == value  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [math.nan, math.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("name", ["idle_timeout", "drain_timeout", "worker_timeout"])
def test_timeouts_must_be_finite_numbers(name: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"^{name}: "):
        Config(**{name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "value"), [("threads", "4"), ("idle_timeout", "5")])
def test_value_of_the_wrong_type_raises_config_error(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"^{name}: "):
        Config(**{name: value})  # type: ignore[arg-type]


# --- handler as a class ----------------------------------------------------------------------


class Outer:
    class Nested(netserve.BaseRequestHandler):
        pass


def test_handler_may_be_a_class() -> None:
    config = Config(handler=ReverseHandler)
    assert config.handler is ReverseHandler
    assert config.handler_name == "netserve.demo:ReverseHandler"


def test_handler_name_of_a_nested_class() -> None:
    assert Config(handler=Outer.Nested).handler_name == f"{__name__}:Outer.Nested"


def test_handler_name_of_a_string_is_the_string() -> None:
    assert Config().handler_name == DEFAULT_HANDLER
    assert Config(handler="pkg.mod:Outer.Inner").handler_name == "pkg.mod:Outer.Inner"


# --- describe() ------------------------------------------------------------------------------

#: The limits that describe() must always state, in force or not.
LIMITS = ("max_connections", "max_connections_per_ip", "idle_timeout", "drain_timeout")


def test_describe_defaults() -> None:
    text = Config().describe()
    for part in (
        "1 process",
        "thread pool of 32",
        "queue 64",
        "overflow reject",
        "max_connections=none",
        "max_connections_per_ip=none",
        "idle_timeout=none",
        "drain_timeout=30s",
    ):
        assert part in text, text
    assert "worker" not in text, "no worker settings without workers"


def test_describe_every_limit_set() -> None:
    config = Config(
        threads=4,
        max_queued=8,
        overflow="wait",
        max_connections=100,
        max_connections_per_ip=10,
        idle_timeout=5.0,
        drain_timeout=2.5,
    )
    text = config.describe()
    for part in (
        "1 process",
        "thread pool of 4 (queue 8, overflow wait)",
        "max_connections=100",
        "max_connections_per_ip=10",
        "idle_timeout=5s",
        "drain_timeout=2.5s",
    ):
        assert part in text, text


@pytest.mark.parametrize("name", LIMITS)
def test_describe_states_each_limit(name: str) -> None:
    assert f"{name}=" in Config().describe()


def test_describe_a_thread_per_connection() -> None:
    text = Config(threads=0).describe()
    assert "a thread per connection" in text, text
    assert "thread pool" not in text
    assert "queue" not in text, "the queue does not apply without a pool"


def test_describe_workers() -> None:
    text = Config(workers=2, worker_timeout=10.0).describe()
    for part in (
        "2 worker processes (each logs its mode)",
        "worker_timeout=10s",
        "max_requests=none",
    ):
        assert part in text, text
    # the handler, imported by the workers only, decides between threads and the loop
    assert "thread" not in text, text
    assert "event loop" not in text, text
    assert "1 process" not in text
    assert "max_requests=500" in Config(workers=1, max_requests=500).describe()


def test_describe_mode() -> None:
    assert Config().describe_mode() == "thread pool of 32 (queue 64, overflow reject)"
    assert Config(threads=0).describe_mode() == "a thread per connection"
    assert Config(threads=8).describe_mode("uvloop") == (
        "event loop (uvloop; 8 threads for blocking handlers)"
    )


def test_describe_small_timeouts_keep_their_digits() -> None:
    text = Config(idle_timeout=0.25, drain_timeout=0.0).describe()
    assert "idle_timeout=0.25s" in text, text
    assert "drain_timeout=0s" in text, text


def test_describe_timeouts_given_as_ints() -> None:
    text = Config(idle_timeout=5, drain_timeout=10).describe()
    assert "idle_timeout=5s" in text, text
    assert "drain_timeout=10s" in text, text


# --- the command line: every new option, with its type ---------------------------------------


def _argparse_type(hint: object) -> type | None:
    """int for ``int`` and ``int | None``, float likewise; None for anything else."""
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    numbers = [arg for arg in args if arg in (int, float)]
    return numbers[0] if len(numbers) == 1 else None


NUMERIC_OPTIONS = [
    option
    for option in options()
    if _argparse_type(typing.get_type_hints(Config)[option.name]) is not None
]


def test_every_numeric_field_is_a_numeric_option() -> None:
    names = {option.name for option in NUMERIC_OPTIONS}
    assert names == {
        "threads",
        "max_queued",
        "max_connections",
        "max_connections_per_ip",
        "idle_timeout",
        "drain_timeout",
        "workers",
        "worker_timeout",
        "max_requests",
        "max_requests_jitter",
    }


@pytest.mark.parametrize("option", NUMERIC_OPTIONS, ids=lambda option: option.flag)
def test_numeric_option_has_the_field_type(option: Option) -> None:
    expected = _argparse_type(typing.get_type_hints(Config)[option.name])
    assert option.type is expected
    args = cli.build_parser().parse_args(["serve", option.flag, "3"])
    value = getattr(cli._config_from(args), option.name)
    assert (value, type(value)) == (3, expected)


@pytest.mark.parametrize("option", NUMERIC_OPTIONS, ids=lambda option: option.flag)
def test_numeric_option_rejects_a_word_with_usage_error(
    option: Option, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", option.flag, "x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: netserve serve")
    assert option.flag in err.splitlines()[-1]
    assert f"invalid {option.type.__name__} value: 'x'" in err  # type: ignore[union-attr]


@pytest.mark.parametrize("flag", ["--threads", "--max-connections", "--workers", "--max-queued"])
def test_integer_option_rejects_a_fraction(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", flag, "1.5"])
    assert exit_info.value.code == 2
    assert "invalid int value: '1.5'" in capsys.readouterr().err


@pytest.mark.parametrize("policy", ["reject", "wait"])
def test_overflow_option_takes_the_policies(policy: str) -> None:
    args = cli.build_parser().parse_args(["serve", "--overflow", policy])
    assert cli._config_from(args).overflow == policy


def test_overflow_option_rejects_other_words(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["serve", "--overflow", "drop"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--overflow" in err
    assert "invalid choice: 'drop'" in err


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["--threads", "-1"], "threads"),
        (["--max-connections", "0"], "max_connections"),
        (["--max-connections-per-ip", "0"], "max_connections_per_ip"),
        (["--idle-timeout", "0"], "idle_timeout"),
        (["--drain-timeout", "-1"], "drain_timeout"),
        (["--worker-timeout", "0"], "worker_timeout"),
        (["--max-requests", "-1"], "max_requests"),
    ],
)
def test_out_of_range_option_is_one_error_line_naming_it(
    argv: list[str], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["serve", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [captured.err.rstrip("\n")], captured.err
    assert captured.err.startswith(f"netserve: error: {name}: "), captured.err


def test_unset_optional_limits_stay_none() -> None:
    args = cli.build_parser().parse_args(["serve"])
    config = cli._config_from(args)
    assert config.max_connections is None
    assert config.max_connections_per_ip is None
    assert config.idle_timeout is None


@pytest.mark.parametrize(
    "name", ["drain_timeout", "worker_timeout", "threads", "max_queued", "workers", "udp"]
)
def test_none_is_refused_where_a_value_is_required(name: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}: a value is required"):
        Config(**{name: None})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["max_connections", "max_connections_per_ip", "idle_timeout"])
def test_none_means_no_limit_where_the_option_allows_it(name: str) -> None:
    assert getattr(Config(**{name: None}), name) is None  # type: ignore[arg-type]


def test_ignored_lists_the_options_given_that_do_not_apply() -> None:
    assert Config().ignored(event_loop=False) == []
    config = Config(max_requests=10, worker_timeout=5.0, overflow="wait", transport="loop")
    assert config.ignored(event_loop=False) == ["worker_timeout", "max_requests", "transport"]
    assert config.ignored(event_loop=True) == ["worker_timeout", "max_requests", "overflow"]
    assert Config(workers=2, max_requests=10).ignored(event_loop=True) == []
