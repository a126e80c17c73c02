"""The NotificationsFailing condition, derived from status.notifications (a table; no clock read)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduledbot.api.models import Condition, ConditionStatus, ScheduledBotStatus
from scheduledbot.api.notify import NotificationsStatus
from scheduledbot.core.notify_status import NOTIFICATIONS_FAILING, with_notifications_condition

NOW = datetime(2026, 12, 1, 16, 0, 0, tzinfo=UTC)
EARLIER = "2026-12-01T15:00:00Z"
READY = Condition(type="Ready", status=ConditionStatus.TRUE, last_transition_time=EARLIER, reason="Staged", message="")


def failing(status: ConditionStatus, *, since: str = EARLIER) -> Condition:
    return Condition(type=NOTIFICATIONS_FAILING, status=status, last_transition_time=since, reason="X", message="")


def condition(status: ScheduledBotStatus) -> Condition | None:
    return next((c for c in status.conditions or () if c.type == NOTIFICATIONS_FAILING), None)


@pytest.mark.parametrize(
    ("notes", "previous", "expected", "reason", "since"),
    [
        pytest.param(NotificationsStatus(sequence=1), [], "False", "Delivering", "2026-12-01T16:00:00Z", id="new"),
        pytest.param(
            NotificationsStatus(sequence=1, failures=2, last_error="HTTP 503", next_attempt_at="2026-12-01T16:00:10Z"),
            [failing(ConditionStatus.FALSE)],
            "True",
            "DeliveryFailing",
            "2026-12-01T16:00:00Z",
            id="starts failing: the transition time moves",
        ),
        pytest.param(
            NotificationsStatus(sequence=1, failures=3, last_error="HTTP 503"),
            [failing(ConditionStatus.TRUE)],
            "True",
            "DeliveryFailing",
            EARLIER,
            id="still failing: the transition time stays",
        ),
        pytest.param(
            NotificationsStatus(sequence=2, gone=True), [], "True", "SinkGone", "2026-12-01T16:00:00Z", id="gone"
        ),
    ],
)
def test_the_condition_follows_the_failures(
    notes: NotificationsStatus, previous: list[Condition], expected: str, reason: str, since: str
) -> None:
    status = ScheduledBotStatus(conditions=[READY], notifications=notes)
    found = condition(with_notifications_condition(status, previous=[READY, *previous], generation=3, now=NOW))
    assert found is not None
    assert (found.status, found.reason, found.last_transition_time, found.observed_generation) == (
        expected,
        reason,
        since,
        3,
    )


def test_the_message_names_the_error_and_the_next_attempt() -> None:
    notes = NotificationsStatus(failures=2, last_error="HTTP 503: busy", next_attempt_at="2026-12-01T16:00:10Z")
    found = condition(
        with_notifications_condition(ScheduledBotStatus(notifications=notes), previous=[], generation=1, now=NOW)
    )
    assert found is not None and found.message == (
        "2 failed attempts in a row: HTTP 503: busy; next attempt at 2026-12-01T16:00:10Z"
    )


def test_the_other_conditions_are_kept_and_a_bot_without_notifications_has_none() -> None:
    status = ScheduledBotStatus(conditions=[READY], notifications=NotificationsStatus(sequence=1))
    made = with_notifications_condition(status, previous=[], generation=1, now=NOW)
    assert [c.type for c in made.conditions or ()] == ["Ready", NOTIFICATIONS_FAILING]
    quiet = ScheduledBotStatus(conditions=[READY])
    assert with_notifications_condition(quiet, previous=[], generation=1, now=NOW) == quiet
    stale = ScheduledBotStatus(conditions=[READY, failing(ConditionStatus.TRUE)])
    assert with_notifications_condition(stale, previous=[], generation=1, now=NOW).conditions == [READY]
