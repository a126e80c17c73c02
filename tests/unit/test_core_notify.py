"""Table tests of `core.notify` on a fixed clock and fixed jitter: what is queued, what is sent, when, and what
happens to each outcome. No network, no sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduledbot.api.models import BotState, JoinedBy, ScheduledBotStatus
from scheduledbot.api.notify import MAX_NOTICE_MESSAGE, MAX_PENDING, Notice, NotificationsStatus, NotifySpec
from scheduledbot.core.notify import (
    Attempt,
    Failure,
    RetryPolicy,
    Sink,
    Verdict,
    classify,
    describe,
    notification_id,
    plan_delivery,
    record_change,
    resolve_sink,
    retry_delay,
)
from scheduledbot.timestamps import format_time

NOW = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)
UID = "0b3c-uid"
SINK = Sink(url="https://hooks.example.com/bots?token=abc", key_ref=None)
POLICY = RetryPolicy()
#: jitter 0 keeps the whole back-off; 1 halves it.
NO_JITTER = 0.0


def later(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def status(state: BotState | None, **fields: Any) -> ScheduledBotStatus:
    return ScheduledBotStatus(state=state, **fields)


def notice(sequence: int, state: BotState, *, at: datetime = NOW, **fields: Any) -> Notice:
    return Notice(sequence=sequence, state=state, at=format_time(at), **fields)


def queued(*notices: Notice, **fields: Any) -> NotificationsStatus:
    return NotificationsStatus(
        sink=SINK.fingerprint, sequence=max((n.sequence for n in notices), default=0), pending=list(notices), **fields
    )


def deliver_plan(
    notes: NotificationsStatus | None,
    *,
    attempt: Attempt | None = None,
    now: datetime = NOW,
    sink: Sink | None = SINK,
    in_flight: bool = False,
    jitter: float = NO_JITTER,
) -> Any:
    return plan_delivery(
        uid=UID,
        notifications=notes,
        sink=sink,
        attempt=attempt,
        in_flight=in_flight,
        policy=POLICY,
        jitter=jitter,
        now=now,
    )


def answer(sequence: int, status_code: int | None = None, **fields: Any) -> Attempt:
    return Attempt(id=notification_id(uid=UID, sequence=sequence), status=status_code, **fields)


# -- the sink ------------------------------------------------------------------------------------------


DEFAULT = "https://default.example.com/hook"
OWN = {"url": "https://own.example.com/hook", "signingKeySecretRef": {"name": "k", "key": "key"}}


@pytest.mark.parametrize(
    ("notify", "default", "expected"),
    [
        pytest.param(None, None, None, id="no notify and no default sink: none"),
        pytest.param(None, DEFAULT, (DEFAULT, None, None), id="no notify: the default sink, every state"),
        pytest.param(OWN, DEFAULT, (OWN["url"], "k/key", None), id="its own sink beats the default"),
        pytest.param(
            {"events": ["joined", "failed"]},
            DEFAULT,
            (DEFAULT, None, {BotState.JOINED, BotState.FAILED}),
            id="a filter without a url narrows the default sink",
        ),
        pytest.param({"events": ["joined"]}, None, None, id="a filter without any sink: none"),
        pytest.param({**OWN, "enabled": False}, DEFAULT, None, id="enabled false: none, not even the default"),
    ],
)
def test_the_sink_is_the_bots_own_else_the_operators(
    notify: dict[str, Any] | None, default: str | None, expected: tuple[str, str | None, set[BotState] | None] | None
) -> None:
    sink = resolve_sink(None if notify is None else NotifySpec.model_validate(notify), default_url=default)
    if expected is None:
        assert sink is None
        return
    assert sink is not None
    url, ref, events = expected
    assert sink.url == url
    assert (f"{sink.key_ref.name}/{sink.key_ref.key}" if sink.key_ref else None) == ref
    assert sink.events == (frozenset(events) if events else None)


def test_the_fingerprint_tells_sinks_apart_without_showing_the_url() -> None:
    other_url = Sink(url="https://hooks.example.com/bots?token=xyz", key_ref=None)
    assert SINK.fingerprint == Sink(url=SINK.url, key_ref=None).fingerprint
    assert SINK.fingerprint != other_url.fingerprint
    assert "abc" not in SINK.fingerprint and len(SINK.fingerprint) == 16


# -- recording changes ---------------------------------------------------------------------------------


def test_a_state_change_is_queued_with_what_the_status_said_at_the_change() -> None:
    before = status(BotState.STAGED, join_at="2026-01-01T10:00:00Z")
    after = status(
        BotState.JOINING,
        reason="JoinSignaled",
        message="join signal sent 3 ms after joinAt",
        join_at="2026-01-01T10:00:00Z",
        join_signaled_at="2026-01-01T10:00:00.003Z",
        join_lateness_ms=3,
        joined_by=JoinedBy.SIGNAL,
        notifications=NotificationsStatus(sink=SINK.fingerprint, sequence=2),
    )
    recorded = record_change(before=before, after=after, sink=SINK, now=NOW).notifications
    assert recorded == NotificationsStatus(
        sink=SINK.fingerprint,
        sequence=3,
        pending=[
            Notice(
                sequence=3,
                state=BotState.JOINING,
                previous_state=BotState.STAGED,
                at="2026-01-01T10:00:00Z",
                reason="JoinSignaled",
                message="join signal sent 3 ms after joinAt",
                join_at="2026-01-01T10:00:00Z",
                join_signaled_at="2026-01-01T10:00:00.003Z",
                join_lateness_ms=3,
                joined_by=JoinedBy.SIGNAL,
            )
        ],
    )


def test_the_first_state_is_change_one_with_no_previous_state() -> None:
    recorded = record_change(before=status(None), after=status(BotState.SCHEDULED), sink=SINK, now=NOW).notifications
    assert recorded is not None and recorded.pending is not None
    assert (recorded.sequence, recorded.pending[0].previous_state) == (1, None)


@pytest.mark.parametrize(
    ("before", "after", "sink"),
    [
        pytest.param(BotState.STAGED, BotState.STAGED, SINK, id="no state change"),
        pytest.param(BotState.STAGED, BotState.JOINING, None, id="no sink"),
    ],
)
def test_nothing_is_recorded_without_a_change_or_a_sink(before: BotState, after: BotState, sink: Sink | None) -> None:
    new = status(after, message="whatever")
    assert record_change(before=status(before), after=new, sink=sink, now=NOW) is new


def test_a_state_the_filter_leaves_out_counts_in_the_sequence_but_is_not_queued() -> None:
    only_joined = Sink(url=SINK.url, key_ref=None, events=frozenset({BotState.JOINED}))
    after = status(BotState.JOINING, notifications=NotificationsStatus(sink=only_joined.fingerprint, sequence=2))
    recorded = record_change(before=status(BotState.STAGED), after=after, sink=only_joined, now=NOW).notifications
    assert recorded == NotificationsStatus(sink=only_joined.fingerprint, sequence=3)


def test_a_long_message_is_cut() -> None:
    after = status(BotState.FAILED, message="x" * 30_000)
    recorded = record_change(before=status(BotState.STAGED), after=after, sink=SINK, now=NOW).notifications
    assert recorded is not None and recorded.pending is not None
    message = recorded.pending[0].message
    assert message is not None and len(message) == MAX_NOTICE_MESSAGE and message.endswith("…")


def test_when_the_queue_is_full_the_newest_entry_takes_in_the_next_change() -> None:
    # A sink down for an hour while a bot goes back and forth through the waiting room.
    cycle = [BotState.WAITING_ROOM, BotState.JOINED]
    full = queued(*(notice(n, cycle[n % 2]) for n in range(1, MAX_PENDING + 1)))
    after = status(BotState.RECORDING, notifications=full)
    recorded = record_change(before=status(BotState.JOINED), after=after, sink=SINK, now=later(60)).notifications
    assert recorded is not None and recorded.pending is not None and full.pending is not None
    assert len(recorded.pending) == MAX_PENDING
    assert recorded.pending[:-1] == full.pending[:-1]  # head (perhaps in flight) and order unchanged
    tail = recorded.pending[-1]
    assert (tail.sequence, tail.state, tail.coalesced) == (MAX_PENDING + 1, BotState.RECORDING, 1)
    # The previous state is the one before the change the absorbed entry reported.
    assert tail.previous_state == full.pending[-1].previous_state
    again = record_change(
        before=status(BotState.RECORDING), after=status(BotState.LEAVING, notifications=recorded), sink=SINK, now=NOW
    ).notifications
    assert again is not None and again.pending is not None
    assert (again.pending[-1].state, again.pending[-1].coalesced, again.sequence) == (
        BotState.LEAVING,
        2,
        MAX_PENDING + 2,
    )


def test_after_410_gone_nothing_more_is_queued_for_that_sink() -> None:
    gone = NotificationsStatus(sink=SINK.fingerprint, sequence=4, gone=True)
    after = status(BotState.ENDED, notifications=gone)
    recorded = record_change(before=status(BotState.JOINED), after=after, sink=SINK, now=NOW).notifications
    assert recorded == NotificationsStatus(sink=SINK.fingerprint, sequence=5, gone=True)


def test_a_new_sink_starts_afresh_even_after_410() -> None:
    gone = NotificationsStatus(sink=SINK.fingerprint, sequence=4, gone=True, failures=3, failing_since="2026-01-01Z")
    fixed = Sink(url="https://new.example.com/hook", key_ref=None)
    after = status(BotState.ENDED, notifications=gone)
    recorded = record_change(before=status(BotState.JOINED), after=after, sink=fixed, now=NOW).notifications
    assert recorded is not None and recorded.pending is not None
    assert (recorded.sink, recorded.gone, recorded.failures, recorded.failing_since) == (
        fixed.fingerprint,
        None,
        None,
        None,
    )
    assert [n.sequence for n in recorded.pending] == [5]


# -- classifying and delaying ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "verdict"),
    [
        pytest.param(Attempt(id="i", status=200), Verdict.DELIVERED, id="200 delivered"),
        pytest.param(Attempt(id="i", status=204), Verdict.DELIVERED, id="204 delivered"),
        pytest.param(Attempt(id="i", status=500), Verdict.RETRY, id="500 retried"),
        pytest.param(Attempt(id="i", status=503), Verdict.RETRY, id="503 retried"),
        pytest.param(Attempt(id="i", status=429), Verdict.RETRY, id="429 retried"),
        pytest.param(Attempt(id="i", status=410), Verdict.GONE, id="410 gone"),
        pytest.param(Attempt(id="i", status=400), Verdict.REJECTED, id="400 rejected"),
        pytest.param(Attempt(id="i", status=401), Verdict.REJECTED, id="401 rejected"),
        pytest.param(Attempt(id="i", status=404), Verdict.REJECTED, id="404 rejected"),
        pytest.param(Attempt(id="i", status=301), Verdict.REJECTED, id="a redirect is not followed: rejected"),
        pytest.param(Attempt(id="i", failure=Failure.CONNECTION), Verdict.RETRY, id="no answer retried"),
        pytest.param(Attempt(id="i", failure=Failure.REFUSED), Verdict.RETRY, id="refused retried (fixable)"),
        pytest.param(Attempt(id="i", failure=Failure.KEY), Verdict.RETRY, id="no key retried (fixable)"),
    ],
)
def test_each_outcome_has_its_verdict(attempt: Attempt, verdict: Verdict) -> None:
    assert classify(attempt) is verdict


@pytest.mark.parametrize(
    ("failures", "retry_after", "jitter", "seconds"),
    [
        pytest.param(1, None, 0.0, 5.0, id="first failure: 5 s"),
        pytest.param(2, None, 0.0, 10.0, id="second: 10 s"),
        pytest.param(5, None, 0.0, 80.0, id="fifth: 80 s"),
        pytest.param(1, None, 1.0, 2.5, id="full jitter halves it"),
        pytest.param(3, None, 0.5, 15.0, id="half jitter takes a quarter off"),
        pytest.param(11, None, 0.0, 3600.0, id="capped at an hour"),
        pytest.param(10_000, None, 0.0, 3600.0, id="no overflow however many"),
        pytest.param(1, 30.0, 1.0, 30.0, id="Retry-After is honoured as given, no jitter"),
        pytest.param(1, 0.0, 0.0, 1.0, id="Retry-After 0: at least 1 s"),
        pytest.param(1, 100_000.0, 0.0, 3600.0, id="Retry-After beyond an hour: an hour"),
    ],
)
def test_the_back_off_doubles_with_jitter_and_honours_retry_after_within_bounds(
    failures: int, retry_after: float | None, jitter: float, seconds: float
) -> None:
    assert retry_delay(failures=failures, retry_after_seconds=retry_after, policy=POLICY, jitter=jitter) == seconds


def test_a_day_of_failures_is_about_thirty_attempts() -> None:
    elapsed, attempts = 0.0, 1
    while True:
        elapsed += retry_delay(failures=attempts, retry_after_seconds=None, policy=POLICY, jitter=0.0)
        if elapsed > POLICY.max_retry_seconds:
            break
        attempts += 1
    assert 25 <= attempts <= 40


# -- delivering ----------------------------------------------------------------------------------------------


def test_nothing_recorded_nothing_to_deliver() -> None:
    assert deliver_plan(None).notifications is None and deliver_plan(None).deliver is None


def test_the_head_is_delivered_at_once_under_its_stable_id() -> None:
    notes = queued(notice(3, BotState.JOINING), notice(4, BotState.JOINED))
    decided = deliver_plan(notes)
    assert decided.deliver is not None
    assert (decided.deliver.id, decided.deliver.notice, decided.deliver.not_before, decided.deliver.attempt) == (
        f"{UID}.3",
        notice(3, BotState.JOINING),
        None,
        1,
    )
    assert decided.notifications == notes


def test_nothing_new_starts_while_a_delivery_is_in_flight() -> None:
    notes = queued(notice(3, BotState.JOINING, at=NOW - timedelta(days=2)))
    decided = deliver_plan(notes, in_flight=True)
    assert decided.deliver is None
    assert decided.notifications == notes  # and the head is not given up under the attempt


def test_a_2xx_removes_the_head_and_the_next_goes_at_once() -> None:
    notes = queued(
        notice(3, BotState.JOINING, attempts=2),
        notice(4, BotState.JOINED),
        failures=2,
        failing_since=format_time(later(-20)),
        next_attempt_at=format_time(later(-1)),
        last_error="HTTP 503",
    )
    decided = deliver_plan(notes, attempt=answer(3, 200))
    after = decided.notifications
    assert after.pending == [notice(4, BotState.JOINED)]
    assert (after.failures, after.failing_since, after.next_attempt_at, after.last_error) == (None, None, None, None)
    assert after.last_delivered is not None
    assert after.last_delivered.model_dump() == {
        "id": f"{UID}.3",
        "sequence": 3,
        "state": BotState.JOINING,
        "delivered_at": "2026-01-01T10:00:00Z",
        "attempts": 3,
    }
    assert notes.pending is not None and decided.delivered == notes.pending[0]
    assert decided.deliver is not None and (decided.deliver.id, decided.deliver.not_before) == (f"{UID}.4", None)


def test_the_last_delivery_empties_the_queue() -> None:
    decided = deliver_plan(queued(notice(8, BotState.ENDED)), attempt=answer(8, 204))
    assert decided.notifications.pending is None and decided.deliver is None


def test_a_503_keeps_the_head_and_retries_it_after_the_back_off() -> None:
    decided = deliver_plan(queued(notice(3, BotState.JOINING)), attempt=answer(3, 503, detail="Service Unavailable"))
    after = decided.notifications
    assert after.pending is not None and after.pending[0].attempts == 1
    assert (after.failures, after.failing_since, after.next_attempt_at) == (
        1,
        "2026-01-01T10:00:00Z",
        "2026-01-01T10:00:05Z",
    )
    assert after.last_error == "HTTP 503: Service Unavailable"
    assert decided.deliver is not None
    assert (decided.deliver.id, decided.deliver.not_before, decided.deliver.attempt) == (f"{UID}.3", later(5), 2)


def test_failures_in_a_row_double_the_delay_and_jitter_shortens_it() -> None:
    notes = queued(notice(3, BotState.JOINING, attempts=3), failures=3, failing_since=format_time(NOW))
    decided = deliver_plan(notes, attempt=answer(3, failure=Failure.CONNECTION, detail="timed out"), jitter=1.0)
    # The fourth failure in a row: 5 * 2**3 = 40 s, halved by full jitter.
    assert decided.notifications.next_attempt_at == format_time(later(20))
    assert decided.notifications.failing_since == format_time(NOW)
    assert decided.notifications.last_error == "no answer: timed out"


def test_a_429_waits_as_long_as_retry_after_says() -> None:
    decided = deliver_plan(queued(notice(3, BotState.JOINING)), attempt=answer(3, 429, retry_after_seconds=120.0))
    assert decided.notifications.next_attempt_at == format_time(later(120))
    assert decided.notifications.last_error == "HTTP 429 (Retry-After 120 s)"


def test_a_retry_is_not_due_before_its_time() -> None:
    notes = queued(notice(3, BotState.JOINING, attempts=1), failures=1, next_attempt_at=format_time(later(5)))
    decided = deliver_plan(notes, now=later(2))
    assert decided.deliver is not None and decided.deliver.not_before == later(5)
    due = deliver_plan(notes, now=later(5))
    assert due.deliver is not None and due.deliver.not_before is None


@pytest.mark.parametrize("code", [400, 401, 404, 301])
def test_a_4xx_or_a_redirect_drops_that_change_and_the_next_waits_the_back_off(code: int) -> None:
    notes = queued(notice(3, BotState.JOINING), notice(4, BotState.JOINED))
    decided = deliver_plan(notes, attempt=answer(3, code))
    after = decided.notifications
    assert after.pending == [notice(4, BotState.JOINED)]
    assert after.dropped == 1
    assert after.last_failure is not None
    assert (after.last_failure.id, after.last_failure.reason, after.last_failure.attempts) == (
        f"{UID}.3",
        "Rejected",
        1,
    )
    assert after.last_failure.message == f"HTTP {code}"
    assert decided.given_up == (after.last_failure,)
    assert decided.deliver is not None and (decided.deliver.id, decided.deliver.not_before) == (f"{UID}.4", later(5))


def test_410_gone_drops_everything_pending_and_stops() -> None:
    notes = queued(notice(3, BotState.JOINING), notice(4, BotState.JOINED), notice(5, BotState.RECORDING))
    decided = deliver_plan(notes, attempt=answer(3, 410))
    after = decided.notifications
    assert (after.pending, after.gone, after.dropped, after.next_attempt_at) == (None, True, 3, None)
    assert [(f.sequence, f.reason, f.attempts) for f in decided.given_up] == [
        (3, "Gone", 1),
        (4, "Gone", 0),
        (5, "Gone", 0),
    ]
    assert after.last_failure == decided.given_up[-1]
    assert decided.deliver is None


def test_the_last_retry_falls_at_the_end_of_the_window_and_then_it_is_given_up() -> None:
    window = timedelta(seconds=POLICY.max_retry_seconds)
    end = NOW + window
    notes = queued(notice(3, BotState.JOINING, attempts=30), failures=30)
    near_end = deliver_plan(notes, attempt=answer(3, 503), now=end - timedelta(minutes=10))
    assert near_end.notifications.next_attempt_at == format_time(end)
    last = deliver_plan(near_end.notifications, now=end)
    assert last.deliver is not None and last.deliver.not_before is None
    given_up = deliver_plan(near_end.notifications, attempt=answer(3, 503), now=end + timedelta(seconds=2))
    assert given_up.notifications.pending is None
    assert [(f.sequence, f.reason, f.attempts) for f in given_up.given_up] == [(3, "Expired", 32)]


def test_changes_past_their_window_are_given_up_even_before_their_turn() -> None:
    old = NOW - timedelta(seconds=POLICY.max_retry_seconds + 1)
    notes = queued(
        notice(3, BotState.JOINING, at=old, attempts=20), notice(4, BotState.JOINED, at=old), notice(5, BotState.ENDED)
    )
    notes = notes.model_copy(update={"last_error": "HTTP 503"})
    decided = deliver_plan(notes)
    assert [(f.sequence, f.attempts, f.message) for f in decided.given_up] == [
        (3, 20, "not delivered in time: HTTP 503"),
        (4, 0, "not delivered in time: HTTP 503"),
    ]
    assert decided.notifications.dropped == 2
    assert decided.deliver is not None and decided.deliver.id == f"{UID}.5"


def test_without_a_sink_pending_changes_wait_until_they_expire() -> None:
    notes = queued(notice(3, BotState.JOINING))
    decided = deliver_plan(notes, sink=None)
    assert decided.deliver is None and decided.notifications == notes
    assert decided.wake_at is not None and decided.wake_at > NOW + timedelta(seconds=POLICY.max_retry_seconds)
    expired = deliver_plan(notes, sink=None, now=decided.wake_at)
    assert expired.notifications.pending is None and [f.reason for f in expired.given_up] == ["Expired"]


def test_an_outcome_for_another_change_is_ignored() -> None:
    notes = queued(notice(4, BotState.JOINED))
    decided = deliver_plan(notes, attempt=answer(3, 200))
    assert decided.notifications == notes and decided.delivered is None


def test_a_changed_sink_gets_its_first_attempt_at_once() -> None:
    notes = queued(notice(3, BotState.JOINING, attempts=4), failures=4, next_attempt_at=format_time(later(600)))
    fixed = Sink(url="https://fixed.example.com/hook", key_ref=None)
    decided = deliver_plan(notes, sink=fixed)
    assert decided.deliver is not None and decided.deliver.not_before is None
    assert (decided.notifications.sink, decided.notifications.failures) == (fixed.fingerprint, None)


def test_a_narrowed_filter_skips_the_pending_changes_it_no_longer_wants() -> None:
    narrowed = Sink(url=SINK.url, key_ref=None, events=frozenset({BotState.ENDED}))
    notes = queued(notice(3, BotState.JOINING), notice(4, BotState.ENDED)).model_copy(
        update={"sink": narrowed.fingerprint}
    )
    decided = deliver_plan(notes, sink=narrowed)
    assert decided.deliver is not None and decided.deliver.id == f"{UID}.4"
    assert decided.given_up == () and decided.notifications.dropped is None


def test_changes_faster_than_deliveries_still_arrive_once_each_and_in_order() -> None:
    """joining, joined and recording within a second while the sink is down for an hour: all three arrive
    after it comes back, in order, each under one id."""
    current = status(BotState.STAGED)
    moments = [NOW, later(0.2), later(0.9)]
    for moment, state in zip(moments, [BotState.JOINING, BotState.JOINED, BotState.RECORDING], strict=True):
        current = record_change(
            before=current, after=current.model_copy(update={"state": state}), sink=SINK, now=moment
        )
    notes = current.notifications
    sent: list[str] = []
    now = later(1)
    attempt: Attempt | None = None
    for _ in range(100):
        decided = deliver_plan(notes, attempt=attempt, now=now, jitter=0.5)
        notes = decided.notifications
        if decided.deliver is None:
            break
        now = max(now, decided.deliver.not_before or now)
        sink_up = now >= later(3600)
        attempt = Attempt(id=decided.deliver.id, status=200 if sink_up else 503)
        if sink_up:
            sent.append(decided.deliver.id)
        now += timedelta(milliseconds=50)  # the request's own time
    assert sent == [f"{UID}.1", f"{UID}.2", f"{UID}.3"]
    assert notes is not None and notes.pending is None and notes.dropped is None
    assert notes.last_delivered is not None and notes.last_delivered.state is BotState.RECORDING


@pytest.mark.parametrize(
    ("attempt", "text"),
    [
        pytest.param(Attempt(id="i", status=502), "HTTP 502", id="a status"),
        pytest.param(Attempt(id="i", status=429, retry_after_seconds=1.5), "HTTP 429 (Retry-After 1.5 s)", id="429"),
        pytest.param(
            Attempt(id="i", failure=Failure.REFUSED, detail="hooks.example.com resolves to 10.0.0.7"),
            "refused by the egress policy: hooks.example.com resolves to 10.0.0.7",
            id="refused",
        ),
        pytest.param(
            Attempt(id="i", failure=Failure.KEY, detail="Secret team/k has no key 'key'"),
            "no signing key: Secret team/k has no key 'key'",
            id="no key",
        ),
    ],
)
def test_each_failure_is_described_in_one_line(attempt: Attempt, text: str) -> None:
    assert describe(attempt) == text
