"""Loopback ports for the local cluster's servers and the processes tests start."""

from __future__ import annotations

import contextlib
import socket


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free on `host` now (the OS picks them).

    The sockets are held until all are picked, so the ports differ from each other;
    another program may still take one before the caller binds it.
    """
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for s in sockets:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in sockets]


def free_port(host: str = "127.0.0.1") -> int:
    """One port free on `host` now."""
    [port] = free_ports(1, host)
    return port
