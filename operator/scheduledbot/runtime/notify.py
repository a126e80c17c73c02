"""The deliverer: sends each bot's recorded state changes to its sink, off the engine's critical path.

Who writes what
===============
Only the engine writes a bot's status, one pass at a time, so the outbox
(`status.notifications`) has a single writer and no update can be lost between
two of them. The deliverer plugs into each pass at two points:

- `fold` (pure work, inside the pass, before its one status write): the state
  change the pass makes is appended to the outbox (`core.notify.record_change`),
  the outcome of the last attempt is folded in and the next delivery chosen
  (`core.notify.plan_delivery`), and the NotificationsFailing condition derived.
- `published` (after that write): what was decided is carried out: a delivery
  started (now, or by a timer at its back-off), an expiry timer set, Events,
  metrics. An attempt's outcome is kept here until a status that folds it has been
  written, then the engine is poked for that pass.

So a delivery starts only once the change it announces is in the API server, and
a restarted operator finds in the status exactly what it still has to send: its
first pass of each bot plans the head of the outbox again, under the same id.

Never in the way of a join
==========================
Deliveries are tasks of their own; a pass only folds and schedules, it never
waits for a sink. At most `--notify-concurrency` are in flight at once (the
others wait for a slot, and count as in flight for their bot, so only the head of
each outbox is ever sent). Every wait is a timer at a computed instant: the
back-off of the head, or the expiry of what cannot be sent (no sink). Around each
known joinAt the deliverer keeps quiet (`core.notify_quiet`): no attempt starts and
no outcome asks for a pass from a second before to half a second after, so the
join dispatcher has the event loop to itself at the instant.

The parts
=========
runtime/notify_outbox.py folds (what goes in the status), runtime/notify_delivery.py
sends (timers, slots, quiet windows, the HTTP client), runtime/notify_sinks.py says
where and with which key, runtime/notify_metrics.py counts; this module wires them
into the engine's passes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from prometheus_client import CollectorRegistry

from scheduledbot.adapters.kube import Kube
from scheduledbot.adapters.notify import Notifier
from scheduledbot.api.models import ScheduledBotStatus
from scheduledbot.core.model import BotView
from scheduledbot.core.notify import RetryPolicy
from scheduledbot.runtime.config import Settings
from scheduledbot.runtime.notify_delivery import Deliveries
from scheduledbot.runtime.notify_metrics import NotifyMetrics
from scheduledbot.runtime.notify_outbox import Outbox
from scheduledbot.runtime.notify_sinks import Sinks, default_signing_key, egress_policy
from scheduledbot.runtime.workqueue import Tasks

log = logging.getLogger(__name__)

Key = tuple[str, str]

__all__ = ["Notifications", "NotifyMetrics", "default_signing_key", "egress_policy"]


class Notifications:
    """The notification side of the engine's passes; see the module's docstring."""

    def __init__(
        self,
        *,
        settings: Settings,
        kube: Kube,
        registry: CollectorRegistry,
        notifier: Notifier | None = None,
        policy: RetryPolicy | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        sinks = Sinks(settings=settings, kube=kube)
        self._kube: Final = kube
        self._tasks: Final = Tasks()
        policy = policy or RetryPolicy(max_retry_seconds=settings.notify_max_retry_seconds)
        self._outbox: Final = Outbox(sinks=sinks, policy=policy, jitter=jitter)
        self._deliveries: Final = Deliveries(
            sinks=sinks,
            concurrency=settings.notify_concurrency,
            tasks=self._tasks,
            outcome=self._outbox.outcome,
            notifier=notifier,
        )
        self.metrics = NotifyMetrics(registry, self._queue)

    def bind(self, poke: Callable[[Key], None]) -> None:
        """The engine's poke: an attempt's outcome asks for a pass that writes it."""
        self._deliveries.bind(poke)

    # Inside a pass ------------------------------------------------------------------------

    def fold(self, key: Key, bot: BotView, status: ScheduledBotStatus, now: datetime) -> ScheduledBotStatus:
        """`status` (the pass's decision) with its state change recorded and the outbox advanced. Pure work."""
        self._deliveries.joins(key, status)
        return self._outbox.fold(key, bot, status, now, in_flight=self._deliveries.in_flight(key))

    def published(self, key: Key, body: dict[str, Any] | None) -> None:
        """The status `fold` made is written: act on its plan."""
        folded = self._outbox.take(key)
        if folded is None:
            return
        for reason, message in self.metrics.account(folded.attempt, folded.plan, folded.target):
            if body is not None:
                self._event(body, reason, message)
        self._deliveries.carry_out(key, folded.plan, folded.target)

    def forget(self, key: Key) -> None:
        """The bot is gone (or replaced under its name): what it had pending went with its status."""
        self._outbox.forget(key)
        self._deliveries.forget(key)

    def _event(self, body: dict[str, Any], reason: str, message: str) -> None:
        log.warning("%s/%s %s: %s", body["metadata"]["namespace"], body["metadata"]["name"], reason, message)
        post = self._kube.post_event(body, type_="Warning", reason=reason, message=message, now=datetime.now(UTC))
        self._tasks.spawn(post)

    def _queue(self) -> tuple[int, int]:
        return self._deliveries.queue()

    async def close(self) -> None:
        for key in self._outbox.bots():
            self.forget(key)
        await self._tasks.close()
        await self._deliveries.close()
