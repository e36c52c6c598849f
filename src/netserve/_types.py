"""Type aliases shared by the layers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

__all__ = ["Address", "ClientAddress", "RequestHandlerFactory"]

#: An address as ``socket.bind()`` takes it: ``(host, port)`` for IPv4,
#: ``(host, port, flowinfo, scope_id)`` for IPv6, a path (str or bytes) for Unix sockets.
Address: TypeAlias = tuple[Any, ...] | str | bytes

#: A peer address as ``accept()`` or ``recvfrom()`` returns it; its shape depends on the family.
ClientAddress: TypeAlias = Any

#: What a server calls once per request: ``RequestHandlerClass(request, client_address, server)``.
RequestHandlerFactory: TypeAlias = Callable[..., object]
