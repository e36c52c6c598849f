"""``Config``: the single source of every option.

The command line is generated from the fields of ``Config`` (their ``metadata`` holds the help
text and the flag), and everything that builds a server takes a ``Config``. A ``Config`` is
checked when it is made: a bad value raises ``ConfigError`` naming the option.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ._errors import ConfigError
from ._listeners import Endpoint, parse_endpoint

__all__ = ["DEFAULT_BIND", "DEFAULT_HANDLER", "Config", "Option", "options"]

#: The demo listens on loopback only: a server opened to the network should be a decision.
DEFAULT_BIND = "localhost:9999"
DEFAULT_HANDLER = "netserve.demo:ReverseHandler"
LOG_LEVELS = ("debug", "info", "warning", "error")


def _option(default: Any, help: str, **cli: Any) -> Any:
    """A dataclass field whose metadata describes its command-line option."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class Config:
    """Every option of a netserve server, checked on creation."""

    handler: str = _option(
        DEFAULT_HANDLER,
        "the request handler class to serve, as MODULE:CLASS",
        positional=True,
        metavar="MODULE:HANDLER",
    )
    bind: tuple[str, ...] = _option(
        (DEFAULT_BIND,),
        "where to listen: HOST:PORT, [IPV6]:PORT or unix:PATH (repeatable)",
        metavar="ADDRESS",
    )
    udp: bool = _option(False, "serve datagrams (UDP, or Unix datagram sockets) instead of streams")
    log_level: str = _option("info", "how much to log", choices=LOG_LEVELS)

    def __post_init__(self) -> None:
        if not self.bind:
            raise ConfigError("bind: give at least one address to listen on")
        if ":" not in self.handler:
            raise ConfigError(f"handler: expected MODULE:CLASS, got {self.handler!r}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level: expected one of {', '.join(LOG_LEVELS)}")
        try:
            self.endpoints()
        except ConfigError as exc:
            raise ConfigError(f"bind: {exc}") from None

    def endpoints(self) -> list[Endpoint]:
        """The parsed ``bind`` addresses."""
        return [parse_endpoint(text) for text in self.bind]

    @property
    def logging_level(self) -> int:
        return logging.getLevelNamesMapping()[self.log_level.upper()]


@dataclass(frozen=True)
class Option:
    """One ``Config`` field as the command line sees it."""

    name: str
    flag: str
    default: Any
    help: str
    positional: bool
    repeatable: bool
    is_flag: bool
    metavar: str | None
    choices: tuple[str, ...] | None


def options() -> Iterator[Option]:
    """The ``Config`` fields, described for building a command line."""
    defaults = Config()
    for f in dataclasses.fields(Config):
        meta = f.metadata
        default = getattr(defaults, f.name)
        yield Option(
            name=f.name,
            flag="--" + f.name.replace("_", "-"),
            default=default,
            help=meta["help"],
            positional=meta.get("positional", False),
            repeatable=isinstance(default, tuple),
            is_flag=isinstance(default, bool),
            metavar=meta.get("metavar"),
            choices=meta.get("choices"),
        )
