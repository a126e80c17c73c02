"""The per-key pass queue of the controllers (runtime/engine.py, runtime/schedules.py).

What it promises, whatever a pass does:

- Passes of one key never overlap: a poke during a pass marks the key dirty and
  one more pass follows, after the current one.
- At most `concurrency` passes run at once, so that 10,000 keys found at start-up
  queue politely, and every further pass of a key yields first.
- A key's next wake-up is a single timer, replaced by every pass (`wake`):
  nothing wakes on a fixed interval. A pass asked for from outside a pass (a
  failed bot call's retry, `wake_within`) has a timer of its own beside it: the
  earlier of the two brings the next pass, and neither pushes the other back.
- A pass that raises is tried again after a back-off that doubles, capped.
- A pass that asks for another at once without having changed anything
  (`defer_spin`) runs again a second later instead: a planning mistake costs a
  little delay, not a spin.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Generic, TypeVar

from scheduledbot.runtime.clock import Clock, SystemClock

K = TypeVar("K", bound=Hashable)

#: A failed pass (the API server unreachable, say) is tried again after this, doubling, capped.
RETRY_FIRST_SECONDS: Final = 0.5
RETRY_CAP_SECONDS: Final = 60.0
#: How much later a pass that spun (`Passes.defer_spin`) runs again.
SPIN_DEFER_SECONDS: Final = 1.0


@dataclass(slots=True)
class _Slot:
    """One key's place in the queue."""

    running: bool = False
    dirty: bool = False
    timer: asyncio.TimerHandle | None = None
    #: A pass asked for from outside a pass (`wake_within`), at `soon_at`; any pass meets it.
    soon: asyncio.TimerHandle | None = None
    soon_at: float | None = None
    #: The instant `timer` was armed for.
    at: datetime | float | None = None
    #: Passes that failed in a row: the next one waits a growing, capped time.
    failures: int = 0
    #: A pass of this key asked to run again without any change (logged once).
    spun: bool = False


class Passes(Generic[K]):
    def __init__(
        self,
        *,
        run: Callable[[K], Awaitable[None]],
        concurrency: int,
        label: Callable[[K], str],
        log: logging.Logger,
        known: Callable[[K], bool],
        clock: Clock | None = None,
        idle: Callable[[K], None] = lambda key: None,
        spun: Callable[[], None] = lambda: None,
    ) -> None:
        """`run` is one pass of a key; `label` names a key in the log; `known` says whether the
        owner still knows a key (a poke of one it forgot is dropped); `idle` is told when a key's
        passes stop (none is due); `spun` counts the passes `defer_spin` defers."""
        self._run = run
        self._known: Final = known
        self._label: Final = label
        self._log: Final = log
        self._clock: Final[Clock] = clock or SystemClock()
        self._idle: Final = idle
        self._spun: Final = spun
        self._slots: Final[dict[K, _Slot]] = {}
        self._running: Final = asyncio.Semaphore(concurrency)
        self._tasks: Final = Tasks()

    def poke(self, key: K) -> None:
        """A pass of `key` soon: now, or after the one running."""
        if not self._known(key):
            return
        slot = self._slots.setdefault(key, _Slot())
        if slot.running:
            slot.dirty = True
            return
        slot.running = True
        self.spawn(self._passes(key, slot))

    def poke_all(self, keys: Iterable[K]) -> None:
        for key in list(keys):
            self.poke(key)

    def again(self, key: K) -> None:
        """One more pass of `key` after the one running."""
        slot = self._slots.get(key)
        if slot is not None:
            slot.dirty = True

    async def _passes(self, key: K, slot: _Slot) -> None:
        try:
            while self._slots.get(key) is slot:  # a forgotten key's passes stop
                slot.dirty = False
                async with self._running:
                    # This pass is the one asked for: what it starts asks again if it must.
                    self._cancel_soon(slot)
                    try:
                        await self._run(key)
                        slot.failures = 0
                    except Exception:  # one key's trouble must not stop the others
                        self._retry_later(key, slot)
                if not slot.dirty:
                    return
                # Every further pass yields first: watch events, other keys and the health
                # endpoint run in between, whatever this key's passes ask for.
                await asyncio.sleep(0)
        finally:
            slot.running = False
            self._idle(key)

    def _retry_later(self, key: K, slot: _Slot) -> None:
        # The back-off replaces the key's wake-up, even an earlier one: the pass that failed
        # never set its own, and while passes fail (the API server away) one at the last
        # computed instant would only fail too; the retry's pass computes every instant anew.
        delay = min(RETRY_CAP_SECONDS, RETRY_FIRST_SECONDS * 2**slot.failures)
        slot.failures += 1
        self._log.exception("pass for %s failed; trying again in %.1f s", self._label(key), delay)
        if self._slots.get(key) is slot:
            self._arm(slot, key, self._clock.time() + delay)

    def wake(self, key: K, at: datetime | None, now: datetime) -> None:
        """The next pass of `key` at `at` (None: at no set time); at or before `now`: one more at once."""
        slot = self._slots.get(key)
        if slot is None:
            return
        if at is None or at <= now:
            self._arm(slot, key, None)
            if at is not None:
                slot.dirty = True
            return
        self._arm(slot, key, at)

    def wake_in(self, key: K, seconds: float) -> None:
        """The next pass of `key` in `seconds`, replacing its wake-up."""
        slot = self._slots.get(key)
        if slot is not None:
            self._arm(slot, key, self._clock.time() + seconds)

    def wake_within(self, key: K, seconds: float) -> None:
        """A pass of `key` no later than in `seconds`: beside its wake-up, not replacing it (the
        earlier of the two runs); the next pass of `key`, whatever brings it, meets it."""
        slot = self._slots.get(key)
        if slot is None:
            return
        at = self._clock.time() + seconds
        if slot.soon_at is not None and slot.soon_at <= at:
            return
        self._cancel_soon(slot)
        slot.soon_at = at
        slot.soon = self._clock.call_at(at, self._soon_due, key)

    @staticmethod
    def _cancel_soon(slot: _Slot) -> None:
        if slot.soon is not None:
            slot.soon.cancel()
        slot.soon = slot.soon_at = None

    def defer_spin(self, key: K, now: datetime) -> None:
        """A pass asked for another at once, having changed nothing: that one would decide the
        same, forever. Counted, logged once per key, and deferred, so nothing can spin."""
        slot = self._slots.get(key)
        if slot is None:
            return
        self._spun()
        if not slot.spun:
            slot.spun = True
            self._log.error("%s: a pass asked to run again at once without any change; deferring it", self._label(key))
        self.wake(key, now + timedelta(seconds=SPIN_DEFER_SECONDS), now)

    def _arm(self, slot: _Slot, key: K, at: datetime | float | None) -> None:
        if at is not None and at == slot.at and slot.timer is not None:
            # The same wake-up as armed (the pass after a bot's own status write asks for it
            # again): that timer, not a new one beside a cancelled one. The loop keeps cancelled
            # timers until they are due or outnumber the live ones, and one per waiting bot never
            # does (bench/memory.py, 300 waiting bots: timers 466 bytes per bot before, 257 after).
            return
        if slot.timer is not None:
            slot.timer.cancel()
        slot.at = at
        slot.timer = None if at is None else self._clock.call_at(at, self._due, key)

    def _due(self, key: K) -> None:
        slot = self._slots.get(key)
        if slot is not None:
            slot.timer = slot.at = None  # fired: the same instant asked for again needs a new timer
            self.poke(key)

    def _soon_due(self, key: K) -> None:
        # Its own callback: `_due` forgets the pass's timer, which is still armed beside this one.
        slot = self._slots.get(key)
        if slot is not None:
            slot.soon = slot.soon_at = None
            self.poke(key)

    def forget(self, key: K) -> None:
        """No more passes of `key` (a pass running ends as it is)."""
        slot = self._slots.pop(key, None)
        if slot is None:
            return
        if slot.timer is not None:
            slot.timer.cancel()
        self._cancel_soon(slot)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task of the controller's, cancelled at `close`."""
        return self._tasks.spawn(coro)

    async def close(self) -> None:
        for key in list(self._slots):
            self.forget(key)
        await self._tasks.close()


class Tasks:
    """Background tasks of one owner (the pass queue, the notification deliverer), cancelled at `close`."""

    def __init__(self) -> None:
        self._tasks: Final[set[asyncio.Task[None]]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        # An empty context, not a copy of the caller's: a pass spawned from a kopf handler
        # would otherwise carry kopf's context variables (the event's cause, body, patch and
        # logger), and so would every timer the pass arms, for as long as a bot waits
        # (bench, 10,000 scheduled bots: 45 MB of the operator's memory).
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
