"""The clock the runtime reads: one seam, so that its behaviour can be tried on a fake one.

The engine and the join dispatcher never read the wall clock or compute loop
deadlines themselves; they ask a `Clock`. In production that is `SystemClock`
(the wall clock, timers on the running event loop). Unit scenarios pass a clock
whose time is the event loop's (`looptime`'s fake loop time), so that an hour of
a bot's life runs in milliseconds and every wake-up happens at its computed instant.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Now, in epoch seconds."""
        ...

    def now(self) -> datetime:
        """Now, as an aware UTC datetime (the same instant as `time()`)."""
        ...

    def call_at(self, when: datetime | float, callback: Callable[..., object], *args: Any) -> asyncio.TimerHandle:
        """Run `callback(*args)` on the running loop at `when` (a datetime or epoch seconds)."""
        ...


class SystemClock:
    """The wall clock; timers on the running event loop, placed by the wall-clock distance."""

    def time(self) -> float:
        return time.time()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def call_at(self, when: datetime | float, callback: Callable[..., object], *args: Any) -> asyncio.TimerHandle:
        return loop_call_at(self, when, callback, *args)


def loop_call_at(
    clock: Clock, when: datetime | float, callback: Callable[..., object], *args: Any
) -> asyncio.TimerHandle:
    """`loop.call_at` for an instant of `clock`: the loop's own time is monotonic, not epoch."""
    at = when.timestamp() if isinstance(when, datetime) else when
    loop = asyncio.get_running_loop()
    return loop.call_at(loop.time() + (at - clock.time()), callback, *args)
