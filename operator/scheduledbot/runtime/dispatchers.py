"""Where the join dispatcher runs: on the engine's loop, or on its own loop in its own thread."""

from __future__ import annotations

from collections.abc import Callable

from scheduledbot.core.model import SignalOutcome
from scheduledbot.runtime.cache import Key
from scheduledbot.runtime.clock import Clock
from scheduledbot.runtime.dispatch_thread import DispatcherThread
from scheduledbot.runtime.dispatcher import JoinDispatcher

#: Reports an event loop's lag at a join instant: `(loop, seconds)`, from either thread.
LagReport = Callable[[str, float], None]
#: Makes the join dispatcher from the engine's outcome callback, clock and lag report.
DispatcherFactory = Callable[
    [Callable[[Key, SignalOutcome], None], Clock, LagReport], "JoinDispatcher[Key] | DispatcherThread[Key]"
]


def in_loop_dispatcher(
    report: Callable[[Key, SignalOutcome], None], clock: Clock, lag: LagReport
) -> JoinDispatcher[Key]:
    """The join dispatcher on the engine's own event loop (the one unit scenarios drive)."""
    return JoinDispatcher(report=report, clock=clock, instant=lambda fire, late: lag("dispatcher", late))


def threaded_dispatcher(
    report: Callable[[Key, SignalOutcome], None], clock: Clock, lag: LagReport
) -> DispatcherThread[Key]:
    """The join dispatcher on its own loop in its own thread (runtime/dispatch_thread.py), so that
    nothing on the operator's loop delays the instant; it keeps the wall clock."""
    return DispatcherThread(report=report, lag=lag)
