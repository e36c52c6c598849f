"""``Config``: the single source of every option.

The command line is generated from the fields of ``Config`` (their ``metadata`` holds the help
text and the flag), and everything that builds a server takes a ``Config``. A ``Config`` is
checked when it is made: a bad value raises ``ConfigError`` naming the option.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from ._errors import ConfigError
from ._listeners import Endpoint, parse_endpoint

__all__ = ["DEFAULT_BIND", "DEFAULT_HANDLER", "Config", "Option", "options"]

#: The demo listens on loopback only: a server opened to the network should be a decision.
DEFAULT_BIND = "localhost:9999"
DEFAULT_HANDLER = "netserve.demo:ReverseLineHandler"
LOG_LEVELS = ("debug", "info", "warning", "error")
OVERFLOW_POLICIES = ("reject", "wait")
LOOP_CHOICES = ("auto", "asyncio", "uvloop")
#: Whose transports the event-loop server uses: netserve's own on one epoll set (Linux),
#: the event loop's (``loop.create_server``), or "auto": epoll where the platform has it.
TRANSPORT_CHOICES = ("auto", "epoll", "loop")
#: Enough threads to keep a few cores busy with blocking handlers, few enough that a flood of
#: connections cannot exhaust memory (each thread reserves a stack).
DEFAULT_THREADS = 32
#: Room for a burst of connections while every thread is busy.
DEFAULT_MAX_QUEUED = 64
#: Long enough for ordinary requests to finish on a graceful stop; short enough for deploys.
DEFAULT_DRAIN_TIMEOUT = 30.0
#: A serve loop checks in every half second; this much silence means it is stuck.
DEFAULT_WORKER_TIMEOUT = 30.0
#: The shortest worker_timeout: two heartbeats (one every half second), so that an idle
#: worker is never taken for a stuck one.
MIN_WORKER_TIMEOUT = 1.0
#: The longest timeout accepted (about 115 days): beyond it the socket and lock timeouts
#: of the platform overflow; "no timeout" is spelt None.
MAX_TIMEOUT = 1e7


def _option(default: Any, help: str, **cli: Any) -> Any:
    """A dataclass field whose metadata describes its command-line option."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class Config:
    """Every option of a netserve server, checked on creation."""

    handler: str | type = _option(
        DEFAULT_HANDLER,
        "the request handler class to serve, as MODULE:CLASS",
        positional=True,
        metavar="MODULE:HANDLER",
    )
    bind: tuple[str, ...] = _option(
        (DEFAULT_BIND,),
        "where to listen: HOST:PORT, [IPV6]:PORT, :PORT (every IPv4 interface) or unix:PATH; "
        "port 0 picks a free one (repeatable)",
        metavar="ADDRESS",
    )
    udp: bool = _option(False, "serve datagrams (UDP, or Unix datagram sockets) instead of streams")
    threads: int = _option(
        DEFAULT_THREADS,
        "threads started up front and reused, per listener (for event-loop handlers: the "
        "pool for blocking ones, per process); 0: a new thread per connection (event-loop "
        f"handlers: {DEFAULT_THREADS})",
        metavar="N",
    )
    max_queued: int = _option(
        DEFAULT_MAX_QUEUED, "accepted connections that may wait for a free thread", metavar="N"
    )
    overflow: str = _option(
        "reject",
        "when threads and queue are full: reject (close new connections at once) or wait "
        "(stop accepting; the kernel backlog holds them)",
        choices=OVERFLOW_POLICIES,
    )
    max_connections: int | None = _option(
        None,
        "connections open at once, per listener (per process for event-loop handlers); "
        "more are refused",
        metavar="N",
        type=int,
    )
    max_connections_per_ip: int | None = _option(
        None,
        "connections open at once from one IP address, per listener (per process for "
        "event-loop handlers)",
        metavar="N",
        type=int,
    )
    idle_timeout: float | None = _option(
        None, "close a connection after this many seconds without traffic", metavar="S", type=float
    )
    drain_timeout: float = _option(
        DEFAULT_DRAIN_TIMEOUT,
        "on a graceful stop, seconds to let requests in flight finish",
        metavar="S",
    )
    workers: int = _option(
        0,
        "worker processes, pre-forked and supervised; 0: serve in this process",
        metavar="N",
    )
    worker_timeout: float = _option(
        DEFAULT_WORKER_TIMEOUT,
        "restart a worker whose serve loop has not checked in for this many seconds",
        metavar="S",
    )
    max_requests: int = _option(
        0, "recycle a worker after this many requests (0: never)", metavar="N"
    )
    max_requests_jitter: int = _option(
        0,
        "add up to this many to max_requests, per worker, so they do not recycle together",
        metavar="N",
    )
    loop: str = _option(
        "auto",
        "the event loop for async and message handlers (auto: uvloop when installed)",
        choices=LOOP_CHOICES,
    )
    transport: str = _option(
        "auto",
        "the event-loop server's transports: netserve's own on epoll (Linux), or the "
        "loop's (auto: epoll where available)",
        choices=TRANSPORT_CHOICES,
    )
    log_level: str = _option("info", "how much to log", choices=LOG_LEVELS)

    def __post_init__(self) -> None:
        self._check_types()
        if not self.bind:
            raise ConfigError("bind: give at least one address to listen on")
        if isinstance(self.handler, str) and ":" not in self.handler:
            raise ConfigError(f"handler: expected MODULE:CLASS, got {self.handler!r}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level: expected one of {', '.join(LOG_LEVELS)}")
        if self.loop not in LOOP_CHOICES:
            raise ConfigError(f"loop: expected one of {', '.join(LOOP_CHOICES)}")
        if self.transport not in TRANSPORT_CHOICES:
            raise ConfigError(f"transport: expected one of {', '.join(TRANSPORT_CHOICES)}")
        if self.overflow not in OVERFLOW_POLICIES:
            raise ConfigError(f"overflow: expected one of {', '.join(OVERFLOW_POLICIES)}")
        self._check_numbers()
        try:
            self.endpoints()
        except ConfigError as exc:
            raise ConfigError(f"bind: {exc}") from None

    def _check_types(self) -> None:
        """Raise ConfigError for a value of the wrong type; make every timeout a float."""
        if not isinstance(self.handler, str | type):
            raise ConfigError(f"handler: expected MODULE:CLASS or a class, got {self.handler!r}")
        if isinstance(self.bind, str) or not all(isinstance(b, str) for b in self.bind):
            raise ConfigError(f"bind: expected a tuple of addresses, got {self.bind!r}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            default = f.default
            if value is None and "None" not in str(f.type):
                raise ConfigError(f"{f.name}: a value is required (the default is {default!r})")
            if value is None or isinstance(default, str | tuple) or f.name == "handler":
                continue
            if isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"{f.name}: expected true or false, got {value!r}")
                continue
            wanted = f.metadata.get("type") or type(default)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{f.name}: expected a number, got {value!r}")
            if wanted is int and not isinstance(value, int):
                raise ConfigError(f"{f.name}: expected a whole number, got {value!r}")
            if wanted is float:
                if not math.isfinite(value):
                    raise ConfigError(f"{f.name}: expected a finite number, got {value!r}")
                object.__setattr__(self, f.name, float(value))

    def _check_numbers(self) -> None:
        at_least = {
            "threads": 0,
            "max_queued": 0,
            "workers": 0,
            "max_requests": 0,
            "max_requests_jitter": 0,
            "drain_timeout": 0,
            "max_connections": 1,
            "max_connections_per_ip": 1,
        }
        for name, low in at_least.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise ConfigError(f"{name}: must be at least {low}, got {value}")
        for name in ("idle_timeout", "worker_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name}: must be more than 0, got {value}")
        if self.worker_timeout < MIN_WORKER_TIMEOUT:
            raise ConfigError(
                f"worker_timeout: must be at least {MIN_WORKER_TIMEOUT:g} s (workers report "
                f"every half second), got {self.worker_timeout}"
            )
        for name in ("idle_timeout", "worker_timeout", "drain_timeout"):
            value = getattr(self, name)
            if value is not None and value > MAX_TIMEOUT:
                unset = " (leave it unset for no timeout)" if name == "idle_timeout" else ""
                raise ConfigError(f"{name}: must be at most {MAX_TIMEOUT:g} s{unset}, got {value}")

    def endpoints(self) -> list[Endpoint]:
        """The parsed ``bind`` addresses."""
        return [parse_endpoint(text) for text in self.bind]

    @property
    def logging_level(self) -> int:
        return logging.getLevelNamesMapping()[self.log_level.upper()]

    @property
    def handler_name(self) -> str:
        """The handler as ``MODULE:CLASS``, for log lines."""
        if isinstance(self.handler, str):
            return self.handler
        return f"{self.handler.__module__}:{self.handler.__qualname__}"

    def describe(self, event_loop: str | None = None) -> str:
        """The mode and every limit in force, for the startup log line; *event_loop* names
        the loop when the handler runs on one (async and message handlers). With workers
        the mode is left out: each worker chooses it for the handler it imports, and says
        it (``describe_mode``)."""
        if self.workers:
            processes = f"{self.workers} worker processes (each logs its mode)"
        else:
            processes = f"1 process, {self.describe_mode(event_loop)}"
        limits = ", ".join(
            f"{name}={_show(getattr(self, name))}"
            for name in (
                "max_connections",
                "max_connections_per_ip",
                "idle_timeout",
                "drain_timeout",
            )
        )
        if self.workers:
            limits += (
                f", worker_timeout={_show(self.worker_timeout)}, "
                f"max_requests={_show(self.max_requests or None)}"
            )
        return f"{processes}; {limits}"

    def ignored(self, event_loop: bool) -> list[str]:
        """The options set to something other than their default that do not apply: those
        of workers without workers, those of a thread pool or of the event loop in the
        other mode (*event_loop*: the handler runs on one)."""
        unused = [] if self.workers else ["worker_timeout", "max_requests", "max_requests_jitter"]
        unused += ["max_queued", "overflow"] if event_loop else ["loop", "transport"]
        defaults = {f.name: f.default for f in fields(self)}
        return [name for name in unused if getattr(self, name) != defaults[name]]

    def describe_mode(self, event_loop: str | None = None) -> str:
        """How requests run: on the event loop *event_loop* names, or on threads."""
        if event_loop is not None:
            threads = self.threads or DEFAULT_THREADS
            return f"event loop ({event_loop}; {threads} threads for blocking handlers)"
        if self.threads:
            return (
                f"thread pool of {self.threads} (queue {self.max_queued}, overflow {self.overflow})"
            )
        return "a thread per connection"


def _show(value: object) -> str:
    if value is None:
        return "none"
    return f"{value:g}s" if isinstance(value, float) else str(value)


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
    type: type | None


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
            type=meta.get("type") or _scalar_type(default),
        )


def _scalar_type(default: object) -> type | None:
    """The argparse type for a field with this default (None: strings, flags, lists)."""
    if isinstance(default, bool) or not isinstance(default, int | float):
        return None
    return type(default)
