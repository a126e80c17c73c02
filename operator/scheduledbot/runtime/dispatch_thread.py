"""The join dispatcher on its own event loop, in its own thread.

Why a thread of its own
=======================
On the operator's event loop the instant waits for whatever runs there: at 5,000
bots on one `joinAt` the first signals left 1.3 s late, behind staging passes, Pod
watch events and status writes. Here the dispatcher (runtime/dispatcher.py,
unchanged in what it does) owns a second loop in a daemon thread. The operator's
loop hands it armed and disarmed joins through a thread-safe queue and gets the
outcomes back, batched, by `call_soon_threadsafe`; neither loop ever awaits the other.

The instant's quiet window
==========================
A thread still shares the interpreter (the GIL) and the garbage collector. Around
each instant:

- from `QUIET_AHEAD` before it, the collector is off (a full collection of a large
  heap stops every thread for tens of ms) and the interpreter's switch interval is
  short, so that the dispatcher's timer gets the GIL within a millisecond of waking;
- from `HOLD_AHEAD` before it, the operator's loop parks in a blocking wait that
  releases the GIL, until the batch's bytes are written (at most `HOLD_MAX`): the
  writes then never wait for a pass to give the interpreter back. Passes are not
  time-critical; the time they lose is the batch's, a few ms per thousand bots.

Both loops' lag at the instant is measured (`lag(loop, seconds)`): the
dispatcher's is how late its timer ran, the operator's how late its hold ran.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Final, Generic, TypeVar

from scheduledbot.adapters.bots import JoinLine
from scheduledbot.core.model import SignalOutcome
from scheduledbot.runtime.dispatcher import JoinDispatcher, fire_time

log = logging.getLogger(__name__)

QUIET_AHEAD: Final = 0.5
HOLD_AHEAD: Final = 0.005
#: The operator's loop is never parked longer than this, whatever happens in the batch.
HOLD_MAX: Final = 0.25
#: The switch interval inside a quiet window (CPython's default is 5 ms).
QUIET_SWITCH_INTERVAL: Final = 0.0005
#: Threads writing a batch (runtime/dispatcher.py, "Writers"): one per CPU the process may
#: use, at most this many. Two were measured (on 2 cores); more would mostly contend for
#: the interpreter lock, which each write takes for its bookkeeping.
MAX_WRITERS: Final = 2

K = TypeVar("K", bound=Hashable)

#: A command for the dispatcher's loop: ("arm", key, kwargs) or ("disarm", key, None).
_Command = tuple[str, object, dict[str, object] | None]


class _Quiet:
    """The process-wide side of quiet windows: the collector and the switch interval.

    Counted, because windows of neighbouring instants may overlap.
    """

    def __init__(self) -> None:
        self._open = 0
        self._gc_was_enabled = True
        self._switch = sys.getswitchinterval()

    def begin(self) -> None:
        if self._open == 0:
            self._gc_was_enabled = gc.isenabled()
            self._switch = sys.getswitchinterval()
            gc.disable()
            sys.setswitchinterval(QUIET_SWITCH_INTERVAL)
        self._open += 1

    def end(self) -> None:
        if self._open == 0:
            return
        self._open -= 1
        if self._open == 0:
            sys.setswitchinterval(self._switch)
            if self._gc_was_enabled:
                gc.enable()


class DispatcherThread(Generic[K]):
    """`JoinDispatcher`'s interface (`arm`, `disarm`, `close`), served from its own thread.

    `report(key, outcome)` runs on the caller's loop. `lag(loop, seconds)` is told, for
    each instant, how late the dispatcher's timer ("dispatcher") and the operator's
    hold ("operator") ran; it may be called from either thread. `writers`: the threads
    writing a batch (default: one per CPU, at most `MAX_WRITERS`).
    """

    def __init__(
        self,
        *,
        report: Callable[[K, SignalOutcome], None],
        lag: Callable[[str, float], None] = lambda loop, seconds: None,
        writers: int | None = None,
    ) -> None:
        self._report = report
        self._lag = lag
        self._owner: asyncio.AbstractEventLoop | None = None
        #: The thread-safe queue to the dispatcher's loop: appended and swapped under the lock.
        self._commands: list[_Command] = []
        self._commands_lock = threading.Lock()
        self._outcomes: list[tuple[K, SignalOutcome]] = []
        self._outcomes_lock = threading.Lock()
        self._quiet = _Quiet()
        #: Instants with a quiet window planned (dispatcher thread only), to their release event.
        self._windows: dict[float, threading.Event] = {}
        self._loop = asyncio.new_event_loop()
        if writers is None:
            writers = min(MAX_WRITERS, len(os.sched_getaffinity(0)))
        self._inner: JoinDispatcher[K] = JoinDispatcher(report=self._outcome, instant=self._instant, writers=writers)
        self._thread = threading.Thread(target=self._run, name="join-dispatcher", daemon=True)
        self._thread.start()

    # The operator's side ----------------------------------------------------------------

    def arm(self, key: K, *, join_at: datetime, not_before: datetime | None, line: JoinLine, request_id: str) -> None:
        """As `JoinDispatcher.arm`; takes effect on the dispatcher's loop moments later."""
        self._send(("arm", key, {"join_at": join_at, "not_before": not_before, "line": line, "request_id": request_id}))

    def disarm(self, key: K) -> None:
        self._send(("disarm", key, None))

    async def close(self) -> None:
        if not self._thread.is_alive():
            return
        closing = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        await asyncio.wrap_future(closing)
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join, 5)

    def _send(self, command: _Command) -> None:
        if self._owner is None:
            self._owner = asyncio.get_running_loop()
        with self._commands_lock:
            first = not self._commands
            self._commands.append(command)
        if first:
            # One wake-up per burst: 5,000 arms of one pass storm are drained together.
            self._loop.call_soon_threadsafe(self._drain)

    def _deliver(self) -> None:
        with self._outcomes_lock:
            outcomes, self._outcomes = self._outcomes, []
        for key, outcome in outcomes:
            self._report(key, outcome)

    def _schedule_hold(self, fire: float, release: threading.Event) -> None:
        assert self._owner is not None
        at = fire - HOLD_AHEAD
        self._owner.call_at(self._owner.time() + (at - time.time()), self._hold, at, release)

    def _hold(self, at: float, release: threading.Event) -> None:
        late = time.time() - at
        self._lag("operator", max(0.0, late))
        if late < HOLD_MAX:
            # Blocking on purpose: the wait releases the GIL to the dispatcher's thread.
            release.wait(HOLD_MAX)

    # The dispatcher's side ----------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._quiet_all_end()
            self._loop.close()

    def _drain(self) -> None:
        with self._commands_lock:
            commands, self._commands = self._commands, []
        for verb, key, args in commands:
            if verb == "disarm":
                self._inner.disarm(key)  # type: ignore[arg-type]
                continue
            assert args is not None
            self._inner.arm(key, **args)  # type: ignore[arg-type]
            if args["not_before"] is None:
                # The instant of a joinAt; a retry's own later instant gets no window (nor holds the
                # operator's loop once per retried bot).
                self._plan_window(fire_time(args["join_at"], None))  # type: ignore[arg-type]

    def _plan_window(self, fire: float) -> None:
        ahead = fire - time.time()
        if fire in self._windows or ahead <= 0:
            return
        release = self._windows[fire] = threading.Event()
        now = self._loop.time()
        self._loop.call_at(now + max(0.0, ahead - QUIET_AHEAD), self._quiet.begin)
        # After the batch's own timer (set SPIN_AHEAD earlier), which writes without yielding.
        self._loop.call_at(now + ahead, self._window_end, fire)
        assert self._owner is not None
        self._owner.call_soon_threadsafe(self._schedule_hold, fire, release)

    def _window_end(self, fire: float) -> None:
        release = self._windows.pop(fire, None)
        if release is not None:
            release.set()
            self._quiet.end()

    def _quiet_all_end(self) -> None:
        for fire in list(self._windows):
            self._window_end(fire)

    def _instant(self, fire: float, lag: float) -> None:
        self._lag("dispatcher", lag)

    def _outcome(self, key: K, outcome: SignalOutcome) -> None:
        with self._outcomes_lock:
            first = not self._outcomes
            self._outcomes.append((key, outcome))
        if first and self._owner is not None:
            # One hand-over per batch of outcomes, not one per bot.
            self._owner.call_soon_threadsafe(self._deliver)

    async def _shutdown(self) -> None:
        await self._inner.close()
        self._quiet_all_end()
