"""Pre-forked, supervised worker processes: ``Supervisor`` in the parent, ``Worker`` in each
child. The supervisor sees only a ``target(sockets, worker)`` callable, never handlers."""

from ._loadboard import AcceptBalance, LoadBoard
from ._protocol import EXIT_BOOT_ERROR, EXIT_CRASH
from ._supervisor import Supervisor
from ._worker import Worker

__all__ = ["EXIT_BOOT_ERROR", "EXIT_CRASH", "AcceptBalance", "LoadBoard", "Supervisor", "Worker"]
