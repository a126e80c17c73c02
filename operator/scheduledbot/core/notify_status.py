"""The NotificationsFailing condition: whether a bot's notifications currently fail to arrive.

`core.plan` writes the three kstatus conditions with every state change and keeps
no others; this one is derived from `status.notifications` after that, in the same
status write, so it survives every state change. It exists only for bots that
have notifications at all. Its `lastTransitionTime` changes only when it flips,
so "failing since" can be read off it as well as off `failingSince`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from scheduledbot.api.models import Condition, ConditionStatus, ScheduledBotStatus
from scheduledbot.timestamps import format_time

NOTIFICATIONS_FAILING: Final = "NotificationsFailing"


def with_notifications_condition(
    status: ScheduledBotStatus, *, previous: Sequence[Condition], generation: int, now: datetime
) -> ScheduledBotStatus:
    """`status` with the NotificationsFailing condition set from its notifications (kept from `previous`)."""
    notes = status.notifications
    others = [c for c in status.conditions or () if c.type != NOTIFICATIONS_FAILING]
    if notes is None:
        return status if len(others) == len(status.conditions or ()) else _conditions(status, others)
    if notes.failures:
        state, reason = ConditionStatus.TRUE, "DeliveryFailing"
        message = f"{notes.failures} failed attempts in a row: {notes.last_error or 'no answer'}"
        if notes.next_attempt_at:
            message += f"; next attempt at {notes.next_attempt_at}"
    elif notes.gone:
        state, reason, message = ConditionStatus.TRUE, "SinkGone", "the sink answered 410 Gone: nothing more is sent"
    else:
        state, reason, message = ConditionStatus.FALSE, "Delivering", "no failed attempt since the last delivery"
    before = next((c for c in previous if c.type == NOTIFICATIONS_FAILING), None)
    since = before.last_transition_time if before is not None and before.status == state else format_time(now)
    condition = Condition(
        type=NOTIFICATIONS_FAILING,
        status=state,
        observed_generation=generation,
        last_transition_time=since,
        reason=reason,
        message=message[:1024],
    )
    return _conditions(status, [*others, condition])


def _conditions(status: ScheduledBotStatus, conditions: list[Condition]) -> ScheduledBotStatus:
    return status.model_copy(update={"conditions": conditions or None})
