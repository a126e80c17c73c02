"""What to notify, when, and what to do with each attempt's outcome. Pure: `now` and jitter are passed in.

The pieces of a pass
====================
The runtime already runs one pass per bot at a time, and one status write per
pass. Notifications ride on it:

1. `record_change(before, after, sink, now)`: when `core.plan` moved the state,
   the change is appended to `status.notifications.pending` in the same status,
   so the write that makes a change also records that it must be told.
2. `plan_delivery(notifications, sink, attempt, ...)`: folds the outcome of the
   last attempt (delivered, retry later, rejected, gone), drops what passed its
   retry window, and names the next delivery: the head of the queue, not before
   its back-off. Only the head is ever in flight, so deliveries are in order.

The deliverer (runtime) sends a `Deliver`, reports an `Attempt`, and the next pass
folds it. A crash between the sink's 2xx and that pass sends the head again under
the same id: at least once, never out of order, never a second id for one change.

Retry policy
============
- 2xx: delivered.
- 429, 5xx, no HTTP answer (connect, reset, timeout), a refusal by the egress
  policy, or no usable signing key: retried. The delay grows from
  `first_delay_seconds`, doubling per failure in a row on this sink, up to
  `max_delay_seconds`, times a jitter in [1 - jitter_fraction, 1] drawn by the
  runtime; a Retry-After answer is honoured instead, within
  [`min_retry_after_seconds`, `max_delay_seconds`]. The last attempt falls at the
  end of the window.
- 410 Gone: the sink asked to hear no more (Standard Webhooks): the pending
  changes are dropped and nothing is queued for this sink until spec.notify
  changes.
- any other answer (3xx: redirects are not followed; 4xx but 429): that change is
  dropped and recorded in `lastFailure`; the next change waits the back-off.
- a change not delivered within `max_retry_seconds` of its time is given up
  (`Expired`), whether or not its turn came.

Failures in a row are counted per sink, not per change: when the sink is down,
the change behind a dropped one does not start again at the shortest delay.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from scheduledbot.api.models import ScheduledBotStatus
from scheduledbot.api.notify import (
    MAX_ERROR_LENGTH,
    MAX_NOTICE_MESSAGE,
    MAX_PENDING,
    DeliveredNotice,
    FailedNotice,
    Notice,
    NotificationsStatus,
    NotifySpec,
    SecretKeyRef,
)
from scheduledbot.api.states import BotState
from scheduledbot.timestamps import format_time, parse_time

#: `2 ** n` past this is far beyond any cap, and would only risk an overflow.
_MAX_EXPONENT: Final = 30


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How deliveries are retried; the window is an operator setting."""

    first_delay_seconds: float = 5.0
    max_delay_seconds: float = 3600.0
    #: Each change is given up this long after it happened.
    max_retry_seconds: float = 24 * 3600.0
    #: The back-off is scaled by 1 - jitter_fraction * jitter, jitter in [0, 1].
    jitter_fraction: float = 0.5
    min_retry_after_seconds: float = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Sink:
    """Where one bot's notifications go: its spec.notify, or the operator's default sink."""

    url: str
    #: The Secret key in the bot's namespace; None: the operator's own key (the default sink's).
    key_ref: SecretKeyRef | None
    #: The states to notify; None: all.
    events: frozenset[BotState] | None = None

    @property
    def fingerprint(self) -> str:
        """Tells sinks apart in the status without showing the URL (which may hold a token)."""
        key = f"{self.key_ref.name}/{self.key_ref.key}" if self.key_ref else "(operator)"
        return hashlib.sha256(f"{self.url}\n{key}".encode()).hexdigest()[:16]

    def wants(self, state: BotState) -> bool:
        return self.events is None or state in self.events


def resolve_sink(notify: NotifySpec | None, *, default_url: str | None) -> Sink | None:
    """The bot's sink: its own, else the operator's default (with the bot's filter), else none."""
    if notify is not None and not notify.enabled:
        return None
    events = frozenset(notify.events) if notify is not None and notify.events else None
    if notify is not None and notify.url is not None:
        return Sink(url=notify.url, key_ref=notify.signing_key_secret_ref, events=events)
    if default_url is None:
        return None
    return Sink(url=default_url, key_ref=None, events=events)


def notification_id(*, uid: str, sequence: int) -> str:
    """The notification's id (webhook-id and CloudEvents id): one per change, the same in every retry."""
    return f"{uid}.{sequence}"


class Failure(enum.StrEnum):
    """Why an attempt got no HTTP answer."""

    #: Could not connect, the connection broke, or it timed out.
    CONNECTION = "connection"
    #: The egress policy refused the URL or the addresses it resolved to; nothing was sent.
    REFUSED = "refused"
    #: No usable signing key (Secret missing, unlabelled, malformed); nothing was sent.
    KEY = "key"


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """What the deliverer saw when it sent notification `id`: an HTTP status, or a failure."""

    id: str
    status: int | None = None
    #: The sink's Retry-After, in seconds from the answer.
    retry_after_seconds: float | None = None
    failure: Failure | None = None
    #: Short, already free of secrets (the adapter redacts URLs).
    detail: str = ""


class Verdict(enum.StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REJECTED = "rejected"
    GONE = "gone"


def classify(attempt: Attempt) -> Verdict:
    """The retry policy's reading of one attempt."""
    status = attempt.status
    if status is None:
        return Verdict.RETRY
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status == 410:
        return Verdict.GONE
    if status == 429 or 500 <= status < 600:
        return Verdict.RETRY
    return Verdict.REJECTED


def retry_delay(*, failures: int, retry_after_seconds: float | None, policy: RetryPolicy, jitter: float) -> float:
    """Seconds until the next attempt after `failures` failed attempts in a row (>= 1)."""
    if retry_after_seconds is not None:
        return min(max(retry_after_seconds, policy.min_retry_after_seconds), policy.max_delay_seconds)
    exponent = min(max(failures, 1) - 1, _MAX_EXPONENT)
    base = min(policy.max_delay_seconds, policy.first_delay_seconds * float(2**exponent))
    return base * (1.0 - policy.jitter_fraction * min(max(jitter, 0.0), 1.0))


def record_change(
    *, before: ScheduledBotStatus, after: ScheduledBotStatus, sink: Sink | None, now: datetime
) -> ScheduledBotStatus:
    """`after`, with its state change (if any) queued for `sink`. To be written as one status."""
    if sink is None or after.state is None or after.state == before.state:
        return after
    notes = _for_sink(after.notifications or NotificationsStatus(), sink)
    sequence = notes.sequence + 1
    if notes.gone or not sink.wants(after.state):
        return after.model_copy(update={"notifications": notes.model_copy(update={"sequence": sequence})})
    notice = Notice(
        sequence=sequence,
        state=after.state,
        previous_state=before.state,
        at=format_time(now),
        reason=after.reason,
        message=None if after.message is None else _cut(after.message, MAX_NOTICE_MESSAGE),
        join_at=after.join_at,
        join_signaled_at=after.join_signaled_at,
        join_lateness_ms=after.join_lateness_ms,
        joined_by=after.joined_by,
    )
    pending = list(notes.pending or ())
    if len(pending) >= MAX_PENDING:
        # The head may be in flight and keeps its id; the newest waiting entry takes this change in.
        tail = pending.pop()
        notice = notice.model_copy(
            update={"previous_state": tail.previous_state, "coalesced": (tail.coalesced or 0) + 1}
        )
    pending.append(notice)
    notes = notes.model_copy(update={"sequence": sequence, "pending": pending})
    return after.model_copy(update={"notifications": notes})


@dataclass(frozen=True, slots=True, kw_only=True)
class Deliver:
    """Send `notice` as notification `id`, at `not_before` (None: now), then report an `Attempt`."""

    id: str
    notice: Notice
    not_before: datetime | None
    #: Which attempt at this change this is, from 1.
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryPlan:
    """The notifications status to write and what to do next."""

    notifications: NotificationsStatus | None
    deliver: Deliver | None = None
    #: With nothing to deliver (no sink) but changes pending: when the head expires.
    wake_at: datetime | None = None
    #: Delivered by the folded attempt (metrics: latency from its time).
    delivered: Notice | None = None
    #: Given up in this pass (an Event and metrics each).
    given_up: tuple[FailedNotice, ...] = ()


def plan_delivery(
    *,
    uid: str,
    notifications: NotificationsStatus | None,
    sink: Sink | None,
    attempt: Attempt | None,
    in_flight: bool,
    policy: RetryPolicy,
    jitter: float,
    now: datetime,
) -> DeliveryPlan:
    """Fold `attempt` (the head's last outcome, if any), give up what is past its window, pick the next.

    `in_flight`: a delivery of the head is under way; nothing else starts and the
    head is not given up under it. `jitter` is a uniform draw from [0, 1].
    """
    if notifications is None:
        return DeliveryPlan(notifications=None)
    notes = notifications if sink is None else _for_sink(notifications, sink)
    given_up: list[FailedNotice] = []
    delivered: Notice | None = None
    head = notes.pending[0] if notes.pending else None
    if attempt is not None and head is not None and attempt.id == notification_id(uid=uid, sequence=head.sequence):
        notes, delivered, lost = _fold(notes, head, attempt, uid=uid, policy=policy, jitter=jitter, now=now)
        given_up.extend(lost)
    if not in_flight:
        notes, lost = _drop_stale(notes, sink, uid=uid, policy=policy, now=now)
        given_up.extend(lost)
    notes = _tidy(notes)
    head = notes.pending[0] if notes.pending else None
    deliver: Deliver | None = None
    wake_at: datetime | None = None
    if head is not None and not in_flight:
        if sink is None:
            wake_at = _deadline(head, policy) + timedelta(microseconds=1)
        else:
            due = parse_time(notes.next_attempt_at) if notes.next_attempt_at else None
            deliver = Deliver(
                id=notification_id(uid=uid, sequence=head.sequence),
                notice=head,
                not_before=due if due is not None and due > now else None,
                attempt=(head.attempts or 0) + 1,
            )
    return DeliveryPlan(
        notifications=notes, deliver=deliver, wake_at=wake_at, delivered=delivered, given_up=tuple(given_up)
    )


def describe(attempt: Attempt) -> str:
    """One line for status.notifications.lastError and Events."""
    if attempt.status is not None:
        text = f"HTTP {attempt.status}"
        if attempt.retry_after_seconds is not None:
            text += f" (Retry-After {attempt.retry_after_seconds:g} s)"
    else:
        text = {
            Failure.CONNECTION: "no answer",
            Failure.REFUSED: "refused by the egress policy",
            Failure.KEY: "no signing key",
        }[attempt.failure or Failure.CONNECTION]
    if attempt.detail:
        text += f": {attempt.detail}"
    return _cut(text, MAX_ERROR_LENGTH)


def _for_sink(notes: NotificationsStatus, sink: Sink) -> NotificationsStatus:
    """`notes` about `sink`: a new sink starts with no back-off and is not gone."""
    if notes.sink == sink.fingerprint:
        return notes
    return notes.model_copy(
        update={
            "sink": sink.fingerprint,
            "failures": None,
            "next_attempt_at": None,
            "failing_since": None,
            "gone": None,
        }
    )


def _fold(
    notes: NotificationsStatus,
    head: Notice,
    attempt: Attempt,
    *,
    uid: str,
    policy: RetryPolicy,
    jitter: float,
    now: datetime,
) -> tuple[NotificationsStatus, Notice | None, list[FailedNotice]]:
    verdict = classify(attempt)
    rest = list(notes.pending or ())[1:]
    attempts = (head.attempts or 0) + 1
    if verdict is Verdict.DELIVERED:
        done = DeliveredNotice(
            id=notification_id(uid=uid, sequence=head.sequence),
            sequence=head.sequence,
            state=head.state,
            delivered_at=format_time(now),
            attempts=attempts,
        )
        cleared = {"failures": None, "next_attempt_at": None, "failing_since": None, "last_error": None}
        return notes.model_copy(update={"pending": rest, "last_delivered": done, **cleared}), head, []
    error = describe(attempt)
    failures = (notes.failures or 0) + 1
    failing = {"failures": failures, "failing_since": notes.failing_since or format_time(now), "last_error": error}
    if verdict is Verdict.GONE:
        lost = [_failed(notice, uid=uid, reason="Gone", message=error, now=now) for notice in notes.pending or ()]
        lost[0] = lost[0].model_copy(update={"attempts": attempts})
        update = {**failing, "pending": [], "next_attempt_at": None, "gone": True}
        return _dropped(notes.model_copy(update=update), lost), None, lost
    delay = timedelta(
        seconds=retry_delay(
            failures=failures, retry_after_seconds=attempt.retry_after_seconds, policy=policy, jitter=jitter
        )
    )
    deadline = _deadline(head, policy)
    if verdict is Verdict.RETRY and now < deadline:
        retried = head.model_copy(update={"attempts": attempts})
        update = {**failing, "pending": [retried, *rest], "next_attempt_at": format_time(min(now + delay, deadline))}
        return notes.model_copy(update=update), None, []
    reason = "Rejected" if verdict is Verdict.REJECTED else "Expired"
    lost = [_failed(head.model_copy(update={"attempts": attempts}), uid=uid, reason=reason, message=error, now=now)]
    update = {**failing, "pending": rest, "next_attempt_at": format_time(now + delay)}
    return _dropped(notes.model_copy(update=update), lost), None, lost


def _drop_stale(
    notes: NotificationsStatus, sink: Sink | None, *, uid: str, policy: RetryPolicy, now: datetime
) -> tuple[NotificationsStatus, list[FailedNotice]]:
    """Without entries past their window (given up), nor ones the sink's filter no longer wants (silently)."""
    kept: list[Notice] = []
    lost: list[FailedNotice] = []
    for notice in notes.pending or ():
        if sink is not None and not sink.wants(notice.state):
            continue
        if now > _deadline(notice, policy):
            why = notes.last_error or "no delivery was attempted"
            lost.append(_failed(notice, uid=uid, reason="Expired", message=f"not delivered in time: {why}", now=now))
            continue
        kept.append(notice)
    if len(kept) == len(notes.pending or ()):
        return notes, []
    return _dropped(notes.model_copy(update={"pending": kept}), lost), lost


def _dropped(notes: NotificationsStatus, lost: list[FailedNotice]) -> NotificationsStatus:
    if not lost:
        return notes
    return notes.model_copy(update={"dropped": (notes.dropped or 0) + len(lost), "last_failure": lost[-1]})


def _tidy(notes: NotificationsStatus) -> NotificationsStatus:
    """An empty queue is written as absent, and so is a retry time without anything to retry."""
    if notes.pending:
        return notes
    return notes.model_copy(update={"pending": None, "next_attempt_at": None})


def _failed(notice: Notice, *, uid: str, reason: str, message: str, now: datetime) -> FailedNotice:
    return FailedNotice(
        id=notification_id(uid=uid, sequence=notice.sequence),
        sequence=notice.sequence,
        state=notice.state,
        failed_at=format_time(now),
        attempts=notice.attempts or 0,
        reason=reason,
        message=_cut(message, MAX_ERROR_LENGTH),
    )


def _deadline(notice: Notice, policy: RetryPolicy) -> datetime:
    return parse_time(notice.at) + timedelta(seconds=policy.max_retry_seconds)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
