"""The ``netserve`` command: the only place that prints, installs signal handlers and turns
errors into exit codes.

Exit codes: 0 success, 1 a client error (connection refused, reset), 2 a usage or startup
error (bad MODULE:HANDLER, bad address, port busy), 3 with ``--workers``: the workers could
not start (the handler's module fails to import in them, or cannot use an option), 130
interrupted by Ctrl-C (the client; a server stops on Ctrl-C with 0).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from ._errors import NetserveError
from ._listeners import parse_endpoint
from ._runner import run
from ._version import __version__
from .config import Config, options

__all__ = ["EXIT_INTERRUPTED", "EXIT_OK", "EXIT_RUNTIME", "EXIT_USAGE", "main"]

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE = 0, 1, 2
#: As a shell reports a command ended by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130

#: The process id tells a supervisor's workers apart.
LOG_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(message)s"

_TOP_LEVEL_FLAGS = ("-h", "--help", "--version")

#: How long ``netserve client`` waits for a reply before giving up.
CLIENT_TIMEOUT = 10.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netserve",
        description="Run socketserver-style request handlers. With no command, serve the "
        "reverse-line demo on localhost:9999 (each line sent is answered reversed); options "
        "without a command are those of serve (netserve --bind 127.0.0.1:0).",
    )
    parser.add_argument("--version", action="version", version=f"netserve {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="serve a handler class",
        description="Serve MODULE:HANDLER until Ctrl-C (a fast stop) or SIGTERM (a graceful "
        "one): a BaseRequestHandler subclass (of netserve or socketserver) on a bounded pool "
        "of threads, or a netserve.aio handler (AsyncRequestHandler, LineHandler, "
        "LengthPrefixedHandler) on an event loop. MODULE is imported from the current "
        "directory or the installed packages.",
    )
    _add_config_options(serve)
    client = commands.add_parser(
        "client",
        help="send lines to a server and print the replies",
        description="Connect to HOST:PORT (or unix:PATH), send MESSAGE, or else each line of "
        "standard input, as a line, and print each reply line.",
    )
    client.add_argument("address", metavar="HOST:PORT", help="the server to talk to")
    client.add_argument(
        "message", nargs="?", metavar="MESSAGE", help="one line to send (default: read stdin)"
    )
    client.add_argument(
        "--timeout",
        type=_seconds,
        default=CLIENT_TIMEOUT,
        metavar="S",
        help="seconds to wait for each reply (default: %(default)s)",
    )
    return parser


def _seconds(text: str) -> float:
    """A finite number of seconds above 0, for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds above 0: {text}")
    return value


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One argument per ``Config`` field, so the CLI and ``Config`` cannot drift apart."""
    for option in options():
        kwargs: dict[str, Any] = {"help": option.help, "metavar": option.metavar}
        if option.choices:
            kwargs["choices"] = option.choices
        if option.type is not None:
            kwargs["type"] = option.type
        if option.positional:
            kwargs["help"] += " (default: %(default)s)"
            parser.add_argument(option.name, nargs="?", default=option.default, **kwargs)
        elif option.is_flag:
            parser.add_argument(option.flag, action="store_true", help=option.help)
        elif option.repeatable:
            kwargs["help"] += f" (default: {' '.join(option.default)})"
            parser.add_argument(option.flag, dest=option.name, action="append", **kwargs)
        else:
            # None is "no limit": say it as the startup log line does
            kwargs["help"] += (
                " (default: none)" if option.default is None else " (default: %(default)s)"
            )
            parser.add_argument(option.flag, dest=option.name, default=option.default, **kwargs)
    parser.set_defaults(config_fields=[option.name for option in options()])


def _config_from(args: argparse.Namespace) -> Config:
    values = {name: getattr(args, name) for name in args.config_fields}
    values = {name: value for name, value in values.items() if value is not None}
    if "bind" in values:
        values["bind"] = tuple(values["bind"])
    return Config(**values)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    if not words or (words[0].startswith("-") and words[0] not in _TOP_LEVEL_FLAGS):
        words.insert(0, "serve")  # `netserve --bind ...` means `netserve serve --bind ...`
    args = parser.parse_args(words)
    try:
        if args.command == "client":
            return _client(args.address, args.message, args.timeout, sys.stdin, sys.stdout)
        return _serve(_config_from(args))
    except NetserveError as exc:
        print(f"netserve: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # the client, or a server before its own handlers are in place
        return EXIT_INTERRUPTED


def _serve(config: Config) -> int:
    logging.basicConfig(level=config.logging_level, format=LOG_FORMAT)
    _import_from_the_current_directory()
    return run(config)


def _import_from_the_current_directory() -> None:
    """As ``python -m netserve`` does: MODULE:HANDLER may be a module of the current
    directory (unless that directory is gone: installed modules still serve)."""
    if "" in sys.path:
        return
    try:
        cwd = os.getcwd()
    except OSError:
        return
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def _client(
    address: str, message: str | None, timeout: float, stdin: TextIO, stdout: TextIO
) -> int:
    endpoint = parse_endpoint(address)
    lines = [message] if message is not None else (line.rstrip("\n") for line in stdin)
    try:
        with socket.socket(endpoint.family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(endpoint.address)
            replies = sock.makefile("rb")
            for line in lines:
                sock.sendall(line.encode() + b"\n")
                reply = replies.readline()
                if not reply:
                    print("netserve: error: the server closed the connection", file=sys.stderr)
                    return EXIT_RUNTIME
                stdout.write(reply.decode(errors="replace").rstrip("\n") + "\n")
                stdout.flush()
    except OSError as exc:
        print(f"netserve: error: {address}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK
