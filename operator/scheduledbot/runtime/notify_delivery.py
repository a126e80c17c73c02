"""The deliveries: each bot's head of the outbox sent to its sink, in a task of its own, at a computed instant.

At most `--notify-concurrency` are in flight at once (the others wait for a slot,
and count as in flight for their bot, so only the head of each outbox is ever
sent). Every wait is a timer at a computed instant: the back-off of the head, or
the expiry of what cannot be sent (no sink). Around each known joinAt no attempt
starts and no outcome asks for a pass (`core.notify_quiet`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from scheduledbot.adapters.egress import EgressClient
from scheduledbot.adapters.notify import Notifier
from scheduledbot.api.models import ScheduledBotStatus
from scheduledbot.api.states import RESCHEDULABLE_STATES
from scheduledbot.core.notify import Attempt, Deliver, DeliveryPlan, Failure
from scheduledbot.core.notify_quiet import JoinInstants
from scheduledbot.runtime.notify_sinks import Sinks, Target
from scheduledbot.runtime.workqueue import Tasks
from scheduledbot.timestamps import parse_time

log = logging.getLogger(__name__)

Key = tuple[str, str]


@dataclass(slots=True)
class _Delivery:
    in_flight: bool = False
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    pending: int = 0


class Deliveries:
    def __init__(
        self,
        *,
        sinks: Sinks,
        concurrency: int,
        tasks: Tasks,
        outcome: Callable[[Key, Attempt], None],
        notifier: Notifier | None = None,
    ) -> None:
        self._sinks: Final = sinks
        self._slots: Final = asyncio.Semaphore(concurrency)
        self._concurrency: Final = concurrency
        self._tasks: Final = tasks
        #: Where an attempt's outcome goes (the outbox), before the pass that folds it is asked for.
        self._outcome: Final = outcome
        self._notifier = notifier
        self._bots: Final[dict[Key, _Delivery]] = {}
        self._poke: Callable[[Key], None] = lambda key: None
        #: Every bot's joinAt still ahead, so that deliveries keep clear of the join instants.
        self._joins: Final = JoinInstants()

    def bind(self, poke: Callable[[Key], None]) -> None:
        """The engine's poke: an attempt's outcome asks for a pass that writes it."""
        self._poke = poke

    def joins(self, key: Key, status: ScheduledBotStatus) -> None:
        """The bot's joinAt as the pass decided it, if it is still ahead."""
        ahead = status.join_at is not None and status.state in RESCHEDULABLE_STATES
        self._joins.set(key, parse_time(status.join_at).timestamp() if ahead and status.join_at else None)

    def in_flight(self, key: Key) -> bool:
        entry = self._bots.get(key)
        return entry is not None and entry.in_flight

    def carry_out(self, key: Key, plan: DeliveryPlan, target: Target | None) -> None:
        """What a written status decided: a delivery started (now, or at its back-off), or a wake-up."""
        entry = self._bots.setdefault(key, _Delivery())
        entry.pending = len((plan.notifications.pending if plan.notifications else None) or ())
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        if plan.deliver is not None and target is not None:
            self._schedule(key, entry, plan.deliver, target)
        elif plan.wake_at is not None:
            entry.timer = _call_at(plan.wake_at, self._poke, key)

    def forget(self, key: Key) -> None:
        self._joins.set(key, None)
        entry = self._bots.pop(key, None)
        if entry is None:
            return
        if entry.timer is not None:
            entry.timer.cancel()
        if entry.task is not None:
            entry.task.cancel()

    def queue(self) -> tuple[int, int]:
        """Changes pending and deliveries in flight, all bots."""
        bots = self._bots.values()
        return sum(entry.pending for entry in bots), sum(entry.in_flight for entry in bots)

    def _schedule(self, key: Key, entry: _Delivery, deliver: Deliver, target: Target) -> None:
        if deliver.not_before is None:
            self._start(key, entry, deliver, target)
            return
        entry.timer = _call_at(deliver.not_before, self._start, key, entry, deliver, target)

    def _start(self, key: Key, entry: _Delivery, deliver: Deliver, target: Target, *, quieted: bool = False) -> None:
        if self._bots.get(key) is not entry or entry.in_flight:
            return
        # Deferred once at most: with joins every second, windows follow one another without end.
        quiet = None if quieted else self._joins.quiet_until(time.time())
        if quiet is not None:
            entry.timer = _call_at(
                datetime.fromtimestamp(quiet, UTC),
                functools.partial(self._start, quieted=True),
                key,
                entry,
                deliver,
                target,
            )
            return
        entry.timer = None
        entry.in_flight = True
        entry.task = self._tasks.spawn(self._send(key, entry, deliver, target))

    async def _send(self, key: Key, entry: _Delivery, deliver: Deliver, target: Target) -> None:
        try:
            async with self._slots:
                attempt = await self._attempt(deliver, target)
        except Exception as error:  # one sink's trouble must not end the deliverer
            log.exception("notification %s could not be sent", deliver.id)
            attempt = Attempt(id=deliver.id, failure=Failure.CONNECTION, detail=type(error).__name__)
        entry.in_flight = False
        entry.task = None
        if self._bots.get(key) is not entry:
            return
        self._outcome(key, attempt)
        quiet = self._joins.quiet_until(time.time())
        if quiet is None:
            self._poke(key)
        else:
            # The outcome waits in memory; a pass that comes anyway (a watch event) folds it sooner.
            _call_at(datetime.fromtimestamp(quiet, UTC), self._poke, key)

    async def _attempt(self, deliver: Deliver, target: Target) -> Attempt:
        key = await self._sinks.signing_key(deliver, target)
        if isinstance(key, Attempt):
            return key
        if self._notifier is None:
            self._notifier = Notifier(EgressClient(policy=self._sinks.egress, max_connections=self._concurrency))
        return await self._notifier.deliver(
            deliver,
            url=target.sink.url,
            key=key,
            name=target.name,
            namespace=target.namespace,
            uid=target.uid,
            meeting_url=target.meeting_url,
        )

    async def close(self) -> None:
        if self._notifier is not None:
            await self._notifier.close()


def _call_at(moment: datetime, callback: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
    """`callback(*args)` at the wall-clock `moment`, by the loop's clock (computed once, no polling)."""
    loop = asyncio.get_running_loop()
    delay = max((moment - datetime.now(UTC)).total_seconds(), 0.0)
    return loop.call_at(loop.time() + delay, callback, *args)
