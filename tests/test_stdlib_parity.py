"""netserve against the real standard library ``socketserver``, compared with ``inspect``.

Tests may import ``socketserver``; the library itself must not.
"""

from __future__ import annotations

import inspect
import socketserver
from typing import Any

import pytest

import netserve

STDLIB_CLASSES = sorted(
    name for name in socketserver.__all__ if isinstance(getattr(socketserver, name), type)
)

#: Attributes that netserve keeps on the instance through a property instead of a plain class
#: attribute; compared on fresh instances below instead of on the classes.
INSTANCE_LEVEL = {("ForkingMixIn", "active_children"), ("ThreadingMixIn", "_threads")}


def _defining_class(cls: type, name: str) -> type:
    return next(klass for klass in cls.__mro__ if name in vars(klass))


def _stdlib_methods() -> list[Any]:
    """One case per distinct (stdlib function, netserve attribute) pair, named after the first
    public class where it appears; a method netserve overrides in a subclass is a new case."""
    cases: dict[tuple[Any, Any], Any] = {}
    # bases first, so that each inherited method is named after the class defining it
    by_depth = sorted(STDLIB_CLASSES, key=lambda n: (len(getattr(socketserver, n).__mro__), n))
    for class_name in by_depth:
        std_cls = getattr(socketserver, class_name)
        ours = getattr(netserve, class_name, None)
        for name in dir(std_cls):
            owner = _defining_class(std_cls, name)
            if owner is object:
                continue
            member = inspect.getattr_static(std_cls, name)
            if not inspect.isfunction(member):
                continue
            our_member = inspect.getattr_static(ours, name, None) if ours is not None else None
            key = (member, our_member)
            if key not in cases:
                cases[key] = pytest.param(class_name, name, id=f"{class_name}.{name}")
    return list(cases.values())


def _stdlib_attributes() -> list[Any]:
    cases = []
    for class_name in STDLIB_CLASSES:
        std_cls = getattr(socketserver, class_name)
        for name in dir(std_cls):
            if name.startswith("__") or _defining_class(std_cls, name) is object:
                continue
            member = inspect.getattr_static(std_cls, name)
            if inspect.isfunction(member) or isinstance(member, (classmethod, staticmethod)):
                continue
            owner = _defining_class(std_cls, name).__name__
            if (owner, name) in INSTANCE_LEVEL:
                continue
            cases.append(pytest.param(class_name, name, id=f"{class_name}.{name}"))
    return cases


def _parameters(func: Any) -> list[tuple[str, Any, Any]]:
    """Names, kinds and defaults: what a caller relies on (annotations are not compared)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(func).parameters.values()]


def _incompatibilities(std_func: Any, our_func: Any) -> list[str]:
    """How a call that is valid for *std_func* could fail, or mean something else, with
    *our_func*. The positional parameters (names, order, defaults) and ``*args``/``**kwargs``
    must be the stdlib's; the stdlib's keyword-only parameters must be there with the same
    defaults; netserve may add keyword-only parameters, provided they have defaults (no stdlib
    call can pass them, and none has to)."""
    positional = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.VAR_POSITIONAL,
    )
    std, ours = _parameters(std_func), _parameters(our_func)
    problems = []
    std_positional = [p for p in std if p[1] in positional]
    our_positional = [p for p in ours if p[1] in positional]
    if our_positional != std_positional:
        problems.append(f"positional parameters {our_positional} != {std_positional}")
    std_keywords = {
        name: default for name, kind, default in std if kind is inspect.Parameter.KEYWORD_ONLY
    }
    our_keywords = {
        name: default for name, kind, default in ours if kind is inspect.Parameter.KEYWORD_ONLY
    }
    for name, default in std_keywords.items():
        if name not in our_keywords or our_keywords[name] != default:
            problems.append(f"keyword-only {name}={default!r} missing or changed")
    for name, default in our_keywords.items():
        if name not in std_keywords and default is inspect.Parameter.empty:
            problems.append(f"added keyword-only {name} without a default")
    std_varkw = any(kind is inspect.Parameter.VAR_KEYWORD for _, kind, _ in std)
    our_varkw = any(kind is inspect.Parameter.VAR_KEYWORD for _, kind, _ in ours)
    if std_varkw and not our_varkw:
        problems.append("**kwargs missing")
    return problems


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", socketserver.__all__)
def test_every_stdlib_name_exists(name: str) -> None:
    assert hasattr(netserve, name)
    assert name in netserve.__all__
    assert isinstance(getattr(netserve, name), type) == isinstance(
        getattr(socketserver, name), type
    )


@pytest.mark.parametrize("name", STDLIB_CLASSES)
def test_classes_present_themselves_as_netserve(name: str) -> None:
    assert getattr(netserve, name).__module__ == "netserve"


# --- methods and signatures ------------------------------------------------------------------


@pytest.mark.parametrize(("class_name", "method"), _stdlib_methods())
def test_same_method_and_compatible_signature(class_name: str, method: str) -> None:
    std_cls = getattr(socketserver, class_name)
    ours = getattr(netserve, class_name)
    assert callable(getattr(ours, method, None)), f"{class_name}.{method} is missing"
    problems = _incompatibilities(getattr(std_cls, method), getattr(ours, method))
    assert not problems, (
        f"{class_name}.{method}{inspect.signature(getattr(ours, method))} is not compatible "
        f"with the stdlib's {inspect.signature(getattr(std_cls, method))}: {problems}"
    )


def test_socket_writer_matches_stdlib_interface() -> None:
    from netserve._handlers import _SocketWriter

    std = socketserver._SocketWriter
    assert issubclass(_SocketWriter, std.__bases__[0])
    for name in ("writable", "write", "fileno"):
        assert callable(getattr(_SocketWriter, name))
        assert [
            p.name for p in inspect.signature(getattr(_SocketWriter, name)).parameters.values()
        ] == [p.name for p in inspect.signature(getattr(std, name)).parameters.values()]


# --- class attributes ----------------------------------------------------------------------------


@pytest.mark.parametrize(("class_name", "attribute"), _stdlib_attributes())
def test_same_class_attribute_default(class_name: str, attribute: str) -> None:
    std_value = getattr(getattr(socketserver, class_name), attribute)
    ours = getattr(netserve, class_name)
    assert hasattr(ours, attribute), f"{class_name}.{attribute} is missing"
    assert getattr(ours, attribute) == std_value
    assert type(getattr(ours, attribute)) is type(std_value)


@pytest.mark.parametrize(
    ("class_name", "attribute", "expected"),
    [
        ("BaseServer", "timeout", None),
        ("TCPServer", "address_family", 2),
        ("TCPServer", "request_queue_size", 5),
        ("TCPServer", "allow_reuse_address", False),
        ("TCPServer", "allow_reuse_port", False),
        ("UDPServer", "max_packet_size", 8192),
        ("ThreadingMixIn", "daemon_threads", False),
        ("ThreadingMixIn", "block_on_close", True),
        ("ForkingMixIn", "max_children", 40),
        ("ForkingMixIn", "timeout", 300),
        ("ForkingMixIn", "block_on_close", True),
        ("StreamRequestHandler", "rbufsize", -1),
        ("StreamRequestHandler", "wbufsize", 0),
        ("StreamRequestHandler", "timeout", None),
        ("StreamRequestHandler", "disable_nagle_algorithm", False),
    ],
)
def test_documented_defaults(class_name: str, attribute: str, expected: Any) -> None:
    # the list the stdlib documents, spelled out so that a stdlib change is noticed too
    assert getattr(getattr(socketserver, class_name), attribute) == expected
    assert getattr(getattr(netserve, class_name), attribute) == expected


@pytest.mark.parametrize(
    ("class_name", "family", "kind"),
    [
        ("TCPServer", "AF_INET", "SOCK_STREAM"),
        ("UDPServer", "AF_INET", "SOCK_DGRAM"),
        ("UnixStreamServer", "AF_UNIX", "SOCK_STREAM"),
        ("UnixDatagramServer", "AF_UNIX", "SOCK_DGRAM"),
    ],
)
def test_address_family_and_socket_type(class_name: str, family: str, kind: str) -> None:
    import socket

    ours = getattr(netserve, class_name)
    assert ours.address_family == getattr(socket, family)
    assert ours.socket_type == getattr(socket, kind)


def test_active_children_on_a_fresh_forking_server_is_none() -> None:
    with netserve.ForkingTCPServer(("127.0.0.1", 0), netserve.BaseRequestHandler) as ours:
        assert ours.active_children is None
    with socketserver.ForkingTCPServer(("127.0.0.1", 0), socketserver.BaseRequestHandler) as std:
        assert std.active_children is None


def test_active_children_is_assignable_as_in_the_stdlib() -> None:
    # In the stdlib active_children is a plain attribute (None until the first fork) that
    # subclasses overriding process_request() set themselves, as ForkingMixIn does:
    # ``if self.active_children is None: self.active_children = set()``.
    with netserve.ForkingTCPServer(("127.0.0.1", 0), netserve.BaseRequestHandler) as ours:
        ours.active_children = set()
        assert ours.active_children == set()


# --- class hierarchy -----------------------------------------------------------------------------


#: netserve's mixins derive from the stdlib's, which they stand in for (see compat.py).
STDLIB_MIXINS = (socketserver.ThreadingMixIn, socketserver.ForkingMixIn)


def _own_classes(mro: tuple[type, ...]) -> list[str]:
    return [klass.__name__ for klass in mro if klass not in STDLIB_MIXINS]


@pytest.mark.parametrize("name", STDLIB_CLASSES)
def test_same_bases(name: str) -> None:
    std_bases = [base.__name__ for base in getattr(socketserver, name).__bases__]
    our_bases = _own_classes(getattr(netserve, name).__bases__)
    assert our_bases in (std_bases, [])  # [] for a mixin: its base is the stdlib's mixin


@pytest.mark.parametrize("name", STDLIB_CLASSES)
def test_same_mro_shape(name: str) -> None:
    std_mro = [klass.__name__ for klass in getattr(socketserver, name).__mro__]
    assert _own_classes(getattr(netserve, name).__mro__) == std_mro


@pytest.mark.parametrize("name", STDLIB_CLASSES)
def test_bases_are_the_netserve_classes(name: str) -> None:
    for base in getattr(netserve, name).__bases__:
        assert base is object or base in STDLIB_MIXINS or getattr(netserve, base.__name__) is base


def test_threading_tcp_server_bases() -> None:
    assert netserve.ThreadingTCPServer.__bases__ == (netserve.ThreadingMixIn, netserve.TCPServer)
    assert netserve.ForkingTCPServer.__bases__ == (netserve.ForkingMixIn, netserve.TCPServer)
    assert netserve.ThreadingUDPServer.__bases__ == (netserve.ThreadingMixIn, netserve.UDPServer)
    assert netserve.ThreadingMixIn.__bases__ == (socketserver.ThreadingMixIn,)
    assert netserve.ForkingMixIn.__bases__ == (socketserver.ForkingMixIn,)
    assert isinstance(
        netserve.ThreadingTCPServer(
            ("127.0.0.1", 0), netserve.BaseRequestHandler, bind_and_activate=False
        ),
        socketserver.ThreadingMixIn,
    )


@pytest.mark.parametrize("name", ["ForkingUnixStreamServer", "ForkingUnixDatagramServer"])
def test_forking_unix_servers(name: str) -> None:
    # in socketserver.__all__ from Python 3.12; netserve has them on every version
    ours = getattr(netserve, name)
    unix = "UnixStreamServer" if "Stream" in name else "UnixDatagramServer"
    assert ours.__bases__ == (netserve.ForkingMixIn, getattr(netserve, unix))


# --- socketserver's code runs only where a socketserver class asks for it ------------------------


@pytest.mark.parametrize("name", ["BaseServer", "TCPServer", "BaseRequestHandler"])
def test_the_server_core_is_netserves_own(name: str) -> None:
    # the mixins derive from the stdlib's (isinstance holds, and a socketserver server
    # mixed with them runs the stdlib's code); the core and the handlers are our own
    assert not issubclass(getattr(netserve, name), getattr(socketserver, name))
