"""The outbox as a pass folds it: what goes in a bot's status (`status.notifications`, the NotificationsFailing
condition) and the delivery the pass decided, kept until its status is written. Pure work, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from scheduledbot.api.models import ScheduledBotStatus
from scheduledbot.core.model import BotView
from scheduledbot.core.notify import Attempt, DeliveryPlan, RetryPolicy, plan_delivery, record_change
from scheduledbot.core.notify_status import with_notifications_condition
from scheduledbot.runtime.notify_sinks import Sinks, Target

Key = tuple[str, str]


@dataclass(slots=True)
class _Folding:
    #: The outcome of the last attempt, until a written status has folded it.
    attempt: Attempt | None = None
    #: The attempt folded into the status the current pass is writing.
    folded: Attempt | None = None
    plan: DeliveryPlan | None = None
    target: Target | None = None


@dataclass(frozen=True, slots=True)
class Folded:
    """What a written status decided: its plan, the attempt it folded, where the head goes."""

    plan: DeliveryPlan
    attempt: Attempt | None
    target: Target | None


class Outbox:
    def __init__(self, *, sinks: Sinks, policy: RetryPolicy, jitter: Callable[[], float]) -> None:
        self._sinks: Final = sinks
        self._policy: Final = policy
        self._jitter: Final = jitter
        self._bots: Final[dict[Key, _Folding]] = {}

    def fold(
        self, key: Key, bot: BotView, status: ScheduledBotStatus, now: datetime, *, in_flight: bool
    ) -> ScheduledBotStatus:
        """`status` (the pass's decision) with its state change recorded and the outbox advanced."""
        sink = self._sinks.sink(bot)
        status = record_change(before=bot.status, after=status, sink=sink, now=now)
        if status.notifications is None and bot.status.notifications is None:
            return status
        entry = self._bots.setdefault(key, _Folding())
        plan = plan_delivery(
            uid=bot.uid,
            notifications=status.notifications,
            sink=sink,
            attempt=entry.attempt,
            in_flight=in_flight,
            policy=self._policy,
            jitter=self._jitter(),
            now=now,
        )
        entry.folded, entry.plan = entry.attempt, plan
        if sink is not None:
            meeting_url = bot.spec.meeting_url if bot.spec is not None else None
            entry.target = Target(
                name=bot.name, namespace=bot.namespace, uid=bot.uid, meeting_url=meeting_url, sink=sink
            )
        status = status.model_copy(update={"notifications": plan.notifications})
        return with_notifications_condition(
            status, previous=bot.status.conditions or (), generation=bot.generation, now=now
        )

    def take(self, key: Key) -> Folded | None:
        """The status `fold` made is written: what it decided (None: nothing), the folded outcome let go."""
        entry = self._bots.get(key)
        if entry is None or entry.plan is None:
            return None
        taken = Folded(plan=entry.plan, attempt=entry.folded, target=entry.target)
        entry.plan = entry.folded = None
        if taken.attempt is not None and entry.attempt is taken.attempt:
            entry.attempt = None
        return taken

    def outcome(self, key: Key, attempt: Attempt) -> None:
        """An attempt ended: the next pass folds it."""
        entry = self._bots.get(key)
        if entry is not None:
            entry.attempt = attempt

    def forget(self, key: Key) -> None:
        self._bots.pop(key, None)

    def bots(self) -> list[Key]:
        """The bots with an outbox here (a copy: each may be forgotten meanwhile)."""
        return list(self._bots)
