"""``_listeners``: parsing addresses, formatting them, and the accept-error policy."""

from __future__ import annotations

import errno
import logging
import socket

import pytest

from netserve import ConfigError, _log
from netserve._listeners import (
    ACCEPT_BACKOFF,
    AcceptErrorPolicy,
    Endpoint,
    format_address,
    parse_endpoint,
)

pytestmark = pytest.mark.timeout(30)

# --- parse_endpoint ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "family", "address"),
    [
        ("127.0.0.1:80", socket.AF_INET, ("127.0.0.1", 80)),
        ("127.0.0.1:0", socket.AF_INET, ("127.0.0.1", 0)),
        ("0.0.0.0:65535", socket.AF_INET, ("0.0.0.0", 65535)),
        (":8080", socket.AF_INET, ("", 8080)),
        ("[::1]:9999", socket.AF_INET6, ("::1", 9999)),
        ("[::]:0", socket.AF_INET6, ("::", 0)),
        ("[fe80::1]:443", socket.AF_INET6, ("fe80::1", 443)),
        ("unix:/run/app.sock", socket.AF_UNIX, "/run/app.sock"),
        ("unix:relative.sock", socket.AF_UNIX, "relative.sock"),
        ("unix:/path/with:colon", socket.AF_UNIX, "/path/with:colon"),
    ],
)
def test_parse_endpoint(text: str, family: socket.AddressFamily, address: object) -> None:
    endpoint = parse_endpoint(text)
    assert endpoint == Endpoint(family, address)  # type: ignore[arg-type]


def test_parse_endpoint_resolves_a_host_name() -> None:
    endpoint = parse_endpoint("localhost:9999")
    assert endpoint.address == ("localhost", 9999)
    assert endpoint.family in {socket.AF_INET, socket.AF_INET6}
    expected = socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)[0][0]
    assert endpoint.family == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("localhost", "expected HOST:PORT"),
        ("", "expected HOST:PORT"),
        ("127.0.0.1:", "is not a number"),
        ("127.0.0.1:http", "is not a number"),
        ("127.0.0.1:65536", "not in 0..65535"),
        ("127.0.0.1:99999", "not in 0..65535"),
        ("127.0.0.1:-1", "is not a number"),
        ("::1:80", "put an IPv6 address in brackets"),
        ("::1", "put an IPv6 address in brackets"),
        ("[::1]", "is not a number"),
        ("fe80::1%eth0:80", "put an IPv6 address in brackets"),
        ("unix:", "unix: needs a path"),
        ("nohost.invalid:1", "cannot resolve 'nohost.invalid'"),
    ],
)
def test_parse_endpoint_errors(text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_endpoint(text)
    message = str(error.value)
    assert message.startswith(f"bad address {text!r}: ")
    assert reason in message


@pytest.mark.parametrize("port", ["+80", " 80", "8_0", "\u0668\u0660"])
def test_parse_endpoint_port_is_ascii_digits_only(port: str) -> None:
    with pytest.raises(ConfigError):
        parse_endpoint(f"127.0.0.1:{port}")


def test_endpoint_str_is_the_formatted_address() -> None:
    assert str(parse_endpoint("127.0.0.1:80")) == "127.0.0.1:80"
    assert str(parse_endpoint("[::1]:80")) == "[::1]:80"
    assert str(parse_endpoint("unix:/run/app.sock")) == "/run/app.sock"


def test_endpoint_is_frozen() -> None:
    endpoint = parse_endpoint("127.0.0.1:80")
    with pytest.raises(AttributeError):
        endpoint.address = ("127.0.0.1", 81)  # type: ignore[misc]


# --- format_address ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (("127.0.0.1", 80), "127.0.0.1:80"),
        (("", 8080), ":8080"),
        (("::1", 80, 0, 0), "[::1]:80"),
        (("fe80::1%eth0", 80, 0, 2), "[fe80::1%eth0]:80"),
        ("/run/app.sock", "/run/app.sock"),
        ("", "(unnamed)"),
        (b"/run/app.sock", "/run/app.sock"),
        (b"", "(unnamed)"),
        (b"\xff.sock", "\ufffd.sock"),
        (None, "None"),
    ],
)
def test_format_address(address: object, text: str) -> None:
    assert format_address(address) == text


def test_format_address_of_real_sockets() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        assert format_address(sock.getsockname()) == f"127.0.0.1:{sock.getsockname()[1]}"


# --- AcceptErrorPolicy ---------------------------------------------------------------------


def _error(code: int) -> OSError:
    return OSError(code, "simulated")


def _records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "netserve"]


@pytest.fixture
def netserve_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="netserve")
    return caplog


class FakeClock:
    """Stands in for the ``time`` module in ``netserve._log``: time moves when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(_log, "time", fake)
    return fake


def test_emfile_backs_off_and_warns(netserve_log: pytest.LogCaptureFixture) -> None:
    policy = AcceptErrorPolicy()
    assert policy.backoff_after(_error(errno.EMFILE), "<listener>") == ACCEPT_BACKOFF == 0.1
    [(level, message)] = _records(netserve_log)
    assert level == logging.WARNING
    assert "<listener>" in message
    assert "simulated" in message
    assert "100 ms" in message


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
def test_every_resource_error_backs_off(code: int, netserve_log: pytest.LogCaptureFixture) -> None:
    assert AcceptErrorPolicy().backoff_after(_error(code), "l") == ACCEPT_BACKOFF
    assert [level for level, _ in _records(netserve_log)] == [logging.WARNING]


def test_repeated_emfile_within_a_second_is_logged_once(
    netserve_log: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    policy = AcceptErrorPolicy()
    for _ in range(5):
        assert policy.backoff_after(_error(errno.EMFILE), "l") == ACCEPT_BACKOFF
        clock.now += 0.1
    assert len(_records(netserve_log)) == 1
    clock.now += 1.0
    assert policy.backoff_after(_error(errno.EMFILE), "l") == ACCEPT_BACKOFF
    records = _records(netserve_log)
    assert len(records) == 2
    assert records[1][1].endswith("(4 similar messages suppressed)")


def test_each_errno_is_rate_limited_on_its_own(
    netserve_log: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    policy = AcceptErrorPolicy()
    policy.backoff_after(_error(errno.EMFILE), "l")
    policy.backoff_after(_error(errno.ENFILE), "l")
    policy.backoff_after(_error(errno.EMFILE), "l")
    assert len(_records(netserve_log)) == 2


def test_policies_do_not_share_their_rate_limit(
    netserve_log: pytest.LogCaptureFixture, clock: FakeClock
) -> None:
    AcceptErrorPolicy().backoff_after(_error(errno.EMFILE), "a")
    AcceptErrorPolicy().backoff_after(_error(errno.EMFILE), "b")
    assert len(_records(netserve_log)) == 2


def test_econnaborted_costs_nothing_and_logs_at_debug(
    netserve_log: pytest.LogCaptureFixture,
) -> None:
    policy = AcceptErrorPolicy()
    assert policy.backoff_after(_error(errno.ECONNABORTED), "l") == 0
    assert [level for level, _ in _records(netserve_log)] == [logging.DEBUG]


@pytest.mark.parametrize(
    "code",
    [errno.ECONNABORTED, errno.ECONNRESET, errno.EPROTO, errno.EAGAIN, errno.EPERM, errno.EINTR],
)
def test_per_connection_errors_are_debug_only(
    code: int, netserve_log: pytest.LogCaptureFixture
) -> None:
    netserve_log.set_level(logging.INFO, logger="netserve")
    assert AcceptErrorPolicy().backoff_after(_error(code), "l") == 0
    assert _records(netserve_log) == []


def test_other_errors_cost_nothing_and_warn(netserve_log: pytest.LogCaptureFixture) -> None:
    assert AcceptErrorPolicy().backoff_after(_error(errno.EBADF), "l") == 0
    assert [level for level, _ in _records(netserve_log)] == [logging.WARNING]
